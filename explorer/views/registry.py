"""The one list of views inside a model: what the Inside page offers (its radio labels, also `?view=<label>`),
what the Swap page shows beside the original, what `python -m explorer view ARCH <id>` runs, and which job
kind computes each. The pages map each id to a renderer (ui.inside.INSIDE_RENDERERS,
ui.swap_inside.SWAP_RENDERERS); the CLI runs the job kind in-process and summarises its result here, so the
page and the CLI compute through the same function.

Plain Python: no streamlit, and nothing heavy is imported until a summary or computation runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from explorer.errors import ExplorerError
from explorer.spec import ModelSpec

# What a person supplies besides the model: an image (a sample or an upload), a layer name, a block (Swin's
# stage and block, or the block of grouped convs whose channel paths are traced), or nothing.
NEEDS = ("image", "layer", "block", "nothing")

Summary = Callable[[dict, ModelSpec], "tuple[dict[str, Any], dict[str, Any]]"]


@dataclass(frozen=True)
class ViewSpec:
    id: str  # the CLI's name for it
    label: str | None  # the Inside page's radio label; None: drawn inside the view `part_of` names
    needs: str  # one of NEEDS
    job_kind: str  # the explorer.job_kinds.JOB_KINDS entry that computes it (for the pages and the CLI alike)
    summarize: Summary  # the CLI's JSON summary and the arrays `--out FILE.npz` keeps, from the computed result
    about: str  # one line for the CLI's help
    tokens: bool = False  # also runs on token models (their seeded example ids stand in for the image)
    swap_label: str | None = None  # the Swap page's label, when it shows the view beside the original
    part_of: str | None = None  # the view whose page draws this one
    cli_options: tuple[str, ...] = ()  # the `view` flags it reads besides the model's (their argparse dests)
    cli_settings: Callable[[Mapping[str, Any]], dict[str, Any]] = lambda options: {}  # the job's settings


# --- the CLI's summaries: (JSON summary, arrays for --out) from the computed result ---------------------

def cam_result(result: dict) -> tuple[dict[str, Any], Any]:
    """The cam job's result as the CLI reports it (without the page's layer list and weights report), and its heat map."""
    rest = {k: v for k, v in result.items() if k not in ("heat", "layers", "weights_report")}
    return rest, result["heat"]


def _cam_summary(result, spec):
    rest, heat = cam_result(result)
    return {**rest, "heat_shape": list(heat.shape), "heat_mean": float(heat.mean())}, {"heat": heat}


def _attention_summary(result, spec):
    data = result["data"]
    if data is None:
        raise ExplorerError(result["absent"])
    layers = [{"name": k, **{f: data["info"][k][f] for f in ("kind", "heads", "queries", "keys")},
               "shape": list(data["maps"][k].shape)} for k in data["layers"]]
    return ({"family": data["family"], "library": data["library"], "layers": layers,
             "patch_grid": data["patch_grid"], "num_prefix_tokens": data["num_prefix_tokens"]},
            {k.replace("#", "_call"): v for k, v in data["maps"].items()})


def _offsets_summary(result, spec):
    captures = result["captures"]
    if not captures:
        raise ExplorerError(f"{spec.arch} has no deformable conv (try --swap preset:dcnv2)")
    layers = [{"name": name, "type": c["type"], "kernel_size": c["kernel_size"], "output_hw": c["output_hw"],
               "mean_offset_pixels": float(c["magnitude"].mean()),
               "mean_modulation": None if c["mask"] is None else float(c["mask"].mean())}
              for name, c in captures.items()]
    arrays = {f"{name}.offset": c["offset"] for name, c in captures.items()}
    arrays.update({f"{name}.mask": c["mask"] for name, c in captures.items() if c["mask"] is not None})
    return {"layers": layers}, arrays


def _rf_summary(result, spec):
    import numpy as np

    rows = result["rows"]
    arrays = {field: np.asarray([r[field] for r in rows], dtype=np.float64).reshape(len(rows), 2)
              for field in ("rf", "jump", "start")}  # pixels, one (height, width) row per layer, in `rows` order
    return dict(result), arrays


def _erf_summary(result, spec):
    import numpy as np

    rest = {k: v for k, v in result.items() if k != "map"}
    heat = np.asarray(result["map"], dtype=np.float32)
    return {**rest, "map_shape": list(heat.shape)}, {"map": heat}


_SWIN_ARRAYS = ("labels", "labels_unrolled", "window_labels", "masks", "masked_pairs")


def _swin_summary(result, spec):
    import numpy as np

    return ({k: v for k, v in result.items() if k not in _SWIN_ARRAYS},
            {k: np.asarray(result[k]) for k in _SWIN_ARRAYS if k in result})


def _stn_summary(result, spec):
    arrays = {k: v for k, v in result.items() if hasattr(v, "shape")}
    return {k: v for k, v in result.items() if k not in arrays}, arrays


def _fusion_summary(result, spec):
    report = result["report"]
    if report is None:
        raise ExplorerError(result["absent"])
    if report["kind"] == "asff":
        return ({"kind": "asff", "input_levels": report["input_levels"], "mean_weights": report["mean_weights"]},
                dict(report["maps"]))
    return {"kind": "sfam", "per_tum": report["per_tum"].tolist()}, {"per_tum": report["per_tum"]}


def _connectivity_summary(result, spec):
    if "candidates" in result:  # no block was named: say which blocks can be traced
        names = [c["name"] for c in result["candidates"]]
        hint = f"; blocks with grouped convs here: {', '.join(names[:8])}{' …' if len(names) > 8 else ''}" if names \
            else "; this model has no block of grouped convs (try --swap conv:igcv2@layer1.0.conv1 on a ResNet)"
        raise ExplorerError(f"the connectivity view needs --layer BLOCK{hint}")
    report = dict(result["report"])
    factors = report.pop("factors")
    paths = report.pop("paths")
    report["factors"] = [{k: v for k, v in f.items() if k not in ("matrix", "so_far")} for f in factors]
    arrays = {"paths": paths, **{f"factor{i}.{f['name']}": f["matrix"] for i, f in enumerate(factors)}}
    return report, arrays


# --- the CLI's settings: the job's payload entries from the `view` flags ---------------------------------

def _given(options: Mapping[str, Any], name: str, default=None):
    value = options.get(name)
    return default if value is None else value


def _cam_settings(options):
    return {"method": _given(options, "method", "gradcam++"), "layer": options.get("layer"),
            "class_index": options.get("class_index")}


def _erf_settings(options):
    if not options.get("layer"):
        raise ExplorerError("the erf view needs --layer NAME (see `python -m explorer rf ARCH`)")
    return {"layer": options["layer"]}


def _swin_settings(options):
    return {"stage": _given(options, "stage", 1), "block": _given(options, "block", 1), "window": options.get("window")}


VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec("cam", "Grad-CAM++ and attributions", "image", "cam", _cam_summary,
             "Grad-CAM++ and its siblings, or Captum attributions, on an image",
             swap_label="Grad-CAM++ and friends", cli_options=("method", "layer", "class_index"),
             cli_settings=_cam_settings),
    ViewSpec("attention", "Attention maps", "image", "attention", _attention_summary,
             "every attention layer's maps (token models: over their example ids)", tokens=True),
    ViewSpec("offsets", "Deformable offsets", "image", "offsets", _offsets_summary,
             "the offsets (and DCNv2 modulation) of every deformable conv", swap_label="Deformable offsets"),
    ViewSpec("rf", "Receptive fields", "nothing", "receptive_field", _rf_summary,
             "the theoretical receptive field, jump and start of every layer",
             swap_label="Receptive field across depth"),
    ViewSpec("erf", None, "layer", "erf", _erf_summary,
             "the effective receptive field of a layer's centre unit (Luo et al. 2016)", part_of="rf",
             cli_options=("layer",), cli_settings=_erf_settings),
    ViewSpec("swin", "Swin shifted windows", "block", "swin_masks", _swin_summary,
             "Swin's window grid, cyclic shift and attention masks of one stage and block",
             swap_label="Swin windows", cli_options=("stage", "block", "window"), cli_settings=_swin_settings),
    ViewSpec("stn", "Spatial transformer", "image", "stn", _stn_summary,
             "a spatial transformer's affine grid and resampled output"),
    ViewSpec("fusion", "Fusion weights", "image", "fusion", _fusion_summary,
             "ASFF's per-pixel level weights or M2Det's SFAM weights"),
    ViewSpec("connectivity", "Channel connectivity", "block", "connectivity", _connectivity_summary,
             "the channel paths through a block of grouped convs", swap_label="Channel connectivity",
             cli_options=("layer",), cli_settings=lambda options: {"module": options.get("layer")}),
)

VIEW_IDS: tuple[str, ...] = tuple(v.id for v in VIEWS)


def view_by_id(view_id: str) -> ViewSpec:
    for view in VIEWS:
        if view.id == view_id:
            return view
    raise ExplorerError(f"unknown view {str(view_id)[:80]!r}; the views: {', '.join(VIEW_IDS)}")


def inside_views() -> tuple[ViewSpec, ...]:
    """The Inside page's radio options, in order."""
    return tuple(v for v in VIEWS if v.label is not None)


def swap_views() -> tuple[ViewSpec, ...]:
    """The views the Swap page shows beside the original, in order."""
    return tuple(v for v in VIEWS if v.swap_label is not None)


def view_by_label(label: str | None) -> ViewSpec | None:
    return next((v for v in inside_views() if v.label == label), None)
