"""AS-MLP: Lian, Yu, Sun & Gao, "AS-MLP: An Axial Shifted MLP Architecture for Vision", ICLR 2022.

Axial shift: after a channel projection, the C channels are split into S groups
(S = shift size) and group g is shifted by g - ⌊S/2⌋ positions along one axis, with zero padding
(the ablation's choice: S = 5, zero padding, dilation 1). This is done twice in parallel, along the
width and along the height; each shifted copy gets its own channel projection and GELU, the two are
summed, normalised and projected again. An output position thus sees a cross of 2S - 1 positions.

    AxialShift(x) = P₃(N(GELU(P₂ʷ(shift_W(z))) + GELU(P₂ʰ(shift_H(z))))),  z = GELU(N(P₁(x)))

with P = 1×1 convs with bias and N = GroupNorm(1, C) (LayerNorm over C, H, W).
Block (Swin-like): x + AxialShift(N(x)), then x + MLP(N(x)) with 1×1 convs, ratio 4, GELU.

Network (Swin-like; variants and widths as in the official configs): 4×4 patch embedding (conv, kernel = stride = 4) + norm; four
stages at C, 2C, 4C, 8C; patch merging between stages (2×2 neighbours concatenated to 4C, norm, 1×1
conv 4C → 2C without bias); final norm, global average pool, Linear head.

    AS-MLP-T: C = 96,  depths 2-2-6-2
    AS-MLP-S: C = 96,  depths 2-2-18-2
    AS-MLP-B: C = 128, depths 2-2-18-2

Choices where the paper is silent, after the official code (svip-lab/AS-MLP, models/as_mlp.py and
models/shift_cuda.py):
- every norm is GroupNorm(1, C) (``MyNorm``), also in patch embedding and merging;
- channels are split into S groups of ⌈C/S⌉ (``torch.chunk``; the last group is smaller when S does
  not divide C, e.g. 20-20-20-20-16 for C = 96), and group g reads the input at i + (⌊S/2⌋ - g),
  i.e. the first group's features move by -⌊S/2⌋ (towards lower indices);
- patch merging concatenates the sub-grids in the order (0,0), (1,0), (0,1), (1,1).

Parameters and MACs at 224 (official README in brackets, Swin-style counting of multiply-adds):
    T 28.28 M / 4.35 G (28 M / 4.4 G), S 49.59 M / 8.51 G (50 M / 8.5 G), B 87.75 M / 15.13 G (88 M / 15.2 G).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.registry import register_model

CONFIGS = {
    # name: (embed dim C, depths)
    "t": (96, (2, 2, 6, 2)),
    "s": (96, (2, 2, 18, 2)),
    "b": (128, (2, 2, 18, 2)),
}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, channels)


def axial_shift(x: torch.Tensor, shift_size: int, dim: int) -> torch.Tensor:
    """Shift channel group g of (B, C, H, W) by g - ⌊S/2⌋ along ``dim`` (2: height, 3: width), zero fill.

    Output group g at index i holds input group g at index i + (⌊S/2⌋ - g). Pure indexing (a pad,
    slices and one concatenation): no arithmetic, and it does not depend on the tensor's values.
    """
    if shift_size < 1 or shift_size % 2 == 0:
        raise ValueError(f"shift size must be odd, got {shift_size}")
    if shift_size == 1:
        return x
    pad = shift_size // 2
    length = x.shape[dim]
    padding = (pad, pad, 0, 0) if dim == 3 else (0, 0, pad, pad)
    padded = F.pad(x, padding)
    groups = torch.chunk(padded, shift_size, dim=1)
    # Output index i reads padded index i + pad + (pad - g) = i + 2·pad - g.
    shifted = [group.narrow(dim, 2 * pad - g, length) for g, group in enumerate(groups)]
    return torch.cat(shifted, dim=1)


class AxialShift(nn.Module):
    def __init__(self, dim: int, shift_size: int = 5):
        super().__init__()
        self.shift_size = shift_size
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.norm1 = _norm(dim)
        self.act = nn.GELU()
        self.conv2_1 = nn.Conv2d(dim, dim, 1)  # after the shift along the width
        self.conv2_2 = nn.Conv2d(dim, dim, 1)  # after the shift along the height
        self.norm2 = _norm(dim)
        self.conv3 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        along_w = self.act(self.conv2_1(axial_shift(x, self.shift_size, 3)))
        along_h = self.act(self.conv2_2(axial_shift(x, self.shift_size, 2)))
        return self.conv3(self.norm2(along_w + along_h))

    def extra_repr(self) -> str:
        return f"shift_size={self.shift_size}"


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class AxialShiftedBlock(nn.Module):
    def __init__(self, dim: int, shift_size: int = 5, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = _norm(dim)
        self.axial_shift = AxialShift(dim, shift_size)
        self.norm2 = _norm(dim)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.axial_shift(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbours → 4C channels → norm → 1×1 conv to 2C (no bias): half the side, twice the width."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = _norm(4 * dim)
        self.reduction = nn.Conv2d(4 * dim, 2 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=1)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch_size: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = _norm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class ASMLP(nn.Module):
    def __init__(self, embed_dim: int = 96, depths=(2, 2, 6, 2), shift_size: int = 5, mlp_ratio: int = 4,
                 num_classes: int = 1000):
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim)
        dim = embed_dim
        for index, depth in enumerate(depths):
            blocks = [AxialShiftedBlock(dim, shift_size, mlp_ratio) for _ in range(depth)]
            stage = nn.Sequential(*blocks)
            if index < len(depths) - 1:
                stage.add_module("downsample", PatchMerging(dim))
            self.add_module(f"stage{index + 1}", stage)
            dim = dim * 2 if index < len(depths) - 1 else dim
        self.norm = _norm(dim)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.head(torch.flatten(self.avgpool(self.norm(x)), 1))


def as_mlp(variant: str = "t", shift_size: int = 5, num_classes: int = 1000) -> ASMLP:
    if variant not in CONFIGS:
        raise ValueError(f"AS-MLP variant must be one of {', '.join(CONFIGS)}, got {variant!r}")
    dim, depths = CONFIGS[variant]
    return ASMLP(dim, depths, shift_size=shift_size, num_classes=num_classes)


def _builder(variant: str):
    def build(shift_size: int = 5, num_classes: int = 1000) -> ASMLP:
        return as_mlp(variant, shift_size=shift_size, num_classes=num_classes)

    build.__name__ = f"as_mlp_{variant}"
    return build


for _variant in CONFIGS:  # as_mlp_t / s / b
    register_model(f"as_mlp_{_variant}", _builder(_variant), small_input=(3, 32, 32))
