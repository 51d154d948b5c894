"""How long a job will take, before it starts: one estimate for every job kind (explorer.job_kinds.JOB_KINDS).

An estimate counts the image forwards a job runs (a backward counted as two forwards), multiplies them by the
model's MACs per image (the cost report: a meta-device trace, cheap) and divides by a rate in GMAC/s: the one
this session measured when a job ran on that device, else a typical figure for the device. Fixed overheads
(building the model with random weights, the cost engine's meta traces) are added apart, so the text can say
what the time is made of: "about 12 s: 52 image forwards (13 runs × 4 images: batches 1, 1, 2) × 1.82 GMACs ...".

Kinds that do almost nothing with tensors are listed in QUICK_KINDS with the reason; a test checks that every
job kind is in one place or the other, so a new kind cannot start without an estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from explorer.errors import ExplorerError
from explorer.spec import ModelSpec
from explorer.units import format_count

# Typical forward rates, GMAC/s (multiply-accumulates per second / 10⁹), used until a job of the device has run
# in this session: Score-CAM on resnet50 (8.4 TMACs) took 10 min on 2 CPU cores, about 15 GMAC/s.
TYPICAL_GMACS_PER_S = {"cpu": 15.0, "mps": 200.0, "cuda": 2000.0}
LONG_JOB_S = 20.0  # longer than this: the estimate first, and a Run button to start
MEASURABLE_S = 0.2  # a job's own timed work below this says little about the machine's speed

# Fixed overheads, seconds: a random-weight build costs about 0.5 s plus 0.02 s per million parameters on
# 2 CPU cores (resnet18 0.75 s, vit_b_16 2.3 s, measured under load); a meta-device cost trace about 0.3 s.
BUILD_S, BUILD_S_PER_PARAM = 0.5, 2e-8
META_TRACE_S = 0.3

BACKWARD_AS_FORWARDS = 2  # a backward pass costs about two forwards (explorer.views.cam counts the same)
WARMUP_RUNS = 3  # latency's warm-up runs until three consecutive timings agree: three at the least
PROFILE_RUNS = 1 + 5  # per-layer times: one untimed pass with the hooks, five profiled (explorer.latency.layer_times)
TRAIN_WARMUP_STEPS = 2  # explorer.memory.train_bench's untimed steps (on CUDA the first timed one also takes the peak)
ERF_INPUTS = 4  # explorer.views.receptive_field.effective_rf: random inputs, a forward and a backward each
ATTENTION_FORWARDS = 2  # the model's own forward, then every layer's attention recomputed beside it
# The receptive-field trace runs no real forward: torch.fx traces the graph and the shapes go through it on the meta
# device, about 3 ms per layer of the cost report on 2 busy CPU cores (resnet152 1.2 s for 423 layers, convnext_base
# 2.0 s for 383, efficientnet_b7 2.2 s for 1,105; measured beside the build, under load).
RF_TRACE_S_PER_LAYER = 0.003
# The channel-connectivity job runs no image forward either: each candidate block is copied with its convs as 0/1
# channel patterns and run on one-hot 1×1 maps (explorer.views.connectivity). About 2–22 ms per conv of the model
# (mobilenet_v2 0.11 s for 52 convs, resnext101_64x4d 2.2 s for 104, igcv1 0.8 s for 37; a block's paths 0.1–2 s):
# the figure is the high end, for the search or one block alike.
CONNECTIVITY_S_PER_CONV = 0.02
STN_DEMO_S = 0.1  # the Inside page's spatial-transformer demo: a 3-channel STN on one 160 × 160 image (0.04 s measured)

QUICK_KINDS = {
    "peaks": "a matmul, a conv and a copy of fixed sizes (not the model's), measured once per worker and kept",
}


@dataclass(frozen=True)
class Estimate:
    """A job's expected work and time. `forwards`: image forwards (a backward counted as two); `gmacs`: MACs per
    image forward, in 10⁹; `rate`: GMAC/s; `overhead_s`: builds and traces, apart from the forwards."""
    kind: str
    forwards: int
    gmacs: float
    rate: float
    measured: bool  # the rate was measured in this session (else the device's typical figure)
    device: str
    overhead_s: float = 0.0
    detail: str = ""  # what the forwards are made of: "13 runs × 4 images: batches 1, 1, 2"
    overhead_what: str = ""  # what the overhead is: "to build the model"
    fixed_s: float | None = None  # a job whose time is set by its payload (the queue's own hold)
    parts: tuple["Estimate", ...] = field(default=(), compare=False)

    @property
    def macs(self) -> float:
        return self.forwards * self.gmacs * 1e9

    @property
    def compute_s(self) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        return self.macs / (self.rate * 1e9) if self.rate > 0 else 0.0

    @property
    def seconds(self) -> float:
        return self.compute_s + self.overhead_s

    @property
    def long(self) -> bool:
        return self.seconds > LONG_JOB_S

    def text(self) -> str:
        """One sentence, every figure with its unit: what the job runs and about how long it takes."""
        if self.fixed_s is not None:
            return f"about {format_duration(self.seconds)}: the job holds the worker for {self.fixed_s:g} s"
        about = "under 1 s" if self.seconds < 0.5 else f"about {format_duration(self.seconds)}"  # not "about 1 s"
        if self.forwards == 0:
            detail = f" ({self.detail})" if self.detail else ""
            return f"{about} {self.overhead_what or 'to build the model'}{detail}"
        basis = (f"at the {self.rate:,.3g} GMAC/s {'this method' if self.kind == 'cam' else 'this device'} ran at "
                 f"in this session" if self.measured
                 else f"at about {self.rate:,.3g} GMAC/s, a typical {self.device.upper()} figure")
        detail = f" ({self.detail})" if self.detail else ""
        forwards = f"{self.forwards:,} image forward{'s' if self.forwards != 1 else ''}"
        text = (f"about {forwards}{detail} × {self.gmacs:.2f} GMACs = "
                f"{format_count(self.macs)}MACs: {about} {basis}")
        if self.overhead_s >= 0.5:
            text += f" ({format_duration(self.overhead_s)} of it {self.overhead_what or 'to build the model'})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the CLI's JSON): the figures with their units in the key names."""
        return {"kind": self.kind, "forwards": self.forwards, "gmacs_per_forward": self.gmacs,
                "macs": self.macs, "rate_gmacs_per_s": self.rate, "rate_measured": self.measured,
                "device": self.device, "compute_s": self.compute_s, "overhead_s": self.overhead_s,
                "seconds": self.seconds, "long": self.long, "text": self.text()}


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def combine(estimates: list[Estimate], kind: str | None = None, parts_are: str = "jobs") -> Estimate:
    """Several jobs run one after another (a page's sweep): their forwards and overheads add up. The parts must
    share the MACs per image and the rate for the sum to read as one product; otherwise the MACs are pooled."""
    if not estimates:
        raise ExplorerError("nothing to estimate")
    first = estimates[0]
    forwards = sum(e.forwards for e in estimates)
    macs = sum(e.macs for e in estimates)
    gmacs = macs / forwards / 1e9 if forwards else first.gmacs
    compute = sum(e.compute_s for e in estimates)
    rate = macs / compute / 1e9 if compute > 0 else first.rate  # the rate that gives the summed time
    details = list(dict.fromkeys(e.detail for e in estimates if e.detail))  # each different one once
    detail = "; ".join(details)
    if len(estimates) > 1:
        detail = f"{len(estimates)} {parts_are}" + (f": {detail}" if detail else "")
    return Estimate(kind or first.kind, forwards, gmacs, rate, all(e.measured for e in estimates), first.device,
                    sum(e.overhead_s for e in estimates), detail, first.overhead_what, None, tuple(estimates))


