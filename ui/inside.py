"""Views inside a model: CAMs, attention, deformable offsets, STN, receptive fields, Swin masks."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from explorer.jobs import job_key
from explorer.models import input_size_of
from explorer.spec import ModelSpec
from explorer.text import escape_markdown
from ui.common import QUOTED_LINK_TEXT, cached_rf, plot_config
from ui.components import rf_frame
from ui.jobs import confirm_estimate, estimated_job, job_estimate, run_job


def _erf(spec_key: str, layer: str, expected=None) -> dict:
    spec = json.loads(spec_key)
    return run_job("erf", {"spec": spec, "layer": layer}, f"Effective receptive field of {spec['arch']} at {layer}",
                   expected=expected, asked=True)  # started by its button


def _swin(spec_key: str, stage: int, block: int, window: int | None, key: str) -> dict | None:
    """The window masks of one block behind their estimate (a caption; a long one waits for its Run click: None)."""
    spec = json.loads(spec_key)
    return estimated_job("swin_masks", {"spec": spec, "stage": stage, "block": block, "window": window},
                         f"Swin windows of {spec['arch']}", "the window masks", f"{key}_estimate")


# --- a layer the Inside page's link names (?layer=NAME) --------------------------------------------------

LINK_LAYER = "inside_link_layer"  # {"view": view id, "layer": the link's text}: read once, checked by that view
LAYER_VIEWS = ("cam", "attention", "offsets", "rf", "swin", "connectivity")  # the views with a layer (block) picker


def link_layer(view_id: str) -> str | None:
    """The layer the Inside page's link names for this view, until the view has checked it; else None."""
    pending = st.session_state.get(LINK_LAYER)
    return pending["layer"] if pending and pending["view"] == view_id else None


def start_layer_from_link(view_id: str, names: list[str], widget_key: str, shown: str) -> None:
    """Before a view's layer picker is drawn: the layer the link names becomes the picker's value when it is
    one of `names`, the view's own list for this model (an allowlist: the link's text is used no other way);
    any other name gets a one-line warning and the picker keeps its default (`shown` names it). Checked once:
    later reruns keep what the person picks."""
    wanted = link_layer(view_id)
    if wanted is None:
        return
    del st.session_state[LINK_LAYER]
    if wanted in names:
        st.session_state[widget_key] = wanted
        return
    if "layer" in st.query_params:  # the URL names the layer shown instead, once the picker is drawn
        del st.query_params["layer"]
    named = escape_markdown(wanted, limit=QUOTED_LINK_TEXT)
    st.warning(f"The link asks for a layer named '{named}', which this view does not offer for this model; "
               f"showing {escape_markdown(shown)}.")


def keep_layer_in_link(name: str | None) -> None:
    """The Inside page's URL carries the layer shown, so a shared link reopens it."""
    if name:
        st.query_params["layer"] = str(name)


def receptive_field_view(spec: ModelSpec, layer: str | None = None, key: str = "rf", with_erf: bool = False,
                         layout=None, from_link: bool = False):
    """Theoretical receptive field of every layer across depth; the chosen layer highlighted. `layout`, when
    given, restyles each chart before it is drawn (a tour's presenter mode: ui.presenter.for_screen); with
    `from_link` (the Inside page) the link's layer is the first one chosen, and the URL keeps the chosen one."""
    layout = layout or (lambda fig: fig)
    report = cached_rf(spec.key(), key)
    if report is None:  # a long trace waits for its Run click
        return
    rows = [r for r in report["rows"] if r["op"] != "container"]
    names = [r["name"] for r in rows]
    # Default: the deepest layer (a module, not a reshape or permute of a head) that still has a spatial map.
    spatial = [i for i, r in enumerate(rows) if not r["global"]]
    default = names.index(layer) if layer in names else next(
        (i for i in reversed(spatial) if rows[i]["op"] == "module"), spatial[-1] if spatial else 0)
    if from_link:
        start_layer_from_link("rf", names, f"{key}_layer", f"the default layer, {names[default]}")
    chosen = st.selectbox("Layer", names, index=default, key=f"{key}_layer")
    if from_link:
        keep_layer_in_link(chosen)
    row = rows[names.index(chosen)]
    pair = lambda v: f"{v[0]:.4g} × {v[1]:.4g}"  # noqa: E731 — fractional after resampling; 4 digits are plenty
    c1, c2, c3 = st.columns(3)
    c1.metric("Receptive field (pixels)", "whole input" if row["global"] else pair(row["rf"]))
    c2.metric("Jump / stride (pixels)", pair(row["jump"]))
    c3.metric("First unit's centre (pixel)", f"({row['start'][0]:.4g}, {row['start'][1]:.4g})")
    fig = go.Figure()
    local = [(i, r) for i, r in enumerate(rows) if not r["global"]]
    fig.add_trace(go.Scatter(x=[i for i, _ in local], y=[r["rf"][0] for _, r in local], mode="lines+markers",
                             name="receptive field (pixels)", text=[r["name"] for _, r in local],
                             hovertemplate="%{text}<br>rf %{y} px<extra></extra>"))
    fig.add_trace(go.Scatter(x=[i for i, _ in local], y=[r["jump"][0] for _, r in local], mode="lines",
                             name="jump (pixels)", text=[r["name"] for _, r in local], hovertemplate="%{text}<br>jump %{y} px<extra></extra>"))
    fig.add_vline(x=names.index(chosen), line_dash="dash")
    if len(local) <= 1:
        fig.add_annotation(text="every layer after this one sees the whole input (attention or global pooling)",
                           x=local[0][0] if local else 0, y=local[0][1]["rf"][0] if local else 0, showarrow=True)
    fig.update_layout(xaxis_title="layer (execution order)", yaxis_title="pixels (height)", height=380,
                      title=f"Theoretical receptive field across depth ({report.get('method', 'fx')} trace)")
    st.plotly_chart(layout(fig), width="stretch", config=plot_config())
    if row.get("note"):
        st.caption(f"{chosen}: {row['note']}")
    if row.get("approximate"):
        st.caption("This row is approximate (window attention, interpolation or uneven adaptive pooling).")
    if with_erf and not row["global"] and row.get("output_hw"):
        from ui.rf_unit import unit_on_image

        st.markdown("**One unit of this layer on the image**")
        loaded = choose_image(f"{key}_image")
        if loaded is not None:
            unit_on_image(row, tuple(report["input_hw"]), loaded[0], key)
    if with_erf and not row["global"]:
        expected = job_estimate("erf", {"spec": json.loads(spec.key()), "layer": chosen})
        # the button below starts it: its estimate beside it, a warning when it is long
        (st.warning if expected.long else st.caption)(f"Effective receptive field, estimate: {expected.text()}.")
        if st.button("Effective receptive field of this layer's centre unit (Luo et al. 2016)", key=f"{key}_erf"):
            with st.spinner("Back-propagating from the centre unit on 4 random inputs…"):
                erf = _erf(spec.key(), chosen, expected)
            box = erf["box"]
            heat = go.Figure(go.Heatmap(z=erf["map"], colorscale="Inferno", colorbar=dict(title="|∂y/∂x|, max 1")))
            heat.add_shape(type="rect", x0=box["x0"] - 0.5, x1=box["x1"] - 0.5, y0=box["y0"] - 0.5, y1=box["y1"] - 0.5,
                           line=dict(color="cyan", width=2))
            heat.update_yaxes(autorange="reversed", scaleanchor="x", title="y (pixels)")
            heat.update_xaxes(title="x (pixels)")
            heat.update_layout(height=520, title="Effective receptive field (heat) inside the theoretical box (cyan)")
            st.plotly_chart(layout(heat), width="stretch", config=plot_config())
            st.caption("Random weights: the effective field of a trained network is typically smaller and Gaussian-like.")
    with st.expander("All layers"):
        st.dataframe(rf_frame(rows), hide_index=True, width="stretch")


