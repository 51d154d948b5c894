"""Swin Transformer: configuration read from the model, shifted-window attention masks, attention cost.

Everything here is computed from the model's own modules (torchvision's ``SwinTransformer`` and timm's
``SwinTransformer``) and from the Swin paper's construction (Liu et al. 2021, arXiv:2103.14030):

* a stage of blocks alternates W-MSA (shift 0) and SW-MSA (shift = window // 2);
* SW-MSA rolls the feature map by (-s, -s) (cyclic shift), labels the 3 x 3 regions that the roll
  glued together with the slices (0, -w), (-w, -s), (-s, None) per axis, partitions into windows and
  masks (adds -100 to) the attention logits between tokens whose labels differ;
* when the window covers the whole (padded) feature map the block is not shifted: torchvision sets
  the shift to 0 when ``window >= padded size``; timm, when ``resolution <= window``, also shrinks the
  window to the resolution.

Costs follow the paper's formulas, in multiply-adds:
Omega(MSA) = 4hwC^2 + 2(hw)^2 C and Omega(W-MSA) = 4hwC^2 + 2 M^2 hw C.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch.nn as nn

from explorer.errors import ExplorerError
from explorer.shapes import pair as _pair

MASK_VALUE = -100.0




def _conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------------------------
# The mask (the paper's construction, with torchvision's padding)
# ---------------------------------------------------------------------------------------------

def effective_shift(padded_hw: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> tuple[int, int]:
    """torchvision's rule: no shift along an axis where one window covers the whole padded map."""
    return tuple(0 if w >= p else s for p, w, s in zip(padded_hw, window, shift))  # type: ignore[return-value]


def shifted_window_mask(resolution_hw, window, shift) -> dict[str, Any]:
    """The SW-MSA region labels and attention masks for a feature map of ``resolution_hw``.

    ``window`` and ``shift`` are ints or (h, w) pairs. The map is padded at the bottom/right to a
    multiple of the window (as torchvision does); the shift is dropped along an axis where the window
    covers the whole padded map. Returns numpy arrays:

    * ``labels``: padded_H x padded_W region ids in the rolled (shifted) frame, as the mask is built;
    * ``labels_unrolled``: the same ids rolled back by (+s, +s), i.e. where each region lies in the
      un-shifted feature map;
    * ``window_labels``: nW x wh x ww, the labels seen by each window;
    * ``masks``: nW x (wh*ww) x (wh*ww) with 0 where two tokens share a label and -100 elsewhere;
    * ``masked_pairs`` per window, ``masked_windows`` (windows with any -100), ``total_windows``,
      ``window_grid`` (nWh, nWw), ``shifted``, ``shift`` (effective), ``padded_hw``.
    """
    H, W = _pair(resolution_hw)
    wh, ww = _pair(window)
    sh, sw = _pair(shift)
    if H < 1 or W < 1 or wh < 1 or ww < 1:
        raise ExplorerError(f"resolution and window must be positive, got {resolution_hw} and {window}")
    if not (0 <= sh < wh and 0 <= sw < ww):
        raise ExplorerError(f"shift must satisfy 0 <= shift < window, got shift {shift} for window {window}")
    pad_h = (wh - H % wh) % wh
    pad_w = (ww - W % ww) % ww
    Hp, Wp = H + pad_h, W + pad_w
    sh, sw = effective_shift((Hp, Wp), (wh, ww), (sh, sw))
    shifted = (sh + sw) > 0
    nwh, nww = Hp // wh, Wp // ww

    labels = np.zeros((Hp, Wp), dtype=np.int64)
    if shifted:
        # Exactly the reference code's slicing (Python slices; a zero shift along one axis makes
        # (-0, None) cover that whole axis, as in torchvision/timm).
        h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
        w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
        count = 0
        for hs in h_slices:
            for ws in w_slices:
                labels[hs, ws] = count
                count += 1
    # window_partition: (nWh, wh, nWw, ww) -> (nWh, nWw, wh, ww) -> (nW, wh*ww)
    window_labels = labels.reshape(nwh, wh, nww, ww).transpose(0, 2, 1, 3).reshape(nwh * nww, wh, ww)
    flat = window_labels.reshape(nwh * nww, wh * ww)
    diff = flat[:, None, :] - flat[:, :, None]
    masks = np.where(diff != 0, MASK_VALUE, 0.0).astype(np.float32)
    masked_pairs = (masks != 0).reshape(masks.shape[0], -1).sum(axis=1)
    return {
        "resolution_hw": [H, W],
        "padded_hw": [Hp, Wp],
        "window": [wh, ww],
        "shift": [sh, sw],
        "shifted": bool(shifted),
        "labels": labels,
        "labels_unrolled": np.roll(labels, shift=(sh, sw), axis=(0, 1)),
        "window_grid": (nwh, nww),
        "window_labels": window_labels,
        "masks": masks,
        "masked_pairs": masked_pairs.astype(np.int64),
        "masked_windows": int((masked_pairs > 0).sum()),
        "total_windows": int(nwh * nww),
        "regions": int(len(np.unique(labels))),
    }


