"""Small shape helpers shared by the engine's views and blocks (this module imports nothing of the engine)."""
from __future__ import annotations

from typing import Any


def pair(v: Any) -> tuple[int, int]:
    """A (height, width) pair from how PyTorch and timm write sizes: an int (square), a 1-sequence (square),
    or a sequence whose last two entries are the spatial ones ((H, W), or (C, H, W) for a per-sample size)."""
    if isinstance(v, (list, tuple)):
        if len(v) == 0:
            raise ValueError("an empty size has no height and width")
        if len(v) == 1:
            return int(v[0]), int(v[0])
        return int(v[-2]), int(v[-1])
    return int(v), int(v)