def swin_mask_view(spec: ModelSpec, stage: int = 1, block: int = 1, key: str = "swin", controls: bool = False,
                   layout=None):
    """Window grid, cyclic shift, region labels and the attention mask of one window. `layout`, when given,
    restyles each chart before it is drawn (a tour's presenter mode: ui.presenter.for_screen)."""
    layout = layout or (lambda fig: fig)
    window = None
    if controls:
        c1, c2, c3 = st.columns(3)
        stage = c1.selectbox("Stage", [1, 2, 3, 4], index=stage - 1, key=f"{key}_stage")
        block = c2.number_input("Block in the stage (0 = first; odd blocks are shifted)", 0, 17, block, key=f"{key}_block")
        window = c3.number_input("Window size (0 = the model's own)", 0, 32, 0, key=f"{key}_window") or None
    with st.spinner("Reading the model's windows…"):
        data = _swin(spec.key(), int(stage), int(block), window, key)
    if data is None:  # a long build waits for its Run click
        return
    res = data["resolution_hw"]
    st.markdown(f"Stage {data['stage']}, block {data['block']}: feature map {res[0]}×{res[1]} tokens, window "
                f"{data['window'][0]}×{data['window'][1]}, shift {data['shift'][0]} "
                f"({'shifted' if data['shifted'] else 'not shifted'}). **{data['masked_windows']} of {data['total_windows']} "
                f"windows carry a mask**; {data['regions']} regions after the cyclic shift.")
    c1, c2 = st.columns(2)
    labels = go.Figure(go.Heatmap(z=data["labels"], colorscale="Turbo", showscale=False,
                                  hovertemplate="token (%{y}, %{x})<br>region %{z}<extra></extra>"))
    w = data["window"][0]
    for i in range(1, data["window_grid"][0]):
        labels.add_hline(y=i * w - 0.5, line_color="white", line_width=2)
    for j in range(1, data["window_grid"][1]):
        labels.add_vline(x=j * w - 0.5, line_color="white", line_width=2)
    labels.update_yaxes(autorange="reversed", scaleanchor="x")
    labels.update_layout(title="Region labels after the cyclic shift, window grid in white", height=460)
    c1.plotly_chart(layout(labels), width="stretch", config=plot_config())
    masked = [i for i, m in enumerate(data["masked_pairs"]) if m] or [0]
    index = c2.selectbox("Window", list(range(data["total_windows"])), index=masked[-1], key=f"{key}_window_index",
                         help="Windows in row-major order; the last one mixes the most regions")
    mask = go.Figure(go.Heatmap(z=data["masks"][index], colorscale=[[0, "#b2182b"], [1, "#f7f7f7"]], zmin=-100, zmax=0,
                                colorbar=dict(title="added to the attention logit"),
                                hovertemplate="query %{y}, key %{x}: %{z}<extra></extra>"))
    mask.update_yaxes(autorange="reversed", scaleanchor="x", title="query token in the window")
    mask.update_xaxes(title="key token in the window")
    mask.update_layout(title=f"Attention mask of window {index} (−100 = blocked)", height=460)
    c2.plotly_chart(layout(mask), width="stretch", config=plot_config())


# --- image, weights and CAMs --------------------------------------------------------------------------

def choose_image(key: str):
    """A sample image (a photograph by default) or an upload: (PIL image, notes) or None, with a message for bad files."""
    from explorer.images import SAMPLE_CREDITS, load_image, sample_images

    samples = sample_images()  # the default (the cat) first
    c1, c2 = st.columns([1, 2])
    source = c1.radio("Image", ["sample", "upload"], horizontal=True, key=f"{key}_source")
    if source == "sample":
        name = c2.selectbox("Sample", list(samples), key=f"{key}_sample")
        c2.caption(SAMPLE_CREDITS.get(name, "Drawn by this project (CC0)") + " · credits in assets/README.md")
        return load_image(samples[name])
    upload = c2.file_uploader("Upload an image", type=None, key=f"{key}_upload")
    if upload is None:
        st.caption("Upload a PNG, JPEG, WebP, BMP or TIFF image (at most 40 megapixels).")
        return None
    return load_image(upload.getvalue())


CHECKPOINTS_KEPT = 3  # models per session whose uploaded checkpoint is kept (one checkpoint each)


def _kept_checkpoints() -> dict:
    """model arch → {"name", "data"}: the checkpoint uploaded for it this session (the newest model last)."""
    return st.session_state.setdefault("inside_checkpoints", {})


def keep_checkpoint(arch: str, name: str, data: bytes) -> None:
    """One checkpoint per model, for the session: a new upload replaces the model's old one, and only the
    CHECKPOINTS_KEPT most recent models keep theirs."""
    kept = _kept_checkpoints()
    kept.pop(arch, None)
    kept[arch] = {"name": name, "data": data}
    while len(kept) > CHECKPOINTS_KEPT:
        kept.pop(next(iter(kept)))


