"""Attention kinds: which modules are attention layers, how each kind's weights are recomputed, and one
small strategy per kind that hooks such a layer and records its maps.

The dispatcher and the readouts (rollout, grids) are ``explorer.views.attention``, whose module
docstring states the conventions of the maps. As timm's ``utils/attention_extract.py`` does, every kind
is a few lines: ``STRATEGIES`` maps a kind (``attention_layers``) to a function that registers a
forward hook on the layer; the hook receives the module's own input after it computed its output and
recomputes softmax(QK^T/sqrt(d) [+ bias + mask]) with the unfused formula, leaving the output untouched.
The ``nn.TransformerEncoder`` layers are hooked through their stack, and DETR's token map through its
``input_proj``; every hook lives in a ``Capture`` so that the dispatcher removes them all.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.blocks.scored_attention import ScoredMultiheadAttention, ScoredTimmAttention
from explorer.native.detr import DETR
from explorer.native.pvt_v1 import SpatialReductionAttention

_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
             "average_attn_weights", "is_causal")


# ---------------------------------------------------------------------------------------------
# Which modules are attention layers
# ---------------------------------------------------------------------------------------------

def _timm_classes() -> dict[str, tuple[type, ...]]:
    out: dict[str, tuple[type, ...]] = {"vit": (), "swin": (), "pvt": (), "botnet": (), "attention2d": ()}
    imports = {
        "vit": ("timm.layers.attention", "Attention"),
        "swin": ("timm.models.swin_transformer", "WindowAttention"),
        "pvt": ("timm.models.pvt_v2", "Attention"),
        "botnet": ("timm.layers.bottleneck_attn", "BottleneckAttn"),
        "attention2d": ("timm.models.maxxvit", "Attention2d"),
    }
    for key, (module_name, class_name) in imports.items():
        try:
            out[key] = (getattr(importlib.import_module(module_name), class_name),)
        except Exception:  # pragma: no cover - timm missing or changed
            pass
    return out


def _tv_swin_classes() -> tuple[type, ...]:
    try:
        from torchvision.models.swin_transformer import ShiftedWindowAttention
        return (ShiftedWindowAttention,)  # V2 subclasses it
    except Exception:  # pragma: no cover
        return ()


def _encoder_stacks(model: nn.Module) -> dict[str, tuple[nn.TransformerEncoder, list[str]]]:
    """Each ``nn.TransformerEncoder`` of ``nn.TransformerEncoderLayer``s with their own ``nn.MultiheadAttention``
    (not a swapped score function), by name: the stack and the names of its layers' ``self_attn``."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.TransformerEncoder) and all(
                isinstance(l, nn.TransformerEncoderLayer) and isinstance(l.self_attn, nn.MultiheadAttention)
                for l in m.layers):
            prefix = f"{name}." if name else ""
            out[name] = (m, [f"{prefix}layers.{i}.self_attn" for i in range(len(m.layers))])
    return out


def _kind_of(module: nn.Module, timm_cls: dict, tv_swin: tuple) -> str | None:
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(module, (ScoredMultiheadAttention, ScoredTimmAttention)):  # a `tfm:score` swap
        return "scored"
    if isinstance(module, SpatialReductionAttention):
        return "native_pvt"
    if tv_swin and isinstance(module, tv_swin):
        return "torchvision_swin"
    for kind, key in (("timm_swin", "swin"), ("timm_pvt", "pvt"), ("timm_botnet", "botnet"),
                      ("timm_attention2d", "attention2d"), ("timm_vit", "vit")):
        if timm_cls[key] and isinstance(module, timm_cls[key]):
            return kind
    return None


