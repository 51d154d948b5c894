"""Latency with the real kernels: batch sweeps, per-layer times, and what they achieve.

Method: inference mode; the model and input on the device in the chosen dtype (fp16/bf16
through autocast, so the model's own numerics follow PyTorch's mixed-precision rules);
warm-up until three consecutive timings agree within 5 %; then timed runs (CUDA events
with synchronisation on a GPU, perf_counter on the CPU) until both a minimum count and a
minimum time are reached. Every run holds the device's queue, so concurrent sessions
never time each other's work.
"""
from __future__ import annotations

import collections
import contextlib
import gc
import math
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from explorer.devices import best_device
from explorer.cost import analyse
from explorer.device_queue import queue_for
from explorer.errors import ExplorerError
from explorer.models import (build_model, dtype_of, example_input, forward_errors, is_out_of_memory, one_line,
                             ResolvedSpec, resolve_spec)
from explorer.reports import BenchResult, LayerTime, Timing
from explorer.spec import MAX_BATCH, ModelSpec  # the one batch limit, shared with the spec's check

MAX_BATCH_SIZES = 32  # batch sizes in one sweep
MAX_MIN_RUNS = 10_000
MAX_MIN_SECONDS = 60.0
MAX_MAX_SECONDS = 600.0  # per batch size
DEVICES = ("auto", "cuda", "mps", "cpu")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's own chatter on stderr


@dataclass(frozen=True)
class BenchSettings:
    device: str = "auto"  # auto | cuda | mps | cpu
    batches: tuple[int, ...] = (1,)
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    min_runs: int = 10
    min_seconds: float = 0.5
    max_seconds: float = 10.0  # per batch size, warm-up and timing together
    per_layer: bool = False

    def resolved_device(self) -> str:
        device = best_device() if self.device == "auto" else self.device
        if device == "cuda" and not torch.cuda.is_available():
            raise ExplorerError("CUDA was asked for, but this machine has no CUDA device")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ExplorerError("MPS was asked for, but this machine has no Apple GPU")
        if device not in ("cuda", "mps", "cpu"):
            raise ExplorerError(f"device must be cuda, mps or cpu, got {device!r}")
        return device

    def __post_init__(self):
        self.validate()  # settings that exist are valid ones

    def validate(self):
        """Every setting within its range, or an ExplorerError that names it and the range."""
        if self.device not in DEVICES:
            raise ExplorerError(f"device must be one of {', '.join(DEVICES)}, got {str(self.device)[:40]!r}")
        dtype_of(self.dtype if isinstance(self.dtype, str) else repr(self.dtype)[:40])
        if (not isinstance(self.batches, (tuple, list)) or not 1 <= len(self.batches) <= MAX_BATCH_SIZES
                or any(not _is_int(b) or not 1 <= b <= MAX_BATCH for b in self.batches)):
            raise ExplorerError(f"batch sizes must be between 1 and {MAX_BATCH}, 1 to {MAX_BATCH_SIZES} of them, "
                                f"got {str(self.batches)[:80]}")
        for name in ("channels_last", "compile", "per_layer"):
            if not isinstance(getattr(self, name), bool):
                raise ExplorerError(f"{name} must be true or false, got {str(getattr(self, name))[:40]!r}")
        if not _is_int(self.min_runs) or not 1 <= self.min_runs <= MAX_MIN_RUNS:
            raise ExplorerError(f"min_runs (timed runs per batch size) must be between 1 and {MAX_MIN_RUNS}, "
                                f"got {str(self.min_runs)[:40]}")
        if not _is_number(self.min_seconds) or not 0 <= self.min_seconds <= MAX_MIN_SECONDS:
            raise ExplorerError(f"min_seconds (timing per batch size) must be between 0 and {MAX_MIN_SECONDS:g} s, "
                                f"got {str(self.min_seconds)[:40]}")
        if not _is_number(self.max_seconds) or not 0 < self.max_seconds <= MAX_MAX_SECONDS:
            raise ExplorerError(f"max_seconds (warm-up and timing per batch size) must be above 0 and at most "
                                f"{MAX_MAX_SECONDS:g} s, got {str(self.max_seconds)[:40]}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def quick_settings(device: str) -> BenchSettings:
    """Batch-1 fp32 latency cheap enough to sit beside every cost figure (swap and compare pages):
    a GPU gets more runs, a CPU a short budget. Channels-last, the layout oneDNN's CPU convolutions
    and cuDNN's tensor-core kernels prefer (it changes nothing for models without convolutions)."""
    if device == "cpu":
        return BenchSettings(device=device, batches=(1,), channels_last=True, min_runs=3, min_seconds=0.1,
                             max_seconds=1.5)
    return BenchSettings(device=device, batches=(1,), channels_last=True, min_runs=10, min_seconds=0.2,
                         max_seconds=5.0)


# --- bounded cache of models built for timing ---------------------------------------------------

class ModelCache:
    """Recently timed models, bounded by count and by parameter memory; evicts the oldest."""

    def __init__(self, max_models: int = 3, max_bytes: int = 4 * 2**30):
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._models: collections.OrderedDict[str, tuple[nn.Module, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], nn.Module]) -> nn.Module:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key][0]
        model = make()
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        size += sum(b.numel() * b.element_size() for b in model.buffers())
        with self._lock:
            self._models[key] = (model, size)
            while len(self._models) > self.max_models or (
                len(self._models) > 1 and sum(s for _, s in self._models.values()) > self.max_bytes
            ):
                self._models.popitem(last=False)
        return model

    def drop(self, key: str | None = None):
        with self._lock:
            if key is None:
                self._models.clear()
            else:
                self._models.pop(key, None)
        free_memory()

    def __len__(self):
        return len(self._models)


