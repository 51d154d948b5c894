"""Views inside a model: receptive fields and Swin's shifted-window masks (used by the Inside and Tours pages)."""
from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer.backend import BACKEND
from explorer.spec import ModelSpec


@st.cache_data(max_entries=32, show_spinner=False)
def _rf(spec_key: str) -> dict:
    return BACKEND.receptive_field(json.loads(spec_key))


@st.cache_data(max_entries=32, show_spinner=False)
def _erf(spec_key: str, layer: str) -> dict:
    return BACKEND.effective_receptive_field(json.loads(spec_key), layer)


@st.cache_data(max_entries=64, show_spinner=False)
def _swin(spec_key: str, stage: int, block: int, window: int | None) -> dict:
    return BACKEND.swin_masks(json.loads(spec_key), stage, block, window)


def receptive_field_view(spec: ModelSpec, layer: str | None = None, key: str = "rf", with_erf: bool = False):
    """Theoretical receptive field of every layer across depth; the chosen layer highlighted."""
    with st.spinner("Tracing the graph for receptive fields…"):
        report = _rf(spec.key())
    rows = [r for r in report["rows"] if r["op"] != "container"]
    names = [r["name"] for r in rows]
    default = names.index(layer) if layer in names else max(0, len(names) - 1 - next(
        (i for i, r in enumerate(reversed(rows)) if not r["global"]), 0))
    chosen = st.selectbox("Layer", names, index=default, key=f"{key}_layer")
    row = rows[names.index(chosen)]
    c1, c2, c3 = st.columns(3)
    c1.metric("Receptive field (pixels)", "whole input" if row["global"] else f"{row['rf'][0]} × {row['rf'][1]}")
    c2.metric("Jump / stride (pixels)", f"{row['jump'][0]} × {row['jump'][1]}")
    c3.metric("First unit's centre (pixel)", f"({row['start'][0]}, {row['start'][1]})")
    fig = go.Figure()
    local = [(i, r) for i, r in enumerate(rows) if not r["global"]]
    fig.add_trace(go.Scatter(x=[i for i, _ in local], y=[r["rf"][0] for _, r in local], mode="lines+markers",
                             name="receptive field (pixels)", text=[r["name"] for _, r in local],
                             hovertemplate="%{text}<br>rf %{y} px<extra></extra>"))
    fig.add_trace(go.Scatter(x=[i for i, _ in local], y=[r["jump"][0] for _, r in local], mode="lines",
                             name="jump (pixels)", text=[r["name"] for _, r in local], hovertemplate="%{text}<br>jump %{y} px<extra></extra>"))
    fig.add_vline(x=names.index(chosen), line_dash="dash")
    fig.update_layout(xaxis_title="layer (execution order)", yaxis_title="pixels (height)", height=380,
                      title=f"Theoretical receptive field across depth ({report.get('method', 'fx')} trace)")
    st.plotly_chart(fig, width="stretch")
    if row.get("note"):
        st.caption(f"{chosen}: {row['note']}")
    if row.get("approximate"):
        st.caption("This row is approximate (window attention, interpolation or uneven adaptive pooling).")
    if with_erf and not row["global"]:
        if st.button("Effective receptive field of this layer's centre unit (Luo et al. 2016)", key=f"{key}_erf"):
            with st.spinner("Back-propagating from the centre unit on 4 random inputs…"):
                erf = _erf(spec.key(), chosen)
            box = erf["box"]
            heat = go.Figure(go.Heatmap(z=erf["map"], colorscale="Inferno", colorbar=dict(title="|∂y/∂x|, max 1")))
            heat.add_shape(type="rect", x0=box["x0"] - 0.5, x1=box["x1"] - 0.5, y0=box["y0"] - 0.5, y1=box["y1"] - 0.5,
                           line=dict(color="cyan", width=2))
            heat.update_yaxes(autorange="reversed", scaleanchor="x", title="y (pixels)")
            heat.update_xaxes(title="x (pixels)")
            heat.update_layout(height=520, title="Effective receptive field (heat) inside the theoretical box (cyan)")
            st.plotly_chart(heat, width="stretch")
            st.caption("Random weights: the effective field of a trained network is typically smaller and Gaussian-like.")
    with st.expander("All layers"):
        st.dataframe(pd.DataFrame(rows)[["name", "type", "rf", "jump", "start", "output_hw", "global", "approximate"]],
                     hide_index=True, width="stretch")


