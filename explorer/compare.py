"""Comparing models side by side: cost against published accuracy, Pareto fronts, resolution sweeps."""
from __future__ import annotations

import json
from typing import Any

from explorer.accuracy import TYPED_SOURCE, timm_published
from explorer.catalog import published_figures, resolve
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.models import input_size_of
from explorer.reports import CompareRow, CompareSet, SweepRow
from explorer.spec import ModelSpec

# Comparisons the source documents argue about.
READY_MADE: dict[str, dict[str, Any]] = {
    "vovnet_vs_densenet": {
        "title": "VoVNet vs DenseNet: memory access cost",
        "why": "One-shot aggregation concatenates once per block instead of at every layer: VoVNet-39 does 2.5× DenseNet-121's MACs yet moves 0.66× its bytes, so it does 3.8× as many FLOPs per byte moved.",
        "specs": ["densenet121", "densenet169", "vovnet39a", "ese_vovnet39b"],
        "plot": {"x": "GMACs", "y": "memory access (MB)"},  # the argument is bytes at a given MAC count
    },
    "shufflenet_vs_mobilenet": {
        "title": "ShuffleNetV2 vs MobileNetV2: MACs vs measured latency",
        "why": "ShuffleNetV2's guidelines say MACs alone mispredict speed; compare MACs, memory access cost and latency.",
        "specs": ["shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "mobilenet_v2", "mobilenet_v3_large"],
    },
    "resnet_family": {
        "title": "ResNet vs ResNeXt vs SE / SK / ECA variants",
        "why": "Same backbone, different block: cardinality and channel attention cost little compute for their accuracy.",
        "specs": ["resnet50", "resnext50_32x4d", "seresnet50", "skresnext50_32x4d",
                  json.dumps({"arch": "resnet50", "swaps": ["preset:eca"]})],
    },
    "vit_swin_pvt": {
        "title": "ViT vs Swin vs PVT across resolutions",
        "why": "Doubling the side quadruples the tokens: Swin's windowed attention then costs 4× the MACs, while ViT's global attention and PVT's spatially reduced attention, both quadratic in the tokens, cost more than 4×.",
        "specs": ["vit_b_16", "swin_t", "pvt_v2_b2"],
        "sweep": [160, 224, 320, 384],
    },
    "efficientnet_scaling": {
        "title": "EfficientNet B0–B7: compound scaling",
        "why": "Depth, width and resolution grow together (α=1.2, β=1.1, γ=1.15), roughly doubling FLOPs per step.",
        "specs": [f"efficientnet_b{i}" for i in range(8)],
    },
}


def spec_from_item(item: str | dict) -> ModelSpec:
    """A comparison item: a catalog id / library name, or a spec as a dict or JSON text."""
    if isinstance(item, dict):
        return ModelSpec.from_dict(item)
    text = item.strip()
    if text.startswith("{"):
        try:
            return ModelSpec.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ExplorerError(f"comparison item is not valid JSON: {exc.msg}") from None
    return ModelSpec(text)


def label_of(spec: ModelSpec) -> str:
    label = spec.arch
    if spec.swaps:
        label += " + " + " + ".join(spec.swaps)
    if spec.input_size:
        label += f" @{'×'.join(map(str, spec.input_size))}"
    return label


def published_for(spec: ModelSpec) -> dict[str, Any]:
    """The published figures that describe `spec`'s network: none for a swapped or re-optioned model; at another
    input size, only a table that has a figure at that size (timm's results are per image size)."""
    if spec.swaps or spec.options:
        return {}
    variant = resolve(spec.arch)
    if spec.input_size is None or tuple(spec.input_size) == tuple(input_size_of(ModelSpec(spec.arch))):
        return published_figures(variant)
    size = tuple(spec.input_size)
    if variant.library == "timm" and not (variant.published or {}) and len(size) == 3 and size[1] == size[2]:
        return timm_published(variant.name, size[1]) or {}
    return {}


def compare_row(spec: ModelSpec) -> CompareRow:
    result = analyse(spec, with_layers=False)
    published = published_for(spec)
    metrics = dict(published.get("metrics") or {})
    top1 = published.get("top1")
    return {
        "label": label_of(spec),
        "spec": spec.to_dict(),
        "input": "×".join(map(str, result["input_shape"][1:])),
        "params_m": result["params"] / 1e6,
        "gmacs": result["macs"] / 1e9,
        "memory_access_mb": result["memory_access_bytes"] / 1e6,
        "activations_m": result["activations"] / 1e6,
        "intensity_flops_per_byte": result["flops"] / result["memory_access_bytes"] if result["memory_access_bytes"] else None,
        "published_top1": top1,
        "published_metric": published.get("metric") if top1 is not None else None,
        "published_source": published.get("source") if top1 is not None else None,
        # every published accuracy of the row, each with its source (a typed figure names itself as such)
        "published": metrics,
        "published_sources": {metric: published.get("source") for metric in metrics},
    }


def with_typed_figures(row: dict[str, Any], figures: dict[str, float]) -> dict[str, Any]:
    """A copy of a comparison row with figures a person typed (checked by explorer.accuracy.check_typed_figure):
    each one adds or replaces that metric, named as typed; the first becomes the headline when the row had none."""
    if not figures:
        return row
    row = {**row, "published": dict(row.get("published") or {}), "published_sources": dict(row.get("published_sources") or {})}
    for metric, value in figures.items():
        row["published"][metric] = value
        row["published_sources"][metric] = TYPED_SOURCE
    headline = row["published_metric"] if row["published_metric"] in row["published"] else next(iter(figures))
    row.update(published_metric=headline, published_top1=row["published"][headline],
               published_source=row["published_sources"][headline])
    return row


def published_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """Every published metric the rows carry: the rows' headline metrics first (ImageNet top-1 before the top-5
    that comes with it), each group by how many rows have it, then by name."""
    counts: dict[str, int] = {}
    for row in rows:
        for metric in row.get("published") or {}:
            counts[metric] = counts.get(metric, 0) + 1
    headlines = {row.get("published_metric") for row in rows}
    return sorted(counts, key=lambda m: (m not in headlines, -counts[m], m))


def pareto_front(rows: list[dict[str, Any]], cost_key: str, metric: str) -> list[str]:
    """Labels of the rows no other row beats on both lower cost and higher published `metric`."""
    points = [(r["label"], r[cost_key], r["published"][metric]) for r in rows
              if r.get(cost_key) is not None and (r.get("published") or {}).get(metric) is not None]
    front = [(label, cost, value) for label, cost, value in points
             if not any(c <= cost and v >= value and (c < cost or v > value) for _, c, v in points)]
    return [label for label, _, _ in sorted(front, key=lambda point: point[1])]


COST_AXES = ("gmacs", "params_m", "memory_access_mb")
TRAINING_AXES = ("training_memory_gb", "training_step_gmacs")
TRAINING_SETTINGS = "batch 1, fp32, Adam"


def pareto_fronts(rows: list[dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """metric → cost axis → its Pareto front, for every published metric and every cost axis the rows carry
    (latency and the training axes only when compare_set measured them)."""
    axes = [axis for axis in COST_AXES + ("latency_ms",) + TRAINING_AXES if any(axis in row for row in rows)]
    return {m: {axis: pareto_front(rows, axis, m) for axis in axes} for m in sorted(published_metrics(rows))}


def training_costs(spec: ModelSpec) -> dict[str, float]:
    """A training step's peak memory (GB, 1e9 bytes) and MACs (G) at the spec's batch, fp32 with Adam: the
    Compare page's and CLI's training axes (explorer.memory traces them on the meta device)."""
    from explorer.memory import memory_report

    report = memory_report(spec, train=True, optimizer="adam", with_layers=False)
    return {"training_memory_gb": report["peak_bytes"] / 1e9, "training_step_gmacs": report["training_step_macs"] / 1e9}


def compare_set(specs: list[ModelSpec], sides: list[int] = (), latency: bool = False,
                training: bool = False) -> CompareSet:
    """What the Compare page shows, as data: one row per spec (with quick batch-1 latency on this
    machine's best device when asked), the Pareto front of each published metric against each cost
    axis, and the resolution sweep at `sides`. With `training`, each row also has a training step's peak memory
    and MACs (TRAINING_AXES), and those are cost axes too."""
    from explorer.latency import best_device

    device = best_device() if latency else None
    rows = []
    for spec in specs:
        row = compare_row(spec)
        if device:
            timing = quick_latency(spec, device)
            row.update(latency_ms=timing["latency_ms"], latency_device=timing["device_name"])
        if training:
            row.update(training_costs(spec))
        rows.append(row)
    pareto = pareto_fronts(rows)
    sweep = [row for spec in specs for row in resolution_sweep(spec, list(sides), device)] if sides else []
    return {"rows": rows, "pareto": pareto, "sweep": sweep}


def quick_latency(spec: ModelSpec, device: str) -> dict[str, Any]:
    """Batch-1 median latency with explorer.latency.quick_settings: latency_ms (None if the run failed),
    device_name and error."""
    from explorer.latency import bench, quick_settings

    timing = bench(spec, quick_settings(device))
    return {"latency_ms": timing["results"][0]["median_ms"] if timing["results"] else None,
            "device_name": timing["settings"]["device_name"], "error": timing["error"]}


def resolution_sweep(spec: ModelSpec, sides: list[int], latency_device: str | None = None) -> list[SweepRow]:
    """MACs and memory access at each square input side (models that cannot take a size say so);
    with `latency_device`, also the quick batch-1 latency there (explorer.latency.quick_settings)."""
    rows = []
    channels = input_size_of(spec)[0]
    for side in sides:
        sized = spec.with_(input_size=[channels, side, side])
        row = {"label": label_of(spec), "side": side, "gmacs": None, "memory_access_mb": None, "error": None}
        try:
            result = analyse(sized, with_layers=False)
            row.update(gmacs=result["macs"] / 1e9, memory_access_mb=result["memory_access_bytes"] / 1e6)
            if latency_device:
                timing = quick_latency(sized, latency_device)
                row.update(latency_ms=timing["latency_ms"], error=timing["error"])
        except ExplorerError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def msa_macs(tokens: int, dim: int) -> int:
    """Global multi-head self-attention of one layer, in multiply-adds: 4NC² + 2N²C (Swin paper, eq. 1)."""
    return 4 * tokens * dim * dim + 2 * tokens * tokens * dim


def w_msa_macs(h: int, w: int, dim: int, window: int) -> int:
    """Window attention of one layer: 4hwC² + 2M²hwC (Swin paper, eq. 2)."""
    return 4 * h * w * dim * dim + 2 * window * window * h * w * dim


def attention_formula_sweep(sides: list[int]) -> list[dict[str, Any]]:
    """One attention layer of ViT-B/16 (global) and Swin-T stage 1 (windows of 7): the cost engine's
    count beside the formulas, at square input sides (multiples of 28 keep Swin's windows unpadded)."""
    rows = []
    for side in sides:
        vit = analyse(ModelSpec("vit_b_16", input_size=(3, side, side)))
        layer = next(r for r in vit["layers"] if r["name"] == "encoder.layers.encoder_layer_0.self_attention")
        tokens = (side // 16) ** 2 + 1  # patches + the class token
        rows.append({"model": "ViT-B/16, layer 1 (global MSA)", "side": side, "tokens": tokens,
                     "measured_macs": layer["macs"], "formula_macs": msa_macs(tokens, 768), "formula": "4NC² + 2N²C"})
        swin = analyse(ModelSpec("swin_t", input_size=(3, side, side)))
        layer = next(r for r in swin["layers"] if r["name"] == "features.1.0.attn")
        h = w = side // 4
        rows.append({"model": "Swin-T, stage 1 block 1 (W-MSA, M=7)", "side": side, "tokens": h * w,
                     "measured_macs": layer["macs"], "formula_macs": w_msa_macs(h, w, 96, 7), "formula": "4hwC² + 2M²hwC"})
        rows.append({"model": "global MSA at Swin-T stage 1 (what windows avoid)", "side": side, "tokens": h * w,
                     "measured_macs": None, "formula_macs": msa_macs(h * w, 96), "formula": "4NC² + 2N²C"})
    return rows