MODEL_CACHE = ModelCache()


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- timing -----------------------------------------------------------------------------------------

def synchronize(device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


class _Timer:
    """Seconds per call of fn: CUDA events on a GPU, perf_counter elsewhere."""

    def __init__(self, device: str):
        self.device = device

    def __call__(self, fn) -> float:
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        synchronize(self.device)
        t = time.perf_counter()
        fn()
        synchronize(self.device)
        return time.perf_counter() - t


def autocast_context(device: str, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device == "cuda" else "cpu" if device == "cpu" else device, dtype=dtype_of(dtype))


RunsDone = Callable[[int, int], None]  # (timed runs done, runs planned): the planned count is final on the last call


def time_forward(forward: Callable[[], Any], device: str, settings: BenchSettings,
                 on_run: RunsDone | None = None) -> Timing:
    """Warm up until stable, then time. Returns per-run seconds and the stats. `on_run(done, planned)` after
    each timed run: the runs planned so far (the minimum count, or as many as the minimum time asks at the
    pace so far, at most what the budget allows); on the last run, planned equals done."""
    timer = _Timer(device)
    budget_end = time.perf_counter() + settings.max_seconds
    warm = []
    while True:
        warm.append(timer(forward))
        last = warm[-3:]
        if len(warm) >= 3 and (max(last) - min(last)) <= 0.05 * statistics.median(last):
            break
        # Warm-up gets at most a quarter of the budget: on a CPU one or two runs settle it.
        if len(warm) >= 50 or time.perf_counter() > budget_end - 0.75 * settings.max_seconds:
            break
    runs = []
    started = time.perf_counter()
    while True:  # at least one run: min_runs is at least 1
        runs.append(timer(forward))
        now = time.perf_counter()
        finished = ((len(runs) >= settings.min_runs and now - started >= settings.min_seconds)
                    or (now > budget_end and len(runs) >= 3))
        if on_run is not None:
            on_run(len(runs), len(runs) if finished else _planned_runs(len(runs), now - started, budget_end - now,
                                                                         settings))
        if finished:
            break
    seconds = np.array(runs)
    return {
        "median_ms": float(np.median(seconds) * 1e3),
        "p10_ms": float(np.percentile(seconds, 10) * 1e3),
        "p90_ms": float(np.percentile(seconds, 90) * 1e3),
        "runs": len(runs),
        "warmup_runs": len(warm),
    }


def _planned_runs(done: int, elapsed_s: float, left_s: float, settings: BenchSettings) -> int:
    """Timed runs time_forward will make in all, at the pace of the `done` runs so far: the minimum count, or
    as many as the minimum time asks, cut at what the budget allows (at least three); always more than `done`
    while the loop goes on."""
    pace = elapsed_s / done
    wanted = max(settings.min_runs, math.ceil(settings.min_seconds / pace) if pace > 0 else settings.min_runs)
    allowed = done + max(0, math.floor(left_s / pace)) if pace > 0 else wanted
    return max(done + 1, min(wanted, max(3, allowed)))


def _settings_record(device: str, settings: BenchSettings) -> dict[str, Any]:
    record = asdict(settings)
    record["batches"] = list(settings.batches)
    record["device"] = device
    record["device_name"] = torch.cuda.get_device_name(0) if device == "cuda" else device
    record["torch"] = torch.__version__
    record["threads"] = torch.get_num_threads()
    record["inference_mode"] = True
    record["autocast"] = settings.dtype != "fp32"
    if device == "cuda":
        record["cuda"] = torch.version.cuda
        record["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        record["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        record["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return record


def _prepare(spec: ModelSpec | ResolvedSpec, device: str, settings: BenchSettings) -> tuple[str, nn.Module]:
    resolved = resolve_spec(spec)
    spec = resolved.spec
    key = f"{spec.with_(batch=1).key()}|{device}|{settings.channels_last}|{settings.compile}"

    def make():
        model = build_model(resolved, device=device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if settings.compile:
            model = torch.compile(model)
        return model

    return key, MODEL_CACHE.get(key, make)


class BenchProgress:
    """A bench's timed runs as a job's progress text, "17 of about 30 timed runs (batch 4, 2 of 3 batch sizes)":
    the later batch sizes counted at the current one's plan. At most one report every REPORT_EVERY_S, besides
    each batch size's last count, so a model that runs in microseconds does not flood the job's pipe."""

    REPORT_EVERY_S = 0.25

    def __init__(self, progress: Callable[[str], None], batches: tuple[int, ...]):
        self.progress, self.batches = progress, batches
        self.index, self.runs_before, self.reported_at = 0, 0, None

    def stage(self, index: int, text: str) -> None:
        self.index = index
        self.progress(text)

    def on_run(self, done: int, planned: int) -> None:
        later = len(self.batches) - self.index - 1
        now = time.monotonic()
        if done == planned or self.reported_at is None or now - self.reported_at >= self.REPORT_EVERY_S:
            self.reported_at = now
            where = f"batch {self.batches[self.index]}" + (
                f", {self.index + 1} of {len(self.batches)} batch sizes" if len(self.batches) > 1 else "")
            self.progress(f"{self.runs_before + done:,} of about {self.runs_before + planned * (1 + later):,} "
                          f"timed runs ({where})")
        if done == planned:
            self.runs_before += done


def bench(spec: ModelSpec, settings: BenchSettings, on_wait: Callable[[int], None] | None = None,
          progress: Callable[[str], None] | None = None) -> BenchResult:
    """Latency, throughput and achieved rates of `spec` for each batch size in `settings`. `progress(text)`,
    when given, hears the timed runs done out of those planned (BenchProgress), and what runs between."""
    settings.validate()
    counter = BenchProgress(progress, settings.batches) if progress is not None else None
    device = settings.resolved_device()
    resolved = resolve_spec(spec)  # once: the variant and input the build and every batch's input read
    size = resolved.input_size
    rows: list[dict[str, Any]] = []
    error = None
    per_sample = analyse(spec.with_(batch=1), with_layers=settings.per_layer, dtype=settings.dtype)
    # The cost engine's figures at each batch (on the meta device: cheap, and outside the queue).
    costs = {b: analyse(spec.with_(batch=b), with_layers=False, dtype=settings.dtype) for b in settings.batches}
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    with queue_for(device).hold(on_wait):
        key, model = None, None
        try:
            with forward_errors(spec, size):
                if counter is not None:
                    counter.stage(0, "building the model")
                key, model = _prepare(resolved, device, settings)
                for index, batch in enumerate(settings.batches):
                    if counter is not None:
                        counter.stage(index, f"warming up at batch {batch}")
                    x = example_input(resolved.with_batch(batch), device)
                    if settings.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)

                    def forward(x=x):
                        with torch.inference_mode(), autocast_context(device, settings.dtype):
                            model(x)

                    counting = {"on_run": counter.on_run} if counter is not None else {}  # unasked: the plain call
                    stats = time_forward(forward, device, settings, **counting)
                    seconds = stats["median_ms"] / 1e3
                    flops = costs[batch]["flops"]
                    bytes_moved = costs[batch]["memory_access_bytes"]
                    rows.append(
                        {
                            "batch": batch,
                            **stats,
                            "throughput_per_s": batch / seconds,
                            "achieved_tflops": flops / seconds / 1e12,
                            "achieved_gb_per_s": bytes_moved / seconds / 1e9,
                        }
                    )
        except ExplorerError:
            raise
        except Exception as exc:
            if key is not None:
                MODEL_CACHE.drop(key)
            else:
                free_memory()
            if is_out_of_memory(exc):
                done = f" (batches {', '.join(str(r['batch']) for r in rows)} finished)" if rows else ""
                error = f"{device} ran out of memory at batch {settings.batches[len(rows)]}{done}: try a smaller batch or fp16/bf16"
            else:
                error = f"{device} run failed at batch {settings.batches[len(rows)]}: {one_line(exc)}"
        per_layer = None
        if settings.per_layer and error is None:
            if progress is not None:
                progress(f"timing every layer with torch.profiler at batch {settings.batches[0]}")
            per_layer = layer_times(spec, settings, device, model, per_sample)
    result: BenchResult = {
        "spec": spec.to_dict(),
        "arch": spec.arch,
        "input_shape_per_sample": list(size),
        "macs_per_sample": per_sample["macs"],
        "memory_access_bytes_per_sample": per_sample["memory_access_bytes"],
        "settings": _settings_record(device, settings),
        "results": rows,
        "error": error,
    }
    if per_layer is not None:
        result["layers"] = per_layer
    return result


# --- per-layer times ----------------------------------------------------------------------------

def layer_times(spec: ModelSpec, settings: BenchSettings, device: str, model: nn.Module,
                per_sample: dict[str, Any], runs: int = 5) -> list[LayerTime]:
    """Time per leaf module from torch.profiler, beside its MACs and memory access cost.

    Each leaf module's forward is wrapped in a profiler range; on a GPU its time is the
    kernel time the profiler attributes to the range, on the CPU the range's wall time.
    Timed at the first batch size of the sweep.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    batch = settings.batches[0]
    inner = getattr(model, "_orig_mod", model)  # under torch.compile, hooks go on the original
    leaves = {name: m for name, m in inner.named_modules() if name and not any(True for _ in m.children())}
    ranges: dict[int, Any] = {}

    def pre(mod, args, name):
        ranges[id(mod)] = record_function(f"layer::{name}")
        ranges[id(mod)].__enter__()

    def post(mod, args, out):
        ctx = ranges.pop(id(mod), None)
        if ctx is not None:
            ctx.__exit__(None, None, None)

    handles = []
    for name, module in leaves.items():
        handles.append(module.register_forward_pre_hook(lambda m, a, name=name: pre(m, a, name)))
        handles.append(module.register_forward_hook(post, always_call=True))
    x = example_input(spec.with_(batch=batch), device)
    if settings.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    try:
        with torch.inference_mode(), autocast_context(device, settings.dtype):
            inner(x)  # one untimed pass with the hooks in place
            with profile(activities=activities) as prof:
                for _ in range(runs):
                    inner(x)
                synchronize(device)
    finally:
        for handle in handles:
            handle.remove()
    times = {}
    for event in prof.key_averages():
        if event.key.startswith("layer::"):
            total_us = event.device_time_total if device == "cuda" else event.cpu_time_total
            times[event.key[len("layer::"):]] = total_us / runs / 1e3
    cost_rows = {row["name"]: row for row in per_sample.get("layers", [])}
    total_ms = sum(times.values()) or 1.0
    rows = []
    for name in leaves:
        cost = cost_rows.get(name, {})
        ms = times.get(name, 0.0)
        macs = cost.get("macs", 0) * batch
        moved = cost.get("memory_access_bytes", 0) * batch
        rows.append(
            {
                "name": name,
                "type": type(leaves[name]).__name__,
                "time_ms": ms,
                "share_time": ms / total_ms,
                "macs": macs,
                "memory_access_bytes": moved,
                "arithmetic_intensity": (2 * macs / moved) if moved else None,
                "achieved_tflops": (2 * macs / (ms / 1e3) / 1e12) if ms > 0 else None,
                "achieved_gb_per_s": (moved / (ms / 1e3) / 1e9) if ms > 0 else None,
            }
        )
    return rows
