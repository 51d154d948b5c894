"""The heavy jobs a worker runs: each takes a plain payload (a spec as a dict, settings, image pixels,
weight bytes) and returns plain data. Registered here, in one place; `explorer.jobs` schedules them.

Models built with weights are kept in a small per-process cache, so the views of one model and image
(the CAM's layer list, then the CAM) build it once.
"""
from __future__ import annotations

import collections
import hashlib
import os
import threading
import time
from typing import Any, Callable

import numpy as np

from explorer.errors import ExplorerError
from explorer.spec import ModelSpec

Progress = Callable[[str], None]
HOLD_MAX_S = 30.0


def _backend():
    from explorer.backend import BACKEND

    return BACKEND


def _spec(payload: dict[str, Any]) -> dict[str, Any]:
    return ModelSpec.from_dict(payload["spec"]).to_dict()  # validated again on this side


def _fvcore(payload, progress):
    return _backend().fvcore(_spec(payload))


def _quick_bench(payload, progress):
    return _timed(progress, lambda: _backend().quick_bench(_spec(payload)))


def _bench(payload, progress):
    """A latency sweep whose progress counts its timed runs (explorer.latency.BenchProgress)."""
    return _timed(progress, lambda: _backend().bench(_spec(payload), payload["settings"], progress=progress))


def _train_bench(payload, progress):
    """A training step timed on real tensors (forward / backward / optimizer step), beside the inference bench."""
    from explorer.memory import train_bench

    return _timed(progress, lambda: train_bench(ModelSpec.from_dict(_spec(payload)), dict(payload.get("settings") or {}),
                                                progress=progress))


def _fold(payload, progress):
    return _backend().fold(_spec(payload))


def _receptive_field(payload, progress):
    # torch.fx patches nn.Module.__call__ for every thread while it traces: this job must run in a worker
    # process of its own, never in the web server (see explorer.jobs).
    return _backend().receptive_field(_spec(payload))


def _erf(payload, progress):
    return _backend().effective_receptive_field(_spec(payload), str(payload["layer"]))


def _connectivity(payload, progress):
    return _backend().channel_connectivity(_spec(payload), payload.get("module"))


def _swin_masks(payload, progress):
    return _backend().swin_masks(_spec(payload), int(payload["stage"]), int(payload["block"]), payload.get("window"))


def _latency_sweep(payload, progress):
    return _timed(progress, lambda: _backend().resolution_sweep(_spec(payload), list(payload["sides"]), latency=True))


def _onnx_bench(payload, progress):
    """An uploaded ONNX file timed with ONNX Runtime: its bytes travel in the payload, as a checkpoint's do
    (model_with_weights), and are checked (size, protobuf, no external files) before ONNX Runtime reads them."""
    from explorer.onnx_timing import time_onnx

    settings = dict(payload.get("settings") or {})
    data = payload.get("data")
    if not isinstance(data, (bytes, bytearray)):
        raise ExplorerError("no ONNX file was uploaded")
    return _timed(progress, lambda: time_onnx(
        bytes(data), str(payload.get("name") or "model.onnx"), batch=settings.get("batch"),
        runs=settings.get("runs", 20), threads=settings.get("threads"), device=settings.get("device", "auto")))


def _peaks(payload, progress):
    # a measured roof runs a matmul and a conv on the device: a timed job like any other
    return _backend().peaks(str(payload["device"]), str(payload["dtype"]), float(payload.get("achieved_tflops", 0.0)))


def _hold(payload, progress):
    """The queue's own check: holds the worker for `seconds` (at most 30) and `megabytes` of memory
    (at most 2048), reporting progress; the load benchmark and the limits' tests use it."""
    seconds = float(payload.get("seconds", 1.0))
    megabytes = int(payload.get("megabytes", 0))
    if not 0 <= seconds <= HOLD_MAX_S:
        raise ExplorerError(f"hold takes 0 to {HOLD_MAX_S:.0f} seconds, got {seconds}")
    if not 0 <= megabytes <= 2048:
        raise ExplorerError(f"hold takes 0 to 2048 megabytes, got {megabytes}")
    held = b"\x01" * (megabytes * 2**20)  # written, so it is resident  # noqa: F841
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        progress(f"{left:.1f} s left")
        time.sleep(min(0.1, left))
    return {"held_s": seconds, "pid": os.getpid()}