# ---------------------------------------------------------------------------------------------
# Configuration read from the model
# ---------------------------------------------------------------------------------------------

def _is_torchvision_swin(model: nn.Module) -> bool:
    feats = getattr(model, "features", None)
    if not isinstance(feats, nn.Sequential):
        return False
    return any(hasattr(getattr(m, "attn", None), "shift_size") for m in feats.modules())


def _is_timm_swin(model: nn.Module) -> bool:
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(model, "patch_embed"):
        return False
    return any(hasattr(b, "shift_size") for stage in layers for b in getattr(stage, "blocks", ()))


def _torchvision_config(model: nn.Module, input_hw: tuple[int, int]) -> dict[str, Any]:
    feats = model.features
    stem = feats[0]
    conv = next((m for m in stem.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ExplorerError("torchvision Swin: no patch-embedding convolution in features[0]")
    k, s, p, d = (_pair(conv.kernel_size), _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation))
    res = tuple(_conv_out(n, k[i], s[i], p[i], d[i]) for i, n in enumerate(input_hw))
    stages = []
    for module in list(feats)[1:]:
        blocks = [b for b in module.children() if hasattr(getattr(b, "attn", None), "shift_size")] \
            if isinstance(module, nn.Sequential) else []
        if blocks:
            stage_blocks = []
            for b in blocks:
                window = _pair(b.attn.window_size)
                nominal = _pair(b.attn.shift_size)
                padded = tuple(math.ceil(r / w) * w for r, w in zip(res, window))
                shift = effective_shift(padded, window, nominal)
                stage_blocks.append({
                    "window": list(window),
                    "shift_nominal": list(nominal),
                    "shift": list(shift),
                    "shifted": sum(shift) > 0,
                    "heads": int(b.attn.num_heads),
                    "type": type(b).__name__,
                })
            dim = int(blocks[0].norm1.normalized_shape[0])
            stages.append({"resolution": list(res), "dim": dim, "blocks": stage_blocks})
        elif hasattr(module, "reduction") or "PatchMerging" in type(module).__name__:
            # torchvision's PatchMerging pads odd sizes to even, then takes 2x2 neighbourhoods.
            res = tuple((r + 1) // 2 for r in res)
    return {"library": "torchvision", "patch_size": list(k), "patch_stride": list(s),
            "embed_dim": int(conv.out_channels), "stages": stages}


def _timm_config(model: nn.Module, input_hw: tuple[int, int]) -> dict[str, Any]:
    pe = model.patch_embed
    conv = getattr(pe, "proj", None)
    patch = _pair(getattr(pe, "patch_size", None) or conv.kernel_size)
    if isinstance(conv, nn.Conv2d):
        k, s, p, d = (_pair(conv.kernel_size), _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation))
        if getattr(pe, "dynamic_img_pad", False):
            res = tuple(math.ceil(n / s[i]) for i, n in enumerate(input_hw))
        else:
            res = tuple(_conv_out(n, k[i], s[i], p[i], d[i]) for i, n in enumerate(input_hw))
        embed_dim = int(conv.out_channels)
    else:
        res = tuple(n // patch[i] for i, n in enumerate(input_hw))
        embed_dim = int(model.embed_dim)
    built_input = tuple(getattr(pe, "img_size", None) or ()) or None
    stages = []
    for stage in model.layers:
        ds = getattr(stage, "downsample", None)
        if ds is not None and not isinstance(ds, nn.Identity):
            res = tuple((r + 1) // 2 for r in res)
        stage_blocks = []
        dim = None
        for b in stage.blocks:
            built_res = tuple(getattr(b, "input_resolution", ()) or ())
            window = _pair(b.window_size)
            if built_res == res or not built_res:
                shift = _pair(b.shift_size)
                nominal = _pair(getattr(b, "target_shift_size", shift))
            else:
                # The model was built for another size: apply timm's own rule
                # (window shrinks to the resolution, no shift where resolution <= window).
                nominal = _pair(getattr(b, "target_shift_size", b.shift_size))
                window = tuple(r if r <= w else w for r, w in zip(res, window))
                shift = tuple(0 if r <= w else s for r, w, s in zip(res, window, nominal))
            stage_blocks.append({
                "window": list(window),
                "shift_nominal": list(nominal),
                "shift": list(shift),
                "shifted": sum(shift) > 0,
                "heads": int(b.attn.num_heads),
                "type": type(b).__name__,
                "built_resolution": list(built_res) if built_res else None,
            })
            dim = int(getattr(b, "dim", 0) or b.norm1.normalized_shape[0])
        stages.append({"resolution": list(res), "dim": dim, "blocks": stage_blocks})
    return {"library": "timm", "patch_size": list(patch), "patch_stride": list(patch),
            "embed_dim": embed_dim, "stages": stages,
            "built_input_hw": list(built_input) if built_input else None}


def swin_config(model: nn.Module, input_hw=(224, 224)) -> dict[str, Any]:
    """Patch size, embedding dim, per-stage depth/heads/dim/resolution and per-block window/shift.

    Read from the modules (torchvision ``features`` / timm ``layers[i].blocks[j]``). ``shift`` is the
    shift the block really applies at ``input_hw``; ``shift_nominal`` the one it was configured with.
    Stages are numbered 1..4 in the output (``stage`` key) as in the paper.
    """
    hw = _pair(input_hw)
    if _is_torchvision_swin(model):
        cfg = _torchvision_config(model, hw)
    elif _is_timm_swin(model):
        cfg = _timm_config(model, hw)
    else:
        raise ExplorerError(f"{type(model).__name__} is not a Swin Transformer (torchvision or timm)")
    if not cfg["stages"]:
        raise ExplorerError("no Swin blocks found in the model")
    for i, st in enumerate(cfg["stages"]):
        st["stage"] = i + 1
        st["depth"] = len(st["blocks"])
        st["heads"] = st["blocks"][0]["heads"] if st["blocks"] else None
        w = st["blocks"][0]["window"] if st["blocks"] else None
        st["window"] = w
        if w:
            st["tokens"] = st["resolution"][0] * st["resolution"][1]
            st["windows"] = math.ceil(st["resolution"][0] / w[0]) * math.ceil(st["resolution"][1] / w[1])
    cfg.update({
        "input_hw": list(hw),
        "depths": [st["depth"] for st in cfg["stages"]],
        "num_heads": [st["heads"] for st in cfg["stages"]],
        "dims": [st["dim"] for st in cfg["stages"]],
        "resolutions": [st["resolution"] for st in cfg["stages"]],
        "window_size": cfg["stages"][0]["window"],
    })
    return cfg


def swin_masks_for(model: nn.Module, input_hw, stage: int, block: int) -> dict[str, Any]:
    """The shifted-window masks of one block of the real model at ``input_hw`` (JSON-friendly).

    ``stage`` is 1-based (paper numbering, 1..4), ``block`` 0-based within the stage.
    """
    cfg = swin_config(model, input_hw)
    stages = cfg["stages"]
    if not 1 <= int(stage) <= len(stages):
        raise ExplorerError(f"stage must be 1..{len(stages)}, got {stage}")
    st = stages[int(stage) - 1]
    if not 0 <= int(block) < len(st["blocks"]):
        raise ExplorerError(f"block must be 0..{len(st['blocks']) - 1} in stage {stage}, got {block}")
    b = st["blocks"][int(block)]
    # The effective shift already encodes the library's rule; feed it (it is re-checked inside).
    m = shifted_window_mask(st["resolution"], b["window"], b["shift"])
    out = {k: (v.tolist() if isinstance(v, np.ndarray) else (list(v) if isinstance(v, tuple) else v))
           for k, v in m.items()}
    out.update({
        "stage": int(stage), "block": int(block), "heads": b["heads"], "dim": st["dim"],
        "shift_nominal": b["shift_nominal"], "block_type": b["type"],
        "config": {k: v for k, v in cfg.items() if k != "stages"},
        "library": cfg["library"],
    })
    return out


# ---------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------

def attention_cost(tokens_hw, dim: int, window) -> dict[str, Any]:
    """The paper's complexity formulas (multiply-adds, one MAC counted once) for an h x w map of C = dim.

    Omega(MSA) = 4hwC^2 + 2(hw)^2 C   (QKV and output projections + QK^T and AV over all tokens)
    Omega(W-MSA) = 4hwC^2 + 2M^2 hwC  (the same projections; attention only inside M x M windows)
    The formula assumes h and w are multiples of M; ``w_msa_padded`` uses the padded map instead
    (what torchvision computes when they are not).
    """
    h, w = _pair(tokens_hw)
    C = int(dim)
    mh, mw = _pair(window)
    hw = h * w
    proj = 4 * hw * C * C
    msa = proj + 2 * hw * hw * C
    w_msa = proj + 2 * (mh * mw) * hw * C
    hp, wp = math.ceil(h / mh) * mh, math.ceil(w / mw) * mw
    w_msa_padded = 4 * hp * wp * C * C + 2 * (mh * mw) * hp * wp * C
    return {
        "h": h, "w": w, "dim": C, "window": [mh, mw],
        "projections": proj,
        "msa_attention": 2 * hw * hw * C,
        "w_msa_attention": 2 * (mh * mw) * hw * C,
        "msa": msa,
        "w_msa": w_msa,
        "w_msa_padded": w_msa_padded,
        "ratio": msa / w_msa,
        "unit": "multiply-adds",
    }