def pretrained_status(spec: ModelSpec) -> tuple[bool, str]:
    """(cached, a sentence): whether this model's library weights are in this machine's cache (no network)."""
    from explorer.catalog import resolve
    from explorer.errors import ExplorerError
    from explorer.weights import pretrained_source

    try:
        source = pretrained_source(resolve(spec.arch))
    except ExplorerError as exc:
        return False, escape_markdown(str(exc)).capitalize() + "."
    if source.cached_file() is not None:
        return True, f"Cached on this machine: {escape_markdown(source.name)}; nothing is downloaded."
    return False, (f"Not cached on this machine ({escape_markdown(source.name)}). Before a class, run "
                   f"`python -m explorer weights fetch {escape_markdown(spec.arch)}` on the server with a network; "
                   "or allow the download here (it needs a network too).")


def choose_weights(key: str, spec: ModelSpec | None = None) -> dict:
    """Random, the library's pretrained weights, or an uploaded checkpoint, kept for the session per model
    (`spec` names the model: its pretrained weights' cache status, and the checkpoint it keeps)."""
    c1, c2 = st.columns([1, 2])
    kind = c1.radio("Weights", ["random", "pretrained", "checkpoint"], horizontal=True, key=f"{key}_weights",
                    help="pretrained: the library's own weights, from its cache; checkpoint: a file you upload")
    if kind == "pretrained":
        if spec is not None:
            c2.caption(pretrained_status(spec)[1])
        allow = c2.checkbox("Allow downloading them if they are not cached", key=f"{key}_allow_download")
        return {"kind": "pretrained", "allow_download": allow}
    if kind == "checkpoint":
        owner = spec.arch if spec is not None else key
        upload = c2.file_uploader(f"Checkpoint (.safetensors, .pt, .pth; loaded weights-only; at most "
                                  f"{_upload_limit_mb()} MB; kept for this session)", key=f"{key}_ckpt")
        if upload is not None:
            keep_checkpoint(owner, upload.name, upload.getvalue())
        kept = _kept_checkpoints().get(owner)
        if kept is None:  # none chosen yet, or the uploader refused the file (over its size limit)
            return {"kind": "checkpoint", "data": None}
        if upload is None:
            from explorer.units import format_bytes

            c2.caption(f"Using {escape_markdown(kept['name'], limit=80)} ({format_bytes(len(kept['data']))}), "
                       "uploaded earlier in this session; upload another to replace it.")
        return {"kind": "checkpoint", "name": kept["name"], "data": kept["data"]}
    return {"kind": "random"}


def _upload_limit_mb() -> int:
    return int(st.get_option("server.maxUploadSize"))


USE_RANDOM = "Pick “random” under Weights to draw with random weights instead."
DERIVED_LAYER = "(derived from the model)"
# What random weights mean for each view that depends on weights (shown wherever such a view is drawn).
RANDOM_WEIGHTS_MEANS = {
    "cam": "The network is untrained, so its top class is meaningless (no label is printed) and the map shows what an "
           "untrained network happens to respond to, not where an object is.",
    "attention": "The network is untrained, so its attention is close to uniform and says nothing about the image.",
    "offsets": "The offset convs start at zero (as in the papers), so every deformed point sits on the undeformed "
               "regular grid; a trained DCN's points move towards the object.",
    "fusion": "The fusion weights are those of an untrained network: close to equal, not learned.",
}


def random_weights_notice(kind: str) -> None:
    """Say that the weights are random, and what that means for this view, wherever it depends on them."""
    means = RANDOM_WEIGHTS_MEANS.get(kind, "The figures are those of an untrained network.")
    st.info(f"**Weights are random.** {means} Pick “pretrained” or upload a checkpoint to see a trained network.",
            icon=":material/casino:")


def view_job(kind: str, spec: ModelSpec, weights: dict, image, label: str, model_label: str = "",
             with_job: bool = False, expected=None, **settings):
    """Runs one view's job in the job service with the weights the person chose (and their image, if any):
    its result, with the weights report shown; or None, with a message that says why, when those weights
    cannot be used. Nothing is then drawn: a map from random weights would pass for the checkpoint's (random
    weights are drawn only when the person picks them, and then said to be random). Its estimate shows first,
    and a long job (a big model's attention) waits for its Run button: None meanwhile. With `with_job`:
    (result, job), the job saying how long it ran."""
    if weights["kind"] == "checkpoint" and weights.get("data") is None:
        st.info(f"Nothing is drawn until a checkpoint loads: upload one above (at most {_upload_limit_mb()} MB; the "
                f"uploader refuses larger files). {USE_RANDOM}")
        return None
    payload = {"spec": spec.to_dict(), "weights": weights, **settings}
    if image is not None:
        payload["image"] = np.asarray(image.convert("RGB"))
    if expected is None:  # the estimate first (a caller that showed its own passes it); a long job waits for Run
        expected = job_estimate(kind, payload)
        if not confirm_estimate(expected, label, f"view_{kind}_{model_label or 'model'}", job_key(kind, payload)):
            return None
    result, job = run_job(kind, payload, label, with_job=True, expected=expected)
    what = "the checkpoint was refused" if weights["kind"] == "checkpoint" else "the pretrained weights could not be loaded"
    if result.get("weights_error"):
        st.error(f"Nothing is drawn: {what}: {escape_markdown(result['weights_error'].rstrip('.'))}. {USE_RANDOM}")
        return None
    report = result.get("weights_report")
    if report is not None and report["loaded"] == 0:
        names = report["unexpected"] + [m["key"] for m in report["mismatched"]]
        source = escape_markdown(report["source"], limit=80)
        why = (f"none of the {len(names)} tensors in {source} matches a tensor of this model by name and shape "
               f"(first: {escape_markdown(', '.join(names[:5]), limit=300)})" if names else f"{source} holds no tensors")
        st.error(f"Nothing is drawn: {what}: {why}. {USE_RANDOM}")
        return None
    if weights["kind"] == "random" and not model_label:
        random_weights_notice(kind)
    weights_report(report, model_label)
    return (result, job) if with_job else result


def labels_meaningful(weights: dict, report: dict | None) -> bool:
    """Class labels mean something only from trained weights: not from random ones."""
    return weights["kind"] != "random" and report is not None and report["loaded"] > 0


def weights_report(report: dict | None, label: str = ""):
    """What loaded from the weights, and what did not; `label` names the model when a page shows two."""
    if not report:
        return
    # Names and the file name come from the upload: escaped like any other outside text.
    names = lambda keys: escape_markdown(", ".join(keys[:8]) + (" …" if len(keys) > 8 else ""))  # noqa: E731
    st.caption(f"{label + ' model: ' if label else ''}Loaded {report['loaded']} tensors from "
               f"{escape_markdown(report['source'], limit=80)}.")
    problems = []
    if report["missing"]:
        problems.append(f"missing in the checkpoint, so these keep random weights: {names(report['missing'])}")
    if report["unexpected"]:
        problems.append(f"not in the model, so not used: {names(report['unexpected'])}")
    if report["mismatched"]:
        problems.append("shape mismatches, so these keep random weights: " + escape_markdown(", ".join(
            f"{m['key']} {m['checkpoint']}≠{m['model']}" for m in report["mismatched"][:5])))
    if problems:
        st.warning(f"{label + ' model: ' if label else ''}" + "; ".join(problems))