def no_attention_layers(model: nn.Module) -> str:
    """Why a model has no attention maps to show (attention_maps' refusal, and the attention job's)."""
    return (f"{type(model).__name__} has no supported attention layers (nn.MultiheadAttention, "
            "nn.TransformerEncoder, timm ViT / Swin / PVT v2 / BoTNet / CoAtNet attention, PVT v1)")


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, kind) for every supported attention module, in module-registration order.

    kind is one of ``mha``, ``torch_encoder`` (the ``self_attn`` of an ``nn.TransformerEncoderLayer``
    in an ``nn.TransformerEncoder``), ``timm_vit``, ``torchvision_swin``, ``timm_swin``, ``native_pvt``,
    ``timm_pvt``, ``timm_botnet``, ``timm_attention2d``.
    """
    timm_cls, tv_swin = _timm_classes(), _tv_swin_classes()
    in_stacks = {n for _, names in _encoder_stacks(model).values() for n in names}
    out = []
    for name, m in model.named_modules():
        kind = "torch_encoder" if name in in_stacks else _kind_of(m, timm_cls, tv_swin)
        if kind is not None:
            out.append((name, m, kind))
    return out


# ---------------------------------------------------------------------------------------------
# Recomputation of the weights (one function per module kind)
# ---------------------------------------------------------------------------------------------

def _bind(names: Sequence[str], args: tuple, kwargs: dict) -> dict[str, Any]:
    bound = dict(zip(names, args))
    for k, v in kwargs.items():
        bound[k] = v
    return bound


def _additive(mask: torch.Tensor | None, dtype: torch.dtype, true_means_masked: bool = True) -> torch.Tensor | None:
    """A boolean or float mask as an additive float mask (-inf where masked)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        masked = mask if true_means_masked else ~mask
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(masked, float("-inf"))
    return mask.to(dtype)