# --- CAMs and attributions ------------------------------------------------------------------------------

_MODELS: collections.OrderedDict[str, tuple[Any, dict | None]] = collections.OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 2


class WeightsRefused(ExplorerError):
    """The chosen pretrained weights or checkpoint cannot be loaded into the model (the model itself builds)."""


def _with_weights(job):
    """A view job whose weights cannot be used returns {"weights_error": why} instead of a result: the page
    then draws nothing (a map from random weights would pass for the checkpoint's) and says why."""

    def run(payload, progress):
        try:
            return job(payload, progress)
        except WeightsRefused as exc:
            return {"weights_error": str(exc)}

    run.__name__ = job.__name__
    return run


def model_with_weights(spec_dict: dict[str, Any], weights: dict[str, Any]):
    """(model in eval mode on the CPU, weights report or None) for a spec and a weights choice:
    {"kind": "random"} | {"kind": "pretrained", "allow_download": bool} | {"kind": "checkpoint", "name", "data"}."""
    from explorer.catalog import resolve
    from explorer.models import build_model
    from explorer.weights import load_pretrained, load_state, read_checkpoint

    spec = ModelSpec.from_dict(spec_dict)
    kind = weights.get("kind", "random")
    if kind not in ("random", "pretrained", "checkpoint"):
        raise ExplorerError(f"weights must be random, pretrained or checkpoint, got {kind!r}")
    data = weights.get("data") or b""
    key = "|".join([spec.key(), kind, str(bool(weights.get("allow_download"))), hashlib.sha256(data).hexdigest()])
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    if kind == "checkpoint" and not data:
        raise WeightsRefused("no checkpoint was uploaded")
    model = build_model(spec, device="cpu")
    report = None
    try:
        if kind == "pretrained":
            report = load_pretrained(model, resolve(spec.arch), allow_download=bool(weights.get("allow_download")))
        elif kind == "checkpoint":
            name = str(weights.get("name") or "checkpoint")
            report = load_state(model, read_checkpoint(data, name, expected=model), source=name)  # sizes checked first
    except ExplorerError as exc:
        raise WeightsRefused(str(exc)) from None
    entry = (model.eval(), report)
    with _MODELS_LOCK:
        _MODELS[key] = entry
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
    return entry


def _image_input(payload):
    import numpy as np
    from PIL import Image

    from explorer.images import to_input
    from explorer.models import input_size_of

    pixels = np.asarray(payload["image"], dtype=np.uint8)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ExplorerError(f"the image must be H×W×3 RGB pixels, got shape {pixels.shape}")
    return to_input(Image.fromarray(pixels), input_size_of(ModelSpec.from_dict(payload["spec"])))


def _cam(payload, progress):
    from explorer.views.cam import ATTRIBUTION_METHODS, CAM_METHODS, cam_layers, compute_attribution, compute_cam

    method = payload.get("method", "gradcam++")
    if method not in CAM_METHODS + ATTRIBUTION_METHODS:
        raise ExplorerError(f"unknown method {method!r}; choose one of {', '.join(CAM_METHODS + ATTRIBUTION_METHODS)}")
    model, report = model_with_weights(_spec(payload), payload.get("weights") or {"kind": "random"})
    x = _image_input(payload)
    progress(f"running {method}")
    started = time.monotonic()
    if method in ATTRIBUTION_METHODS:
        result = compute_attribution(model, x, method, payload.get("class_index"), progress=progress)
    else:  # Score-CAM's batch: the page's choice, bounded in compute_cam; else its device default
        result = compute_cam(model, x, method, payload.get("layer"), payload.get("class_index"), progress=progress,
                             scorecam_batch=payload.get("scorecam_batch"))
    result["method_s"] = time.monotonic() - started  # the method's own passes: the page's next estimate uses it
    layers = [r["name"] for r in cam_layers(model, x)]  # the layers a CAM can target, for the page's choice
    return {**result, "layers": layers, "weights_report": report}


def _model_input(payload):
    """The model with its chosen weights and its input: the image's pixels, or (token models, which have
    no tokenizer here) the spec's seeded example ids."""
    from explorer.models import example_input

    model, report = model_with_weights(_spec(payload), payload.get("weights") or {"kind": "random"})
    if payload.get("image") is None:
        return model, report, example_input(ModelSpec.from_dict(payload["spec"]))
    return model, report, _image_input(payload)


