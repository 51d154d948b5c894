"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), as the seed document's layer table writes it.

conv5×5(6) – avgpool2 – conv5×5(16) – avgpool2 – conv5×5(120) – FC84 – FC10 on a 1×32×32 input.
Feature maps: 32 → 28 (c1) → 14 (s2) → 10 (c3) → 5 (s4) → 1 (c5).

Simplifications of the 1998 paper, all as the document's table has them:
- C3 is dense: every one of its 16 maps sees all 6 S2 maps (the paper's connection table
  links each C3 map to only 3, 4 or 6 of them, 1,516 weights instead of 2,416);
- S2/S4 are plain 2×2 average pooling (the paper's subsampling has a trainable
  coefficient and bias per map);
- the output is a linear layer to 10 classes (the paper used Euclidean RBF units);
- the squashing function is tanh (the paper's is a scaled tanh, 1.7159·tanh(2x/3)).
Parameters: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from explorer.native.registry import register_model


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 6, kernel_size=5)  # 32 -> 28
        self.act1 = nn.Tanh()
        self.s2 = nn.AvgPool2d(kernel_size=2, stride=2)  # 28 -> 14
        self.c3 = nn.Conv2d(6, 16, kernel_size=5)  # 14 -> 10, dense (no sparse connection table)
        self.act3 = nn.Tanh()
        self.s4 = nn.AvgPool2d(kernel_size=2, stride=2)  # 10 -> 5
        self.c5 = nn.Conv2d(16, 120, kernel_size=5)  # 5 -> 1: same as a Linear(400, 120)
        self.act5 = nn.Tanh()
        self.flatten = nn.Flatten()
        self.f6 = nn.Linear(120, 84)
        self.act6 = nn.Tanh()
        self.output = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s2(self.act1(self.c1(x)))
        x = self.s4(self.act3(self.c3(x)))
        x = self.flatten(self.act5(self.c5(x)))
        return self.output(self.act6(self.f6(x)))


@register_model
def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5:
    return LeNet5(num_classes=num_classes, in_channels=in_channels)
