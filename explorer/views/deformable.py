"""Deformable convolutions: where the kernel taps really sample.

Offset layout (``torchvision.ops.deform_conv2d``, used by ``explorer.blocks.DeformConv`` /
``ModulatedDeformConv`` and ``torchvision.ops.DeformConv2d``): for a kh×kw kernel and G offset
groups the offset tensor has 2·G·kh·kw channels; for group g and kernel tap t (row-major over the
kernel, t = i·kw + j) channel 2·(g·K + t) holds Δy and channel 2·(g·K + t) + 1 holds Δx (K = kh·kw).
The DCNv2 mask has G·K channels, channel g·K + t.

Coordinates are input-pixel indices (pixel (y, x) has its centre at (y, x)). For output position
(oy, ox) the regular tap position is (oy·s_h − p_h + i·d_h, ox·s_w − p_w + j·d_w) and the deformed one
adds (Δy, Δx); the value there is bilinearly interpolated (zero outside the input).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from explorer.errors import ExplorerError
from explorer.shapes import pair as _pair

__all__ = [
    "deformable_layers",
    "capture_offsets",
    "sampling_points",
    "stack_sampling_points",
    "regular_taps",
]




def _np(a) -> np.ndarray | None:
    if a is None:
        return None
    if torch.is_tensor(a):
        return a.detach().float().cpu().numpy()
    return np.asarray(a)


# ---------------------------------------------------------------------------------------------
# Sampling points of one layer
# ---------------------------------------------------------------------------------------------

def regular_taps(kernel_size, dilation=1) -> np.ndarray:
    """(K, 2) tap offsets (i·d_h, j·d_w) in row-major kernel order (relative to the window's top-left)."""
    kh, kw = _pair(kernel_size)
    dh, dw = _pair(dilation)
    ii, jj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    return np.stack([ii.ravel() * dh, jj.ravel() * dw], axis=1).astype(np.float64)


def _field_at(field: np.ndarray, y: float, x: float) -> np.ndarray:
    """(C, H, W) field bilinearly interpolated at a (fractional) position, clamped to the grid."""
    _, H, W = field.shape
    y = min(max(float(y), 0.0), H - 1.0)
    x = min(max(float(x), 0.0), W - 1.0)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, H - 1), min(x0 + 1, W - 1)
    fy, fx = y - y0, x - x0
    return ((1 - fy) * (1 - fx) * field[:, y0, x0] + (1 - fy) * fx * field[:, y0, x1]
            + fy * (1 - fx) * field[:, y1, x0] + fy * fx * field[:, y1, x1])


def _per_sample(a: np.ndarray | None, batch: int) -> np.ndarray | None:
    if a is None:
        return None
    if a.ndim == 4:
        return a[batch]
    if a.ndim == 3:
        return a
    raise ExplorerError(f"expected a (B, C, H, W) or (C, H, W) offset/mask tensor, got shape {a.shape}")