def class_names(spec: ModelSpec) -> list[str] | None:
    from explorer.catalog import resolve, torchvision_weights_meta

    variant = resolve(spec.arch)
    if variant.library == "torchvision":
        meta = torchvision_weights_meta(variant.name) or {}
        return meta.get("categories")
    import torchvision

    return torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"]  # ImageNet-1k, for timm models too


def image_and_weights(key: str, spec: ModelSpec | None = None):
    """The person's image and weights choice: (image, notes, weights), or None while there is no image."""
    loaded = choose_image(key)
    weights = choose_weights(key, spec)
    if loaded is None:
        return None
    image, notes = loaded
    for note in notes:
        st.caption(f"Image: {escape_markdown(note)}.")
    return image, notes, weights


def overlay_figure(image, heat: np.ndarray, title: str, colour_bar: str = "relevance, 0 = least, 1 = most",
                   marker_yx: tuple[float, float] | None = None, height: int = 460) -> go.Figure:
    """The heat map over the image at the image's own aspect ratio, with a colour bar that matches its ramp;
    `marker_yx` (in the heat map's pixels) marks a point with ×."""
    import base64
    import io

    from explorer.images import heat_colourscale, heat_overlay

    overlay = heat_overlay(image, heat)
    buffer = io.BytesIO()
    overlay.save(buffer, format="JPEG", quality=90)  # a data URI: a few hundred kB less than the pixel array
    width, height_px = overlay.size
    fig = go.Figure(go.Image(source="data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode(),
                             hoverinfo="skip"))
    # The colour bar lies under the image: beside it, it would take a third of a narrow column's width.
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
                             marker=dict(colorscale=heat_colourscale(), cmin=0, cmax=1, color=[0], showscale=True,
                                         colorbar=dict(title=dict(text=colour_bar, side="bottom"), thickness=12,
                                                       orientation="h", y=-0.02, yanchor="top", len=1.0))))
    if marker_yx is not None:
        sy, sx = height_px / heat.shape[0], width / heat.shape[1]
        fig.add_trace(go.Scatter(x=[marker_yx[1] * sx], y=[marker_yx[0] * sy], mode="markers", showlegend=False,
                                 marker=dict(symbol="x", size=14, color="white", line=dict(width=2))))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, range=[-0.5, width - 0.5])
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, range=[height_px - 0.5, -0.5],
                     scaleanchor="x")
    fig.update_layout(title=dict(text=title, font=dict(size=14)), height=height,
                      margin=dict(l=10, r=10, b=80, t=70 if "<br>" in title else 45))
    return fig


def cam_estimate(spec: ModelSpec, method: str, layer: str | None, layers_seen: dict):
    """Before a CAM job: its image forwards, MACs and a time (explorer.estimates, the one way), with the speed
    this session's earlier jobs of the method measured; the default layer's channels from an earlier result."""
    payload = {"spec": spec.to_dict(), "method": method, "layer": layer}
    return job_estimate("cam", payload, target_channels=layers_seen.get("default_channels") if layer is None else None)


def cam_layer_names(spec: ModelSpec) -> list[str]:
    """The layers a CAM can target, as the cam job lists them (explorer.views.cam.cam_layers: every module whose
    output is one tensor that can be drawn over the image), read from the cost trace's output shapes on the
    meta device, so a link's layer is checked before the first CAM runs. The trace keeps a tuple's one tensor:
    nn.MultiheadAttention's (output, None) is left out here as the CAM leaves it out."""
    from explorer.views.cam import layout_of
    from ui.common import cost_of

    input_hw = tuple(input_size_of(spec)[-2:])
    return [row["name"] for row in cost_of(spec)["layers"]
            if row.get("output_shape") and not isinstance(row["output_shape"][0], list)
            and row["type"] != "MultiheadAttention" and layout_of(tuple(row["output_shape"]), input_hw)]


def cam_view(spec: ModelSpec, key: str = "cam", from_link: bool = False):
    from explorer.views.cam import ATTRIBUTION_METHODS, CAM_METHODS, SCORECAM_BATCH

    chosen = image_and_weights(key, spec)
    if chosen is None:
        return
    image, _, weights = chosen
    c1, c2, c3 = st.columns([3, 4, 2])
    method = c1.selectbox("Method", list(CAM_METHODS) + list(ATTRIBUTION_METHODS), key=f"{key}_method",
                          help="scorecam runs one forward pass per channel of the target layer and occlusion one per "
                               "window: minutes on a CPU (the estimate shows before it starts)")
    class_text = c3.text_input("Class index", placeholder="top class", key=f"{key}_class")
    class_index = int(class_text) if class_text.strip().lstrip("-").isdigit() else None
    if class_text.strip() and class_index is None:
        st.error("The class index must be an integer.")
        return
    # The layer list comes with the CAM (one job); the choice is read before the widget is drawn below it,
    # under a key per model so another model starts from its own default.
    layer_key = f"{key}_layer_{hashlib.sha256(spec.key().encode()).hexdigest()[:12]}"
    if from_link and method in CAM_METHODS and link_layer("cam") is not None:  # before the first CAM: it runs there
        start_layer_from_link("cam", cam_layer_names(spec), layer_key, "the layer derived from the model")
    choice = st.session_state.get(layer_key, DERIVED_LAYER)
    layer = None if method not in CAM_METHODS or choice == DERIVED_LAYER else choice
    layers_seen = st.session_state.setdefault(f"{layer_key}_seen", {})
    settings = {"method": method, "layer": layer, "class_index": class_index}
    estimate = cam_estimate(spec, method, layer, layers_seen)
    if method == "scorecam":
        device_default = SCORECAM_BATCH["cuda" if estimate.device == "cuda" else "cpu"]
        settings["scorecam_batch"] = int(st.number_input(
            "Score-CAM batch (images per forward)", 1, 64, device_default, key=f"{key}_scorecam_batch",
            help="Smaller batches use less memory and report progress more often; the total work is the same"))
    signature = json.dumps([spec.key(), weights["kind"], settings], sort_keys=True, default=str)
    quick_ones = ("Grad-CAM++, Grad-CAM, EigenCAM and Layer-CAM take about one forward and backward."
                  if method in ("scorecam", "occlusion") else "")
    if not confirm_estimate(estimate, method, key, signature, quick_ones):
        return
    result = view_job("cam", spec, weights, image, f"{method} on {spec.arch}", expected=estimate, **settings)
    if result is None:
        return
    if method in CAM_METHODS:
        c2.selectbox("Target layer", [DERIVED_LAYER] + result["layers"][::-1], key=layer_key)
        if from_link and st.session_state[layer_key] != DERIVED_LAYER:
            keep_layer_in_link(st.session_state[layer_key])
        if layer is None and result.get("layer_channels"):
            layers_seen["default_channels"] = result["layer_channels"]
    trained = labels_meaningful(weights, result.get("weights_report"))
    names = class_names(spec) if trained else None
    if names and len(names) != result["classes"]:
        names = None  # the head is not the ImageNet (or the weights') class list: show indices
    unit = "class map" if result.get("output") == "dense" else "class"
    label = names[result["class_index"]] if names else f"{unit} {result['class_index']}"
    where = f" at {result['layer']}" if result.get("layer") else " (input pixels)"
    o1, o2 = st.columns([1, 2])  # the overlay is the figure to read: the wider column
    o1.image(image, caption=f"input, {image.size[0]}×{image.size[1]} pixels (the model sees it resized to "
                            f"{'×'.join(map(str, input_size_of(spec)[-2:]))})", width="stretch")
    explained = escape_markdown(label) if trained else f"{unit} {result['class_index']} (random weights: meaningless)"
    o2.plotly_chart(overlay_figure(image, result["heat"], f"{method} for {escape_markdown(label)}<br>{where.strip()}"),
                    width="stretch", config=plot_config())
    o2.caption(f"{method} for {explained}{where}; stretched back to the image's {image.size[0]}×{image.size[1]} "
               "pixels.")
    if result.get("note"):
        st.warning(result["note"])
    if trained and result.get("top5"):
        st.caption("Top classes: " + ", ".join(
            f"{escape_markdown(names[t['class']]) if names else t['class']} ({t['probability']:.1%})"
            for t in result["top5"])
            + (" — for a dense output, the softmax of each class map's mean" if result.get("output") == "dense" else ""))


