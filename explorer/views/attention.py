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
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from explorer.errors import ExplorerError
from explorer.shapes import pair as _pair

# Per-kind detection, weights and hooks live in attention_kinds; names re-exported for older imports.
from explorer.views.attention_kinds import (  # noqa: F401 (re-exported: the public names callers import from here)
    STRATEGIES,
    Capture,
    attention_layers,
    mha_attention_weights,
    no_attention_layers,
    place_detr_tokens,
    watch,
)

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


# ---------------------------------------------------------------------------------------------
# The view
# ---------------------------------------------------------------------------------------------



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
    cap = Capture(int(x.shape[0]))
    try:
        watch(cap, model, chosen)  # one strategy per kind of layer (explorer.views.attention_kinds)
        with torch.no_grad():
            output = model(x)
    finally:
        cap.remove()
    if cap.feature_grid:
        place_detr_tokens(cap)

    input_hw = None if token_ids else (int(x.shape[-2]), int(x.shape[-1]))
    kinds = {cap.info[k]["kind"] for k in cap.order}
    family = _family(kinds, token_ids, bool(cap.feature_grid))
    layout = _vit_layout(model, input_hw) if family == "vit" else \
        {"library": None, "num_prefix_tokens": None, "patch_size": None, "patch_grid": None}
    if family == "vit" and layout["patch_grid"] is not None and cap.order:
        n = cap.info[cap.order[0]]["queries"]
        gh, gw = layout["patch_grid"]
        if layout["num_prefix_tokens"] is None or gh * gw + layout["num_prefix_tokens"] != n:
            layout["patch_grid"] = None  # tokens are not prefix + a patch grid (e.g. pooled)
    if family == "vit" and layout["library"] is None:
        family = "other"
    result: dict[str, Any] = {
        "family": family,
        "library": layout["library"] or _library(model, kinds),
        "layers": cap.order,
        "maps": cap.maps,
        "info": cap.info,
        "window_tokens": cap.tokens,
        "window_masks": cap.masks,
        "num_prefix_tokens": layout["num_prefix_tokens"],
        "patch_size": layout["patch_size"],
        "patch_grid": layout["patch_grid"],
        "input_hw": None if input_hw is None else list(input_hw),
        "sequence_length": int(x.shape[1]) if token_ids else None,
        "batch": cap.batch,
    }
    if keep_output and torch.is_tensor(output):
        result["output"] = output.detach().cpu().numpy()
    return result


def _family(kinds: set[str], token_ids: bool, detr_tokens: bool) -> str:
    """What the layers' maps are over: ``sequence``, ``detr``, ``vit``, ``swin``, ``grid`` or ``mixed``."""
    if token_ids:
        return "sequence"
    if detr_tokens:
        return "detr"
    if kinds <= {"mha", "timm_vit"}:
        return "vit"
    if kinds <= {"torchvision_swin", "timm_swin"}:
        return "swin"
    if kinds <= {"native_pvt", "timm_pvt", "timm_botnet", "timm_attention2d"}:
        return "grid"
    return "mixed"


def _library(model: nn.Module, kinds: set[str]) -> str:
    """Where the attention layers come from, when the model is not a ViT whose layout said so."""
    if type(model).__module__.startswith("explorer."):
        return "native"
    if all(k.startswith("timm_") for k in kinds):
        return "timm"
    if kinds <= {"mha", "torchvision_swin"}:
        return "torchvision"
    return "mixed"


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