def _taps_at(offset: np.ndarray, mask: np.ndarray | None, kernel_size, stride, padding, dilation,
             out_yx: tuple[float, float], offset_group: int, interpolate: bool):
    """Regular and deformed tap positions at a (possibly fractional) output position."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    K = kh * kw
    C, Ho, Wo = offset.shape
    if C % (2 * K):
        raise ExplorerError(f"offset has {C} channels; a {kh}x{kw} kernel needs a multiple of {2 * K}")
    groups = C // (2 * K)
    if not 0 <= offset_group < groups:
        raise ExplorerError(f"offset_group {offset_group} out of range ({groups} groups)")
    oy, ox = float(out_yx[0]), float(out_yx[1])
    if interpolate:
        off = _field_at(offset[2 * K * offset_group: 2 * K * (offset_group + 1)], oy, ox)
        m = _field_at(mask[K * offset_group: K * (offset_group + 1)], oy, ox) if mask is not None else None
    else:
        iy, ix = int(oy), int(ox)
        off = offset[2 * K * offset_group: 2 * K * (offset_group + 1), iy, ix]
        m = mask[K * offset_group: K * (offset_group + 1), iy, ix] if mask is not None else None
    base = np.array([oy * sh - ph, ox * sw - pw], dtype=np.float64)
    regular = base[None, :] + regular_taps((kh, kw), dilation)
    delta = off.astype(np.float64).reshape(K, 2)  # (Δy, Δx) per tap
    return regular, regular + delta, delta, (None if m is None else m.astype(np.float64))


def sampling_points(offset, mask, kernel_size, stride, padding, dilation, out_yx, batch: int = 0,
                    offset_group: int = 0) -> dict[str, Any]:
    """The k·k sampling positions of one output location of a deformable conv.

    ``offset``: (B, 2·G·K, H_out, W_out) or (2·G·K, H_out, W_out) (tensor or array); ``mask``: the
    DCNv2 modulation (B, G·K, H_out, W_out) / (G·K, H_out, W_out), or None (DCNv1). ``out_yx``:
    integer (row, col) in the output grid. Returns

    * ``regular``: (K, 2) float64, (y, x) of the taps on the regular (dilated) grid, input pixels;
    * ``deformed``: (K, 2), regular + offset (where the conv really samples, bilinear);
    * ``offset``: (K, 2) (Δy, Δx); ``mask``: (K,) modulation weights or None;
    * ``taps``: (K, 2) int kernel indices (i, j); ``center``: (y, x) of the kernel centre;
      ``out_yx``, ``kernel_size``, ``stride``, ``padding``, ``dilation`` as lists; ``offset_group``.
    """
    off = _per_sample(_np(offset), batch)
    msk = _per_sample(_np(mask), batch)
    _, Ho, Wo = off.shape
    oy, ox = int(out_yx[0]), int(out_yx[1])
    if not (0 <= oy < Ho and 0 <= ox < Wo):
        raise ExplorerError(f"output position {tuple(out_yx)} is outside the {Ho}x{Wo} output grid")
    regular, deformed, delta, m = _taps_at(off, msk, kernel_size, stride, padding, dilation, (oy, ox),
                                           offset_group, interpolate=False)
    kh, kw = _pair(kernel_size)
    dh, dw = _pair(dilation)
    ii, jj = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    return {
        "out_yx": [oy, ox],
        "regular": regular,
        "deformed": deformed,
        "offset": delta,
        "mask": m,
        "taps": np.stack([ii.ravel(), jj.ravel()], axis=1),
        "center": [float(regular[:, 0].min() + (kh - 1) * dh / 2), float(regular[:, 1].min() + (kw - 1) * dw / 2)],
        "kernel_size": [kh, kw],
        "stride": list(_pair(stride)),
        "padding": list(_pair(padding)),
        "dilation": [dh, dw],
        "offset_group": int(offset_group),
    }


# ---------------------------------------------------------------------------------------------
# Finding the layers and capturing their offsets
# ---------------------------------------------------------------------------------------------

def _is_explorer_dcn(m: nn.Module) -> bool:
    try:
        from explorer.blocks.convs import DeformConv
    except Exception:  # pragma: no cover
        return False
    return isinstance(m, DeformConv)


def _is_tv_dcn(m: nn.Module) -> bool:
    try:
        from torchvision.ops import DeformConv2d
    except Exception:  # pragma: no cover
        return False
    return isinstance(m, DeformConv2d)


def deformable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every DeformConv / ModulatedDeformConv / torchvision DeformConv2d, in order."""
    return [(n, m) for n, m in model.named_modules() if _is_explorer_dcn(m) or _is_tv_dcn(m)]


def _geometry(m: nn.Module) -> dict[str, Any]:
    return {
        "kernel_size": list(_pair(m.kernel_size)),
        "stride": list(_pair(m.stride)),
        "padding": list(_pair(m.padding)),
        "dilation": list(_pair(m.dilation)),
    }