@torch.no_grad()
def mha_attention_weights(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor | None = None,
                          key_padding_mask: torch.Tensor | None = None,
                          attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(QK^T/sqrt(d) + masks) per head of an ``nn.MultiheadAttention``, from its own weights.

    Same inputs as the module (``batch_first`` respected, unbatched 2-D inputs allowed); returns
    (B, heads, L, S) (S includes the ``bias_k`` / ``add_zero_attn`` slots when the module has them),
    equal to the module's ``need_weights=True, average_attn_weights=False`` weights.
    Boolean masks follow the module's convention (True = not allowed to attend).
    """
    key = query if key is None else key
    batched = query.dim() == 3
    if not batched:
        query, key = query.unsqueeze(0 if module.batch_first else 1), key.unsqueeze(0 if module.batch_first else 1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    if not module.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    B, L, E = query.shape
    h = module.num_heads
    d = E // h
    if module._qkv_same_embed_dim:
        w_q, w_k, _ = module.in_proj_weight.chunk(3)
    else:
        w_q, w_k = module.q_proj_weight, module.k_proj_weight
    b_q = b_k = None
    if module.in_proj_bias is not None:
        b_q, b_k, _ = module.in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q)
    k = F.linear(key, w_k, b_k)
    kpm = _additive(key_padding_mask, q.dtype)  # (B, S)
    am = _additive(attn_mask, q.dtype)  # (L, S) or (B*h, L, S)
    if module.bias_k is not None:
        k = torch.cat([k, module.bias_k.reshape(1, 1, E).expand(B, 1, E)], dim=1)
        am = F.pad(am, (0, 1)) if am is not None else None
        kpm = F.pad(kpm, (0, 1)) if kpm is not None else None
    q = q.reshape(B, L, h, d).transpose(1, 2)
    k = k.reshape(B, k.shape[1], h, d).transpose(1, 2)
    if module.add_zero_attn:
        k = torch.cat([k, k.new_zeros(B, h, 1, d)], dim=2)
        am = F.pad(am, (0, 1)) if am is not None else None
        kpm = F.pad(kpm, (0, 1)) if kpm is not None else None
    S = k.shape[2]
    scores = (q * math.sqrt(1.0 / float(d))) @ k.transpose(-2, -1)  # (B, h, L, S)
    if am is not None:
        scores = scores + (am.reshape(B, h, L, S) if am.dim() == 3 else am.reshape(1, 1, L, S))
    if kpm is not None:
        scores = scores + kpm.reshape(B, 1, 1, S)
    return torch.softmax(scores, dim=-1)


@torch.no_grad()
def _timm_vit_weights(module: nn.Module, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
    """timm ``Attention``'s unfused path: (q·scale) k^T + mask → softmax; (B, heads, N, N)."""
    B, N, _ = x.shape
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias)
    qkv = qkv.reshape(B, N, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = module.q_norm.forward(q), module.k_norm.forward(k)
    attn = (q * module.scale) @ k.transpose(-2, -1)
    if is_causal:
        attn = attn + attn.new_full((N, N), float("-inf")).triu_(1)
    elif attn_mask is not None:
        attn = attn + _additive(attn_mask, attn.dtype, true_means_masked=False)  # SDPA: True = keep
    return attn.softmax(dim=-1)


def _tv_swin_geometry(H: int, W: int, window, shift) -> dict[str, Any]:
    wh, ww = int(window[0]), int(window[1])
    Hp, Wp = H + (wh - H % wh) % wh, W + (ww - W % ww) % ww
    sh, sw = int(shift[0]), int(shift[1])
    # torchvision: pad, then no shift along an axis where one window covers the padded map.
    if wh >= Hp:
        sh = 0
    if ww >= Wp:
        sw = 0
    rows = (np.arange(Hp)[:, None] + sh) % Hp  # rolled frame → padded frame
    cols = (np.arange(Wp)[None, :] + sw) % Wp
    yy = np.broadcast_to(rows, (Hp, Wp))
    xx = np.broadcast_to(cols, (Hp, Wp))
    pad = (yy >= H) | (xx >= W)
    return _geometry(H, W, Hp, Wp, (wh, ww), (sh, sw), yy, xx, pad, "pad_then_roll")


def _timm_swin_geometry(H: int, W: int, window, shift) -> dict[str, Any]:
    wh, ww = int(window[0]), int(window[1])
    Hp, Wp = H + (wh - H % wh) % wh, W + (ww - W % ww) % ww
    sh, sw = int(shift[0]), int(shift[1])
    # timm: cyclic shift of the H x W map, then pad at the bottom/right.
    r = np.arange(Hp)[:, None]
    c = np.arange(Wp)[None, :]
    yy = np.broadcast_to((r + sh) % H, (Hp, Wp)).copy()
    xx = np.broadcast_to((c + sw) % W, (Hp, Wp)).copy()
    pad = np.broadcast_to((r >= H) | (c >= W), (Hp, Wp))
    return _geometry(H, W, Hp, Wp, (wh, ww), (sh, sw), yy, xx, pad, "roll_then_pad")


def _geometry(H, W, Hp, Wp, window, shift, yy, xx, pad, order) -> dict[str, Any]:
    wh, ww = window
    nwh, nww = Hp // wh, Wp // ww
    yx = np.stack([np.where(pad, -1, yy), np.where(pad, -1, xx)], axis=-1).astype(np.int64)  # Hp, Wp, 2
    tokens = yx.reshape(nwh, wh, nww, ww, 2).transpose(0, 2, 1, 3, 4).reshape(nwh * nww, wh * ww, 2)
    info = {
        "resolution": [int(H), int(W)],
        "padded_hw": [int(Hp), int(Wp)],
        "window": [int(wh), int(ww)],
        "shift": [int(shift[0]), int(shift[1])],
        "shifted": bool(shift[0] or shift[1]),
        "window_grid": [int(nwh), int(nww)],
        "num_windows": int(nwh * nww),
        "tokens_per_window": int(wh * ww),
        "frame": order,
    }
    return {"info": info, "tokens": tokens}


@torch.no_grad()
def _tv_swin_weights(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """torchvision ``shifted_window_attention`` up to the softmax: (B, nW, heads, M, M), mask, geometry."""
    B, H, W, C = x.shape
    window = list(module.window_size)
    geo = _tv_swin_geometry(H, W, window, module.shift_size)
    Hp, Wp = geo["info"]["padded_hw"]
    sh, sw = geo["info"]["shift"]
    wh, ww = window
    heads = module.num_heads
    xp = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
    if sh + sw > 0:
        xp = torch.roll(xp, shifts=(-sh, -sw), dims=(1, 2))
    nW = (Hp // wh) * (Wp // ww)
    xw = xp.view(B, Hp // wh, wh, Wp // ww, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nW, wh * ww, C)
    logit_scale = getattr(module, "logit_scale", None)
    qkv_bias = module.qkv.bias
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        n = qkv_bias.numel() // 3
        qkv_bias[n: 2 * n].zero_()
    qkv = F.linear(xw, module.qkv.weight, qkv_bias)
    qkv = qkv.reshape(xw.size(0), xw.size(1), 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        q = q * (C // heads) ** -0.5
        attn = q.matmul(k.transpose(-2, -1))
    attn = attn + module.get_relative_position_bias()
    mask = None
    M = wh * ww
    if sh + sw > 0:
        labels = x.new_zeros((Hp, Wp))
        count = 0
        for hs in ((0, -wh), (-wh, -sh), (-sh, None)):
            for ws in ((0, -ww), (-ww, -sw), (-sw, None)):
                labels[hs[0]: hs[1], ws[0]: ws[1]] = count
                count += 1
        labels = labels.view(Hp // wh, wh, Wp // ww, ww).permute(0, 2, 1, 3).reshape(nW, M)
        mask = labels.unsqueeze(1) - labels.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(B, nW, heads, M, M) + mask.unsqueeze(1).unsqueeze(0)
    attn = attn.reshape(B, nW, heads, M, M)
    return torch.softmax(attn, dim=-1), mask, geo


@torch.no_grad()
def _timm_swin_weights(module: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, batch: int):
    """timm ``WindowAttention``'s unfused path: (B, nW, heads, M, M)."""
    B_, N, _ = x.shape
    qkv = F.linear(x, module.qkv.weight, module.qkv.bias).reshape(B_, N, 3, module.num_heads, -1)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    attn = (q * module.scale) @ k.transpose(-2, -1)
    attn = attn + module._get_rel_pos_bias()
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(-1, nw, module.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
    attn = attn.reshape(batch, B_ // batch, module.num_heads, N, N)
    return torch.softmax(attn, dim=-1)


@torch.no_grad()
def _sra_weights(module: nn.Module, x: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, list[int]]:
    """PVT's spatial-reduction attention (native v1, timm v2): (B, heads, N, N_kv) and the kv grid.

    Queries: every token. Keys: the H x W token map reduced by the module's strided conv ``sr`` (+
    LayerNorm), or in PVT v2's linear mode average-pooled to 7 x 7, then a 1x1 conv, LayerNorm and GELU;
    without ``sr`` the keys are the tokens themselves (class token included).
    """
    B, N, C = x.shape
    q = F.linear(x, module.q.weight, module.q.bias).reshape(B, N, module.num_heads, -1).transpose(1, 2)
    source, grid = x, [height, width]
    if getattr(module, "sr", None) is not None:
        fmap = x.transpose(1, 2).reshape(B, C, height, width)
        if getattr(module, "pool", None) is not None:
            fmap = module.pool.forward(fmap)
        fmap = module.sr.forward(fmap)
        grid = [int(fmap.shape[-2]), int(fmap.shape[-1])]
        source = module.norm.forward(fmap.flatten(2).transpose(1, 2))
        if getattr(module, "act", None) is not None:
            source = module.act.forward(source)
    k = F.linear(source, module.kv.weight, module.kv.bias)[..., :C]  # kv = [k | v] along channels
    k = k.reshape(B, -1, module.num_heads, module.head_dim).transpose(1, 2)
    return ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1), grid


@torch.no_grad()
def _botnet_weights(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``BottleneckAttn``: softmax(q k * scale + relative-position logits), (B, heads, HW, HW)."""
    B, _, H, W = x.shape
    h, d = module.num_heads, module.dim_head_qk
    q, k, _ = torch.split(module.qkv.forward(x), [module.dim_out_qk, module.dim_out_qk, module.dim_out_v], dim=1)
    q = q.reshape(B * h, d, H * W).transpose(-1, -2)
    k = k.reshape(B * h, d, H * W)
    rel = module.pos_embed.forward(q)  # (B*h, HW, HW): q_i . (height_rel[dy] + width_rel[dx])
    attn = (q @ k + rel) * module.scale if module.scale_pos_embed else (q @ k) * module.scale + rel
    return attn.softmax(dim=-1).reshape(B, h, H * W, H * W)


@torch.no_grad()
def _attention2d_weights(module: nn.Module, x: torch.Tensor, shared_rel_pos=None) -> torch.Tensor:
    """timm maxxvit ``Attention2d``'s unfused path (CoAtNet): (B, heads, HW, HW)."""
    B, _, H, W = x.shape
    qkv = module.qkv.forward(x)
    if module.head_first:
        q, k, _ = qkv.view(B, module.num_heads, module.dim_head * 3, -1).chunk(3, dim=2)
    else:
        q, k, _ = qkv.reshape(B, 3, module.num_heads, module.dim_head, -1).unbind(1)
    attn = (q * module.scale).transpose(-2, -1) @ k
    if module.rel_pos is not None:
        attn = module.rel_pos.forward(attn)  # + the relative-position bias
    elif shared_rel_pos is not None:
        attn = attn + shared_rel_pos
    return attn.softmax(dim=-1)


def _grids(query_grid, key_grid, queries: int, keys: int) -> dict[str, Any]:
    """Grid geometry of a layer's tokens; the prefix is whatever precedes the grid (a class token)."""
    out: dict[str, Any] = {}
    if query_grid is not None:
        out.update(query_grid=[int(g) for g in query_grid], query_prefix=queries - query_grid[0] * query_grid[1])
    if key_grid is not None:
        out.update(key_grid=[int(g) for g in key_grid], key_prefix=keys - key_grid[0] * key_grid[1])
    return out


def _detr_grids(name: str, grid) -> tuple:
    """Which of DETR's attention layers see its image tokens: (query grid, key grid)."""
    if name.startswith("transformer.encoder."):
        return grid, grid  # encoder self-attention over the H/32 x W/32 tokens
    if name.endswith("cross_attn"):
        return None, grid  # object queries over the encoder's tokens
    return None, None  # decoder self-attention among the object queries

# ---------------------------------------------------------------------------------------------
# Strategies: how each kind of layer is hooked and what it records
# ---------------------------------------------------------------------------------------------

class Capture:
    """What one forward's hooks collect (maps, per-layer info, Swin window tokens and masks), and the hooks
    themselves, so that the dispatcher removes every one of them whatever happens."""

    def __init__(self, batch: int):
        self.batch = batch
        self.maps: dict[str, np.ndarray] = {}
        self.info: dict[str, dict] = {}
        self.tokens: dict[str, np.ndarray] = {}
        self.masks: dict[str, np.ndarray | None] = {}
        self.order: list[str] = []
        self.calls: dict[str, int] = {}
        self.feature_grid: list[int] = []  # DETR: the encoder's token map, [rows, cols]
        self.handles: list = []

    def hook(self, module: nn.Module, fn, with_kwargs: bool = True) -> None:
        self.handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))

    def pre_hook(self, module: nn.Module, fn) -> None:
        self.handles.append(module.register_forward_pre_hook(fn))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def record(self, name: str, kind: str, attn: torch.Tensor, extra: dict) -> str:
        """Store one call's weights; a module called again is stored as ``name#1``, ``name#2``, ..."""
        n = self.calls.get(name, 0)
        self.calls[name] = n + 1
        key = name if n == 0 else f"{name}#{n}"
        self.maps[key] = attn.detach().float().cpu().numpy()
        heads = int(attn.shape[-3])
        self.info[key] = {"kind": kind, "heads": heads, "order": len(self.order), "module": name,
                          "queries": int(attn.shape[-2]), "keys": int(attn.shape[-1]), **extra}
        self.order.append(key)
        return key


def _watch_mha(cap: Capture, model: nn.Module, name: str, module: nn.Module, kind: str) -> None:
    """``nn.MultiheadAttention`` (torchvision ViT, DETR, decoders): recomputed from its own weights."""
    def hook(mod, args, kwargs, output):
        b = _bind(_MHA_ARGS, args, kwargs)
        a = mha_attention_weights(mod, b["query"], b.get("key"), b.get("key_padding_mask"), b.get("attn_mask"))
        cap.record(name, kind, a, {"self_attention": b.get("key") is None or b.get("key") is b["query"],
                                   "causal": bool(b.get("is_causal")),
                                   "head_dim": int(mod.embed_dim // mod.num_heads)})
    cap.hook(module, hook)


def _watch_scored(cap: Capture, model: nn.Module, name: str, module: nn.Module, kind: str) -> None:
    """A ``tfm:score`` swap: the module computes its own weights; shown like the module it replaced."""
    def hook(mod, args, kwargs, output):
        if isinstance(mod, ScoredMultiheadAttention):
            b = _bind(_MHA_ARGS, args, kwargs)
            a = mod.attention_weights(b["query"], b["key"], b["value"], b.get("key_padding_mask"), b.get("attn_mask"))
            extra = {"self_attention": b["key"] is b["query"], "causal": bool(b.get("is_causal"))}
        else:
            b = _bind(("x", "attn_mask", "is_causal"), args, kwargs)
            a = mod.attention_weights(b["x"], b.get("attn_mask"), bool(b.get("is_causal", False)))
            extra = {"self_attention": True}
        replaced = "mha" if isinstance(mod, ScoredMultiheadAttention) else "timm_vit"
        cap.record(name, replaced, a, {**extra, "head_dim": int(mod.head_dim), "score": mod.score.kind})
    cap.hook(module, hook)


def _watch_timm_vit(cap: Capture, model: nn.Module, name: str, module: nn.Module, kind: str) -> None:
    """timm ``Attention`` (ViT, DeiT, ...): its unfused path, whatever ``fused_attn`` says."""
    def hook(mod, args, kwargs, output):
        b = _bind(("x", "attn_mask", "is_causal"), args, kwargs)
        a = _timm_vit_weights(mod, b["x"], b.get("attn_mask"), bool(b.get("is_causal", False)))
        cap.record(name, kind, a, {"self_attention": True, "head_dim": int(mod.head_dim)})
    cap.hook(module, hook)


def _watch_reduced_keys(cap: Capture, model: nn.Module, name: str, module: nn.Module, kind: str) -> None:
    """PVT v1 (native) and v2 (timm): queries on the token map, keys on the reduced one."""
    def hook(mod, args, kwargs, output):
        if kind == "native_pvt":
            b = _bind(("x", "height", "width"), args, kwargs)
            hw = (int(b["height"]), int(b["width"]))
        else:
            b = _bind(("x", "feat_size"), args, kwargs)
            hw = (int(b["feat_size"][0]), int(b["feat_size"][1]))
        a, kv_grid = _sra_weights(mod, b["x"], *hw)
        cap.record(name, kind, a, _grids(hw, kv_grid, a.shape[-2], a.shape[-1]))
    cap.hook(module, hook)


def _watch_feature_map(cap: Capture, model: nn.Module, name: str, module: nn.Module, kind: str) -> None:
    """BoTNet and CoAtNet: all-to-all attention over an NCHW feature map, queries and keys on one grid."""
    def hook(mod, args, kwargs, output):
        b = _bind(("x", "shared_rel_pos"), args, kwargs)
        if kind == "timm_botnet":
            a = _botnet_weights(mod, b["x"])
        else:
            a = _attention2d_weights(mod, b["x"], b.get("shared_rel_pos"))
        hw = tuple(b["x"].shape[-2:])
        cap.record(name, kind, a, _grids(hw, hw, a.shape[-2], a.shape[-1]))
    cap.hook(module, hook)


def _watch_torchvision_swin(cap: Capture, model: nn.Module, name: str, module: nn.Module, kind: str) -> None:
    """torchvision ``ShiftedWindowAttention`` (V1, V2): per-window maps, the window geometry and shift mask."""
    def hook(mod, args, kwargs, output):
        b = _bind(("x",), args, kwargs)
        a, mask, geo = _tv_swin_weights(mod, b["x"])
        key = cap.record(name, kind, a, dict(geo["info"]))
        cap.tokens[key] = geo["tokens"]
        cap.masks[key] = None if mask is None else mask.float().cpu().numpy()
    cap.hook(module, hook)


def _watch_timm_swin(cap: Capture, model: nn.Module, name: str, module: nn.Module, kind: str) -> None:
    """timm ``WindowAttention``: it sees windows only, so the geometry comes from its block (the parent),
    whose input shape a pre-hook notes."""
    parent_name = name.rsplit(".", 1)[0] if "." in name else ""
    parent = dict(model.named_modules()).get(parent_name)
    block_shape: list[tuple] = []
    if parent is not None and hasattr(parent, "window_size") and hasattr(parent, "shift_size"):
        def pre(mod, args):
            if args and torch.is_tensor(args[0]) and args[0].dim() == 4:
                block_shape[:] = [tuple(args[0].shape)]
    else:
        parent = None

    def hook(mod, args, kwargs, output):
        b = _bind(("x", "mask"), args, kwargs)
        mask = b.get("mask")
        a = _timm_swin_weights(mod, b["x"], mask, cap.batch)
        extra: dict[str, Any] = {}
        geo = None
        if block_shape:
            _, H, W, _ = block_shape[0]
            geo = _timm_swin_geometry(H, W, parent.window_size, parent.shift_size)
            extra = dict(geo["info"])
            if extra["num_windows"] != a.shape[1]:
                extra, geo = {"geometry_error": "window count does not match the block's geometry"}, None
        key = cap.record(name, kind, a, extra)
        if geo is not None:
            cap.tokens[key] = geo["tokens"]
        cap.masks[key] = None if mask is None else mask.float().cpu().numpy()
    cap.hook(module, hook)
    if parent is not None:
        cap.pre_hook(parent, pre)


def _watch_encoder_stack(cap: Capture, stack: nn.TransformerEncoder, names: list[str], wanted: set[str]) -> None:
    """``nn.TransformerEncoder``: one hook on the stack replays its layers (still fused) to get each
    layer's input, and recomputes the wanted layers' weights from it (a hook on a layer would unfuse it)."""
    def hook(stack, args, kwargs, output):
        b = _bind(("src", "mask", "src_key_padding_mask", "is_causal"), args, kwargs)
        mask, kpm, causal = b.get("mask"), b.get("src_key_padding_mask"), bool(b.get("is_causal"))
        h, keys = b["src"], []
        for layer, name in zip(stack.layers, names):
            if name in wanted:
                q = layer.norm1.forward(h) if layer.norm_first else h
                a = mha_attention_weights(layer.self_attn, q, None, kpm, mask)
                keys.append(cap.record(name, "torch_encoder", a, {
                    "self_attention": True, "causal": causal,
                    "head_dim": int(layer.self_attn.embed_dim // layer.self_attn.num_heads)}))
            h = layer(h, src_mask=mask, src_key_padding_mask=kpm, is_causal=causal)
        if stack.norm is not None:
            h = stack.norm(h)
        exact = torch.equal(h, output)
        for key in keys:
            cap.info[key]["replay_exact"] = exact
    cap.hook(stack, hook)


def _watch_detr_tokens(cap: Capture, model: nn.Module) -> None:
    """DETR: its tokens are the ``input_proj`` map flattened; note the map's size for ``place_detr_tokens``."""
    def hook(mod, args, output):
        cap.feature_grid[:] = [int(output.shape[-2]), int(output.shape[-1])]
    cap.hook(model.input_proj, hook, with_kwargs=False)


def place_detr_tokens(cap: Capture) -> None:
    """DETR's layers: which of their queries and keys are the image's tokens (``_detr_grids``)."""
    for key in cap.order:
        query_grid, key_grid = _detr_grids(cap.info[key]["module"], cap.feature_grid)
        cap.info[key].update(_grids(query_grid, key_grid, cap.info[key]["queries"], cap.info[key]["keys"]))


STRATEGIES = {
    "mha": _watch_mha,
    "scored": _watch_scored,
    "timm_vit": _watch_timm_vit,
    "native_pvt": _watch_reduced_keys,
    "timm_pvt": _watch_reduced_keys,
    "timm_botnet": _watch_feature_map,
    "timm_attention2d": _watch_feature_map,
    "torchvision_swin": _watch_torchvision_swin,
    "timm_swin": _watch_timm_swin,
}


def watch(cap: Capture, model: nn.Module, chosen: list[tuple[str, nn.Module, str]]) -> None:
    """Hook every chosen layer by its kind's strategy (the encoder stacks' layers through their stack)."""
    for name, module, kind in chosen:
        if kind != "torch_encoder":  # one hook per stack, below
            STRATEGIES[kind](cap, model, name, module, kind)
    chosen_names = {name for name, _, _ in chosen}
    for stack, names in _encoder_stacks(model).values():
        if chosen_names & set(names):
            _watch_encoder_stack(cap, stack, names, chosen_names)
    if isinstance(model, DETR):
        _watch_detr_tokens(cap, model)
