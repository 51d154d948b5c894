"""Interleaved group convolutions: IGCV1 (Zhang, Qi, Xiao & Wang, ICCV 2017) and IGCV3
(Sun, Li, Liu & Wang, BMVC 2018), from the papers.

IGCV1 — an IGC block replaces a 3×3 conv of C = L·M channels by a primary group conv (3×3, L
partitions of M channels), a permutation that gathers the i-th channel of every partition,
a secondary group conv (1×1, M partitions of L channels) and the inverse permutation: every
output channel is connected to every input channel through exactly one path.
IGC-L100M2+Ident. (the paper's ImageNet table, "ResNet of depth 18" with IGC blocks): a
ResNet-18 layout whose stages have L = 100, 200, 400, 800 primary partitions of M = 2 channels
(widths 200, 400, 800, 1600: "we double the channel number by doubling L and keeping M
unchanged"); each residual block = two IGC blocks plus the identity ("+Ident.").
Choices after the official code (hellozting/InterleavedGroupConvolutions,
network/resnet_igc_imgnet_d18.py, and the released IGC-L100M2 symbol file):
- conv1 is 7×7/2 with 100 channels (L·1), BN, ReLU, then 3×3/2 max pool;
- BN (and ReLU, except in a block's second IGC) follows the secondary conv only;
- the first block of a stage changes width (100 → 200, 200 → 400, …) with its primary group
  conv (L groups, 1 or M/2·M input channels each) and a 1×1 projection shortcut grouped in L
  (stride 2 from stage 2), + BN; the other shortcuts are identities; ReLU after the sum;
- global 7×7 average pool, FC 1000 with bias.

IGCV3 — the IGCV3 block: a low-rank group 1×1 conv (G1 = 2 groups) expands C to t·C, a
permutation interleaves the two groups, a depthwise 3×3 conv + BN + ReLU6, a group 1×1 conv
(G2 = 2 groups) projects to C' channels, and a permutation back; residual when the shape
allows. IGCV3-D (the paper's ImageNet network): the MobileNetV2 layout with the blocks of the
middle stages doubled (t, c, n, s = 1,16,1,1 / 6,24,4,2 / 6,32,6,2 / 6,64,8,2 / 6,96,6,1 /
6,160,6,2 / 6,320,1,1), 3×3/2 conv 32 first, 1×1 conv 1280 + global pool + FC last.
Choices after the official code (homles11/IGCV3, symbols/igcv3.py): no activation after the
expanding group conv (BN only), ReLU6 after the depthwise conv only; the first permutation
is a shuffle with 2 groups, the last one with C'/2 groups (its inverse); the first block of
every stage has no shortcut, the others have the identity.

IGC-L100M2+Ident.: 8,637,900 parameters and 1.265 G multiply-adds at 224 (the official README:
8.61 M and 1.3 G). IGCV3-D: 3,491,688 parameters (the README: 3.5 M), 313.0 M multiply-adds.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.blocks.misc import ChannelShuffle
from explorer.native.layers import conv_bn_act
from explorer.native.registry import register_model


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> list:
    """[conv, BN] to unpack into an nn.Sequential whose children are numbered."""
    return list(conv_bn_act(in_channels, out_channels, kernel_size, stride, groups=groups).values())


# --------------------------------------------------------------------------- IGCV1

class IGCBlock(nn.Module):
    """Primary 3×3 group conv (L groups) → permute → secondary 1×1 group conv (M groups) → permute back → BN (→ ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, primary: int, stride: int = 1, relu: bool = True):
        super().__init__()
        if in_channels % primary or out_channels % primary:
            raise ValueError(f"{in_channels} → {out_channels} channels do not split into {primary} partitions")
        secondary = out_channels // primary  # M channels per primary partition = secondary partitions
        self.primary = nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=primary, bias=False)
        self.permute = ChannelShuffle(primary)  # channel m of partition l → position m·L + l
        self.secondary = nn.Conv2d(out_channels, out_channels, 1, groups=secondary, bias=False)
        self.permute_back = ChannelShuffle(secondary)  # the inverse permutation
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.permute_back(self.secondary(self.permute(self.primary(x))))
        return self.relu(self.bn(x))


class IGCResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, primary: int, stride: int):
        super().__init__()
        self.igc1 = IGCBlock(in_channels, out_channels, primary, stride)
        self.igc2 = IGCBlock(out_channels, out_channels, primary, relu=False)
        self.shortcut = nn.Identity() if in_channels == out_channels and stride == 1 else \
            nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride, groups=primary))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.shortcut(x) + self.igc2(self.igc1(x)))


class IGCV1(nn.Module):
    """IGC-L{L}M{M}+Ident. on ResNet-18 for ImageNet; L doubles from stage to stage, M is kept."""

    def __init__(self, primary: int = 100, secondary: int = 2, num_classes: int = 1000,
                 blocks: tuple[int, ...] = (2, 2, 2, 2)):
        super().__init__()
        stem = primary  # the official code: conv1 has L·1 channels
        self.conv1 = nn.Sequential(*_conv_bn(3, stem, 7, stride=2), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = stem
        for index, repeats in enumerate(blocks):
            partitions = primary * 2 ** index
            width = partitions * secondary
            units = []
            for i in range(repeats):
                stride = 2 if index > 0 and i == 0 else 1
                units.append((f"block{i + 1}", IGCResidualBlock(channels, width, partitions, stride)))
                channels = width
            self.add_module(f"stage{index + 1}", nn.Sequential(OrderedDict(units)))
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{index}")(x)
        return self.fc(self.flatten(self.avgpool(x)))


@register_model(small_input=(3, 64, 64))
def igcv1(primary: int = 100, secondary: int = 2, num_classes: int = 1000) -> IGCV1:
    return IGCV1(primary=primary, secondary=secondary, num_classes=num_classes)


# --------------------------------------------------------------------------- IGCV3

# t (expansion), c (output channels), n (blocks), s (stride of the first block): IGCV3-D.
IGCV3_D_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 4, 2),
    (6, 32, 6, 2),
    (6, 64, 8, 2),
    (6, 96, 6, 1),
    (6, 160, 6, 2),
    (6, 320, 1, 1),
)
IGCV3_GROUPS = 2  # G1 = G2 = 2


class IGCV3Block(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, shortcut: bool,
                 groups: int = IGCV3_GROUPS):
        super().__init__()
        hidden = in_channels * expansion
        self.shortcut = shortcut
        if shortcut and (stride != 1 or in_channels != out_channels):
            raise ValueError("an identity shortcut needs stride 1 and equal widths")
        self.expand = nn.Sequential(*_conv_bn(in_channels, hidden, 1, groups=groups))  # low rank, no activation
        self.permute = ChannelShuffle(groups)
        self.depthwise = nn.Sequential(*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True))
        self.project = nn.Sequential(*_conv_bn(hidden, out_channels, 1, groups=groups))
        self.permute_back = ChannelShuffle(out_channels // groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.permute_back(self.project(self.depthwise(self.permute(self.expand(x)))))
        return x + out if self.shortcut else out


class IGCV3(nn.Module):
    def __init__(self, num_classes: int = 1000, setting=IGCV3_D_SETTING, stem: int = 32, last: int = 1280):
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, stem, 3, stride=2), nn.ReLU6(inplace=True))
        channels = stem
        stages = []
        for index, (t, c, n, s) in enumerate(setting):
            blocks = []
            for i in range(n):
                blocks.append((f"block{i + 1}", IGCV3Block(channels, c, s if i == 0 else 1, t, shortcut=i > 0)))
                channels = c
            stages.append((f"stage{index + 1}", nn.Sequential(OrderedDict(blocks))))
        self.features = nn.Sequential(OrderedDict(stages))
        self.last_conv = nn.Sequential(*_conv_bn(channels, last, 1), nn.ReLU6(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.last_conv(self.features(self.stem(x)))
        return self.fc(self.flatten(self.avgpool(x)))


@register_model(small_input=(3, 64, 64))
def igcv3(num_classes: int = 1000) -> IGCV3:
    return IGCV3(num_classes=num_classes)