def _magnitude(offset: np.ndarray) -> np.ndarray:
    """Mean |Δp| over taps (and offset groups): (B, H_out, W_out)."""
    B, C, H, W = offset.shape
    o = offset.reshape(B, C // 2, 2, H, W)
    return np.sqrt((o.astype(np.float64) ** 2).sum(axis=2)).mean(axis=1)


def capture_offsets(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, dict]:
    """Run ``model(x)`` once (no grad) and capture the offsets (and DCNv2 masks) of its deformable layers.

    Hooks: for ``explorer.blocks.DeformConv``/``ModulatedDeformConv`` a forward hook on the block's
    ``offset_conv`` (its output is the raw offsets [+ mask logits]; the mask is computed exactly as the
    block does, sigmoid · mask_scale); for ``torchvision.ops.DeformConv2d`` a forward pre-hook reading
    the offset and mask arguments. All hooks are removed afterwards, also if the forward raises.

    Returns ``{layer_name: {"offset": (B, 2GK, Ho, Wo) float32 ndarray, "mask": (B, GK, Ho, Wo) | None,
    "magnitude": (B, Ho, Wo) mean |Δp|, "kernel_size", "stride", "padding", "dilation" ([h, w] lists),
    "input_hw", "output_hw", "image_hw", "offset_groups", "type", "order"}}`` in execution order
    (a layer called more than once keeps its first call).
    """
    found = deformable_layers(model)
    if layers is not None:
        wanted = set(layers)
        missing = wanted - {n for n, _ in found}
        if missing:
            raise ExplorerError(f"not deformable layers of the model: {', '.join(sorted(missing))}")
        found = [(n, m) for n, m in found if n in wanted]
    if not found:
        raise ExplorerError(f"{type(model).__name__} has no deformable convolutions")
    image_hw = [int(x.shape[-2]), int(x.shape[-1])]
    out: dict[str, dict] = {}
    handles = []

    def store(name, m, inp, offset, mask):
        if name in out:
            return
        k = _pair(m.kernel_size)
        off = _np(offset)
        entry = {
            "offset": off,
            "mask": _np(mask),
            "magnitude": _magnitude(off),
            **_geometry(m),
            "input_hw": [int(inp.shape[-2]), int(inp.shape[-1])],
            "output_hw": [int(off.shape[-2]), int(off.shape[-1])],
            "image_hw": image_hw,
            "offset_groups": int(off.shape[1] // (2 * k[0] * k[1])),
            "type": type(m).__name__,
            "order": len(out),
        }
        out[name] = entry

    def explorer_hook(name, block):
        def hook(mod, args, output):
            with torch.no_grad():
                K = block.num_taps
                offset = output[:, : 2 * K]
                mask = None
                if output.shape[1] > 2 * K:  # ModulatedDeformConv: same ops as offsets_and_mask
                    mask = torch.sigmoid(output[:, 2 * K:]) * getattr(block, "mask_scale", 1.0)
                store(name, block, args[0], offset, mask)
        return hook

    def tv_hook(name):
        def hook(mod, args, kwargs):
            b = dict(zip(("input", "offset", "mask"), args))
            b.update(kwargs)
            store(name, mod, b["input"], b["offset"], b.get("mask"))
        return hook

    try:
        for name, m in found:
            if _is_explorer_dcn(m):
                handles.append(m.offset_conv.register_forward_hook(explorer_hook(name, m)))
            else:
                handles.append(m.register_forward_pre_hook(tv_hook(name), with_kwargs=True))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return dict(sorted(out.items(), key=lambda kv: kv[1]["order"]))


# ---------------------------------------------------------------------------------------------
# Stacking through several deformable layers
# ---------------------------------------------------------------------------------------------

def _scale_between(src_hw, dst_hw, align: str):
    """Map (y, x) on a grid of size src_hw to a grid of size dst_hw by the size ratio."""
    ry = dst_hw[0] / src_hw[0]
    rx = dst_hw[1] / src_hw[1]

    def f(pts: np.ndarray) -> np.ndarray:
        r = np.array([ry, rx])
        if align == "center":
            return (pts + 0.5) * r - 0.5
        return pts * r
    return f


def stack_sampling_points(captures: dict[str, dict], layer_names: Sequence[str], out_yx, batch: int = 0,
                          align: str = "corner", max_points: int = 200_000) -> dict[str, Any]:
    """Sampling points of one output unit of the deepest listed layer, followed back to the image.

    Start at ``out_yx`` in the output grid of the deepest of ``layer_names`` (ordered by execution,
    whatever order they are given in); take its K deformed sampling points in that layer's input
    coordinates; map them onto the previous listed layer's output grid; there each point becomes the
    K deformed sampling points of that (generally fractional) output position; and so on down to the
    shallowest listed layer, whose points are finally mapped to image pixels. Points multiply by K per
    layer (9^3 = 729 for three 3×3 layers); more than ``max_points`` is refused.

    Approximations (documented, not exact):

    * between two listed layers (and from the shallowest one's input to the image) the layers in
      between are treated as a pure rescaling by the size ratio of the grids, ``captured input_hw`` of
      the deeper layer → ``output_hw`` of the shallower one (→ ``image_hw`` at the end):
      ``align="corner"`` maps p → p·r, exact for stride-s convs/pools with "same" padding
      (padding = (k−1)/2, output i centred on input s·i: ResNet's strided 3×3 and 1×1 convs);
      ``align="center"`` maps p → (p + ½)·r − ½ (pixel-centre alignment, e.g. 2×2 pooling).
      It ignores those layers' own kernel extent (a 1×1 conv has none; a 3×3 plain conv in between
      would widen the footprint by its regular taps, which are not drawn);
    * a point that falls between output positions of a shallower deformable layer uses that layer's
      offsets (and masks) bilinearly interpolated at the point (clamped to the grid).

    Returns ``{"layers": names deepest first, "levels": [{"layer", "points": (M, 2) input coords of that
    layer, "regular": the same with all offsets zero, "weights": (M,) product of masks along the path or
    None, "parent": (M,) index into the previous level's points (-1 at the first level)}, ...],
    "image_points": (M, 2) in image pixels, "image_regular": (M, 2), "image_weights": (M,) | None,
    "image_hw", "out_yx", "align"}``.
    """
    if align not in ("corner", "center"):
        raise ExplorerError(f"align must be 'corner' or 'center', got {align!r}")
    names = list(layer_names)
    if not names:
        raise ExplorerError("no layers given")
    missing = [n for n in names if n not in captures]
    if missing:
        raise ExplorerError(f"no captured offsets for {', '.join(missing)}")
    names = sorted(names, key=lambda n: captures[n].get("order", 0), reverse=True)  # deepest first
    total = 1
    for n in names:
        kh, kw = captures[n]["kernel_size"]
        total *= kh * kw
    if total > max_points:
        raise ExplorerError(f"{len(names)} layers give {total:,} points (limit {max_points:,}); choose fewer layers")

    levels: list[dict[str, Any]] = []
    pts = np.array([[float(out_yx[0]), float(out_yx[1])]])  # positions on the current layer's output grid
    reg = pts.copy()
    weights: np.ndarray | None = None
    first = captures[names[0]]
    Ho, Wo = first["output_hw"]
    if not (0 <= int(out_yx[0]) < Ho and 0 <= int(out_yx[1]) < Wo):
        raise ExplorerError(f"output position {tuple(out_yx)} is outside the {Ho}x{Wo} output of {names[0]}")
    for li, name in enumerate(names):
        c = captures[name]
        off = _per_sample(_np(c["offset"]), batch)
        msk = _per_sample(_np(c.get("mask")), batch)
        zero = np.zeros_like(off)
        new_pts, new_reg, new_w, parent = [], [], [], []
        for pi, (p, q) in enumerate(zip(pts, reg)):
            _, deformed, _, m = _taps_at(off, msk, c["kernel_size"], c["stride"], c["padding"], c["dilation"],
                                         p, 0, interpolate=True)
            _, regular, _, _ = _taps_at(zero, None, c["kernel_size"], c["stride"], c["padding"], c["dilation"],
                                        q, 0, interpolate=True)
            new_pts.append(deformed)
            new_reg.append(regular)
            parent.append(np.full(len(deformed), pi if li else -1))
            if m is not None:
                w = m if weights is None else m * weights[pi]
                new_w.append(w)
            elif weights is not None:
                new_w.append(np.full(len(deformed), weights[pi]))
        pts, reg = np.concatenate(new_pts), np.concatenate(new_reg)
        weights = np.concatenate(new_w) if new_w else None
        levels.append({"layer": name, "points": pts, "regular": reg, "weights": weights,
                       "parent": np.concatenate(parent)})
        # map this layer's input coordinates onto the next (shallower) layer's output grid
        if li + 1 < len(names):
            f = _scale_between(c["input_hw"], captures[names[li + 1]]["output_hw"], align)
            pts, reg = f(pts), f(reg)
    last = captures[names[-1]]
    image_hw = last.get("image_hw") or last["input_hw"]
    f = _scale_between(last["input_hw"], image_hw, align)
    return {
        "layers": names,
        "levels": levels,
        "image_points": f(pts),
        "image_regular": f(reg),
        "image_weights": weights,
        "image_hw": list(image_hw),
        "out_yx": [int(out_yx[0]), int(out_yx[1])],
        "align": align,
    }
