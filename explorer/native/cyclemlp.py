"""CycleMLP: Chen, Xie, Ge, Chen, Liang & Luo, "CycleMLP: A MLP-like Architecture for Dense Prediction", ICLR 2022.

Cycle FC is a channel FC (a 1×1 projection, C_in·C_out weights) in which input channel c is
read at a fixed spatial offset that cycles with c inside a pseudo-kernel of S_H × S_W positions:

    CycleFC(X)[i, j, :] = Σ_c X[i + δ_i(c), j + δ_j(c), c] · W[c, :] + b

For the 1×3 pseudo-kernel δ_i = 0 and δ_j cycles through three horizontal offsets; for 3×1 the cycle
is vertical. It costs as much as a channel FC, accepts any input size, and three channels in a row
together see a 1×3 (or 3×1) window. Positions outside the map read zeros.

Exact formulation used here: Cycle FC *is* a deformable convolution with a 1×1 kernel, one offset
group per input channel and constant offsets (the official code computes it that way), so we call
``torchvision.ops.deform_conv2d`` through a ``torchvision.ops.DeformConv2d`` child (``CycleFC.dcn``)
with a fixed offset buffer of shape (1, 2·C_in, 1, 1) expanded to the map: channel 2c holds δ_i(c)
and 2c+1 holds δ_j(c) (torchvision's (Δy, Δx) order). The offsets are integers, so the bilinear
sampling is an exact shift with zero fill. The explorer's deformable-offset view hooks DeformConv2d
and reads these offsets. The cost engine adds the 4 bilinear taps per sampled value to the MACs
(4·C_in per position: 4/C_out of the layer's C_in·C_out, 0.3 % of CycleMLP-B1's total).

Which channel gets which offset: the paper writes the cycle as a function of c mod S; the official
code (ShoufaChen/CycleMLP, cycle_mlp.py, ``CycleFC.gen_offset``) starts it at the centre, i.e. for
S = 3 channels 0, 1, 2, 3, ... get offsets 0, +1, -1, 0, ... We follow the official code; another
starting point only permutes which weights see which offset.

CycleMLP block: x + TokenMixer(LN(x)), then x + MLP(LN(x)). The token mixer has
three parallel branches, Cycle FC 1×3, Cycle FC 3×1 and a channel FC, fused as in ViP's split
attention: a = softmax over branches of MLP(mean over positions of (h + w + c)) per channel, out =
proj(a₀·h + a₁·w + a₂·c). Channel FC has no bias (qkv_bias=False in the official code), the
re-weighting MLP is C → C/4 → 3C with GELU, proj is a Linear with bias.

Network (official configs, cycle_mlp.py CycleMLP_B1 .. CycleMLP_B5): a 7×7 stride-4 overlapping patch
embedding (padding 2, no norm), four stages with a 3×3 stride-2 conv (padding 1) between them, final
LayerNorm, mean over tokens, Linear head. Tokens are kept channels-last (B, H, W, C).

    B1: dims 64-128-320-512, depths 2-2-4-2,  MLP ratios 4-4-4-4
    B2: dims 64-128-320-512, depths 2-3-10-3, MLP ratios 4-4-4-4
    B3: dims 64-128-320-512, depths 3-4-18-3, MLP ratios 8-8-4-4
    B4: dims 64-128-320-512, depths 3-8-27-3, MLP ratios 8-8-4-4
    B5: dims 96-192-384-768, depths 3-4-24-3, MLP ratios 4-4-4-4

Parameters and MACs at 224 (official README in brackets; fvcore counts a multiply-add as one FLOP):
    B1 15.16 M / 2.13 G (15 M / 2.1 G), B2 26.80 M / 3.89 G (27 M / 3.9 G), B3 38.39 M / 6.85 G
    (38 M / 6.9 G), B4 51.80 M / 10.05 G (52 M / 10.1 G), B5 75.75 M / 12.26 G (76 M / 12.3 G).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import DeformConv2d

from explorer.native.registry import register_model

CONFIGS = {
    # name: (embed dims, depths, MLP ratios)
    "b1": ((64, 128, 320, 512), (2, 2, 4, 2), (4, 4, 4, 4)),
    "b2": ((64, 128, 320, 512), (2, 3, 10, 3), (4, 4, 4, 4)),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), (8, 8, 4, 4)),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), (8, 8, 4, 4)),
    "b5": ((96, 192, 384, 768), (3, 4, 24, 3), (4, 4, 4, 4)),
}


def cycle_offsets(channels: int, pseudo_kernel: tuple[int, int]) -> list[tuple[int, int]]:
    """(δ_i, δ_j) of every input channel for a 1×S or S×1 pseudo-kernel (official code's order)."""
    kh, kw = pseudo_kernel
    if kh != 1 and kw != 1:
        raise ValueError(f"Cycle FC's pseudo-kernel is 1×S or S×1, got {kh}×{kw}")
    size = max(kh, kw)
    start = (kh * kw) // 2
    steps = [(c + start) % size - size // 2 for c in range(channels)]
    return [(0, s) for s in steps] if kh == 1 else [(s, 0) for s in steps]


class CycleFC(nn.Module):
    """Channel FC whose input channels are sampled at fixed, cycling offsets: a 1×1 deformable conv."""

    def __init__(self, in_channels: int, out_channels: int, pseudo_kernel: tuple[int, int]):
        super().__init__()
        self.pseudo_kernel = tuple(pseudo_kernel)
        self.dcn = DeformConv2d(in_channels, out_channels, kernel_size=1, bias=True)
        offsets = [value for pair in cycle_offsets(in_channels, self.pseudo_kernel) for value in pair]
        self.register_buffer("offset", torch.tensor(offsets, dtype=torch.float32).view(1, 2 * in_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.dcn(x, self.offset.expand(b, -1, h, w))

    def extra_repr(self) -> str:
        return f"pseudo_kernel={self.pseudo_kernel[0]}x{self.pseudo_kernel[1]}"


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CycleTokenMixer(nn.Module):
    """Cycle FC 1×3, Cycle FC 3×1 and a channel FC in parallel, fused by split attention (B, H, W, C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.cycle_1x3 = CycleFC(dim, dim, (1, 3))  # official name sfc_h
        self.cycle_3x1 = CycleFC(dim, dim, (3, 1))  # official name sfc_w
        self.channel_fc = nn.Linear(dim, dim, bias=False)  # official name mlp_c
        self.reweight = MLP(dim, dim // 4, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, _, c = x.shape
        grid = x.permute(0, 3, 1, 2)
        h = self.cycle_1x3(grid).permute(0, 2, 3, 1)
        w = self.cycle_3x1(grid).permute(0, 2, 3, 1)
        ch = self.channel_fc(x)
        a = (h + w + ch).mean(dim=(1, 2))  # (B, C)
        a = self.reweight(a).reshape(b, c, 3).permute(2, 0, 1).softmax(dim=0)  # (3, B, C)
        a = a[:, :, None, None, :]
        return self.proj(h * a[0] + w * a[1] + ch * a[2])


class CycleBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = CycleTokenMixer(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Downsample(nn.Module):
    """3×3 stride-2 conv between stages, on channels-last tokens."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class CycleNet(nn.Module):
    def __init__(self, embed_dims, depths, mlp_ratios, num_classes: int = 1000):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, embed_dims[0], kernel_size=7, stride=4, padding=2)
        for index, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios)):
            if index:
                self.add_module(f"downsample{index + 1}", Downsample(embed_dims[index - 1], dim))
            self.add_module(f"stage{index + 1}", nn.Sequential(*(CycleBlock(dim, ratio) for _ in range(depth))))
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.patch_embed(x).permute(0, 2, 3, 1))
        x = self.stage2(self.downsample2(x))
        x = self.stage3(self.downsample3(x))
        x = self.stage4(self.downsample4(x))
        return self.head(self.norm(x).mean(dim=(1, 2)))


def cyclemlp(variant: str = "b1", num_classes: int = 1000) -> CycleNet:
    if variant not in CONFIGS:
        raise ValueError(f"CycleMLP variant must be one of {', '.join(CONFIGS)}, got {variant!r}")
    dims, depths, ratios = CONFIGS[variant]
    return CycleNet(dims, depths, ratios, num_classes=num_classes)


def _builder(variant: str):
    def build(num_classes: int = 1000) -> CycleNet:
        return cyclemlp(variant, num_classes=num_classes)

    build.__name__ = f"cyclemlp_{variant}"
    return build


for _variant in CONFIGS:  # cyclemlp_b1 .. b5
    register_model(f"cyclemlp_{_variant}", _builder(_variant), small_input=(3, 32, 32))
