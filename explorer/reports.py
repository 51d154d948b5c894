"""The shapes of the engine's main results: the keys every page, the CLI's JSON, the measured table and the
tests share, each with its unit.

These are ``TypedDict``s: the results stay plain JSON-friendly dicts (what the CLI prints and a job returns),
and the annotations state the contract once. Conventions: MACs are multiply-accumulates and FLOPs = 2 × MACs;
memory access cost is elements / bytes read and written by every op that is not a view (a different quantity,
never called MACs); bytes are of the report's dtype (fp32 unless stated). A test checks that a real report's
keys are exactly these (tests/engine/test_reports.py).
"""
# No `from __future__ import annotations` here: TypedDict must see NotRequired as an object, not a string.
from typing import Any, NotRequired, TypedDict

# ---------------------------------------------------------------------------------------------
# Cost (explorer.cost.analyse)
# ---------------------------------------------------------------------------------------------


class OpRow(TypedDict):
    """One aten operator's total over the forward (``CostReport["ops"]``)."""
    op: str  # aten operator, e.g. "aten.convolution.default"
    category: str  # "mac" (has a MAC formula), "elementwise", "data" (moves data only) or "uncounted"
    count: int  # calls in one forward
    macs: int  # multiply-accumulates, summed over the calls
    elementwise_ops: int  # elementwise operations, summed over the calls
    memory_access_bytes: int  # bytes read + written, summed over the calls


class UncountedOp(TypedDict):
    """An operator with no cost formula: listed, never silently zero (``CostReport["uncounted_ops"]``)."""
    op: str  # aten operator
    count: int  # calls in one forward
    modules: list[str]  # up to 8 module names that called it, sorted


class LayerRow(TypedDict):
    """One module of the model, in ``named_modules`` order (``CostReport["layers"]``). Inclusive figures
    count the module and everything it calls; ``self_*`` figures only the ops it runs itself."""
    name: str  # module name; "(model)" for the root
    type: str  # class name
    depth: int  # 0 for the root, 1 + the number of dots otherwise
    is_leaf: bool  # has no child modules
    calls: int  # times the module ran in one forward
    output_shape: Any  # its output's shape (list of ints), up to 4 shapes for several outputs, None if it never ran
    output_elements: int  # elements of its output tensors
    params: int  # parameters, its children's included (count)
    trainable_params: int  # parameters with requires_grad (count)
    self_params: int  # its own parameters, not its children's (count)
    macs: int  # multiply-accumulates, inclusive
    self_macs: int  # multiply-accumulates of its own ops
    flops: int  # 2 × macs
    elementwise_ops: int  # elementwise operations, inclusive
    memory_access_bytes: int  # bytes read + written, inclusive
    memory_access_elements: int  # elements read + written, inclusive
    self_memory_access_bytes: int  # bytes read + written by its own ops
    activations: int  # elements written by conv / linear / attention ops, inclusive
    share_macs: float  # macs / the model's macs (0..1; 0 when the model has none)
    share_memory_access: float  # memory_access_bytes / the model's (0..1)


class CostReport(TypedDict):
    """``explorer.cost.analyse``: the cost of one spec's model, one forward of ``input_shape``."""
    spec: dict[str, Any]  # the ModelSpec as a dict (ModelSpec.from_dict rebuilds it)
    arch: str  # the spec's arch, as given
    builder: str  # "torchvision:NAME", "timm:NAME" or "native:NAME"
    input_shape: list[int]  # [batch, *per-sample input]
    params: int  # parameters (count)
    trainable_params: int  # parameters with requires_grad (count)
    macs: int  # multiply-accumulates
    flops: int  # 2 × macs
    elementwise_ops: int  # elementwise operations (activations, additions, normalisation, pooling, ...)
    memory_access_bytes: int  # bytes read + written by every op that is not a view, in `dtype`
    memory_access_elements: int  # elements read + written
    activations: int  # elements written by conv / linear / attention ops (the RegNet paper's definition)
    dtype: str  # "fp32", "fp16" or "bf16": the weights' and input's dtype
    traced_on: str  # "meta" (shapes only) or "cpu" (data-dependent models, seeded random weights)
    uncounted_ops: list[UncountedOp]  # ops with no cost formula
    ops: list[OpRow]  # per aten operator, most MACs first
    layers: NotRequired[list[LayerRow]]  # per module; absent when asked for totals only (with_layers=False)


# ---------------------------------------------------------------------------------------------
# Latency (explorer.latency.bench)
# ---------------------------------------------------------------------------------------------