def swin_mask_view(spec: ModelSpec, stage: int = 1, block: int = 1, key: str = "swin", controls: bool = False):
    """Window grid, cyclic shift, region labels and the attention mask of one window."""
    window = None
    if controls:
        c1, c2, c3 = st.columns(3)
        stage = c1.selectbox("Stage", [1, 2, 3, 4], index=stage - 1, key=f"{key}_stage")
        block = c2.number_input("Block in the stage (0 = first; odd blocks are shifted)", 0, 17, block, key=f"{key}_block")
        window = c3.number_input("Window size (0 = the model's own)", 0, 32, 0, key=f"{key}_window") or None
    with st.spinner("Reading the model's windows…"):
        data = _swin(spec.key(), int(stage), int(block), window)
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
    c1.plotly_chart(labels, width="stretch")
    masked = [i for i, m in enumerate(data["masked_pairs"]) if m] or [0]
    index = c2.selectbox("Window", list(range(data["total_windows"])), index=masked[-1], key=f"{key}_window_index",
                         help="Windows in row-major order; the last one mixes the most regions")
    mask = go.Figure(go.Heatmap(z=data["masks"][index], colorscale=[[0, "#b2182b"], [1, "#f7f7f7"]], zmin=-100, zmax=0,
                                colorbar=dict(title="added to the attention logit"),
                                hovertemplate="query %{y}, key %{x}: %{z}<extra></extra>"))
    mask.update_yaxes(autorange="reversed", scaleanchor="x", title="query token in the window")
    mask.update_xaxes(title="key token in the window")
    mask.update_layout(title=f"Attention mask of window {index} (−100 = blocked)", height=460)
    c2.plotly_chart(mask, width="stretch")


# --- image, weights and CAMs --------------------------------------------------------------------------

def choose_image(key: str):
    """A sample image or an upload: (PIL image, notes) or None, with a message for bad files."""
    from explorer.images import load_image, sample_images

    samples = sample_images()
    c1, c2 = st.columns([1, 2])
    source = c1.radio("Image", ["sample", "upload"], horizontal=True, key=f"{key}_source")
    if source == "sample":
        name = c2.selectbox("Sample", list(samples), key=f"{key}_sample")
        return load_image(samples[name])
    upload = c2.file_uploader("Upload an image", type=None, key=f"{key}_upload")
    if upload is None:
        st.caption("Upload a PNG, JPEG, WebP, BMP or TIFF image (at most 40 megapixels).")
        return None
    return load_image(upload.getvalue())


def choose_weights(key: str) -> dict:
    c1, c2 = st.columns([1, 2])
    kind = c1.radio("Weights", ["random", "pretrained", "checkpoint"], horizontal=True, key=f"{key}_weights",
                    help="pretrained: the library's own weights, from its cache; checkpoint: a file you upload")
    if kind == "pretrained":
        allow = c2.checkbox("Allow downloading them if they are not cached", key=f"{key}_allow_download")
        return {"kind": "pretrained", "allow_download": allow}
    if kind == "checkpoint":
        upload = c2.file_uploader("Checkpoint (.safetensors, .pt, .pth; loaded weights-only)", key=f"{key}_ckpt")
        if upload is None:
            return {"kind": "random"}
        return {"kind": "checkpoint", "name": upload.name, "data": upload.getvalue()}
    st.caption("Random weights: CAMs and attention maps of an untrained network look like noise.")
    return {"kind": "random"}