# --- attention, deformable offsets, STN ---------------------------------------------------------------

def _grid_heatmap(grid, title: str, colourbar: str, rows: str = "patch row", cols: str = "patch column"):
    fig = go.Figure(go.Heatmap(z=grid, colorscale="Viridis", colorbar=dict(title=dict(text=colourbar, side="right")),
                               hovertemplate=f"{rows} %{{y}}, {cols} %{{x}}: %{{z:.4f}}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", title=rows)
    fig.update_xaxes(title=cols, constrain="domain")
    fig.update_layout(title=title, height=430, margin=dict(t=60 if "<br>" in title else 40))
    return fig


def attention_view(spec: ModelSpec, key: str = "attn", from_link: bool = False):
    """Per layer and head: the CLS token's (or a chosen patch's) attention over the image and ViT rollout;
    Swin windows; PVT / BoTNet / CoAtNet / DETR maps over their key grid; token × token matrices."""
    from explorer.catalog import resolve
    from explorer.models import input_size_of
    from explorer.views.attention import attention_rollout, cls_attention_grid, patch_query_grid, window_query_map

    variant = resolve(spec.arch)
    image = None
    if variant.input_kind == "tokens":
        weights = choose_weights(key)
        length = input_size_of(spec)[-1]  # there is no tokenizer: random ids (seed 0), the same on every run
        st.caption(f"Tokens: {length} random ids (seed 0) from the {variant.vocab_size}-entry vocabulary, so the "
                   "axes are token positions, not words. Set the sequence length in the Input box (e.g. 32).")
    else:
        chosen = image_and_weights(key, spec)
        if chosen is None:
            return
        image, _, weights = chosen
    result = view_job("attention", spec, weights, image, f"Attention maps of {spec.arch}")
    if result is None:
        return
    data = result["data"]
    if data is None:
        st.info("This model has no attention layers the view can read (ViT, DeiT, Swin, PVT, BoTNet, CoAtNet, "
                "nn.MultiheadAttention and nn.TransformerEncoder).")
        return
    names = data["layers"]
    c1, c2, c3 = st.columns(3)
    if from_link:
        start_layer_from_link("attention", names, f"{key}_layer", f"the last layer, {names[-1]}")
    layer = c1.selectbox("Layer", names, index=len(names) - 1, key=f"{key}_layer",
                         format_func=lambda n: f"{n} ({_attention_role(data['info'][n])})")
    if from_link:
        keep_layer_in_link(layer)
    info = data["info"][layer]
    head = c2.selectbox("Head", ["mean"] + list(range(info["heads"])), key=f"{key}_head")
    head_arg = None if head == "mean" else head
    if info.get("replay_exact") is False:
        st.warning("Replaying the encoder layers did not reproduce the model's output bit for bit; "
                   "the maps may differ from the forward pass by rounding.")
    if data["family"] == "swin":
        res = info["resolution"]
        ty = c3.number_input("Query token row", 0, res[0] - 1, res[0] // 2, key=f"{key}_ty")
        tx = c3.number_input("Query token column", 0, res[1] - 1, res[1] // 2, key=f"{key}_tx")
        result = window_query_map(data, layer, head_arg, (int(ty), int(tx)))
        st.plotly_chart(_grid_heatmap(result["map"], f"{layer}: attention of token ({ty}, {tx}) within its window "
                                      f"{result['window']}", "attention weight"), width="stretch", config=plot_config())
        if result["padding_weight"] > 0:
            st.caption(f"{result['padding_weight']:.1%} of this token's attention goes to zero padding (Swin does not mask it).")
        return
    if "key_grid" in info:
        _grid_attention(data, layer, head, image, c3, key)
        return
    if data["patch_grid"] is None:  # tokens, DETR's decoder self-attention, other MHA models
        _matrix_attention(data, layer, head)
        return
    grid = data["patch_grid"]
    query = c3.selectbox("Query", ["CLS token", "a patch"], key=f"{key}_query")
    short = _short_layer(layer)
    marker = None
    if query == "CLS token" and data["num_prefix_tokens"]:
        values = cls_attention_grid(data, layer, head_arg)
        what = "CLS attention"
    else:
        p1, p2, _ = st.columns([1, 1, 2])
        py = int(p1.number_input(f"Patch row (0–{grid[0] - 1})", 0, grid[0] - 1, grid[0] // 2, key=f"{key}_py"))
        px = int(p2.number_input(f"Patch column (0–{grid[1] - 1})", 0, grid[1] - 1, grid[1] // 2, key=f"{key}_px"))
        values = patch_query_grid(data, layer, head_arg, (py, px))
        what, marker = f"Patch ({py}, {px})'s attention", (py + 0.5, px + 0.5)
    o1, o2 = st.columns(2)
    o1.plotly_chart(overlay_figure(image, _stretched(values), f"{what} over the image<br>{short}, head {head}",
                                   "attention, stretched to 0–1", marker_yx=marker),
                    width="stretch", config=plot_config())
    o2.plotly_chart(_grid_heatmap(values, f"The same weights per patch<br>{grid[0]}×{grid[1]} patches",
                                  "attention weight"), width="stretch", config=plot_config())
    st.caption(f"Layer {escape_markdown(layer)}, head {head}. Over the image, the {grid[0]}×{grid[1]} patch weights "
               "are stretched to the image's own size and to the map's range (only their ranking shows); the grid "
               "on the right has the weights themselves." + (" × marks the query patch." if marker else ""))
    if data["num_prefix_tokens"]:
        stacked = np.stack([data["maps"][n] for n in names])
        rollout = np.asarray(attention_rollout(stacked, num_prefix_tokens=data["num_prefix_tokens"], grid=grid,
                                               as_grid=True))[0]
        r1, r2 = st.columns(2)
        r1.plotly_chart(overlay_figure(image, _stretched(rollout), "Attention rollout over the image<br>all layers "
                                       "(Abnar & Zuidema 2020)", "rolled-out, stretched to 0–1"),
                        width="stretch", config=plot_config())
        r2.plotly_chart(_grid_heatmap(rollout, "Attention rollout per patch<br>CLS token, all layers",
                                      "rolled-out weight"), width="stretch", config=plot_config())


def _stretched(values) -> np.ndarray:
    """A map scaled to [0, 1] over its own range, for an overlay (only the ranking shows)."""
    values = np.asarray(values, dtype=np.float32)
    return (values - values.min()) / max(float(values.max() - values.min()), 1e-12)


def _short_layer(name: str) -> str:
    """A layer name short enough for a figure title: torchvision's 'encoder.layers.encoder_layer_11' → 'layer 11'."""
    import re

    numbers = re.findall(r"(?:layers?|blocks?)[._](\d+)", name)
    if len(numbers) == 1 and len(re.findall(r"\d+", name)) == 1:  # one index in the name: the layer's
        return f"layer {numbers[0]}"
    return name if len(name) <= 32 else "…" + name[-31:]


def _attention_role(info: dict) -> str:
    """Plain words for what a layer's queries and keys are."""
    kind = info["kind"]
    if kind in ("native_pvt", "timm_pvt"):
        return "spatial-reduction self-attention"
    if kind in ("timm_botnet", "timm_attention2d"):
        return "self-attention over the feature map"
    if kind in ("torchvision_swin", "timm_swin"):
        return "window self-attention"
    where = "decoder " if "decoder." in info["module"] else "encoder " if "encoder." in info["module"] else ""
    if not info["self_attention"]:
        return where + "cross-attention"
    return where + "self-attention" + (", causal" if info.get("causal") else "")


def _upsample(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour: every grid cell becomes the block of pixels it covers."""
    rows = np.arange(height) * values.shape[0] // height
    cols = np.arange(width) * values.shape[1] // width
    return values[rows][:, cols]


def _grid_attention(data: dict, layer: str, head, image, column, key: str):
    """One query's map over a layer's key grid, and the same map upsampled over the image."""
    from explorer.views.attention import grid_query_map, query_centres

    info = data["info"][layer]
    height, width = data["input_hw"]
    kg = info["key_grid"]
    head_arg = None if head == "mean" else head
    query_yx = None
    if "query_grid" in info:
        qg = info["query_grid"]
        options = (["class token"] if info["query_prefix"] else []) + ["a position"]
        if column.selectbox("Query", options, key=f"{key}_grid_query") == "class token":
            query, label = 0, "the class token"
        else:  # the grid's size is in the keys: stages differ, and a stored value must fit the range
            qy = int(column.number_input(f"Query row (0–{qg[0] - 1})", 0, qg[0] - 1, qg[0] // 2,
                                         key=f"{key}_qy{qg[0]}"))
            qx = int(column.number_input(f"Query column (0–{qg[1] - 1})", 0, qg[1] - 1, qg[1] // 2,
                                         key=f"{key}_qx{qg[1]}"))
            query, label = (qy, qx), f"token ({qy}, {qx}) of the {qg[0]}×{qg[1]} map"
            query_yx = ((qy + 0.5) * height / qg[0], (qx + 0.5) * width / qg[1])
    else:
        n = info["queries"]
        query = int(column.number_input(f"Object query (0–{n - 1})", 0, n - 1, 0, key=f"{key}_object_query"))
        label = f"object query {query}"
    result = grid_query_map(data, layer, head_arg, query)
    cell_h, cell_w = height / kg[0], width / kg[1]
    o1, o2 = st.columns(2)
    o1.plotly_chart(_grid_heatmap(result["map"], f"{_short_layer(layer)}, head {head}:<br>{label} over {kg[0]}×{kg[1]} keys",
                                  "attention weight", rows=f"key row ({cell_h:g} px each)",
                                  cols=f"key column ({cell_w:g} px each)"), width="stretch", config=plot_config())
    heat = _stretched(_upsample(result["map"], height, width))  # only the ranking shows
    o2.plotly_chart(overlay_figure(image, heat, "The same map over the image" + ("<br>× = the query" if query_yx
                                   is not None else "<br>stretched over the map's range"),
                                   "attention, stretched to 0–1", marker_yx=query_yx, height=430),
                    width="stretch", config=plot_config())
    st.caption(_grid_caption(info, height, width) + (
        f" {result['prefix_weight']:.1%} of this query's attention goes to the class token (not drawn)."
        if info["key_prefix"] else ""))
    if "query_grid" not in info:
        _query_centres_figure(query_centres(data, layer, head_arg), kg, height, width, image, query)


def _grid_caption(info: dict, height: int, width: int) -> str:
    qg, kg = info.get("query_grid"), info["key_grid"]
    if info["kind"] in ("native_pvt", "timm_pvt") and qg != kg:
        return (f"Spatial-reduction attention: the queries are the {qg[0]}×{qg[1]} tokens (one per "
                f"{height // qg[0]}×{width // qg[1]} pixels), but keys and values come from that map reduced to "
                f"{kg[0]}×{kg[1]} (a strided conv, or PVT v2's pooling to 7×7), so a query's map has one cell per "
                f"{qg[0] / kg[0]:g}×{qg[1] / kg[1]:g} tokens; it is drawn at that grid and upsampled over the image.")
    if info["kind"] in ("native_pvt", "timm_pvt"):
        return (f"Self-attention over the {kg[0]}×{kg[1]} tokens (this stage does not reduce the keys; "
                f"one token per {height // kg[0]}×{width // kg[1]} pixels).")
    if info["kind"] == "timm_botnet":
        return (f"BoTNet's multi-head self-attention: every position of the {kg[0]}×{kg[1]} feature map attends to "
                "every other; relative-position logits (one for the row offset, one for the column offset) are "
                "added before the softmax.")
    if info["kind"] == "timm_attention2d":
        return (f"CoAtNet's transformer stage: self-attention over the whole {kg[0]}×{kg[1]} feature map, with a "
                "learned relative-position bias per head.")
    if "query_grid" in info:
        return (f"DETR's encoder: self-attention over the {kg[0]}×{kg[1]} stride-32 feature tokens; the sine "
                "positional encoding is added to queries and keys.")
    return (f"DETR's decoder cross-attention: each of the {info['queries']} object queries attends to the "
            f"{kg[0]}×{kg[1]} encoder tokens (stride 32) to find its object.")


def _query_centres_figure(centres: dict, kg, height: int, width: int, image, chosen: int):
    """Where every object query looks: the attention-weighted centre of its map, over the image."""
    ys = (centres["centre"][:, 0] + 0.5) * height / kg[0]
    xs = (centres["centre"][:, 1] + 0.5) * width / kg[1]
    fig = go.Figure(go.Image(z=np.asarray(image.convert("RGB").resize((width, height)))))
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", text=[f"query {i}" for i in range(len(xs))],
                             marker=dict(size=9, color=centres["peak"], colorscale="Reds", showscale=True,
                                         colorbar=dict(title="largest attention weight"),
                                         line=dict(width=1, color="black")),
                             hovertemplate="%{text}: centre (%{x:.0f}, %{y:.0f}) px<extra></extra>"))
    fig.add_trace(go.Scatter(x=[xs[chosen]], y=[ys[chosen]], mode="markers", hoverinfo="skip",
                             marker=dict(symbol="circle-open", size=20, color="cyan", line=dict(width=3))))
    fig.update_xaxes(title="x (pixels)")
    fig.update_yaxes(title="y (pixels)")
    fig.update_layout(title="Where each object query looks: the centre of its attention map (cyan: the chosen one)",
                      height=520, margin=dict(t=40), showlegend=False)
    st.plotly_chart(fig, width="stretch", config=plot_config())
    st.caption("A dot is a query's attention-weighted mean position; its colour is the query's largest single "
               "weight (dark = focused on a few tokens, pale = spread out). A trained DETR's queries specialise "
               "in regions and box sizes; with random weights the dots gather near the centre.")


def _matrix_attention(data: dict, layer: str, head):
    """The (query × key) matrix of one layer and head: tokens, or DETR's object queries among themselves."""
    from explorer.views.attention import head_matrix

    info = data["info"][layer]
    decoder = "decoder." in info["module"]
    if data["family"] == "sequence":
        rows = "query: target position" if decoder else "query: token position"
        cols = "key: " + ("source position" if not info["self_attention"] else
                          "target position" if decoder else "token position")
    elif data["family"] == "detr":
        rows, cols = "query: object query", "key: object query"
    else:
        rows, cols = "query token", "key token"
    matrix = head_matrix(data, layer, None if head == "mean" else head)
    st.plotly_chart(_grid_heatmap(matrix, f"{layer}, head {head}: {_attention_role(info)} (rows sum to 1)",
                                  "attention weight", rows=rows, cols=cols), width="stretch", config=plot_config())
    if data["family"] == "sequence" and decoder:
        st.caption("The decoder reads the same ids shifted right by one (a start token first), with teacher forcing; "
                   "in its self-attention a causal mask lets target position t see positions 0…t only (zeros above "
                   "the diagonal); its cross-attention sees every source position.")


def deformable_view(spec: ModelSpec, key: str = "dcn", from_link: bool = False):
    """Sampling points of one output location through the deformable layers, over the input image."""
    from explorer.views.deformable import stack_sampling_points

    chosen = image_and_weights(key, spec)
    if chosen is None:
        return
    image, _, weights = chosen
    result = view_job("offsets", spec, weights, image, f"Deformable offsets of {spec.arch}")
    if result is None:
        return
    layers, captures = result["layers"], result["captures"]
    if not layers:
        st.info("This model has no deformable convolutions. Swap some in: e.g. `preset:dcnv2` or "
                "`conv:dcn@layer4.*.conv2` in the swaps box above.")
        return
    c1, c2, c3 = st.columns(3)
    if from_link:
        start_layer_from_link("offsets", layers, f"{key}_layer", f"the last one, {layers[-1]}")
    layer = c1.selectbox("Deformable layer", layers, index=len(layers) - 1, key=f"{key}_layer")
    if from_link:
        keep_layer_in_link(layer)
    out_h, out_w = captures[layer]["output_hw"]
    oy = c2.number_input("Output row", 0, out_h - 1, out_h // 2, key=f"{key}_oy")
    ox = c3.number_input("Output column", 0, out_w - 1, out_w // 2, key=f"{key}_ox")
    depth = st.slider("Stack back through this many deformable layers", 1, min(3, layers.index(layer) + 1), 1,
                      key=f"{key}_depth", help="Each level multiplies the points by k²; 3 levels at most")
    chain = layers[layers.index(layer) - depth + 1: layers.index(layer) + 1]
    stacked = stack_sampling_points(captures, chain, (int(oy), int(ox)))
    from explorer.images import overlay_size

    h, w = stacked["image_hw"]
    # The image at its own aspect ratio; the points, found at the model's h × w input, scaled onto it.
    width, height = overlay_size(image.size)
    scale = np.array([height / h, width / w])
    fig = go.Figure()
    fig.add_trace(go.Image(z=np.asarray(image.resize((width, height))), hoverinfo="skip"))
    reg, pts = ((stacked[k] + 0.5) * scale - 0.5 for k in ("image_regular", "image_points"))  # pixel centres
    fig.add_trace(go.Scatter(x=reg[:, 1], y=reg[:, 0], mode="markers", name="regular grid",
                             marker=dict(symbol="circle-open", size=11, color="royalblue", line=dict(width=2))))
    weights_v2 = stacked.get("image_weights")
    fig.add_trace(go.Scatter(x=pts[:, 1], y=pts[:, 0], mode="markers", name="deformed sampling points",
                             marker=dict(size=6, color=weights_v2 if weights_v2 is not None else "red",
                                         colorscale="Reds", showscale=weights_v2 is not None,
                                         colorbar=dict(title="modulation (v2)") if weights_v2 is not None else None)))
    fig.update_layout(title=dict(text=f"{len(pts)} sampling points of output ({oy}, {ox}) over the image<br>{layer}",
                                 font=dict(size=14)),
                      height=560, margin=dict(t=70), legend=dict(orientation="h", y=-0.08))
    st.plotly_chart(fig, width="stretch", config=plot_config())
    st.caption("Offsets follow torchvision's layout: per kernel tap a (Δy, Δx) pair. With random or freshly swapped "
               "weights the offsets start at zero (as in the papers), so the deformed points sit on the regular grid "
               "until the offset convs are trained or loaded.")


def stn_view(key: str = "stn"):
    """A spatial transformer's affine sampling grid over its input, and the resampled output."""
    import math

    loaded = choose_image(key)
    if loaded is None:
        return
    image, _ = loaded
    c1, c2, c3, c4 = st.columns(4)
    angle = c1.slider("Rotation (degrees)", -180, 180, 20, key=f"{key}_angle")
    scale = c2.slider("Scale (zoom in < 1)", 0.3, 1.5, 0.7, key=f"{key}_scale")
    tx = c3.slider("Shift x", -0.8, 0.8, 0.0, key=f"{key}_tx")
    ty = c4.slider("Shift y", -0.8, 0.8, 0.0, key=f"{key}_ty")
    a = math.radians(angle)
    theta = [[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]]
    data = estimated_job("stn", {"image": np.asarray(image.convert("RGB")), "theta": theta},
                         "The spatial transformer's grid", "the spatial transformer", f"{key}_estimate")
    if data is None:  # a long job waits for its Run click (this small demo takes under a second)
        return
    grid = data["grid_xy"][0]
    fig = go.Figure(go.Image(z=np.asarray(image.resize((160, 160)))))
    for row in grid:
        fig.add_trace(go.Scatter(x=row[:, 0], y=row[:, 1], mode="lines", line=dict(color="cyan", width=1), showlegend=False))
    for col in grid.transpose(1, 0, 2):
        fig.add_trace(go.Scatter(x=col[:, 0], y=col[:, 1], mode="lines", line=dict(color="cyan", width=1), showlegend=False))
    fig.update_layout(title="Affine sampling grid over the input (pixels)", height=430, margin=dict(t=40))
    out = data["output"][0]
    out = (out - out.min()) / (out.max() - out.min() + 1e-8)
    o1, o2 = st.columns(2)
    o1.plotly_chart(fig, width="stretch", config=plot_config())
    o2.image(np.asarray(out).transpose(1, 2, 0), caption="resampled output (what the next layers see)", width="stretch")
    theta = "[" + ", ".join("[" + ", ".join(f"{v:.3g}" for v in row) + "]" for row in np.asarray(data["theta"][0])) + "]"
    st.caption(f"θ = {theta}: each output pixel samples the input where the grid puts it. "
               "In a trained STN a small localisation network predicts θ from the image itself.")


# --- the Inside page's renderer of each view of explorer.views.registry with a label, keyed by its id ------

SWIN_BLOCK_TYPES = ("SwinTransformerBlock", "SwinTransformerBlockV2")  # torchvision's and timm's


def swin_blocks(spec: ModelSpec) -> dict[str, tuple[int, int]]:
    """{block module name: (stage, from 1; block in the stage, from 0)}: the Swin blocks the window view picks by
    number, read from the cost trace (meta device); a stage is the container its blocks sit in, in order."""
    from ui.common import cost_of

    names = [row["name"] for row in cost_of(spec)["layers"] if row["type"] in SWIN_BLOCK_TYPES]
    stages = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in names))
    seen: dict[str, int] = {}
    blocks = {}
    for name in names:
        stage = name.rsplit(".", 1)[0]
        blocks[name] = (stages.index(stage) + 1, seen.get(stage, 0))
        seen[stage] = seen.get(stage, 0) + 1
    return blocks


def _inside_swin(spec: ModelSpec):
    if "swin" not in spec.arch:
        st.info("Pick a Swin model (swin_t, swin_s, swin_b) to see its windows.")
        return
    blocks = swin_blocks(spec)
    if link_layer("swin") is not None:  # the link names a block; the view's pickers take its stage and number
        start_layer_from_link("swin", list(blocks), "inside_swin_link_block", "stage 1, block 1")
        linked = st.session_state.pop("inside_swin_link_block", None)
        if linked is not None:
            st.session_state["inside_swin_stage"], st.session_state["inside_swin_block"] = blocks[linked]
    swin_mask_view(spec, key="inside_swin", controls=True)
    shown = (st.session_state.get("inside_swin_stage"), st.session_state.get("inside_swin_block"))
    keep_layer_in_link(next((name for name, place in blocks.items() if place == shown), None))


def _inside_fusion(spec: ModelSpec):
    from ui.fusion import fusion_view  # it imports this module: imported when drawn

    fusion_view(spec, key="inside_fusion")


def _inside_connectivity(spec: ModelSpec):
    from ui.connectivity import connectivity_job, connectivity_view

    if link_layer("connectivity") is not None:  # the blocks: the same job, estimate and key the view runs first
        shown = st.empty()
        with shown.container():
            found = connectivity_job(spec.key(), None, "inside_connectivity")
        if found is None:  # a long search: its estimate and Run button stay; the view waits for the click too
            return
        shown.empty()  # the view below shows the same estimate again
        start_layer_from_link("connectivity", [c["name"] for c in found["candidates"]], "inside_connectivity_block",
                              "the innermost block")
    connectivity_view(spec, key="inside_connectivity")
    keep_layer_in_link(st.session_state.get("inside_connectivity_block"))


INSIDE_RENDERERS = {
    "cam": lambda spec: cam_view(spec, key="inside_cam", from_link=True),
    "attention": lambda spec: attention_view(spec, key="inside_attn", from_link=True),
    "offsets": lambda spec: deformable_view(spec, key="inside_dcn", from_link=True),
    # erf is part of it: a button
    "rf": lambda spec: receptive_field_view(spec, key="inside_rf", with_erf=True, from_link=True),
    "swin": _inside_swin,
    "stn": lambda spec: stn_view(key="inside_stn"),
    "fusion": _inside_fusion,
    "connectivity": _inside_connectivity,
}