# --- the model's figures --------------------------------------------------------------------------------

CostOf = Callable[[dict[str, Any]], dict[str, Any]]


def meta_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """The cost report on the meta device (no weights): the estimate's MACs, parameters and layer shapes."""
    from explorer.cost import analyse

    return analyse(ModelSpec.from_dict(spec), with_layers=True)


def _costed(spec: dict[str, Any], cost: CostOf) -> tuple[dict, float, float]:
    """(cost report, GMACs per image forward, seconds to build the model) of a spec."""
    report = cost(spec)
    batch = max(1, int(ModelSpec.from_dict(spec).batch))
    return report, report["macs"] / batch / 1e9, build_seconds(report.get("params", 0))


def _per_image(spec: dict[str, Any], cost: CostOf) -> tuple[float, float]:
    """(GMACs per image forward, seconds to build the model) of a spec."""
    return _costed(spec, cost)[1:]


def build_seconds(params: float) -> float:
    return BUILD_S + BUILD_S_PER_PARAM * float(params)


def rate_key(kind: str, payload: dict[str, Any], device: str) -> str:
    """Where a measured rate is kept: per CAM method (Score-CAM's batches run faster per image than a
    Grad-CAM's forward and backward), else per device."""
    if kind == "cam":
        return f"cam:{payload.get('method', 'gradcam++')}"
    return device


