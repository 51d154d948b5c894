"""BN-Inception (Inception-v2): Ioffe & Szegedy, "Batch Normalization", ICML 2015, Figure 5.

GoogLeNet with batch norm after every convolution, each 5×5 branch replaced by two stacked
3×3 convolutions ("double 3×3"), three 28×28 modules (3a, 3b, 3c), no pooling layers between
modules: modules 3c and 4e reduce the grid themselves with stride-2 convolutions and a
stride-2 max-pool whose output passes through unprojected. Figure 5, per module:

    module  out   #1×1  #3×3red #3×3  dbl red  dbl 3×3  pool + proj
    3a      256   64    64      64    64       96       avg + 32
    3b      320   64    64      96    64       96       avg + 64
    3c      576   0     128     160   64       96       max + pass through (stride 2)
    4a      576   224   64      96    96       128      avg + 128
    4b      576   192   96      128   96       128      avg + 128
    4c      576   160   128     160   128      160      avg + 128 (96 here, see below)
    4d      576   96    128     192   160      192      avg + 128 (96 here, see below)
    4e      1024  0     128     192   192      256      max + pass through (stride 2)
    5a      1024  352   192     320   160      224      avg + 128
    5b      1024  352   192     320   192      224      max + 128

Stem: conv 7×7/2 → 64 (112²), max-pool 3×3/2 (56²), conv 1×1 64 + 3×3 → 192, max-pool
3×3/2 (28²); head: 7×7 average pool → 1024 → FC 1000. Input 224.

Where the paper is open or inconsistent we follow Google's official TF-slim inception_v2:
- "separable convolution with depth multiplier 8 on the first convolutional layer" (paper
  appendix): a 7×7/2 depthwise conv 3 → 24 channels, then a 1×1 conv 24 → 64; BN + ReLU
  after the pair only;
- modules 4c and 4d: the table's branch widths with avg + 128 add up to 608 channels, not the
  576 it lists (and 4e would then give 1056, not 1024). The official code keeps the listed
  576/1024 outputs by projecting the pool branch of 4c and 4d to 96 channels; we do the same;
- convolutions have no bias (BN follows); "same" padding; pooling inside modules is 3×3,
  stride 1 (stride 2 in 3c and 4e); average pooling excludes the padding, as TF's does;
- dropout 0.2 before the classifier (TF-slim keeps 0.8); no auxiliary classifier (the table
  lists none).
Cost at 224: 11,188,288 parameters (with the 1000-way classifier) and 1.935 G multiply-adds.
The appendix's "about 30% more computation than GoogLeNet" (1.5 G multiply-adds) is 1.95 G,
which matches. The paper's text says 13.6 M parameters; Figure 5's layers do not reach it
(the table's 128-channel pool projections in 4c/4d would add only 0.09 M), it lists no
auxiliary classifier, and the paper does not say what else it counted.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.native.layers import ConvBNReLU
from explorer.native.registry import register_model


class SeparableStem(nn.Sequential):
    """7×7/2 depthwise conv with depth multiplier 8 (3 → 24), then 1×1 → 64, then BN + ReLU."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64, multiplier: int = 8):
        mid = in_channels * multiplier
        super().__init__(OrderedDict([
            ("depthwise", nn.Conv2d(in_channels, mid, 7, 2, 3, groups=in_channels, bias=False)),
            ("pointwise", nn.Conv2d(mid, out_channels, 1, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels)),
            ("relu", nn.ReLU(inplace=True)),
        ]))


class InceptionModule(nn.Module):
    """One row of Figure 5. `pool` is "avg" or "max"; `pool_proj` 0 means pass-through.
    With stride 2 the 3×3 branches end in a stride-2 conv and the pool has stride 2."""

    def __init__(self, in_channels: int, n1x1: int, n3x3red: int, n3x3: int, ndbl_red: int, ndbl: int,
                 pool: str, pool_proj: int, stride: int = 1):
        super().__init__()
        self.out_channels = n1x1 + n3x3 + ndbl + (pool_proj or in_channels)
        self.branch1x1 = ConvBNReLU(in_channels, n1x1, 1) if n1x1 else None
        self.branch3x3 = nn.Sequential(ConvBNReLU(in_channels, n3x3red, 1), ConvBNReLU(n3x3red, n3x3, 3, stride))
        self.branch_dbl = nn.Sequential(
            ConvBNReLU(in_channels, ndbl_red, 1), ConvBNReLU(ndbl_red, ndbl, 3), ConvBNReLU(ndbl, ndbl, 3, stride)
        )
        if pool == "avg":
            pooling = nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        elif pool == "max":
            pooling = nn.MaxPool2d(3, stride, padding=1)
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.branch_pool = nn.Sequential(pooling, ConvBNReLU(in_channels, pool_proj, 1)) if pool_proj else pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [] if self.branch1x1 is None else [self.branch1x1(x)]
        outs += [self.branch3x3(x), self.branch_dbl(x), self.branch_pool(x)]
        return torch.cat(outs, dim=1)


# name: (#1×1, #3×3 reduce, #3×3, double #3×3 reduce, double #3×3, pool, pool proj, stride)
MODULES = [
    ("inception3a", (64, 64, 64, 64, 96, "avg", 32, 1)),
    ("inception3b", (64, 64, 96, 64, 96, "avg", 64, 1)),
    ("inception3c", (0, 128, 160, 64, 96, "max", 0, 2)),
    ("inception4a", (224, 64, 96, 96, 128, "avg", 128, 1)),
    ("inception4b", (192, 96, 128, 96, 128, "avg", 128, 1)),
    ("inception4c", (160, 128, 160, 128, 160, "avg", 96, 1)),  # table: 128; 96 keeps its 576 (official code)
    ("inception4d", (96, 128, 192, 160, 192, "avg", 96, 1)),  # table: 128; 96 keeps its 576 (official code)
    ("inception4e", (0, 128, 192, 192, 256, "max", 0, 2)),
    ("inception5a", (352, 192, 320, 160, 224, "avg", 128, 1)),
    ("inception5b", (352, 192, 320, 192, 224, "max", 128, 1)),
]


class BNInception(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.conv1 = SeparableStem(3, 64, multiplier=8)  # 224 -> 112
        self.pool1 = nn.MaxPool2d(3, 2, padding=1)  # 112 -> 56
        self.conv2_reduce = ConvBNReLU(64, 64, 1)
        self.conv2 = ConvBNReLU(64, 192, 3)
        self.pool2 = nn.MaxPool2d(3, 2, padding=1)  # 56 -> 28
        channels = 192
        for name, args in MODULES:
            module = InceptionModule(channels, *args)
            self.add_module(name, module)
            channels = module.out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # 7×7 average pool at 224
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self._module_names = [name for name, _ in MODULES]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(self.conv2_reduce(x)))
        for name in self._module_names:
            x = getattr(self, name)(x)
        return self.fc(self.dropout(self.flatten(self.avgpool(x))))


@register_model(small_input=(3, 64, 64))
def bn_inception(num_classes: int = 1000, dropout: float = 0.2) -> BNInception:
    return BNInception(num_classes=num_classes, dropout=dropout)
