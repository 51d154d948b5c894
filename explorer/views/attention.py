"""Attention maps: per layer and head, the softmax attention weights of vision and sequence transformers.

Supported attention modules (found anywhere in the model):

* ``nn.MultiheadAttention`` (torchvision ``VisionTransformer``'s encoder layers, DETR's encoder and
  decoder, ``nn.TransformerDecoderLayer``): the layer calls it with ``need_weights=False`` (fused SDPA path);
* ``nn.TransformerEncoderLayer`` inside an ``nn.TransformerEncoder`` (the sequence Transformer, BERT):
  in eval mode the layer runs one fused kernel (``torch._transformer_encoder_layer_fwd``) and never
  calls its ``self_attn``; a hook on the layer or any of its submodules would switch it to the
  unfused path. So the hook goes on the *stack*: it replays the layers one by one on the stack's
  input (the same calls, still fused) to get each layer's input, and recomputes the weights from it;
* timm ``Attention`` (ViT / DeiT / ...; fused SDPA when ``fused_attn``);
* torchvision ``ShiftedWindowAttention`` / ``ShiftedWindowAttentionV2`` (Swin / Swin V2);
* timm Swin ``WindowAttention``;
* spatial-reduction attention: the native PVT v1 ``SpatialReductionAttention`` and timm's PVT v2
  ``Attention`` — queries from every token, keys and values from the map reduced by a strided conv
  (or, in PVT v2's linear mode, average-pooled to 7 × 7), so a query's map is over the reduced grid;
* timm ``BottleneckAttn`` (BoTNet): all-to-all MHSA over the feature map plus relative-position logits;
* timm maxxvit ``Attention2d`` (the transformer stages of CoAtNet): all-to-all MHSA over the NCHW map
  plus a relative-position bias.

How the maps are obtained without touching the model's output: a forward hook on each attention
module receives the module's own input (and keyword arguments, e.g. masks) after the module has
computed its output, and recomputes softmax(QK^T/sqrt(d) [+ bias + mask]) from the module's own
weights with the unfused formula. The module's forward, its flags (``fused_attn``) and its output are
never changed, so the outputs are bit-identical with and without the view. All hooks are removed in a
``finally`` block, also when the forward raises. The maps are the weights *before* attention dropout
(models are viewed in eval mode anyway).

Conventions of the result (``attention_maps``):

* ``maps[name]`` is (B, heads, N_q, N_k) float32, except Swin: (B, nW, heads, M, M);
* ViT-style layers: for self-attention N_q = N_k = N = prefix tokens (CLS, distillation, register
  tokens) + patches, prefix first;
* Swin layers: M = window_h * window_w tokens per window, in the window frame the model computes in
  (after the cyclic shift and padding); the window geometry is in ``info[name]`` and
  ``window_tokens[name]`` (nW, M, 2) gives, for each window slot, the (y, x) of that token in the
  *un-shifted* feature map, or (-1, -1) for a padding token;
* layers whose tokens lie on a feature map (PVT, BoTNet, CoAtNet, DETR's encoder and cross-attention)
  carry ``info[name]["query_grid"]`` / ``["key_grid"]`` = [rows, cols] and ``query_prefix`` /
  ``key_prefix`` (tokens before the grid, e.g. PVT v1's class token in stage 4): query / key index
  prefix + row * cols + col. PVT's key grid is the reduced one;
* token-id models (input (B, L) integers): N_q and N_k are token positions.

Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
A_l' = norm_rows(fuse_heads(A_l) + I); rollout = A_L' ... A_1'; the CLS row over the patch tokens
is the relevance of each patch for the CLS output.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.blocks.scored_attention import ScoredMultiheadAttention, ScoredTimmAttention
from explorer.errors import ExplorerError
from explorer.native.detr import DETR
from explorer.native.pvt_v1 import SpatialReductionAttention

__all__ = [
    "attention_layers",
    "attention_maps",
    "attention_rollout",
    "cls_attention_grid",
    "patch_query_grid",
    "window_query_map",
    "head_matrix",
    "grid_query_map",
    "query_centres",
    "mha_attention_weights",
]

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
# The view
# ---------------------------------------------------------------------------------------------

def _pair(v) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _vit_layout(model: nn.Module, input_hw: tuple[int, int]) -> dict[str, Any]:
    """Prefix-token count, patch size and patch grid of a torchvision or timm ViT (None when unknown)."""
    H, W = input_hw
    if hasattr(model, "conv_proj") and hasattr(model, "encoder") and hasattr(model, "patch_size"):
        p = _pair(model.patch_size)
        prefix = 1 if getattr(model, "class_token", None) is not None else 0
        return {"library": "torchvision", "num_prefix_tokens": prefix, "patch_size": list(p),
                "patch_grid": [H // p[0], W // p[1]]}
    pe = getattr(model, "patch_embed", None)
    if pe is not None and hasattr(model, "num_prefix_tokens"):
        p = _pair(getattr(pe, "patch_size", None) or pe.proj.kernel_size)
        grid = None
        if hasattr(pe, "dynamic_feat_size"):
            try:
                grid = list(pe.dynamic_feat_size((H, W)))
            except Exception:
                grid = None
        if grid is None:
            grid = [H // p[0], W // p[1]]
        return {"library": "timm", "num_prefix_tokens": int(model.num_prefix_tokens), "patch_size": list(p),
                "patch_grid": [int(g) for g in grid]}
    return {"library": None, "num_prefix_tokens": None, "patch_size": None, "patch_grid": None}


def _select(layers_found: list, layers) -> list:
    if layers is None:
        return layers_found
    if isinstance(layers, (str, int)):
        layers = [layers]
    names = [n for n, _, _ in layers_found]
    chosen = []
    for sel in layers:
        if isinstance(sel, int) and not isinstance(sel, bool):
            if not -len(names) <= sel < len(names):
                raise ExplorerError(f"attention layer index {sel} out of range (the model has {len(names)})")
            chosen.append(names[sel])
        elif sel in names:
            chosen.append(sel)
        else:
            raise ExplorerError(f"{sel!r} is not an attention layer of the model (e.g. {names[0]!r})")
    return [item for item in layers_found if item[0] in set(chosen)]


def attention_maps(model: nn.Module, x: torch.Tensor, layers: Iterable[str | int] | str | int | None = None,
                   keep_output: bool = True) -> dict[str, Any]:
    """Run ``model(x)`` once and return the softmax attention weights of its attention layers.

    ``x``: an image batch (B, C, H, W) or token ids (B, L) (an integer tensor).
    ``layers``: None (all), or names / indices into ``attention_layers(model)``.
    The forward runs under ``torch.no_grad()``; hooks are removed afterwards whatever happens
    (an exception in the forward propagates after the clean-up).

    Returns a dict:

    * ``layers``: layer names in execution order (a module called twice appears as ``name#1`` ...);
    * ``maps``: name → float32 ndarray, (B, heads, N_q, N_k), or (B, nW, heads, M, M) (Swin);
    * ``info``: name → JSON dict (``kind``, ``heads``, ``order``, ``queries``, ``keys``; MHA and
      encoder layers: ``self_attention``, ``causal``; Swin: ``resolution``, ``padded_hw``, ``window``,
      ``shift`` (effective), ``window_grid``, ``num_windows``, ``frame``; tokens on a feature map:
      ``query_grid``, ``query_prefix``, ``key_grid``, ``key_prefix``; replayed encoder layers:
      ``replay_exact``, whether the replay reproduced the stack's output bit for bit);
    * ``window_tokens``: name → int ndarray (nW, M, 2) — (y, x) in the un-shifted feature map of each
      window slot, (-1, -1) for padding (Swin layers only); ``window_masks``: name → (nW, M, M) additive
      shift mask (0 / -100) or None;
    * ``family``: ``vit``, ``swin``, ``grid`` (PVT, BoTNet, CoAtNet), ``detr``, ``sequence`` (token ids),
      ``mixed`` or ``other``; ``library``, ``num_prefix_tokens``, ``patch_size``, ``patch_grid``
      ([H/P, W/P]; None when not a ViT), ``input_hw`` (None for tokens), ``sequence_length`` (None for
      images), ``batch``;
    * ``output``: the model's output as an ndarray (when it is a tensor and ``keep_output``).
    """
    found = attention_layers(model)
    if not found:
        raise ExplorerError(no_attention_layers(model))
    chosen = _select(found, layers)
    token_ids = x.dim() == 2 and not torch.is_floating_point(x)
    if x.dim() != 4 and not token_ids:
        raise ExplorerError(f"expected an N x C x H x W image batch or N x L token ids, got shape {tuple(x.shape)}")
    batch = int(x.shape[0])
    input_hw = None if token_ids else (int(x.shape[-2]), int(x.shape[-1]))
    maps: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    tokens: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray | None] = {}
    order: list[str] = []
    calls: dict[str, int] = {}
    block_shapes: dict[str, tuple] = {}
    feature_grid: list[int] = []
    handles = []

    def record(name: str, kind: str, attn: torch.Tensor, extra: dict) -> str:
        n = calls.get(name, 0)
        calls[name] = n + 1
        key = name if n == 0 else f"{name}#{n}"
        maps[key] = attn.detach().float().cpu().numpy()
        heads = int(attn.shape[-3])
        info[key] = {"kind": kind, "heads": heads, "order": len(order), "module": name,
                     "queries": int(attn.shape[-2]), "keys": int(attn.shape[-1]), **extra}
        order.append(key)
        return key

    def make_hook(name: str, module: nn.Module, kind: str):
        if kind == "mha":
            def hook(mod, args, kwargs, output):
                b = _bind(_MHA_ARGS, args, kwargs)
                attn_mask = b.get("attn_mask")
                a = mha_attention_weights(mod, b["query"], b.get("key"), b.get("key_padding_mask"), attn_mask)
                record(name, kind, a, {"self_attention": b.get("key") is None or b.get("key") is b["query"],
                                       "causal": bool(b.get("is_causal")),
                                       "head_dim": int(mod.embed_dim // mod.num_heads)})
        elif kind == "scored":  # the swapped module computes its own weights; shown like the module it replaced
            def hook(mod, args, kwargs, output):
                if isinstance(mod, ScoredMultiheadAttention):
                    b = _bind(_MHA_ARGS, args, kwargs)
                    a = mod.attention_weights(b["query"], b["key"], b["value"], b.get("key_padding_mask"),
                                              b.get("attn_mask"))
                    extra = {"self_attention": b["key"] is b["query"], "causal": bool(b.get("is_causal"))}
                else:
                    b = _bind(("x", "attn_mask", "is_causal"), args, kwargs)
                    a = mod.attention_weights(b["x"], b.get("attn_mask"), bool(b.get("is_causal", False)))
                    extra = {"self_attention": True}
                replaced = "mha" if isinstance(mod, ScoredMultiheadAttention) else "timm_vit"
                record(name, replaced, a, {**extra, "head_dim": int(mod.head_dim), "score": mod.score.kind})
        elif kind == "timm_vit":
            def hook(mod, args, kwargs, output):
                b = _bind(("x", "attn_mask", "is_causal"), args, kwargs)
                a = _timm_vit_weights(mod, b["x"], b.get("attn_mask"), bool(b.get("is_causal", False)))
                record(name, kind, a, {"self_attention": True, "head_dim": int(mod.head_dim)})
        elif kind in ("native_pvt", "timm_pvt"):
            def hook(mod, args, kwargs, output):
                if kind == "native_pvt":
                    b = _bind(("x", "height", "width"), args, kwargs)
                    hw = (int(b["height"]), int(b["width"]))
                else:
                    b = _bind(("x", "feat_size"), args, kwargs)
                    hw = (int(b["feat_size"][0]), int(b["feat_size"][1]))
                a, kv_grid = _sra_weights(mod, b["x"], *hw)
                record(name, kind, a, _grids(hw, kv_grid, a.shape[-2], a.shape[-1]))
        elif kind in ("timm_botnet", "timm_attention2d"):
            def hook(mod, args, kwargs, output):
                b = _bind(("x", "shared_rel_pos"), args, kwargs)
                if kind == "timm_botnet":
                    a = _botnet_weights(mod, b["x"])
                else:
                    a = _attention2d_weights(mod, b["x"], b.get("shared_rel_pos"))
                hw = tuple(b["x"].shape[-2:])
                record(name, kind, a, _grids(hw, hw, a.shape[-2], a.shape[-1]))
        elif kind == "torchvision_swin":
            def hook(mod, args, kwargs, output):
                b = _bind(("x",), args, kwargs)
                a, mask, geo = _tv_swin_weights(mod, b["x"])
                key = record(name, kind, a, dict(geo["info"]))
                tokens[key] = geo["tokens"]
                masks[key] = None if mask is None else mask.float().cpu().numpy()
        else:  # timm_swin
            parent_name = name.rsplit(".", 1)[0] if "." in name else ""

            def hook(mod, args, kwargs, output):
                b = _bind(("x", "mask"), args, kwargs)
                shape = block_shapes.get(parent_name)
                mask = b.get("mask")
                a = _timm_swin_weights(mod, b["x"], mask, batch)
                extra: dict[str, Any] = {}
                geo = None
                if shape is not None:
                    _, H, W, _ = shape
                    blk = parent_modules[parent_name]
                    geo = _timm_swin_geometry(H, W, blk.window_size, blk.shift_size)
                    extra = dict(geo["info"])
                    if extra["num_windows"] != a.shape[1]:
                        extra, geo = {"geometry_error": "window count does not match the block's geometry"}, None
                key = record(name, kind, a, extra)
                if geo is not None:
                    tokens[key] = geo["tokens"]
                masks[key] = None if mask is None else mask.float().cpu().numpy()
        return hook

    def make_stack_hook(names: list[str], wanted: set[str]):
        def hook(stack, args, kwargs, output):
            b = _bind(("src", "mask", "src_key_padding_mask", "is_causal"), args, kwargs)
            mask, kpm, causal = b.get("mask"), b.get("src_key_padding_mask"), bool(b.get("is_causal"))
            h, keys = b["src"], []
            for layer, name in zip(stack.layers, names):
                if name in wanted:
                    q = layer.norm1.forward(h) if layer.norm_first else h
                    a = mha_attention_weights(layer.self_attn, q, None, kpm, mask)
                    keys.append(record(name, "torch_encoder", a, {
                        "self_attention": True, "causal": causal,
                        "head_dim": int(layer.self_attn.embed_dim // layer.self_attn.num_heads)}))
                h = layer(h, src_mask=mask, src_key_padding_mask=kpm, is_causal=causal)
            if stack.norm is not None:
                h = stack.norm(h)
            exact = torch.equal(h, output)
            for key in keys:
                info[key]["replay_exact"] = exact
        return hook

    def grab_feature_grid(mod, args, output):
        feature_grid[:] = [int(output.shape[-2]), int(output.shape[-1])]

    modules = dict(model.named_modules())
    parent_modules: dict[str, nn.Module] = {}
    chosen_names = {name for name, _, _ in chosen}
    try:
        for name, module, kind in chosen:
            if kind == "torch_encoder":
                continue  # one hook per stack, below
            handles.append(module.register_forward_hook(make_hook(name, module, kind), with_kwargs=True))
            if kind == "timm_swin":
                parent = name.rsplit(".", 1)[0] if "." in name else ""
                pm = modules.get(parent)
                if pm is not None and hasattr(pm, "window_size") and hasattr(pm, "shift_size"):
                    parent_modules[parent] = pm

                    def pre(mod, args, _p=parent):
                        if args and torch.is_tensor(args[0]) and args[0].dim() == 4:
                            block_shapes[_p] = tuple(args[0].shape)
                    handles.append(pm.register_forward_pre_hook(pre))
        for stack, names in _encoder_stacks(model).values():
            if chosen_names & set(names):
                handles.append(stack.register_forward_hook(make_stack_hook(names, chosen_names), with_kwargs=True))
        if isinstance(model, DETR):  # its tokens are the input_proj map flattened
            handles.append(model.input_proj.register_forward_hook(grab_feature_grid))
        with torch.no_grad():
            output = model(x)
    finally:
        for h in handles:
            h.remove()

    if feature_grid:
        for key in order:
            query_grid, key_grid = _detr_grids(info[key]["module"], feature_grid)
            info[key].update(_grids(query_grid, key_grid, info[key]["queries"], info[key]["keys"]))
    kinds = {info[k]["kind"] for k in order}
    if token_ids:
        family = "sequence"
    elif feature_grid:
        family = "detr"
    elif kinds <= {"mha", "timm_vit"}:
        family = "vit"
    elif kinds <= {"torchvision_swin", "timm_swin"}:
        family = "swin"
    elif kinds <= {"native_pvt", "timm_pvt", "timm_botnet", "timm_attention2d"}:
        family = "grid"
    else:
        family = "mixed"
    layout = _vit_layout(model, input_hw) if family == "vit" else \
        {"library": None, "num_prefix_tokens": None, "patch_size": None, "patch_grid": None}
    if family == "vit" and layout["patch_grid"] is not None and order:
        n = info[order[0]]["queries"]
        gh, gw = layout["patch_grid"]
        if layout["num_prefix_tokens"] is None or gh * gw + layout["num_prefix_tokens"] != n:
            layout["patch_grid"] = None  # tokens are not prefix + a patch grid (e.g. pooled)
    if family == "vit" and layout["library"] is None:
        family = "other"
    if layout["library"]:
        library = layout["library"]
    elif type(model).__module__.startswith("explorer."):
        library = "native"
    elif all(k.startswith("timm_") for k in kinds):
        library = "timm"
    elif kinds <= {"mha", "torchvision_swin"}:
        library = "torchvision"
    else:
        library = "mixed"
    result: dict[str, Any] = {
        "family": family,
        "library": library,
        "layers": order,
        "maps": maps,
        "info": info,
        "window_tokens": tokens,
        "window_masks": masks,
        "num_prefix_tokens": layout["num_prefix_tokens"],
        "patch_size": layout["patch_size"],
        "patch_grid": layout["patch_grid"],
        "input_hw": None if input_hw is None else list(input_hw),
        "sequence_length": int(x.shape[1]) if token_ids else None,
        "batch": batch,
    }
    if keep_output and torch.is_tensor(output):
        result["output"] = output.detach().cpu().numpy()
    return result


# ---------------------------------------------------------------------------------------------
# Rollout and grids
# ---------------------------------------------------------------------------------------------

def _map_list(maps) -> tuple[list[np.ndarray], int | None, list | None]:
    """(list of per-layer arrays in execution order, prefix tokens, patch grid) from a result or a list."""
    if isinstance(maps, dict) and "maps" in maps:
        arrays = [np.asarray(maps["maps"][k]) for k in maps["layers"]]
        return arrays, maps.get("num_prefix_tokens"), maps.get("patch_grid")
    if isinstance(maps, dict):
        return [np.asarray(v) for v in maps.values()], None, None
    return [np.asarray(v) for v in maps], None, None


def _fuse(a: np.ndarray, head_fusion: str) -> np.ndarray:
    if head_fusion == "mean":
        return a.mean(axis=-3)
    if head_fusion == "max":
        return a.max(axis=-3)
    if head_fusion == "min":
        return a.min(axis=-3)
    raise ExplorerError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")


def attention_rollout(maps, discard_ratio: float = 0.0, head_fusion: str = "mean", *,
                      num_prefix_tokens: int | None = None, grid: Sequence[int] | None = None,
                      as_grid: bool = False, return_matrix: bool = False) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) over all layers of a ViT, first to last.

    ``maps``: an ``attention_maps`` result (its ``layers`` order) or a sequence of per-layer arrays
    (B, heads, N, N) or (heads, N, N). Per layer: fuse heads (``mean``/``max``/``min``); optionally
    zero the lowest ``discard_ratio`` fraction of the fused weights of each sample (never the CLS→CLS
    weight, as in the common implementation by J. Gildenblat); add the identity (residual path);
    re-normalise rows to sum to 1; multiply: R = A_L' · … · A_1'.

    Returns the CLS row of R over the patch tokens (prefix tokens dropped, not renormalised):
    (B, N_patches) for batched maps, (N_patches,) for unbatched ones; ``as_grid`` reshapes it to
    (…, H/P, W/P); ``return_matrix`` returns the full rollout matrix R (…, N, N) instead.
    """
    arrays, prefix, result_grid = _map_list(maps)
    if not arrays:
        raise ExplorerError("no attention maps to roll out")
    if not 0.0 <= discard_ratio < 1.0:
        raise ExplorerError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    prefix = num_prefix_tokens if num_prefix_tokens is not None else (prefix if prefix is not None else 1)
    grid = list(grid) if grid is not None else result_grid
    unbatched = arrays[0].ndim == 3
    rollout = None
    for a in arrays:
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
            raise ExplorerError(f"rollout needs square self-attention maps (B, heads, N, N), got {a.shape}")
        fused = _fuse(a.astype(np.float64), head_fusion)  # B, N, N
        B, N, _ = fused.shape
        if discard_ratio > 0:
            flat = fused.reshape(B, -1).copy()
            k = int(flat.shape[1] * discard_ratio)
            if k > 0:
                idx = np.argsort(flat, axis=1, kind="stable")[:, :k]
                for b in range(B):
                    sel = idx[b][idx[b] != 0]
                    flat[b, sel] = 0.0
            fused = flat.reshape(B, N, N)
        aug = fused + np.eye(N)[None]
        aug = aug / aug.sum(axis=-1, keepdims=True)
        rollout = aug if rollout is None else aug @ rollout
        if rollout.shape[-1] != N:
            raise ExplorerError("layers have different token counts; rollout needs one sequence length")
    if return_matrix:
        return rollout[0] if unbatched else rollout
    row = rollout[:, 0, prefix:]
    if as_grid:
        row = row.reshape(row.shape[0], *_grid_for(row.shape[-1], grid))
    return row[0] if unbatched else row


def _grid_for(n: int, grid) -> tuple[int, int]:
    if grid is not None:
        gh, gw = int(grid[0]), int(grid[1])
        if gh * gw != n:
            raise ExplorerError(f"patch grid {gh}x{gw} does not hold {n} patch tokens")
        return gh, gw
    s = int(round(math.sqrt(n)))
    if s * s != n:
        raise ExplorerError(f"{n} patch tokens do not form a square grid; pass grid=(h, w)")
    return s, s


def _layer_key(maps: dict, layer) -> str:
    names = maps["layers"]
    if isinstance(layer, int) and not isinstance(layer, bool):
        if not -len(names) <= layer < len(names):
            raise ExplorerError(f"layer index {layer} out of range ({len(names)} layers)")
        return names[layer]
    if layer in maps["maps"]:
        return layer
    raise ExplorerError(f"no attention map for layer {layer!r}")


def _layer_array(maps, layer) -> tuple[np.ndarray, int, list | None]:
    if isinstance(maps, dict) and "maps" in maps:
        key = _layer_key(maps, layer)
        prefix = maps.get("num_prefix_tokens")
        return np.asarray(maps["maps"][key]), (1 if prefix is None else prefix), maps.get("patch_grid")
    arrays, _, _ = _map_list(maps)
    return arrays[layer], 1, None


def _head_row(a: np.ndarray, head, query: int, batch: int) -> np.ndarray:
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ExplorerError(f"expected (B, heads, N, N) maps, got {a.shape} (Swin maps: use window_query_map)")
    a = a[batch]
    if head is None or head == "mean":
        return a[:, query].mean(axis=0)
    if head == "max":
        return a[:, query].max(axis=0)
    return a[int(head), query]


def cls_attention_grid(maps, layer, head, batch: int = 0, *, grid=None, num_prefix_tokens=None) -> np.ndarray:
    """The CLS token's attention over the patch grid at ``layer`` (name or index), (H/P, W/P).

    ``head``: an index, or ``"mean"``/None (mean over heads) or ``"max"``.
    """
    a, prefix, g = _layer_array(maps, layer)
    prefix = prefix if num_prefix_tokens is None else num_prefix_tokens
    row = _head_row(a, head, 0, batch)[prefix:]
    return row.reshape(_grid_for(row.shape[0], grid if grid is not None else g))


def patch_query_grid(maps, layer, head, patch_yx, batch: int = 0, *, grid=None, num_prefix_tokens=None) -> np.ndarray:
    """The attention of the patch at grid position ``patch_yx`` = (row, col) over the patch grid, (H/P, W/P)."""
    a, prefix, g = _layer_array(maps, layer)
    prefix = prefix if num_prefix_tokens is None else num_prefix_tokens
    n = a.shape[-1] - prefix
    gh, gw = _grid_for(n, grid if grid is not None else g)
    y, x = int(patch_yx[0]), int(patch_yx[1])
    if not (0 <= y < gh and 0 <= x < gw):
        raise ExplorerError(f"patch {tuple(patch_yx)} is outside the {gh}x{gw} patch grid")
    row = _head_row(a, head, prefix + y * gw + x, batch)[prefix:]
    return row.reshape(gh, gw)


def window_query_map(maps: dict, layer, head, token_yx, batch: int = 0) -> dict[str, Any]:
    """Swin: the attention of the token at feature-map position ``token_yx`` over its window.

    Returns ``{"map": (H, W) ndarray`` (zeros outside the query's window), ``"window"``: window index,
    ``"slot"``: the query's index inside the window, ``"window_yx"``: (M, 2) positions of the window's
    tokens (-1 for padding), ``"padding_weight"``: the weight on padding tokens}. torchvision and timm
    pad the map with zero tokens that are *not* masked (only the shift mask applies), so near the
    bottom/right edge part of the weight goes to padding and ``map`` sums to 1 − padding_weight.
    ``head`` as in ``cls_attention_grid``.
    """
    if not (isinstance(maps, dict) and "maps" in maps):
        raise ExplorerError("window_query_map needs an attention_maps result")
    names = maps["layers"]
    key = names[layer] if isinstance(layer, int) and not isinstance(layer, bool) else layer
    if key not in maps["window_tokens"]:
        raise ExplorerError(f"{key!r} is not a Swin window-attention layer with known geometry")
    a = np.asarray(maps["maps"][key])[batch]  # nW, heads, M, M
    tok = maps["window_tokens"][key]
    H, W = maps["info"][key]["resolution"]
    y, x = int(token_yx[0]), int(token_yx[1])
    if not (0 <= y < H and 0 <= x < W):
        raise ExplorerError(f"token {tuple(token_yx)} is outside the {H}x{W} feature map")
    hit = np.argwhere((tok[..., 0] == y) & (tok[..., 1] == x))
    w, slot = int(hit[0][0]), int(hit[0][1])
    if head is None or head == "mean":
        row = a[w, :, slot].mean(axis=0)
    elif head == "max":
        row = a[w, :, slot].max(axis=0)
    else:
        row = a[w, int(head), slot]
    out = np.zeros((H, W), dtype=np.float64)
    valid = tok[w, :, 0] >= 0
    out[tok[w, valid, 0], tok[w, valid, 1]] = row[valid]
    return {"map": out, "window": w, "slot": slot, "window_yx": tok[w],
            "padding_weight": float(row[~valid].sum())}


def head_matrix(maps: dict, layer, head, batch: int = 0) -> np.ndarray:
    """The (N_q, N_k) attention matrix of one head (an index) or of all heads fused (``"mean"``/None,
    ``"max"``) at ``layer`` (name or index); rows are queries, columns keys."""
    a = np.asarray(maps["maps"][_layer_key(maps, layer)])
    if a.ndim != 4:
        raise ExplorerError(f"expected (B, heads, N_q, N_k) maps, got {a.shape} (Swin maps: use window_query_map)")
    a = a[batch]
    if head is None or head == "mean":
        return a.mean(axis=0)
    if head == "max":
        return a.max(axis=0)
    return a[int(head)]


def grid_query_map(maps: dict, layer, head, query, batch: int = 0) -> dict[str, Any]:
    """One query's attention over a layer's key grid (PVT, BoTNet, CoAtNet, DETR).

    ``query``: (row, col) on the layer's query grid, or a raw query index (e.g. 0 = PVT's class token,
    or a DETR object query). Returns ``{"map": (rows, cols) over the key grid`` (PVT: the reduced grid),
    ``"prefix_weight"``: the weight on keys before the grid (a class token), ``"query_index"``}.
    """
    key = _layer_key(maps, layer)
    info = maps["info"][key]
    if "key_grid" not in info:
        raise ExplorerError(f"{key!r}: its keys do not lie on a feature map")
    if isinstance(query, (tuple, list)):
        if "query_grid" not in info:
            raise ExplorerError(f"{key!r}: its queries do not lie on a feature map; pass a query index")
        gh, gw = info["query_grid"]
        y, x = int(query[0]), int(query[1])
        if not (0 <= y < gh and 0 <= x < gw):
            raise ExplorerError(f"query {tuple(query)} is outside the {gh}x{gw} query grid")
        index = info["query_prefix"] + y * gw + x
    else:
        index = int(query)
        if not 0 <= index < info["queries"]:
            raise ExplorerError(f"query index {index} out of range ({info['queries']} queries)")
    row = head_matrix(maps, key, head, batch)[index]
    prefix = info["key_prefix"]
    return {"map": row[prefix:].reshape(info["key_grid"]), "prefix_weight": float(row[:prefix].sum()),
            "query_index": index}


def query_centres(maps: dict, layer, head, batch: int = 0) -> dict[str, np.ndarray]:
    """Where each query looks on the key grid: the attention-weighted mean (row, col) of its map
    (in key-grid cells, over the grid keys only) and its largest single weight; (N_q, 2) and (N_q,)."""
    key = _layer_key(maps, layer)
    info = maps["info"][key]
    if "key_grid" not in info:
        raise ExplorerError(f"{key!r}: its keys do not lie on a feature map")
    gh, gw = info["key_grid"]
    w = head_matrix(maps, key, head, batch)[:, info["key_prefix"]:]
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    total = w.sum(axis=1)
    centre = np.stack([w @ rows, w @ cols], axis=1) / total[:, None]
    return {"centre": centre, "peak": w.max(axis=1)}
