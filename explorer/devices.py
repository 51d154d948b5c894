"""Which device this process computes on, and what it is: read by the engine, the workers and the pages."""
from __future__ import annotations

import os
import platform
from typing import Any

import torch


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
