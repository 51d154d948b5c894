"""ChannelNet-v1: Gao, Wang & Ji, "ChannelNets: Compact and Efficient Convolutional Neural Networks via
Channel-Wise Convolutions", NeurIPS 2018 (224×224 input).

ChannelNet-v1 is MobileNet (1.0) with its 14×14×512 stage rebuilt from group channel-wise modules
(GCWMs); v2 / v3 additionally swap the last depthwise separable conv for a depth-wise separable
channel-wise conv and the FC for the convolutional classification layer — v1 keeps both (its
3.7 M parameters are MobileNet's 4.2 M less the grouped 14×14 stage):

    conv 3×3/2 → 32 (112)           DWS 64 (112)       DWS/2 128, DWS 128 (56)
    DWS/2 256, DWS 256 (28)         DWS/2 512 (14)     GCWM ×3 at 512 (14)
    DWS/2 1024, DWS 1024 (7)        global average pool, 1000-way FC

GCWM: two depthwise separable convs whose 1×1 convs are group convs (g = 2), then a group
channel-wise conv that fuses the groups, and a residual connection. The group channel-wise conv
is g independent channel-wise convs (1-D convs sliding along the channel axis, one filter each,
kernel d_c, stride g), each producing C/g channels from all C inputs; their outputs are
concatenated (C channels). Where the paper is silent we follow the official code
(HongyangGao/ChannelNets, utils/ops.py): d_c = 4·g = 8 with "same" padding, no BN after the
depthwise 3×3 (leaky ReLU only), BN + leaky ReLU after each 1×1 conv, a bias-free stem conv.

Engine count: 3,703,448 parameters (the paper: 3.7 M) and 469.3 M multiply-adds at 224. The paper
lists 407 M, but its own MobileNet row (569 M) less the five dense 512→512 layers this stage
replaces plus six g = 2 group layers gives ≈467 M as well; we found no layout of the described
layers consistent with both 3.7 M and 407 M, so the test pins our count.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.native.layers import ConvBNAct
from explorer.native.registry import register_model

LEAK = 0.2  # tf.nn.leaky_relu's default slope, used throughout the official code
GROUPS = 2
NUM_GCWM = 3


class DWSConv(nn.Sequential):
    """3×3 depthwise (→ leaky ReLU) then 1×1 (optionally grouped) → BN → leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1):
        super().__init__(OrderedDict([
            ("dw", nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False)),
            ("dw_act", nn.LeakyReLU(LEAK, inplace=True)),
            ("pw", nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels)),
            ("act", nn.LeakyReLU(LEAK, inplace=True)),
        ]))


class GroupChannelWiseConv(nn.Module):
    """g channel-wise convs (kernel d_c along the channel axis, stride g): C → g·(C/g) channels.

    Written as one Conv3d over a (1, C, H, W) volume with g filters of shape (d_c, 1, 1); the
    output (g, C/g, H, W) is flattened back to C channels. g·d_c weights in all.
    """

    def __init__(self, channels: int, groups: int = GROUPS, kernel_size: int | None = None):
        super().__init__()
        if channels % groups:
            raise ValueError("channels must split into the groups")
        self.kernel_size = kernel_size or 4 * groups
        total_pad = (channels // groups - 1) * groups + self.kernel_size - channels
        if total_pad % 2 or total_pad < 0:
            raise ValueError("'same' channel padding must be symmetric")
        self.conv = nn.Conv3d(1, groups, (self.kernel_size, 1, 1), stride=(groups, 1, 1),
                              padding=(total_pad // 2, 0, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.conv(x.unsqueeze(1)).reshape(n, c, h, w)


class GCWM(nn.Module):
    def __init__(self, channels: int, groups: int = GROUPS):
        super().__init__()
        self.body = nn.Sequential(OrderedDict([
            ("dws1", DWSConv(channels, channels, groups=groups)),
            ("dws2", DWSConv(channels, channels, groups=groups)),
            ("gcw", GroupChannelWiseConv(channels, groups)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ChannelNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, groups: int = GROUPS, num_gcwm: int = NUM_GCWM):
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, 2, act=nn.LeakyReLU(LEAK, inplace=True))
        self.stage1 = nn.Sequential(OrderedDict([("dws1", DWSConv(32, 64))]))                          # 112
        self.stage2 = nn.Sequential(OrderedDict([("dws1", DWSConv(64, 128, 2)), ("dws2", DWSConv(128, 128))]))  # 56
        self.stage3 = nn.Sequential(OrderedDict([("dws1", DWSConv(128, 256, 2)), ("dws2", DWSConv(256, 256))]))  # 28
        stage4 = OrderedDict([("dws1", DWSConv(256, 512, 2))])                                            # 14
        for i in range(num_gcwm):
            stage4[f"gcwm{i + 1}"] = GCWM(512, groups)
        self.stage4 = nn.Sequential(stage4)
        self.stage5 = nn.Sequential(OrderedDict([("dws1", DWSConv(512, 1024, 2)), ("dws2", DWSConv(1024, 1024))]))  # 7
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage5(self.stage4(self.stage3(self.stage2(self.stage1(x)))))
        return self.fc(self.flatten(self.avgpool(x)))


@register_model(small_input=(3, 64, 64))
def channelnets(num_classes: int = 1000) -> ChannelNetV1:
    return ChannelNetV1(num_classes=num_classes)