# Kinds that build their model on the CPU whatever the worker has (explorer.backend._cpu_model,
# explorer.job_kinds.model_with_weights, fvcore's and the fold's own builds).
CPU_KINDS = frozenset({"fvcore", "fold", "receptive_field", "erf", "connectivity", "swin_masks", "cam", "attention",
                       "offsets", "fusion", "stn"})


def job_device(kind: str, payload: dict[str, Any], default: str) -> str:
    """The device a job runs on: the CPU for CPU_KINDS, else the one its settings name, else `default` (the
    worker's)."""
    if kind in CPU_KINDS:
        return "cpu"
    named = str((payload.get("settings") or {}).get("device") or payload.get("device") or "auto")
    return named if named in TYPICAL_GMACS_PER_S else default


def _rate(kind: str, payload: dict[str, Any], device: str, rates) -> tuple[float, bool]:
    if isinstance(rates, (int, float)) and not isinstance(rates, bool):
        return float(rates), False
    measured = (rates or {}).get(rate_key(kind, payload, device))
    if measured:
        return float(measured), True
    return TYPICAL_GMACS_PER_S.get(device, TYPICAL_GMACS_PER_S["cpu"]), False


# --- one estimator per job kind -------------------------------------------------------------------------

def _bench_parts(settings: dict[str, Any], gmacs: float, rate: float) -> tuple[int, str]:
    """(image forwards, detail) of one latency job: for each batch size, warm-up and timed runs, as many as
    the minimum time asks, at most what the per-batch budget allows (at least three timed)."""
    from explorer.latency import BenchSettings

    defaults = BenchSettings()
    batches = [int(b) for b in settings.get("batches") or defaults.batches]
    min_runs = int(settings.get("min_runs", defaults.min_runs))
    min_seconds = float(settings.get("min_seconds", defaults.min_seconds))
    max_seconds = float(settings.get("max_seconds", defaults.max_seconds))
    runs = []
    for batch in batches:
        one = batch * gmacs / rate if rate > 0 else 0.0  # seconds per run
        wanted = WARMUP_RUNS + max(min_runs, math.ceil(min_seconds / one) if one > 0 else min_runs)
        allowed = max(WARMUP_RUNS + 3, math.ceil(max_seconds / one)) if one > 0 else wanted
        runs.append(min(wanted, allowed))
    forwards = sum(r * b for r, b in zip(runs, batches))
    images = "+".join(map(str, batches)) if len(batches) <= 8 else f"{len(batches)} batch sizes"
    if len(set(runs)) == 1:
        detail = (f"{runs[0]} runs × {sum(batches):,} image{'s' if sum(batches) != 1 else ''}: "
                  f"batch{'es' if len(batches) > 1 else ''} {images}")
    else:  # the minimum time adds runs to small batches; the budget cuts large ones short
        detail = f"{', '.join(map(str, runs))} runs at batches {', '.join(map(str, batches))}"
    if settings.get("per_layer"):
        forwards += PROFILE_RUNS * batches[0]
        detail += f"; {PROFILE_RUNS} profiled for per-layer times"
    return forwards, detail


def _bench(kind, payload, rate, measured, device, cost):
    gmacs, build = _per_image(payload["spec"], cost)
    settings = dict(payload.get("settings") or {})
    forwards, detail = _bench_parts(settings, gmacs, rate)
    traces = 1 + len(settings.get("batches") or [1])  # the cost engine's figures, per sample and per batch
    return Estimate(kind, forwards, gmacs, rate, measured, device, build + traces * META_TRACE_S, detail,
                    "to build the model and trace its cost")


