"""PeleeNet: Wang, Li & Ling, "Pelee: A Real-Time Object Detection System on Mobile Devices",
NeurIPS 2018, from the paper's Table 1 (224×224 input, growth rate k = 32).

    Stem block                          → 56×56×32
    Stage 1 (56×56): dense block ×3, transition 1×1 conv 128 + 2×2/2 avg pool → 28×28×128
    Stage 2 (28×28): dense block ×4, transition 1×1 conv 256 + 2×2/2 avg pool → 14×14×256
    Stage 3 (14×14): dense block ×8, transition 1×1 conv 512 + 2×2/2 avg pool →  7×7×512
    Stage 4 (7×7):   dense block ×6, transition 1×1 conv 704                  →  7×7×704
    Classification: 7×7 global average pool, 1000-way FC

Stem block (Figure 2): 3×3/2 conv to 32 (112×112), then two branches: 1×1 conv to 16 → 3×3/2
conv to 32, and 2×2/2 max pool; their concatenation (64) goes through a 1×1 conv back to 32.

Two-way dense layer (Figure 1): both branches start with a 1×1 bottleneck conv; one continues
with a 3×3 conv to k/2 = 16 channels, the other with two 3×3 convs to k/2 (a 5×5 receptive
field); the layer's input and the two branches are concatenated (+32 channels per layer).
The transition layers keep the channel count (compression factor 1). Every conv is
conv → BN → ReLU ("post-activation", so BN can be folded into the conv at inference).

The bottleneck width depends on the stage (the paper: "dynamic number of channels in the
bottleneck layer"); from the official code (Robert-JunWang/PeleeNet, peleenet.py): bottleneck
width factors 1, 2, 4, 4 per stage, i.e. (k/2)·w = 16, 32, 64, 64 channels, capped at half the
layer's input channels (rounded down to a multiple of 4) so a layer never widens its input;
the cap never bites at 224 with these widths (stage inputs 32, 128, 256, 512).

Parameters 2,802,248 (the paper: 2.8 M) and 507.8 M multiply-adds at 224 (the paper: 508 M).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.native.layers import ConvBNReLU
from explorer.native.registry import register_model

GROWTH_RATE = 32
STEM_CHANNELS = 32
BLOCK_LAYERS = (3, 4, 8, 6)
BOTTLENECK_WIDTHS = (1, 2, 4, 4)


class StemBlock(nn.Module):
    """224×224×3 → 56×56×32, two downsamplings at little cost (Figure 2)."""

    def __init__(self, in_channels: int = 3, channels: int = STEM_CHANNELS):
        super().__init__()
        self.stem1 = ConvBNReLU(in_channels, channels, 3, stride=2)
        self.branch_conv = nn.Sequential(OrderedDict([
            ("reduce", ConvBNReLU(channels, channels // 2, 1)),
            ("down", ConvBNReLU(channels // 2, channels, 3, stride=2)),
        ]))
        self.branch_pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fuse = ConvBNReLU(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem1(x)
        return self.fuse(torch.cat([self.branch_pool(x), self.branch_conv(x)], dim=1))


def bottleneck_channels(in_channels: int, growth_rate: int, width: int) -> int:
    """(k/2)·width rounded down to a multiple of 4, at most half the input (official code)."""
    channels = (growth_rate // 2) * width // 4 * 4
    if channels > in_channels / 2:
        channels = in_channels // 8 * 4
    return channels


class TwoWayDenseLayer(nn.Module):
    """Input ‖ (1×1 → 3×3 to k/2) ‖ (1×1 → 3×3 → 3×3 to k/2): adds k channels."""

    def __init__(self, in_channels: int, growth_rate: int, bottleneck_width: int):
        super().__init__()
        half = growth_rate // 2
        mid = bottleneck_channels(in_channels, growth_rate, bottleneck_width)
        self.branch1 = nn.Sequential(OrderedDict([
            ("reduce", ConvBNReLU(in_channels, mid, 1)),
            ("conv3x3", ConvBNReLU(mid, half, 3)),
        ]))
        self.branch2 = nn.Sequential(OrderedDict([
            ("reduce", ConvBNReLU(in_channels, mid, 1)),
            ("conv3x3_a", ConvBNReLU(mid, half, 3)),
            ("conv3x3_b", ConvBNReLU(half, half, 3)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.branch1(x), self.branch2(x)], dim=1)


class PeleeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, growth_rate: int = GROWTH_RATE,
                 block_layers: tuple[int, ...] = BLOCK_LAYERS,
                 bottleneck_widths: tuple[int, ...] = BOTTLENECK_WIDTHS):
        super().__init__()
        if len(block_layers) != len(bottleneck_widths):
            raise ValueError("one bottleneck width per stage")
        self.stem = StemBlock()
        channels = STEM_CHANNELS
        last = len(block_layers) - 1
        for index, (layers, width) in enumerate(zip(block_layers, bottleneck_widths)):
            stage = OrderedDict()
            for i in range(layers):
                stage[f"dense{i + 1}"] = TwoWayDenseLayer(channels + i * growth_rate, growth_rate, width)
            channels += layers * growth_rate
            stage["transition"] = ConvBNReLU(channels, channels, 1)  # no compression
            if index != last:
                stage["pool"] = nn.AvgPool2d(kernel_size=2, stride=2)
            self.add_module(f"stage{index + 1}", nn.Sequential(stage))
        self.num_stages = len(block_layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{index}")(x)
        return self.fc(self.flatten(self.avgpool(x)))


@register_model(small_input=(3, 64, 64))
def peleenet(num_classes: int = 1000) -> PeleeNet:
    return PeleeNet(num_classes=num_classes)
