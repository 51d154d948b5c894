"""MicroNet M0–M3: Li, Chen, Dai, Chen, Liu, Yuan, Liu, Zhang & Vasconcelos, "MicroNet: Improving
Image Recognition with Extremely Low FLOPs", ICCV 2021 (224×224 input).

Two ideas (the paper, Sections 3–4):
  * Micro-factorised convolution. Pointwise: a group 1×1 conv (G groups) expands / compresses,
    a channel shuffle, then a second group 1×1 conv, so every output still sees every input at
    far fewer connections. Depthwise: a k×1 depthwise conv followed by a 1×k depthwise conv
    (possibly with a channel multiplier), i.e. a rank-1 factorised k×k kernel.
  * Dynamic Shift-Max: out = max_k (a_k(x) · x + b_k(x) · shift(x)), where shift(x) moves each
    channel to the next group (and the next channel inside the group) and the coefficients
    a_k, b_k come from a tiny SE-like branch (GAP → FC → ReLU → FC → h-sigmoid). Here the shift
    is a static reshape + roll (shape-only control flow, no data-dependent branch).

Micro-blocks (the paper's Section 4): A (depthwise factorised conv with channel
multiplier → group pointwise compression), B (group pointwise expansion → depthwise → group
pointwise compression, used for stride 2 / channel changes), C (as B with a residual), and a
final pointwise expansion. The per-layer settings (width, kernel, expansion, groups, which
activations are dynamic, reduction ratios), the stem (a 3×1/2 conv then a 1×3/2 depthwise conv
with channel multiplier and a shuffle), the head (ReLU6 → GAP → h-swish → FC → BN → h-swish →
dropout → FC → BN → h-swish) and the initial coefficients (a = 1, b = 0; M3: second branch
a = 0.5, b = 0.5) follow the official code (liyunsheng13/micronet, backbone/microconfig.py and
the eval scripts), which spells out the paper's Table 1 per layer. As in that code each Shift-Max
uses one shift (J = 2 terms) and takes the max over K = 2 branches where the block's activation
is "ReLU-like" (K = 1, a dynamic linear mix, otherwise).

Engine counts at 224 (published in the official README): parameters M0 1,019,590 (1.0 M),
M1 1,777,587 (1.8 M), M2 2,393,876 (2.4 M), M3 2,622,960 (2.6 M). Multiply-adds: the engine counts
conv / linear MACs only (3.45 M, 5.31 M, 10.34 M, 18.24 M) and books Dynamic Shift-Max's products
(2·K per output element: a·x and b·shift(x) per branch) as element-wise ops; the paper counts them
as multiply-adds. Adding them gives 4.05 M, 6.12 M, 12.74 M, 20.81 M against the published 4 M,
6 M, 12 M and 21 M.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.blocks.misc import ChannelShuffle
from explorer.native.layers import ConvBNAct
from explorer.native.registry import register_model

ACT_MAX = 2.0
REDUCTION = 8

# s, n, c, ks, c1, c2, g1, g2, c3, g3, g4, y1, y2, y3, r  (official backbone/microconfig.py)
M0_CFG = [
    [2, 1, 8, 3, 2, 2, 0, 4, 8, 2, 2, 2, 0, 1, 1],
    [2, 1, 12, 3, 2, 2, 0, 8, 12, 4, 4, 2, 2, 1, 1],
    [2, 1, 16, 5, 2, 2, 0, 12, 16, 4, 4, 2, 2, 1, 1],
    [1, 1, 32, 5, 1, 4, 4, 4, 32, 4, 4, 2, 2, 1, 1],
    [2, 1, 64, 5, 1, 4, 8, 8, 64, 8, 8, 2, 2, 1, 1],
    [1, 1, 96, 3, 1, 4, 8, 8, 96, 8, 8, 2, 2, 1, 2],
    [1, 1, 384, 3, 1, 4, 12, 12, 0, 0, 0, 2, 2, 1, 2],
]
M1_CFG = [
    [2, 1, 8, 3, 2, 2, 0, 6, 8, 2, 2, 2, 0, 1, 1],
    [2, 1, 16, 3, 2, 2, 0, 8, 16, 4, 4, 2, 2, 1, 1],
    [2, 1, 16, 5, 2, 2, 0, 16, 16, 4, 4, 2, 2, 1, 1],
    [1, 1, 32, 5, 1, 6, 4, 4, 32, 4, 4, 2, 2, 1, 1],
    [2, 1, 64, 5, 1, 6, 8, 8, 64, 8, 8, 2, 2, 1, 1],
    [1, 1, 96, 3, 1, 6, 8, 8, 96, 8, 8, 2, 2, 1, 2],
    [1, 1, 576, 3, 1, 6, 12, 12, 0, 0, 0, 2, 2, 1, 2],
]
M2_CFG = [
    [2, 1, 12, 3, 2, 2, 0, 8, 12, 4, 4, 2, 0, 1, 1],
    [2, 1, 16, 3, 2, 2, 0, 12, 16, 4, 4, 2, 2, 1, 1],
    [1, 1, 24, 3, 2, 2, 0, 16, 24, 4, 4, 2, 2, 1, 1],
    [2, 1, 32, 5, 1, 6, 6, 6, 32, 4, 4, 2, 2, 1, 1],
    [1, 1, 32, 5, 1, 6, 8, 8, 32, 4, 4, 2, 2, 1, 2],
    [1, 1, 64, 5, 1, 6, 8, 8, 64, 8, 8, 2, 2, 1, 2],
    [2, 1, 96, 5, 1, 6, 8, 8, 96, 8, 8, 2, 2, 1, 2],
    [1, 1, 128, 3, 1, 6, 12, 12, 128, 8, 8, 2, 2, 1, 2],
    [1, 1, 768, 3, 1, 6, 16, 16, 0, 0, 0, 2, 2, 1, 2],
]
M3_CFG = [
    [2, 1, 16, 3, 2, 2, 0, 12, 16, 4, 4, 0, 2, 0, 1],
    [2, 1, 24, 3, 2, 2, 0, 16, 24, 4, 4, 0, 2, 0, 1],
    [1, 1, 24, 3, 2, 2, 0, 24, 24, 4, 4, 0, 2, 0, 1],
    [2, 1, 32, 5, 1, 6, 6, 6, 32, 4, 4, 0, 2, 0, 1],
    [1, 1, 32, 5, 1, 6, 8, 8, 32, 4, 4, 0, 2, 0, 2],
    [1, 1, 64, 5, 1, 6, 8, 8, 48, 8, 8, 0, 2, 0, 2],
    [1, 1, 80, 5, 1, 6, 8, 8, 80, 8, 8, 0, 2, 0, 2],
    [1, 1, 80, 5, 1, 6, 10, 10, 80, 8, 8, 0, 2, 0, 2],
    [2, 1, 120, 5, 1, 6, 10, 10, 120, 10, 10, 0, 2, 0, 2],
    [1, 1, 120, 5, 1, 6, 12, 12, 120, 10, 10, 0, 2, 0, 2],
    [1, 1, 144, 3, 1, 6, 12, 12, 144, 12, 12, 0, 2, 0, 2],
    [1, 1, 864, 3, 1, 6, 12, 12, 0, 0, 0, 0, 2, 0, 2],
]

# variant: (layer config, stem channels, stem groups, head width, dropout, init_a, init_b)
VARIANTS = {
    "m0": (M0_CFG, 4, (2, 2), 640, 0.05, (1.0, 1.0), (0.0, 0.0)),
    "m1": (M1_CFG, 6, (3, 2), 960, 0.05, (1.0, 1.0), (0.0, 0.0)),
    "m2": (M2_CFG, 8, (4, 2), 1024, 0.1, (1.0, 1.0), (0.0, 0.0)),
    "m3": (M3_CFG, 12, (4, 3), 1024, 0.1, (1.0, 0.5), (0.0, 0.5)),
}


def _make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class DynamicShiftMax(nn.Module):
    """max over K of (a_k · x + b_k · shift(x)); coefficients from GAP → FC → ReLU → FC → h-sigmoid.

    shift(x) is x with its channels viewed as (groups, channels per group) and rolled by one
    along both axes: channel j of group i reads channel j+1 of group i+1 (both cyclic).
    K = 2 with ``relu_like`` (the max of two linear mixes), else K = 1.
    """

    def __init__(self, channels: int, reduction: int, groups: int, relu_like: bool,
                 init_a=(1.0, 0.0), init_b=(0.0, 0.0), act_max: float = ACT_MAX):
        super().__init__()
        self.channels = channels
        self.k = 2 if relu_like else 1
        self.act_max = 2 * act_max  # the official code's scaling of (h-sigmoid − 0.5)
        self.init_a = tuple(init_a)
        self.init_b = tuple(init_b)
        squeeze = max(4, _make_divisible(channels // reduction, 4))
        self.fc = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(channels, squeeze)),
            ("relu", nn.ReLU(inplace=True)),
            ("fc2", nn.Linear(squeeze, 2 * self.k * channels)),
            ("hsigmoid", nn.Hardsigmoid()),
        ]))
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} groups")
        self.groups = groups

    def shift(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, g, c // g, h, w).roll(shifts=(-1, -1), dims=(1, 2)).reshape(n, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = self.fc(x.mean((2, 3)))
        y = ((y - 0.5) * self.act_max).reshape(n, 2 * self.k * c, 1, 1)
        shifted = self.shift(x)
        coeffs = torch.split(y, c, dim=1)
        a1, b1 = coeffs[0] + self.init_a[0], coeffs[1] + self.init_b[0]
        out = x * a1 + shifted * b1
        if self.k == 2:
            a2, b2 = coeffs[2] + self.init_a[1], coeffs[3] + self.init_b[1]
            out = torch.maximum(out, x * a2 + shifted * b2)
        return out


def _dynamic(channels, reduction, groups, relu_like, init_a, init_b, enabled: bool) -> nn.Module:
    if not enabled:
        return nn.ReLU6(inplace=True)
    return DynamicShiftMax(channels, reduction, groups, relu_like, init_a, init_b)


class GroupPointwise(ConvBNAct):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__(in_channels, out_channels, 1, groups=groups)


class FactorisedDepthwise(nn.Sequential):
    """k×1 depthwise (channel multiplier e1) → BN → 1×k depthwise (multiplier e2) → BN."""

    def __init__(self, channels: int, expand: tuple[int, int], kernel_size: int, stride: int):
        e1, e2 = expand
        hidden = channels * e1
        p = kernel_size // 2
        super().__init__(OrderedDict([
            ("conv_kx1", nn.Conv2d(channels, hidden, (kernel_size, 1), (stride, 1), (p, 0), bias=False, groups=channels)),
            ("bn1", nn.BatchNorm2d(hidden)),
            ("conv_1xk", nn.Conv2d(hidden, hidden * e2, (1, kernel_size), (1, stride), (0, p), bias=False, groups=hidden)),
            ("bn2", nn.BatchNorm2d(hidden * e2)),
        ]))


class MicroBlock(nn.Module):
    """One row of the configuration (the official DYMicroBlock, shuffle on, depthwise factorised)."""

    def __init__(self, in_channels: int, out_channels: int, row: list[int], init_a, init_b):
        super().__init__()
        s, _, _, ks, c1, c2, g1, g2, _, g3, g4, y1, y2, y3, r = row
        self.identity = s == 1 and in_channels == out_channels
        reduction = REDUCTION * r
        hidden = in_channels * c1 * c2
        layers = OrderedDict()
        if g1 == 0:  # micro-block A: factorised depthwise with multiplier → group pointwise
            layers["depthwise"] = FactorisedDepthwise(in_channels, (c1, c2), ks, s)
            layers["act1"] = _dynamic(hidden, reduction, g2, y2 == 2, init_a, init_b, y2 > 0)
            layers["shuffle1"] = ChannelShuffle(g2)
            if y2 != 0:
                layers["shuffle1b"] = ChannelShuffle(hidden // 2)
            layers["pointwise"] = GroupPointwise(hidden, out_channels, g3)
            if y3 > 0:
                layers["act2"] = DynamicShiftMax(out_channels, reduction // 2, g4, False, (init_a[0], 0.0), (init_b[0], 0.0))
            layers["shuffle2"] = ChannelShuffle(g4)
            if out_channels % 2 == 0 and y3 != 0:
                layers["shuffle2b"] = ChannelShuffle(out_channels // 2)
        elif g4 == 0:  # final pointwise expansion
            layers["pointwise"] = GroupPointwise(in_channels, hidden, g1)
            if y3 > 0:
                layers["act"] = DynamicShiftMax(hidden, reduction, g2, False, (init_a[0], 0.0), (init_b[0], 0.0))
        else:  # micro-blocks B / C: group pointwise → factorised depthwise → group pointwise
            layers["pointwise1"] = GroupPointwise(in_channels, hidden, g1)
            layers["act1"] = _dynamic(hidden, reduction, g2, y1 == 2, init_a, init_b, y1 > 0)
            layers["shuffle1"] = ChannelShuffle(g2)
            layers["depthwise"] = FactorisedDepthwise(hidden, (1, 1), ks, s)
            # official: the shift groups become hidden / g2 here ("expansion")
            layers["act2"] = _dynamic(hidden, reduction, hidden // g2 if g2 != 1 else 1, y2 == 2, init_a, init_b, y2 > 0)
            if y1 != 0 and y2 != 0:
                layers["shuffle2"] = ChannelShuffle(hidden // 4)
            elif y1 != 0 or y2 != 0:
                layers["shuffle2"] = ChannelShuffle(hidden // 2)
            layers["pointwise2"] = GroupPointwise(hidden, out_channels, g3)
            if y3 > 0:
                red = reduction // 2 if out_channels < hidden else reduction
                layers["act3"] = DynamicShiftMax(out_channels, red, g4, False, (init_a[0], 0.0), (init_b[0], 0.0))
            layers["shuffle3"] = ChannelShuffle(g4)
            if y3 != 0:
                layers["shuffle3b"] = ChannelShuffle(out_channels // 2)
        self.layers = nn.Sequential(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.identity else out


class MicroNetStem(nn.Sequential):
    """3×1/2 conv (3 → g1) → BN → 1×3/2 depthwise with multiplier g2 → BN → shuffle(g1) → ReLU6."""

    def __init__(self, channels: int, groups: tuple[int, int]):
        g1, g2 = groups
        if g1 * g2 != channels:
            raise ValueError("stem groups must multiply to the stem width (no max-group pooling here)")
        super().__init__(OrderedDict([
            ("conv_3x1", nn.Conv2d(3, g1, (3, 1), (2, 1), (1, 0), bias=False)),
            ("bn1", nn.BatchNorm2d(g1)),
            ("conv_1x3", nn.Conv2d(g1, g1 * g2, (1, 3), (1, 2), (0, 1), bias=False, groups=g1)),
            ("bn2", nn.BatchNorm2d(g1 * g2)),
            ("shuffle", ChannelShuffle(g1)),
            ("relu6", nn.ReLU6(inplace=True)),
        ]))


class SwishLinear(nn.Sequential):
    def __init__(self, in_features: int, out_features: int):
        super().__init__(OrderedDict([
            ("linear", nn.Linear(in_features, out_features)),
            ("bn", nn.BatchNorm1d(out_features)),
            ("hswish", nn.Hardswish()),
        ]))


class MicroNet(nn.Module):
    def __init__(self, variant: str = "m0", num_classes: int = 1000):
        super().__init__()
        cfg, stem_ch, stem_groups, head, dropout, init_a, init_b = VARIANTS[variant]
        self.stem = MicroNetStem(stem_ch, stem_groups)
        blocks = OrderedDict()
        channels = stem_ch
        for index, row in enumerate(cfg):
            s, n, c = row[:3]
            for i in range(n):
                row_i = row if i == 0 else [1] + row[1:]
                blocks[f"block{index + 1}" + (f"_{i + 1}" if n > 1 else "")] = MicroBlock(channels, c, row_i, init_a, init_b)
                channels = c
        self.features = nn.Sequential(blocks)
        self.pool = nn.Sequential(OrderedDict([
            ("relu6", nn.ReLU6(inplace=True)),
            ("gap", nn.AdaptiveAvgPool2d(1)),
            ("hswish", nn.Hardswish()),
            ("flatten", nn.Flatten()),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", SwishLinear(channels, head)),
            ("dropout", nn.Dropout(dropout)),
            ("fc2", SwishLinear(head, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(self.stem(x))))


@register_model(small_input=(3, 64, 64))
def micronet_m0(num_classes: int = 1000) -> MicroNet:
    return MicroNet("m0", num_classes)


@register_model(small_input=(3, 64, 64))
def micronet_m1(num_classes: int = 1000) -> MicroNet:
    return MicroNet("m1", num_classes)


@register_model(small_input=(3, 64, 64))
def micronet_m2(num_classes: int = 1000) -> MicroNet:
    return MicroNet("m2", num_classes)


@register_model(small_input=(3, 64, 64))
def micronet_m3(num_classes: int = 1000) -> MicroNet:
    return MicroNet("m3", num_classes)
