"""Self-attention with a choice of score function, for the transformer swaps (`tfm:score(kind=...)`).

    dot         s(q, k) = q·k                       (Luong et al. 2015, "dot")
    scaled_dot  s(q, k) = q·k / √d                  (Vaswani et al. 2017; what ViT, DeiT, Swin use)
    general     s(q, k) = qᵀ W k, W ∈ R^{d×d}/head  (Luong et al. 2015, "general"; W starts at I/√d, so
                                                    the swapped model first computes exactly scaled dot)
    additive    s(q, k) = vᵀ tanh(W_q q + W_k k)    (Bahdanau et al. 2015; W_q, W_k ∈ R^{d×d}, v ∈ R^d
                                                    per head: a (N × N × d) tensor per head, so its
                                                    cost grows with N²·d in elementwise work too)

The replacement modules keep the original projections (their weights included) and differ only in the
score, so `scaled_dot` reproduces the original model's outputs (a test checks it).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SCORES = ("dot", "scaled_dot", "general", "additive")


class ScoreFunction(nn.Module):
    """Attention logits (B, H, Nq, Nk) from queries (B, H, Nq, d) and keys (B, H, Nk, d)."""

    def __init__(self, kind: str, num_heads: int, head_dim: int):
        super().__init__()
        if kind not in SCORES:
            raise ValueError(f"score kind must be one of {', '.join(SCORES)}, got {kind!r}")
        self.kind, self.num_heads, self.head_dim = kind, num_heads, head_dim
        if kind == "general":
            self.weight = nn.Parameter(torch.eye(head_dim).repeat(num_heads, 1, 1) / math.sqrt(head_dim))
        elif kind == "additive":
            self.w_q = nn.Parameter(torch.empty(num_heads, head_dim, head_dim))
            self.w_k = nn.Parameter(torch.empty(num_heads, head_dim, head_dim))
            self.v = nn.Parameter(torch.empty(num_heads, head_dim, 1))
            for p in (self.w_q, self.w_k, self.v):
                nn.init.normal_(p, std=head_dim ** -0.5)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.kind == "dot":
            return q @ k.transpose(-2, -1)
        if self.kind == "scaled_dot":
            return (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        if self.kind == "general":
            return (q @ self.weight) @ k.transpose(-2, -1)
        hidden = torch.tanh((q @ self.w_q).unsqueeze(-2) + (k @ self.w_k).unsqueeze(-3))  # (B, H, Nq, Nk, d)
        return (hidden @ self.v.unsqueeze(1)).squeeze(-1)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, heads={self.num_heads}, head_dim={self.head_dim}"


def _attend(score: ScoreFunction, q, k, v, mask: torch.Tensor | None, dropout: nn.Module | None):
    logits = score(q, k)
    if mask is not None:
        logits = logits.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
    weights = logits.softmax(dim=-1)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights


class ScoredTimmAttention(nn.Module):
    """timm's ViT `Attention` (qkv → heads → proj) with a chosen score function."""

    def __init__(self, attn: nn.Module, kind: str):
        super().__init__()
        if getattr(attn, "gate", None) is not None:
            raise ValueError("gated attention is not supported")
        self.num_heads, self.head_dim, self.attn_dim = attn.num_heads, attn.head_dim, attn.attn_dim
        self.qkv, self.q_norm, self.k_norm = attn.qkv, attn.q_norm, attn.k_norm
        self.attn_drop, self.norm, self.proj, self.proj_drop = attn.attn_drop, attn.norm, attn.proj, attn.proj_drop
        with torch.device(attn.qkv.weight.device):
            self.score = ScoreFunction(kind, self.num_heads, self.head_dim)

    def _heads(self, x: torch.Tensor, attn_mask, is_causal: bool):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if is_causal:
            attn_mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
        return self.q_norm(q), self.k_norm(k), v, attn_mask

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v, mask = self._heads(x, attn_mask, is_causal)
        out, _ = _attend(self.score, q, k, v, mask, self.attn_drop)
        out = self.norm(out.transpose(1, 2).reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(out))

    def attention_weights(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        """The softmax weights (B, heads, N, N) this module applies, for the attention view."""
        q, k, v, mask = self._heads(x, attn_mask, is_causal)
        return _attend(self.score, q, k, v, mask, None)[1]


class ScoredMultiheadAttention(nn.Module):
    """A drop-in for `nn.MultiheadAttention` (same call and return) with a chosen score function.

    Keeps the original in-projection and out-projection parameters; self- and cross-attention,
    batch_first or not, key-padding and attention masks as nn.MultiheadAttention takes them.
    """

    def __init__(self, mha: nn.MultiheadAttention, kind: str):
        super().__init__()
        if not mha._qkv_same_embed_dim:
            raise ValueError("attention with separate key/value sizes (kdim/vdim) is not supported")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn are not supported")
        self.embed_dim, self.num_heads, self.head_dim = mha.embed_dim, mha.num_heads, mha.head_dim
        self.batch_first = mha.batch_first
        # nn.TransformerEncoderLayer reads this flag to choose its fused fast path, which would compute
        # scaled-dot attention from in_proj_weight and skip this module: False keeps it on the path
        # that calls self_attn(...).
        self._qkv_same_embed_dim = False
        self.in_proj_weight, self.in_proj_bias, self.out_proj = mha.in_proj_weight, mha.in_proj_bias, mha.out_proj
        self.dropout = nn.Dropout(mha.dropout)
        with torch.device(mha.in_proj_weight.device):
            self.score = ScoreFunction(kind, self.num_heads, self.head_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, E) -> (B, H, N, d)
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def attention_weights(self, query, key, value, key_padding_mask=None, attn_mask=None) -> torch.Tensor:
        """The softmax weights (B, heads, Nq, Nk) this module applies, for the attention view."""
        return self.forward(query, key, value, key_padding_mask, True, attn_mask, average_attn_weights=False)[1]

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q, k, v = (self._heads(F.linear(t, w, bias)) for t, w, bias in
                   ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
        mask = _merge_masks(attn_mask, key_padding_mask, q)
        out, weights = _attend(self.score, q, k, v, mask, self.dropout)
        b, _, n, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.embed_dim))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(dim=1) if average_attn_weights else weights


def _merge_masks(attn_mask, key_padding_mask, q) -> torch.Tensor | None:
    """One additive float mask broadcastable to (B, H, Nq, Nk), or None."""
    mask = None
    for part, shape in ((attn_mask, None), (key_padding_mask, "padding")):
        if part is None:
            continue
        if part.dtype == torch.bool:
            part = torch.zeros(part.shape, dtype=q.dtype, device=q.device).masked_fill(part, float("-inf"))
        if shape == "padding":  # (B, Nk) -> (B, 1, 1, Nk)
            part = part[:, None, None, :]
        elif part.dim() == 3:  # (B·H, Nq, Nk) -> (B, H, Nq, Nk)
            part = part.reshape(q.shape[0], q.shape[1], *part.shape[-2:])
        mask = part if mask is None else mask + part
    return mask
