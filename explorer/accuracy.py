"""Published accuracy for library models, and figures a person types in.

- timm: the library's own ImageNet results table (explorer/data/timm_results_imagenet.csv, copied from
  huggingface/pytorch-image-models; its first line names the commit). A bare architecture name means its
  default pretrained tag, as timm resolves it (``timm.models.get_pretrained_cfg``); a figure is given at the
  image size asked, or at the tag's own input size.
- torchvision: the `_metrics` of a weight's metadata (ImageNet top-1/5, COCO box / mask / keypoint AP,
  mIoU, Kinetics-400 top-1/5), with each metric's name spelled out.
- Typed figures: a metric name and a number a person enters for a model in Compare; checked here (a name
  from a small alphabet, a bounded finite number), because they arrive from a URL.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import re
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError

TIMM_RESULTS_PATH = Path(__file__).parent / "data" / "timm_results_imagenet.csv"

IMAGENET_TOP1 = "ImageNet top-1 (%)"
IMAGENET_TOP5 = "ImageNet top-5 (%)"

# torchvision's (dataset, key) in a weight's meta["_metrics"] -> the metric's name as this app writes it.
# Optical-flow end-point errors (Sintel, KITTI) are lower-is-better and not accuracy: left out.
TORCHVISION_METRICS = {
    ("ImageNet-1K", "acc@1"): IMAGENET_TOP1,
    ("ImageNet-1K", "acc@5"): IMAGENET_TOP5,
    ("COCO-val2017", "box_map"): "COCO val2017 box AP (%)",
    ("COCO-val2017", "mask_map"): "COCO val2017 mask AP (%)",
    ("COCO-val2017", "kp_map"): "COCO val2017 keypoint AP (%)",
    ("COCO-val2017-VOC-labels", "miou"): "COCO val2017 (VOC classes) mIoU (%)",
    ("COCO-val2017-VOC-labels", "pixel_acc"): "COCO val2017 (VOC classes) pixel accuracy (%)",
    ("Kinetics-400", "acc@1"): "Kinetics-400 top-1 (%)",
    ("Kinetics-400", "acc@5"): "Kinetics-400 top-5 (%)",
}


def torchvision_metrics(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """A torchvision weight's `_metrics`, named: {"COCO val2017 box AP (%)": 37.0, ...}, in the library's order
    (its first metric is the headline one)."""
    named = {}
    for dataset, values in metrics.items():
        for key, value in values.items():
            name = TORCHVISION_METRICS.get((dataset, key))
            if name and isinstance(value, (int, float)):
                named[name] = float(value)
    return named


# --- timm's results table -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def timm_results() -> tuple[str, dict[str, dict[int, dict[str, float]]]]:
    """(the table's source line, {tag: {image side: {"top1", "top5", "params_m", "crop_pct"}}})."""
    with TIMM_RESULTS_PATH.open(encoding="utf-8") as file:
        comments, lines = [], []
        for line in file:
            (comments if line.startswith("#") else lines).append(line)
    table: dict[str, dict[int, dict[str, float]]] = {}
    for row in csv.DictReader(lines):
        table.setdefault(row["model"], {})[int(row["img_size"])] = {
            "top1": float(row["top1"]), "top5": float(row["top5"]), "params_m": float(row["param_count"]),
            "crop_pct": float(row["crop_pct"])}
    source = comments[0].removeprefix("# source:").strip() if comments else "timm results-imagenet.csv"
    return source, table


def timm_tag(name: str) -> str | None:
    """The pretrained tag timm would load for `name`: the name itself when it carries a tag
    ('convnext_tiny.fb_in1k'), else the architecture's default ('convnext_tiny' -> 'convnext_tiny.in12k_ft_in1k').
    None when timm has no pretrained weights for it."""
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # an architecture with pretrained weights, but not under this tag
        return None
    if cfg is None or not cfg.tag:
        return None
    return f"{name.split('.', 1)[0]}.{cfg.tag}"


def timm_published(name: str, side: int | None = None) -> dict[str, Any] | None:
    """timm's published ImageNet figures for a model name at an input side (default: its pretrained input size):
    params_m, top1, top5, metrics, side, tag and source; None when the table has no row for them."""
    tag = timm_tag(name)
    source, table = timm_results()
    sizes = table.get(tag or "")
    if not sizes:
        return None
    if side is None:
        import timm.models

        side = int(timm.models.get_pretrained_cfg(name).input_size[-1])
    row = sizes.get(int(side))
    if row is None:
        return None
    return {"params_m": row["params_m"], "gmacs": None, "top1": row["top1"], "metric": IMAGENET_TOP1,
            "metrics": {IMAGENET_TOP1: row["top1"], IMAGENET_TOP5: row["top5"]}, "side": int(side), "tag": tag,
            "source": f"timm's results table: {tag} at {side}×{side} px ({source})"}


# --- figures a person types ---------------------------------------------------------------------------------

MAX_TYPED_FIGURES = 48  # a link may carry at most this many (a couple per model of a full comparison set)
MAX_METRIC_NAME = 60
# Letters, digits, spaces and the punctuation metric names use ("COCO val2017 box AP (%)", "top-1", "mAP@0.5").
METRIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ()%@.,:+/-]*")
PERCENT_RANGE = (0.0, 100.0)
OTHER_RANGE = (-1e6, 1e6)
TYPED_SOURCE = "typed in by a person (not checked against a paper)"


