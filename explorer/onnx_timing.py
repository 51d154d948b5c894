"""An exported ONNX file timed with ONNX Runtime: its kernels, not PyTorch's.

A file cannot be timed with this project's kernels (there is no module to run), but ONNX Runtime can run it
where it is installed (`pip install onnxruntime==1.32.0`). The file is checked as the Graph page checks it
(explorer.model_files: size cap, protobuf only, no weights in separate files) before ONNX Runtime sees it.
Inputs are seeded random values of the file's declared shapes; a named (symbolic) batch axis takes the
requested batch, any other named axis is refused. Warm-up and the statistics are explorer.latency's
(time_forward: warm-up until three runs agree within 5 %, then the timed runs; median, p10, p90 in ms),
timed with perf_counter around each `InferenceSession.run`, which returns only when the outputs are on the host.

Runs as the `onnx_bench` job (explorer.job_kinds), never in the web server.
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, TypedDict

from explorer.errors import ExplorerError
from explorer.reports import Timing
from explorer.spec import MAX_BATCH

if TYPE_CHECKING:
    import numpy as np

MAX_RUNS = 1000
MAX_THREADS = 256
MAX_INPUT_ELEMENTS = 2**28  # all inputs together (1 GiB of fp32): a file may declare any shape
TIME_BUDGET_S = 300.0  # warm-up and timed runs together, inside the job's own time limit
DEVICES = ("auto", "cpu", "cuda")
NOT_INSTALLED = "ONNX Runtime is not installed: pip install onnxruntime==1.32.0 to time ONNX files"
KERNELS_NOTE = ("Timed with ONNX Runtime's kernels (its graph optimisations, its CPU or CUDA provider), not "
                "PyTorch's: it says how fast this file runs in ONNX Runtime, not how the model runs here.")
_RANDOM_KINDS = "f"  # float inputs get N(0, 1) values; integer and boolean ones (ids, masks) get zeros


class OnnxRow(Timing):
    """One batch size timed with ONNX Runtime (``OnnxTiming["results"]``)."""
    batch: int  # samples per run
    throughput_per_s: float  # samples per second at the median time


class OnnxTiming(TypedDict):
    """``explorer.onnx_timing.time_onnx``: an ONNX file timed with ONNX Runtime."""
    file: str  # the file's name as uploaded
    inputs: list[dict[str, Any]]  # name, shape (with the batch filled in), dtype, how its values were made
    settings: dict[str, Any]  # device, provider(s), threads, runs asked, batch, onnxruntime version, optimisation
    results: list[OnnxRow]  # one row: the batch timed
    error: str | None  # always None: a failure is an ExplorerError
    note: str  # whose kernels these are


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ExplorerError(NOT_INSTALLED) from None
    return onnxruntime


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(batch: int | None, runs: int, threads: int | None, device: str) -> None:
    """Every setting within its range, or an ExplorerError naming it and the range."""
    if batch is not None and (not _is_int(batch) or not 1 <= batch <= MAX_BATCH):
        raise ExplorerError(f"batch must be an integer from 1 to {MAX_BATCH}, got {str(batch)[:40]}")
    if not _is_int(runs) or not 1 <= runs <= MAX_RUNS:
        raise ExplorerError(f"runs (timed runs) must be an integer from 1 to {MAX_RUNS}, got {str(runs)[:40]}")
    if threads is not None and (not _is_int(threads) or not 1 <= threads <= MAX_THREADS):
        raise ExplorerError(f"threads must be an integer from 1 to {MAX_THREADS}, got {str(threads)[:40]}")
    if device not in DEVICES:
        raise ExplorerError(f"device must be one of {', '.join(DEVICES)}, got {str(device)[:40]!r}")


def _checked_model(data: bytes, filename: str):
    """The parsed file, refused (as the Graph page refuses it) when too large, not ONNX, or pointing at other
    files: ONNX Runtime would read external weights from paths the file names, on this machine."""
    import onnx

    from explorer.model_files import load_onnx

    model = load_onnx(data, filename)
    shown = repr(str(filename)[:200])
    if any(onnx.external_data_helper.uses_external_data(t) for t in _all_tensors(model.graph)):
        raise ExplorerError(f"{shown} keeps its weights in separate files, which one upload cannot carry")
    return model


def _all_tensors(graph):
    """Every tensor a graph holds: initializers, and constants in node attributes, subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _input_specs(model, batch: int | None, shown: str) -> list[dict[str, Any]]:
    """(name, shape, numpy dtype) of each graph input that is not a weight; a named axis 0 takes the batch."""
    import numpy as np
    import onnx

    weights = {t.name for t in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in weights:
            continue
        name = repr(inp.name[:80])
        tensor_type = inp.type.tensor_type
        if not inp.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            raise ExplorerError(f"input {name} of {shown} has no declared tensor shape, so it cannot be filled in")
        shape = []
        for axis, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                if axis == 0 and batch is not None and dim.dim_value != batch:
                    raise ExplorerError(f"input {name} of {shown} fixes the batch at {dim.dim_value}, not {batch}: "
                                        "export it with a dynamic batch axis to time other batches")
                shape.append(int(dim.dim_value))
            elif axis == 0:
                shape.append(batch or 1)
            else:
                label = repr(dim.dim_param[:40]) if dim.dim_param else "an unnamed size"
                raise ExplorerError(f"input {name} of {shown} leaves axis {axis} ({label}) open; only the batch "
                                    "(axis 0) takes a value here: export the file with that size fixed")
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = None
        if dtype is None or dtype.kind not in "fiub" or dtype.itemsize > 8:
            raise ExplorerError(f"input {name} of {shown} is of ONNX type {tensor_type.elem_type}; only float, "
                                "integer and boolean inputs can be filled in here")
        specs.append({"name": inp.name, "shape": shape, "dtype": dtype})
    elements = sum(math.prod(s["shape"]) for s in specs)
    if elements > MAX_INPUT_ELEMENTS:
        raise ExplorerError(f"the inputs of {shown} hold {elements:,} elements at this batch, over the limit of "
                            f"{MAX_INPUT_ELEMENTS:,}: try a smaller batch")
    return specs


def _feeds(specs: list[dict[str, Any]], seed: int = 0) -> dict[str, np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        if spec["dtype"].kind in _RANDOM_KINDS:
            feeds[spec["name"]] = rng.standard_normal(spec["shape"]).astype(spec["dtype"])
        else:
            feeds[spec["name"]] = np.zeros(spec["shape"], dtype=spec["dtype"])
    return feeds


def example_feeds(data: bytes, filename: str, batch: int | None = None) -> dict[str, np.ndarray]:
    """The inputs a timing run feeds the file: seeded N(0, 1) floats, zeros for integer and boolean inputs."""
    validate(batch, 1, None, "cpu")
    return _feeds(_input_specs(_checked_model(data, filename), batch, repr(str(filename)[:200])))


def _providers(ort, device: str) -> tuple[str, list[str]]:
    """(device used, ONNX Runtime providers in order of preference)."""
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ExplorerError("CUDA was asked for, but this onnxruntime has no CUDA provider "
                            "(the GPU build is the onnxruntime-gpu package)")
    if device == "cuda" or (device == "auto" and has_cuda and _gpu_present()):
        return "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return "cpu", ["CPUExecutionProvider"]


def _gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()


def _session(ort, model_bytes: bytes, providers: list[str], threads: int, shown: str):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its warnings would land on the job's stderr
    try:
        return ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    except Exception as exc:  # ONNX Runtime's own errors (invalid graph, an op it lacks) have no common base
        raise ExplorerError(f"ONNX Runtime cannot load {shown}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _default_threads() -> int:
    import torch

    return torch.get_num_threads()  # the thread count explorer.latency's PyTorch timings run with


def run_once(data: bytes, filename: str, feeds: dict[str, np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    """The file's outputs for `feeds`, computed once by ONNX Runtime (to check it runs the same network)."""
    ort = _onnxruntime()
    validate(None, 1, None, device)
    shown = repr(str(filename)[:200])
    _checked_model(data, filename)  # refused here, before ONNX Runtime reads a byte of it
    _, providers = _providers(ort, device)
    session = _session(ort, data, providers, _default_threads(), shown)
    try:
        return session.run(None, feeds)
    except Exception as exc:
        raise ExplorerError(f"ONNX Runtime could not run {shown}: {_one_line(exc)}") from None


def time_onnx(data: bytes, filename: str, batch: int | None = None, runs: int = 20, threads: int | None = None,
              device: str = "auto", on_wait=None) -> OnnxTiming:
    """Median, p10 and p90 of `runs` timed ONNX Runtime runs of the file at `batch`, after warm-up."""
    from explorer.device_queue import queue_for
    from explorer.latency import BenchSettings, time_forward

    validate(batch, runs, threads, device)
    ort = _onnxruntime()
    shown = repr(str(filename)[:200])
    model = _checked_model(data, filename)
    specs = _input_specs(model, batch, shown)
    feeds = _feeds(specs)
    used_device, providers = _providers(ort, device)
    threads = threads or _default_threads()
    used_batch = specs[0]["shape"][0] if specs and specs[0]["shape"] else 1
    session = _session(ort, data, providers, threads, shown)
    # explorer.latency's warm-up and statistics; exactly `runs` timed runs unless the budget runs out first.
    # perf_counter ("cpu" timer) on every device: session.run returns once its outputs are on the host.
    settings = BenchSettings(device="cpu", batches=(used_batch,), min_runs=runs, min_seconds=0.0,
                             max_seconds=TIME_BUDGET_S)

    def forward():
        session.run(None, feeds)

    with queue_for(used_device).hold(on_wait):
        try:
            stats = time_forward(forward, "cpu", settings)
        except Exception as exc:
            raise ExplorerError(f"ONNX Runtime could not run {shown}: {_one_line(exc)}") from None
    row: OnnxRow = {"batch": used_batch, **stats, "throughput_per_s": used_batch / max(stats["median_ms"] / 1e3, 1e-12)}
    return {
        "file": str(filename)[:200],
        "inputs": [{"name": s["name"][:200], "shape": s["shape"], "dtype": str(s["dtype"]),
                    "values": "N(0, 1), seed 0" if s["dtype"].kind in _RANDOM_KINDS else "zeros"} for s in specs],
        "settings": {
            "runtime": "onnxruntime", "onnxruntime": ort.__version__, "device": used_device,
            "device_name": _device_name(used_device), "providers": session.get_providers(), "threads": threads,
            "runs": runs, "batch": used_batch, "graph_optimization": "all",
            "includes_host_copies": used_device == "cuda",  # numpy in and out: each run copies to the GPU and back
            "cpu_count": os.cpu_count(),
        },
        "results": [row],
        "error": None,
        "note": KERNELS_NOTE,
    }


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return "cpu"