@st.cache_resource(max_entries=2, show_spinner=False)
def _model_with_weights(spec_key: str, kind: str, allow_download: bool, checkpoint_name: str, _checkpoint: bytes | None,
                        checkpoint_digest: str):
    from explorer.catalog import resolve
    from explorer.models import build_model
    from explorer.weights import load_pretrained, load_state, read_checkpoint

    spec = ModelSpec.from_dict(json.loads(spec_key))
    model = build_model(spec, device="cpu")
    report = None
    if kind == "pretrained":
        report = load_pretrained(model, resolve(spec.arch), allow_download=allow_download)
    elif kind == "checkpoint":
        report = load_state(model, read_checkpoint(_checkpoint, checkpoint_name), source=checkpoint_name)
    return model.eval(), report


def model_with_weights(spec: ModelSpec, weights: dict):
    import hashlib

    data = weights.get("data")
    return _model_with_weights(spec.key(), weights["kind"], bool(weights.get("allow_download")), weights.get("name", ""),
                               data, hashlib.sha256(data).hexdigest() if data else "")


def weights_report(report: dict | None):
    if not report:
        return
    st.caption(f"Loaded {report['loaded']} tensors from {report['source']}.")
    problems = []
    if report["missing"]:
        problems.append(f"missing in the checkpoint: {', '.join(report['missing'][:8])}" + (" …" if len(report["missing"]) > 8 else ""))
    if report["unexpected"]:
        problems.append(f"not in the model: {', '.join(report['unexpected'][:8])}" + (" …" if len(report["unexpected"]) > 8 else ""))
    if report["mismatched"]:
        problems.append("shape mismatches: " + ", ".join(f"{m['key']} {m['checkpoint']}≠{m['model']}" for m in report["mismatched"][:5]))
    if problems:
        st.warning("; ".join(problems))


def class_names(spec: ModelSpec) -> list[str] | None:
    from explorer.catalog import resolve, torchvision_weights_meta

    variant = resolve(spec.arch)
    if variant.library == "torchvision":
        meta = torchvision_weights_meta(variant.name) or {}
        return meta.get("categories")
    import torchvision

    return torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"]  # ImageNet-1k, for timm models too


def cam_view(spec: ModelSpec, key: str = "cam"):
    from explorer.images import heat_overlay, to_input
    from explorer.models import input_size_of
    from explorer.views.cam import ATTRIBUTION_METHODS, CAM_METHODS, cam_layers, compute_attribution, compute_cam

    loaded = choose_image(key)
    weights = choose_weights(key)
    if loaded is None:
        return
    image, notes = loaded
    for note in notes:
        st.caption(f"Image: {note}.")
    model, report = model_with_weights(spec, weights)
    weights_report(report)
    x = to_input(image, input_size_of(spec))
    c1, c2, c3 = st.columns([1, 2, 1])
    method = c1.selectbox("Method", list(CAM_METHODS) + list(ATTRIBUTION_METHODS), key=f"{key}_method",
                          help="scorecam runs one forward pass per channel: slow on a CPU")
    layers = [r["name"] for r in cam_layers(model, x)]
    layer = None
    if method in CAM_METHODS:
        choice = c2.selectbox("Target layer", ["(derived from the model)"] + layers[::-1], key=f"{key}_layer")
        layer = None if choice.startswith("(") else choice
    class_text = c3.text_input("Class index", placeholder="top class", key=f"{key}_class")
    class_index = int(class_text) if class_text.strip().lstrip("-").isdigit() else None
    if class_text.strip() and class_index is None:
        st.error("The class index must be an integer.")
        return
    with st.spinner(f"Running {method}…"):
        if method in ATTRIBUTION_METHODS:
            result = compute_attribution(model, x, method, class_index)
        else:
            result = compute_cam(model, x, method, layer, class_index)
    names = class_names(spec)
    label = names[result["class_index"]] if names and result["class_index"] < len(names) else f"class {result['class_index']}"
    o1, o2 = st.columns(2)
    o1.image(image, caption="input", width="stretch")
    o2.image(heat_overlay(image, result["heat"]), width="stretch",
             caption=f"{method} for {label}" + (f" at {result['layer']}" if result.get("layer") else " (input pixels)"))
    if result.get("note"):
        st.warning(result["note"])
    if result.get("top5"):
        st.caption("Top classes: " + ", ".join(
            f"{names[t['class']] if names and t['class'] < len(names) else t['class']} ({t['probability']:.1%})"
            for t in result["top5"]))