def check_typed_figure(metric: Any, value: Any) -> tuple[str, float]:
    """(metric name, value) when both are acceptable; otherwise an ExplorerError that says what is allowed.
    A percentage (a name with '%') lies in 0..100; any other figure within ±1,000,000."""
    if not isinstance(metric, str) or not metric.strip():
        raise ExplorerError("a typed figure needs a metric name, e.g. ImageNet top-1 (%)")
    metric = " ".join(metric.split())
    if len(metric) > MAX_METRIC_NAME or not METRIC_NAME.fullmatch(metric):
        raise ExplorerError(f"a metric name is 1 to {MAX_METRIC_NAME} letters, digits, spaces and ( ) % @ . , : + / -, "
                            "e.g. ImageNet top-1 (%)")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExplorerError(f"the figure for {metric} must be a finite number")
    low, high = PERCENT_RANGE if "%" in metric else OTHER_RANGE
    if not low <= value <= high:
        raise ExplorerError(f"the figure for {metric} must lie between {low:g} and {high:g}, got {value:g}")
    return metric, float(value)


def typed_figures_from_link(text: str, items: list[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The typed figures a link carries, as {item: {metric: value}} for items of the comparison set, and the
    reasons any entry was dropped (plain text: the caller escapes it). The link's form is a JSON list of
    [item, metric, value] triples, as typed_figures_to_link writes it."""
    problems: list[str] = []
    try:
        entries = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return {}, ["the typed figures are not valid JSON"]
    if not isinstance(entries, list):
        return {}, ["the typed figures are not a list of [model, metric, value] entries"]
    if len(entries) > MAX_TYPED_FIGURES:
        problems.append(f"{len(entries)} typed figures, at most {MAX_TYPED_FIGURES}: the first {MAX_TYPED_FIGURES} kept")
        entries = entries[:MAX_TYPED_FIGURES]
    figures: dict[str, dict[str, float]] = {}
    for position, entry in enumerate(entries, 1):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)):
            problems.append(f"entry {position} is not [model, metric, value]")
            continue
        item, metric, value = entry
        if item not in items:
            problems.append(f"entry {position} names a model that is not in the comparison set")
            continue
        try:
            metric, value = check_typed_figure(metric, value)
        except ExplorerError as exc:
            problems.append(f"entry {position}: {exc}")
            continue
        figures.setdefault(item, {})[metric] = value
    return figures, problems


def typed_figures_to_link(figures: dict[str, dict[str, float]]) -> str:
    return json.dumps([[item, metric, value] for item, named in figures.items() for metric, value in named.items()],
                      separators=(",", ":"))
