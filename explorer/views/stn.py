"""Spatial transformer: the predicted affine θ, its sampling grid in input pixels, and the warped output.

θ maps output (target) coordinates to input (source) coordinates in the normalised [-1, 1] frame
of ``F.affine_grid`` (x first, then y). Pixel coordinates here are input-pixel indices with the centre
of pixel (y, x) at (y, x):

* ``align_corners=False`` (the STN default): px = ((gx + 1)·W − 1) / 2, py = ((gy + 1)·H − 1) / 2;
* ``align_corners=True``: px = (gx + 1)·(W − 1) / 2, py = (gy + 1)·(H − 1) / 2.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.errors import ExplorerError

__all__ = ["stn_grid", "grid_to_pixels", "sample_indices"]


def grid_to_pixels(grid: torch.Tensor, hw, align_corners: bool) -> torch.Tensor:
    """``F.affine_grid`` output (…, 2) in [-1, 1] (x, y) → input pixel coordinates (x, y)."""
    H, W = int(hw[0]), int(hw[1])
    size = grid.new_tensor([W, H])
    if align_corners:
        return (grid + 1) * (size - 1) / 2
    return ((grid + 1) * size - 1) / 2


def sample_indices(n: int, points: int) -> np.ndarray:
    """``points`` output rows/cols spread evenly over 0..n-1 (first and last included)."""
    points = max(1, min(int(points), n))
    if points == 1:
        return np.array([(n - 1) // 2])
    return np.unique(np.round(np.linspace(0, n - 1, points)).astype(np.int64))


def stn_grid(stn_module: nn.Module, x: torch.Tensor, points: int = 12, theta: torch.Tensor | None = None) -> dict[str, Any]:
    """θ, sampling grid and resampled output of a spatial transformer (``explorer.blocks.STN``).

    θ is predicted by the module's localisation net on ``x`` (or given as ``theta``, N×2×3 or 2×3,
    to explore a hand-set transform). The module's sampler settings (``mode``, ``padding_mode``,
    ``align_corners``) are used; the module's ``last_theta`` is left as it was. Runs without grad.

    Returns (numpy arrays, JSON-friendly scalars):

    * ``theta``: (N, 2, 3);
    * ``grid_xy``: (N, n, n, 2) input-pixel (x, y) sampled by the output pixels at rows
      ``rows`` and columns ``cols`` (n ≈ ``points`` evenly spread rows/cols, corners included);
    * ``regular_xy``: (n, n, 2) the same output pixels' own positions (the identity grid);
    * ``corners_xy``: (N, 4, 2) where the output's corner pixels sample the input
      (top-left, top-right, bottom-left, bottom-right);
    * ``output``: (N, C, H_out, W_out) the resampled output (F.grid_sample, as the module does);
    * ``rows``, ``cols`` (lists), ``input_hw``, ``output_hw``, ``align_corners``, ``mode``, ``padding_mode``.
    """
    if x.dim() != 4:
        raise ExplorerError(f"expected an N x C x H x W input, got shape {tuple(x.shape)}")
    align = bool(getattr(stn_module, "align_corners", False))
    mode = getattr(stn_module, "mode", "bilinear")
    padding_mode = getattr(stn_module, "padding_mode", "zeros")
    N, _, H, W = x.shape
    with torch.no_grad():
        if theta is None:
            loc = getattr(stn_module, "localization", None)
            if loc is None:
                raise ExplorerError(f"{type(stn_module).__name__} has no localisation net; pass theta")
            theta = loc(x).reshape(N, 2, 3).to(x.dtype)
        else:
            theta = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
            if theta.dim() == 2:
                theta = theta.unsqueeze(0)
            if tuple(theta.shape[-2:]) != (2, 3):
                raise ExplorerError(f"theta must be 2x3 or Nx2x3, got {tuple(theta.shape)}")
            theta = theta.expand(N, 2, 3)
        grid = F.affine_grid(theta, [N, x.shape[1], H, W], align_corners=align)  # N, H, W, 2 (x, y)
        output = F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align)
        pix = grid_to_pixels(grid.double(), (H, W), align)
    rows, cols = sample_indices(H, points), sample_indices(W, points)
    pix_np = pix.cpu().numpy()
    grid_xy = pix_np[:, rows][:, :, cols]
    yy, xx = np.meshgrid(rows.astype(np.float64), cols.astype(np.float64), indexing="ij")
    corners = pix_np[:, [0, 0, H - 1, H - 1], [0, W - 1, 0, W - 1]]
    return {
        "theta": theta.detach().cpu().numpy(),
        "grid_xy": grid_xy,
        "regular_xy": np.stack([xx, yy], axis=-1),
        "corners_xy": corners,
        "output": output.detach().cpu().numpy(),
        "rows": rows.tolist(),
        "cols": cols.tolist(),
        "input_hw": [int(H), int(W)],
        "output_hw": [int(output.shape[-2]), int(output.shape[-1])],
        "align_corners": align,
        "mode": mode,
        "padding_mode": padding_mode,
    }