def _attention(payload, progress):
    from explorer.views.attention import attention_layers, attention_maps, no_attention_layers

    model, report, x = _model_input(payload)
    if not attention_layers(model):
        return {"data": None, "absent": no_attention_layers(model), "weights_report": report}
    progress("recomputing every layer's attention")
    return {"data": attention_maps(model, x, keep_output=False), "weights_report": report}


def _offsets(payload, progress):
    from explorer.views.deformable import capture_offsets, deformable_layers

    model, report, x = _model_input(payload)
    layers = [name for name, _ in deformable_layers(model)]
    return {"layers": layers, "captures": capture_offsets(model, x) if layers else {}, "weights_report": report}


def _fusion(payload, progress):
    from explorer.views.fusion import NO_FUSION_WEIGHTS, fusion_kind, fusion_report

    model, report, x = _model_input(payload)
    if fusion_kind(model) is None:
        return {"report": None, "absent": NO_FUSION_WEIGHTS, "weights_report": report}
    return {"report": fusion_report(model, x), "weights_report": report}


def _stn(payload, progress):
    """A spatial transformer's sampling grid and output on the image: the model's own (a `front:stn@input`
    swap), or, given `theta` (2×3), a standalone transformer with that hand-set affine map (the Inside page's demo)."""
    import math

    import torch

    from explorer.views.stn import stn_grid

    if payload.get("theta") is not None:
        from PIL import Image

        from explorer.blocks import STN
        from explorer.images import to_input

        theta = payload["theta"]
        if (not isinstance(theta, (list, tuple)) or len(theta) != 2 or any(len(row) != 3 for row in theta)
                or not all(isinstance(v, (int, float)) and math.isfinite(v) and abs(v) <= 10 for row in theta for v in row)):
            raise ExplorerError("theta must be 2×3 finite numbers, each between -10 and 10")
        pixels = np.asarray(payload["image"], dtype=np.uint8)
        x = to_input(Image.fromarray(pixels), (3, 160, 160))
        return stn_grid(STN(3).eval(), x, points=12, theta=torch.tensor([theta], dtype=torch.float32))
    model, _, x = _model_input(payload)
    if not hasattr(model, "stn"):
        raise ExplorerError(f"{payload['spec']['arch']} has no spatial transformer: add --swap front:stn@input")
    return stn_grid(model.stn, x)


# --- what else ran while a job was timed ---------------------------------------------------------------

def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy jiffies of the whole machine, jiffies of this process and its threads), Linux only."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, int(own[11]) + int(own[12])  # utime + stime


def _timed(progress: Progress, run: Callable[[], Any]):
    """Runs a latency job and records how busy the CPUs were with other processes meanwhile: timings
    taken while something else runs are not clean, and the result says so."""
    before, start = _cpu_jiffies(), time.monotonic()
    progress("timing")
    result = run()
    after, elapsed = _cpu_jiffies(), time.monotonic() - start
    other = None
    if before and after and elapsed > 0:
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        other_busy = (after[0] - before[0]) - (after[1] - before[1])
        other = round(max(0.0, other_busy / ticks / elapsed), 3)  # cores' worth of other work
    contention = {"other_processes_cpu_cores": other, "cpu_count": os.cpu_count(), "pid": os.getpid()}
    if isinstance(result, dict):
        result = {**result, "contention": contention}
    elif isinstance(result, list):
        result = [{**r, "contention": contention} if isinstance(r, dict) else r for r in result]
    return result


JOB_KINDS: dict[str, Callable[[dict[str, Any], Progress], Any]] = {
    "fvcore": _fvcore,
    "quick_bench": _quick_bench,
    "bench": _bench,
    "train_bench": _train_bench,
    "latency_sweep": _latency_sweep,
    "onnx_bench": _onnx_bench,
    "peaks": _peaks,
    "fold": _fold,
    "receptive_field": _receptive_field,
    "erf": _erf,
    "connectivity": _connectivity,
    "swin_masks": _swin_masks,
    "cam": _with_weights(_cam),
    "attention": _with_weights(_attention),
    "offsets": _with_weights(_offsets),
    "fusion": _with_weights(_fusion),
    "stn": _with_weights(_stn),
    "hold": _hold,
}
