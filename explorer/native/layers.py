"""Small building blocks shared by the native models."""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn


class ConvBNReLU(nn.Sequential):
    """Conv ('same' padding for odd kernels, no bias) → BatchNorm → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(OrderedDict([
            ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels)),
            ("relu", nn.ReLU(inplace=True)),
        ]))
