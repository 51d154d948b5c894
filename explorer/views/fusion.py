"""Learned fusion weights of detector necks, as plain arrays for the views.

* ASFF (YOLOv3 + ASFF): each output level blends the three pyramid levels, resized to its grid, with
  per-pixel softmax weights: one (3, H, W) map per output level; the three weights sum to 1 per pixel.
* M2Det's SFAM: per scale, SE channel attention over the concatenation of the 8 TUMs' outputs
  (8 × 256 channels, TUM 1 first): averaging each TUM's 256 weights gives a (scales × TUMs) table of
  how much each scale leans on shallow or deep TUMs.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from explorer.errors import ExplorerError

ASFF_INPUT_LEVELS = ("stride 32", "stride 16", "stride 8")
NO_FUSION_WEIGHTS = "this model has no learned fusion weights (ASFF or M2Det's SFAM)"


def fusion_kind(model: nn.Module) -> str | None:
    if hasattr(model, "fusion_weights"):
        return "asff"
    if hasattr(model, "sfam_weights"):
        return "sfam"
    return None


def fusion_report(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    kind = fusion_kind(model)
    if kind is None:
        raise ExplorerError(NO_FUSION_WEIGHTS)
    with torch.no_grad():
        if kind == "asff":
            maps = {name: w[0].float().numpy() for name, w in model.fusion_weights(x).items()}
            return {"kind": kind, "input_levels": list(ASFF_INPUT_LEVELS), "maps": maps,
                    "mean_weights": {name: m.mean(axis=(1, 2)).tolist() for name, m in maps.items()}}
        scales = [w[0].float().numpy() for w in model.sfam_weights(x)]
    tums = len(model.neck.tums)
    per_tum = np.stack([s.reshape(tums, -1).mean(axis=1) for s in scales])  # (scales, TUMs)
    return {"kind": kind, "per_tum": per_tum, "channels": [len(s) for s in scales]}

