"""ShuffleNet (v1): Zhang, Zhou, Lin & Sun, CVPR 2018, from the paper's Table 1.

    224×224 → conv1 3×3/2, 24 ch → 112 → max-pool 3×3/2 → 56
    → Stage2 (28×28): 1 unit of stride 2 + 3 units of stride 1
    → Stage3 (14×14): 1 + 7 → Stage4 (7×7): 1 + 3 → global average pool → FC 1000

Stage output channels for g = 1, 2, 3, 4, 8 groups (Table 1):
    Stage2 144 / 200 / 240 / 272 / 384, doubled in Stage3 and again in Stage4.

ShuffleNet unit (Figure 2): 1×1 group conv (bottleneck = 1/4 of the unit's output channels)
→ BN → ReLU → channel shuffle → 3×3 depthwise conv → BN (no ReLU) → 1×1 group conv → BN;
stride 1: add the identity, then ReLU; stride 2: the depthwise conv has stride 2, the
shortcut is a 3×3/2 average pool and the two are concatenated (the residual branch makes
output − input channels), then ReLU. The first 1×1 conv of Stage2 is not grouped (its
input has only 24 channels). The paper counts FLOPs as multiply-adds: 1× with g=3 is 137 M.

Width "s×" scales every layer's channels by s (Table 2 and Table 5). Choices where the
paper is silent, after the official code (megvii-model/ShuffleNet-Series, ShuffleNetV1):
- the bottleneck is 1/4 of the stage's output channels, also in stride-2 units;
- conv1 has 12 / 24 / 24 / 48 channels at 0.5× / 1× / 1.5× / 2× (1.5× keeps 24); we use 6
  at 0.25× (the paper's scaling; the official code has no 0.25×); conv1 is rounded up to a
  multiple of g so that the stride-2 unit's residual branch (output − input) splits into g groups
  (the official code's 16 channels for 0.5× with g=8);
- the channel shuffle runs in every unit when g > 1, also Stage2's first;
- the FC layer has no bias; conv1 is followed by BN and ReLU.
Scaled stage widths are rounded to the nearest multiple of 4g, so that the bottleneck splits
into g groups (exact for every 1× width of Table 1, e.g. 0.5× g=4 gives 144, not 136).

Multiply-adds at 224 for g = 1 / 2 / 3 / 4 / 8 (paper in brackets):
    1×     143.1 / 140.8 / 137.5 / 134.3 / 138.4 M   (Table 1: 143 / 140 / 137 / 133 / 137)
    0.5×    38.5 /  38.9 /  37.6 /  37.9 /  40.5 M   (Table 2: about 38; the official code: 38 and 40 for g=3, 8)
    0.25×   11.0 /  11.2 /  11.0 /  11.9 /  12.4 M   (Table 2: about 13, one rounded figure for all g)
    1.5× g=3 292.4 M (292), 2× g=3 524.0 M (524)    (Table 5)
"""
from __future__ import annotations

import functools
from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.blocks.misc import ChannelShuffle
from explorer.native.layers import conv_bn_act
from explorer.native.registry import register_model

STAGE2_CHANNELS = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
STAGE_REPEATS = (3, 7, 3)  # stride-1 units after each stage's stride-2 unit
# conv1 channels of the official code per width; 0.25× by the paper's "scale by s".
CONV1_CHANNELS = {0.25: 6, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> list:
    """[conv, BN] to unpack into an nn.Sequential whose children are numbered."""
    return list(conv_bn_act(in_channels, out_channels, kernel_size, stride, groups=groups).values())


class ShuffleUnit(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int, group_first_conv: bool = True):
        super().__init__()
        self.stride = stride
        mid = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 ShuffleNet unit keeps its channel count")
        first_groups = groups if group_first_conv else 1
        for c, what in ((mid, "bottleneck"), (branch_out, "residual branch")):
            if c % groups:
                raise ValueError(f"{what} of {c} channels does not split into {groups} groups")
        self.gconv1 = nn.Sequential(*_conv_bn(in_channels, mid, 1, groups=first_groups), nn.ReLU(inplace=True))
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.dwconv = nn.Sequential(*_conv_bn(mid, mid, 3, stride=stride, groups=mid))  # no ReLU after it
        self.gconv2 = nn.Sequential(*_conv_bn(mid, branch_out, 1, groups=groups))
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gconv2(self.dwconv(self.shuffle(self.gconv1(x))))
        if self.stride == 2:
            return self.act(torch.cat([self.shortcut(x), out], dim=1))
        return self.act(x + out)


def stage_channels(groups: int, width: float) -> tuple[int, int, int, int]:
    """conv1 and Stage2-4 output channels for g groups at width s×."""
    if groups not in STAGE2_CHANNELS:
        raise ValueError(f"groups must be one of {sorted(STAGE2_CHANNELS)}, got {groups}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    step = 4 * groups
    stages = [max(step, int(STAGE2_CHANNELS[groups] * width * m / step + 0.5) * step) for m in (1, 2, 4)]
    conv1 = CONV1_CHANNELS.get(float(width), max(1, int(24 * width + 0.5)))
    conv1 = -(-conv1 // groups) * groups  # round up to a multiple of g
    return conv1, stages[0], stages[1], stages[2]


class ShuffleNetV1(nn.Module):
    def __init__(self, groups: int = 3, width: float = 1.0, num_classes: int = 1000):
        super().__init__()
        conv1, *stages = stage_channels(groups, width)
        self.conv1 = nn.Sequential(*_conv_bn(3, conv1, 3, stride=2), nn.ReLU(inplace=True))  # 224 -> 112
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # 112 -> 56
        channels = conv1
        for index, (out_channels, repeats) in enumerate(zip(stages, STAGE_REPEATS), start=2):
            units = [("unit1", ShuffleUnit(channels, out_channels, groups, stride=2, group_first_conv=index != 2))]
            units += [(f"unit{i}", ShuffleUnit(out_channels, out_channels, groups, stride=1)) for i in range(2, repeats + 2)]
            self.add_module(f"stage{index}", nn.Sequential(OrderedDict(units)))
            channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def shufflenet_v1(groups: int = 3, width: float = 1.0, num_classes: int = 1000) -> ShuffleNetV1:
    return ShuffleNetV1(groups=groups, width=width, num_classes=num_classes)


# Catalog builder names: shufflenet_v1_g{g} (1×) and shufflenet_v1_g{g}_{s}x with s written 0_5, 0_25, 1_5, 2_0:
# 1×, 0.5× and 0.25× for every g (Tables 1 and 2), 1.5× and 2× for g=3 (Table 5).
VARIANTS: dict[str, tuple[int, float]] = {}
for _g in STAGE2_CHANNELS:
    VARIANTS[f"shufflenet_v1_g{_g}"] = (_g, 1.0)
    for _s in (0.5, 0.25) + ((1.5, 2.0) if _g == 3 else ()):
        VARIANTS[f"shufflenet_v1_g{_g}_{str(_s).replace('.', '_')}x"] = (_g, _s)

for _name, (_g, _s) in VARIANTS.items():
    register_model(_name, functools.partial(shufflenet_v1, groups=_g, width=_s), small_input=(3, 64, 64))