def _quick_settings(device: str) -> dict[str, Any]:
    from dataclasses import asdict

    from explorer.latency import quick_settings

    return asdict(quick_settings(device))


def _quick_bench(kind, payload, rate, measured, device, cost):
    return _bench(kind, {**payload, "settings": _quick_settings(device)}, rate, measured, device, cost)


def _latency_sweep(kind, payload, rate, measured, device, cost):
    from explorer.models import input_size_of

    spec = ModelSpec.from_dict(payload["spec"])
    channels = input_size_of(spec)[0]
    if not payload.get("sides"):
        raise ExplorerError("a latency sweep needs at least one input side")
    parts, timed = [], []
    for side in payload["sides"]:
        try:
            parts.append(_quick_bench(kind, {"spec": spec.with_(input_size=(channels, int(side), int(side))).to_dict()},
                                      rate, measured, device, cost))
            timed.append(str(int(side)))
        except ExplorerError:  # a side the model cannot take: the sweep says so in its row, and times nothing there
            pass
    if not parts:
        return Estimate(kind, 0, 0.0, rate, measured, device, META_TRACE_S * len(payload["sides"]), "",
                        "to find that the model takes none of these sides")
    total = combine(parts, kind)
    return Estimate(kind, total.forwards, total.gmacs, total.rate, measured, device, total.overhead_s,
                    f"a quick batch-1 timing at each side {', '.join(timed)}", "to build the model at each side")


def _train_bench(kind, payload, rate, measured, device, cost):
    """Warm-up steps, then timed steps until `min_runs` or the time budget (at least two); a step is a forward,
    a backward (two forwards' worth) and the optimizer's update (not counted)."""
    gmacs, build = _per_image(payload["spec"], cost)
    settings = dict(payload.get("settings") or {})
    batch = max(1, int(ModelSpec.from_dict(payload["spec"]).batch))
    min_runs, max_seconds = int(settings.get("min_runs", 5)), float(settings.get("max_seconds", 10.0))
    per_step = 1 + BACKWARD_AS_FORWARDS
    step_s = per_step * batch * gmacs / rate if rate > 0 else 0.0
    timed = min(min_runs, max(2, math.ceil(max_seconds / step_s))) if step_s > 0 else min_runs
    steps = TRAIN_WARMUP_STEPS + timed
    return Estimate(kind, steps * per_step * batch, gmacs, rate, measured, device, build + META_TRACE_S,
                    f"{steps} steps × {batch:,} images × {per_step} (a forward, and a backward counted as two)",
                    "to build the model and trace its memory")


def _cam(kind, payload, rate, measured, device, cost, target_channels=None):
    """A CAM or attribution on one image: explorer.views.cam.forward_passes, its own bookkeeping forwards
    included (they stand for the job's overheads, so none is added)."""
    from explorer.models import input_size_of
    from explorer.views.cam import forward_passes

    method = str(payload.get("method", "gradcam++"))
    spec = ModelSpec.from_dict(payload["spec"])
    report = cost(payload["spec"])
    gmacs = report["macs"] / max(1, spec.batch) / 1e9
    hw = tuple(input_size_of(spec)[-2:])
    channels = None  # Score-CAM runs one forward per channel of its target layer; the others need no count
    if method == "scorecam":
        channels = target_channels or cam_target_channels(report, hw, payload.get("layer"))
    return Estimate(kind, forward_passes(method, hw, channels), gmacs, rate, measured, device, 0.0,
                    "a backward counted as two")


def cam_target_channels(report: dict[str, Any], input_hw: tuple[int, int], layer: str | None) -> int | None:
    """Channels of a CAM's target layer from the cost report: the named layer's, else the last output that
    can be drawn over the image (where a CNN's default layer is)."""
    from explorer.views.cam import layout_of

    for row in reversed(report.get("layers") or []):
        shape = tuple(row.get("output_shape") or ())
        if (layer is None or row["name"] == layer) and shape and layout_of(shape, input_hw):
            return int(shape[1] if layout_of(shape, input_hw) == "nchw" else shape[-1])
    return None


