"""The compute backend: takes model specs (plain dicts) and returns plain data.

Pages and the CLI never hold a live module across this boundary, so the same calls can
later be served by a remote machine. The default backend runs in this process.
"""
from __future__ import annotations

import os
import platform
from typing import Any

import torch

from explorer.spec import ModelSpec


def best_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def device_info() -> dict[str, Any]:
    device = best_device()
    info: dict[str, Any] = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info["name"] = props.name
        info["memory_bytes"] = props.total_memory
        info["capability"] = f"{props.major}.{props.minor}"
    else:
        info["name"] = "Apple GPU (MPS)" if device == "mps" else f"CPU ({info['cpu']}, {info['cpu_threads']} threads)"
    return info


class LocalBackend:
    """Runs every job in this process, on CUDA when available."""

    def cost(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.cost import analyse

        return analyse(ModelSpec.from_dict(spec))

    def fvcore(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.second_opinion import fvcore_count

        return fvcore_count(ModelSpec.from_dict(spec))

    def bench(self, spec: dict[str, Any], settings: dict[str, Any], on_wait=None) -> dict[str, Any]:
        """Latency sweep; waits in the device's queue (`on_wait(position)` while waiting)."""
        from explorer.latency import BenchSettings, bench

        settings = dict(settings)
        settings["batches"] = tuple(settings.get("batches", (1,)))
        return bench(ModelSpec.from_dict(spec), BenchSettings(**settings), on_wait=on_wait)

    def fold(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.reparam import fold_report

        return fold_report(ModelSpec.from_dict(spec))

    def swap_points(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.models import build_model
        from explorer.swaps import swap_points

        return swap_points(build_model(ModelSpec.from_dict(spec), device="meta"))

    def compare_row(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.compare import compare_row

        return compare_row(ModelSpec.from_dict(spec))

    def resolution_sweep(self, spec: dict[str, Any], sides: list[int]) -> list[dict[str, Any]]:
        from explorer.compare import resolution_sweep

        return resolution_sweep(ModelSpec.from_dict(spec), sides)

    def peaks(self, device: str, dtype: str) -> dict[str, Any]:
        from explorer.roofline import peaks_for

        return peaks_for(device, dtype)

    def device_info(self) -> dict[str, Any]:
        return device_info()


BACKEND = LocalBackend()