class Timing(TypedDict):
    """``explorer.latency.time_forward``: the stats of one batch size's timed forwards."""
    median_ms: float  # median time of one forward, milliseconds
    p10_ms: float  # 10th percentile, milliseconds
    p90_ms: float  # 90th percentile, milliseconds
    runs: int  # timed runs
    warmup_runs: int  # untimed runs before them


class BenchRow(Timing):
    """One batch size of a latency sweep (``BenchResult["results"]``)."""
    batch: int  # samples per forward
    throughput_per_s: float  # samples per second at the median time
    achieved_tflops: float  # FLOPs of the forward / median time, in 10¹² FLOP/s
    achieved_gb_per_s: float  # memory access bytes of the forward / median time, in 10⁹ B/s


class LayerTime(TypedDict):
    """One leaf module's time from torch.profiler (``BenchResult["layers"]``), at the first batch size."""
    name: str  # module name
    type: str  # class name
    time_ms: float  # time per forward, milliseconds
    share_time: float  # time_ms / the sum over leaves (0..1)
    macs: int  # multiply-accumulates at the batch
    memory_access_bytes: int  # bytes read + written at the batch
    arithmetic_intensity: float | None  # FLOPs per byte moved (None when it moves nothing)
    achieved_tflops: float | None  # 10¹² FLOP/s (None for a zero time)
    achieved_gb_per_s: float | None  # 10⁹ B/s (None for a zero time)


class BenchResult(TypedDict):
    """``explorer.latency.bench``: real kernels timed at each batch size."""
    spec: dict[str, Any]  # the ModelSpec as a dict
    arch: str  # the spec's arch
    input_shape_per_sample: list[int]  # per-sample input, without the batch
    macs_per_sample: int  # multiply-accumulates of one sample (explorer.cost)
    memory_access_bytes_per_sample: int  # bytes moved for one sample, in the run's dtype
    settings: dict[str, Any]  # BenchSettings as run, plus the device, its name, torch and library flags
    results: list[BenchRow]  # one per batch size that finished, in order
    error: str | None  # why the sweep stopped early (out of memory, a failed forward), else None
    layers: NotRequired[list[LayerTime]]  # per-layer times, when asked for (settings.per_layer)


# ---------------------------------------------------------------------------------------------
# Compare (explorer.compare)
# ---------------------------------------------------------------------------------------------


class CompareRow(TypedDict):
    """``explorer.compare.compare_row``: one spec of a comparison set, cost beside published accuracy."""
    label: str  # arch, its swaps and input size, as shown on the chart
    spec: dict[str, Any]  # the ModelSpec as a dict
    input: str  # per-sample input, e.g. "3×224×224"
    params_m: float  # parameters, millions
    gmacs: float  # multiply-accumulates, 10⁹
    memory_access_mb: float  # bytes read + written, 10⁶ (fp32)
    activations_m: float  # activations (elements), millions
    intensity_flops_per_byte: float | None  # FLOPs / memory access bytes (None when nothing is moved)
    published_top1: float | None  # the headline published accuracy, in `published_metric`'s unit (%, AP)
    published_metric: str | None  # its metric, e.g. "ImageNet top-1 (%)"
    published_source: str | None  # where it was published (torchvision weights, a paper, timm's table)
    published: dict[str, float]  # every published accuracy: metric → value
    published_sources: dict[str, str | None]  # metric → its source
    latency_ms: NotRequired[float | None]  # batch-1 median latency, milliseconds (compare_set with latency)
    latency_device: NotRequired[str]  # the device it was timed on
    training_memory_gb: NotRequired[float]  # a training step's peak memory, GB (1e9 bytes), fp32, Adam (with training)
    training_step_gmacs: NotRequired[float]  # a training step's MACs (forward + backward), G (with training)


class SweepRow(TypedDict):
    """``explorer.compare.resolution_sweep``: one spec at one square input side."""
    label: str  # the spec's label
    side: int  # input height = width, pixels
    gmacs: float | None  # multiply-accumulates, 10⁹ (None when the model cannot take the size)
    memory_access_mb: float | None  # bytes read + written, 10⁶
    error: str | None  # why the size failed, else None
    latency_ms: NotRequired[float | None]  # batch-1 median latency, milliseconds (with a latency device)


class CompareSet(TypedDict):
    """``explorer.compare.compare_set``: what the Compare page shows, as data."""
    rows: list[CompareRow]  # one per spec, in order
    pareto: dict[str, dict[str, list[str]]]  # metric → cost axis → labels on the Pareto front, cheapest first
    sweep: list[SweepRow]  # every spec at every side asked for