def _forwards(count: int, what: str, builds: int = 1, traces: int = 0):
    """An estimator for a job that builds the model `builds` times and runs `count` forwards at the spec's batch."""

    def estimator(kind, payload, rate, measured, device, cost):
        gmacs, build = _per_image(payload["spec"], cost)
        batch = max(1, int(ModelSpec.from_dict(payload["spec"]).batch))
        return Estimate(kind, count * batch, gmacs, rate, measured, device, builds * build + traces * META_TRACE_S,
                        what, "to build the model" + (" and trace it" if traces else ""))

    return estimator


def _receptive_field(kind, payload, rate, measured, device, cost):
    """The theoretical receptive fields (explorer.views.receptive_field): the model built with random weights, its
    graph traced by torch.fx and its shapes propagated on the meta device; no real forward, except for a model
    torch.fx cannot trace (then one forward with hooks, which the text names)."""
    report, gmacs, build = _costed(payload["spec"], cost)
    layers = len(report.get("layers") or [])
    return Estimate(kind, 0, gmacs, rate, measured, device, build + RF_TRACE_S_PER_LAYER * layers, f"{layers:,} layers",
                    "to build the model and trace its layers' shapes on the meta device, no real forward unless "
                    "torch.fx cannot trace it")


def _swin_masks(kind, payload, rate, measured, device, cost):
    """A Swin block's window masks: the model built, its configuration read; the masks are drawn from it, no forward."""
    gmacs, build = _per_image(payload["spec"], cost)
    return Estimate(kind, 0, gmacs, rate, measured, device, build, "",
                    "to build the model and read its windows (no forward)")


def _connectivity(kind, payload, rate, measured, device, cost):
    """The search for grouped-conv blocks, or one block's channel paths: the model built, then patterns on one-hot
    channels, no image forward."""
    report, gmacs, build = _costed(payload["spec"], cost)
    convs = sum(1 for layer in report.get("layers") or [] if layer.get("type") == "Conv2d")
    return Estimate(kind, 0, gmacs, rate, measured, device, build + CONNECTIVITY_S_PER_CONV * convs, f"{convs:,} convs",
                    "to build the model and run its convs' channel patterns on one-hot channels (no image forward)")


_stn_model = _forwards(1, "one forward through the transformer")


def _stn(kind, payload, rate, measured, device, cost):
    """A model's own spatial transformer (a `front:stn@input` swap): one forward; without a spec, the Inside
    page's demo, a small 3-channel transformer on one 160 × 160 image (explorer.job_kinds._stn)."""
    if "spec" in payload:
        return _stn_model(kind, payload, rate, measured, device, cost)
    return Estimate(kind, 0, 0.0, rate, measured, device, STN_DEMO_S, "",
                    "to build a small spatial transformer and resample one 160 × 160 image")


def _onnx_bench(kind, payload, rate, measured, device, cost):
    """An uploaded ONNX file in ONNX Runtime: warm-up and exactly `runs` timed runs at its batch; its MACs are
    the file's own graph costed node by node (explorer.model_files.read_onnx, a protobuf read: no weights run)."""
    from explorer.model_files import read_onnx

    settings = dict(payload.get("settings") or {})
    data = payload.get("data")
    if not isinstance(data, (bytes, bytearray)):
        raise ExplorerError("no ONNX file was uploaded")
    gmacs = read_onnx(bytes(data), str(payload.get("name") or "model.onnx"))["totals"]["macs"] / 1e9
    batch, runs = max(1, int(settings.get("batch") or 1)), int(settings.get("runs", 20))
    return Estimate(kind, (WARMUP_RUNS + runs) * batch, gmacs, rate, measured, device, BUILD_S,
                    f"{WARMUP_RUNS + runs} runs × {batch:,} image{'s' if batch != 1 else ''}, warm-up included",
                    "to load the file")


def _hold(kind, payload, rate, measured, device, cost):
    return Estimate(kind, 0, 0.0, rate, measured, device, fixed_s=float(payload.get("seconds", 1.0)))


ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "fvcore": _forwards(2, "fvcore's jit trace runs the model"),
    "quick_bench": _quick_bench,
    "bench": _bench,
    "train_bench": _train_bench,
    "latency_sweep": _latency_sweep,
    "onnx_bench": _onnx_bench,
    "fold": _forwards(2, "the model before and after folding", builds=1, traces=2),
    "receptive_field": _receptive_field,
    "erf": _forwards(1 + ERF_INPUTS * (1 + BACKWARD_AS_FORWARDS),
                     f"a trace, then {ERF_INPUTS} random inputs forward and back; a backward counted as two"),
    "connectivity": _connectivity,
    "swin_masks": _swin_masks,
    "cam": _cam,
    "attention": _forwards(ATTENTION_FORWARDS, "the forward and every layer's attention recomputed"),
    "offsets": _forwards(1, "one forward capturing the offsets"),
    "fusion": _forwards(1, "one forward capturing the fusion weights"),
    "stn": _stn,
    "hold": _hold,
}


def estimate(kind: str, payload: dict[str, Any], rate: float | Mapping[str, float] | None = None, *,
             device: str = "cpu", cost: CostOf | None = None, target_channels: int | None = None) -> Estimate | None:
    """The estimate for running job `kind` on `payload`; None for a kind in QUICK_KINDS.

    `rate`: GMAC/s, or the rates this session measured (rate_key → GMAC/s; see measured_rate), or None for the
    device's typical figure. `device`: where the job runs unless its settings say (the worker's device). `cost`:
    spec dict → cost report (a cached one in the app; the meta-device trace otherwise). `target_channels`: a
    CAM's target-layer channels when an earlier result told them."""
    if kind in QUICK_KINDS:
        return None
    if kind not in ESTIMATORS:
        raise ExplorerError(f"no estimate for job kind {kind!r}")
    device = job_device(kind, payload, device)
    value, measured = _rate(kind, payload, device, rate)
    if kind == "cam":
        return _cam(kind, payload, value, measured, device, cost or meta_cost, target_channels)
    return ESTIMATORS[kind](kind, payload, value, measured, device, cost or meta_cost)


def measured_rate(kind: str, payload: dict[str, Any], result: Any, shown: Estimate | None,
                  device: str = "cpu") -> tuple[str, float] | None:
    """(rate_key, GMAC/s) a finished job measured, for the next estimates; None when it timed too little.
    Latency jobs give the forward rate of their own timed runs; a training step its step MACs over its median
    time; a CAM its method's own passes (bookkeeping forwards left out) over its method time."""
    if not isinstance(result, (dict, list)):
        return None
    device = job_device(kind, payload, device)
    if kind in ("bench", "quick_bench") and isinstance(result, dict) and result.get("results"):
        rows = result["results"]
        seconds = sum(row["median_ms"] / 1e3 * row["runs"] for row in rows)
        macs = sum(row["batch"] * result["macs_per_sample"] * row["runs"] for row in rows)
        where = (result.get("settings") or {}).get("device", device)
        return (where, macs / seconds / 1e9) if seconds >= MEASURABLE_S and macs > 0 else None
    if kind == "latency_sweep" and isinstance(result, list):
        timed = [r for r in result if isinstance(r, dict) and r.get("latency_ms") and r.get("gmacs")]
        seconds = sum(r["latency_ms"] / 1e3 for r in timed)
        return (device, sum(r["gmacs"] for r in timed) / seconds) if timed and seconds > 0 else None
    if kind == "train_bench" and isinstance(result, dict) and result.get("step") and result.get("runs"):
        step_s = result["step"]["median_ms"] / 1e3
        if step_s * result["runs"] < MEASURABLE_S:
            return None
        return result.get("device", device), result["training_step_macs"] / step_s / 1e9
    if kind == "cam" and isinstance(result, dict) and shown is not None and result.get("method_s", 0) >= MEASURABLE_S:
        from explorer.views.cam import JOB_OVERHEAD_FORWARDS

        own = shown.forwards - JOB_OVERHEAD_FORWARDS  # the passes the job timed: the method's own
        return rate_key(kind, payload, device), own * shown.gmacs / result["method_s"]
    return None
