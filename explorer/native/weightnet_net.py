"""WeightNet: Ma, Zhang, Huang & Sun, "WeightNet: Revisiting the Design Space of Weight Networks",
ECCV 2020 — the paper's ImageNet model "ShuffleNetV2 (1×) + WeightNet (1×)" (224×224 input).

Backbone: ShuffleNetV2 1.0× in the Megvii layout the paper builds on (megvii-model/ShuffleNet-Series,
which the official WeightNet code extends): 3×3/2 conv to 24 → 3×3/2 max pool → stages of
4, 8, 4 blocks at 116, 232, 464 channels → 1×1 conv to 1024 → global average pool → 1000-way FC.

    stride-1 block: channel split; the right half goes 1×1 → 3×3 dw → 1×1 (mid = out/2), concat
    stride-2 block: left: 3×3/2 dw → 1×1 (in → in); right: 1×1 (in → out/2) → 3×3/2 dw → 1×1
                    (→ out − in); concat gives `out` channels (Megvii's official layout)

WeightNet replaces every conv inside the blocks (the 1×1s and the depthwise 3×3s) by a conv whose
kernel is generated per sample: GAP → reduce FC (C_in → max(16, C_in/16)) → FC1 (→ M·C_out) → σ →
grouped FC2 (G·C_out groups) → kernel, with M = 2, G = 2 (the paper's 1× setting; the official
code's defaults). The stem conv, the last 1×1 conv and the classifier stay static, as in the
official code. We reuse the block library's WeightNetConv, which gives each conv its own reduce FC;
the official code shares one reduce FC per block — a difference of a few thousand parameters.

Engine count: 2,588,816 parameters and 146.9 M multiply-adds at 224. The paper lists 2.4 M and
139 M. Multiply-adds: the paper's count leaves out the 3×3/2 stem conv (8.1 M here; it lists the
plain ShuffleNetV2 1.0× at 138 M against 146 M in ShuffleNetV2's own paper); without it we count
138.7 M (−0.2 %). Parameters: +7.9 %; the generated convs' FC2 weights equal the static convs' (λ =
M/G = 1), the excess is the weight-generating branches' reduce (112 k, one per conv here, one per
block in the official code) and FC1 layers (198 k). The official layer definitions give about the
same FC1 total, so the published 2.4 M is not reproducible from them; the test pins our count.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.blocks.convs import WeightNetConv
from explorer.blocks.misc import ChannelShuffle
from explorer.native.registry import register_model

STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = (24, 116, 232, 464, 1024)  # 1.0×: stem, stages 2–4, last conv


def _bn_relu(channels: int, relu: bool = True) -> list[tuple[str, nn.Module]]:
    layers = [("bn", nn.BatchNorm2d(channels))]
    if relu:
        layers.append(("relu", nn.ReLU(inplace=True)))
    return layers


def _wconv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, depthwise: bool = False,
           relu: bool = True) -> nn.Sequential:
    conv = WeightNetConv(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                         groups=in_channels if depthwise else 1, bias=False,
                         M=1 if depthwise else 2, G=1 if depthwise else 2)
    return nn.Sequential(OrderedDict([("conv", conv)] + _bn_relu(out_channels, relu)))


class WeightNetShuffleBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        mid = out_channels // 2
        if stride == 1:
            branch_in = in_channels // 2
            branch_out = out_channels - branch_in
            self.proj = None
        else:
            branch_in = in_channels
            branch_out = out_channels - in_channels
            self.proj = nn.Sequential(OrderedDict([
                ("dw", _wconv(in_channels, in_channels, 3, stride, depthwise=True, relu=False)),
                ("pw", _wconv(in_channels, in_channels, 1)),
            ]))
        self.main = nn.Sequential(OrderedDict([
            ("pw1", _wconv(branch_in, mid, 1)),
            ("dw", _wconv(mid, mid, 3, stride, depthwise=True, relu=False)),
            ("pw2", _wconv(mid, branch_out, 1)),
        ]))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            half = x.shape[1] // 2
            left, right = x[:, :half], x[:, half:]
            out = torch.cat([left, self.main(right)], dim=1)
        else:
            out = torch.cat([self.proj(x), self.main(x)], dim=1)
        return self.shuffle(out)


class WeightNetShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, repeats: tuple[int, ...] = STAGE_REPEATS,
                 channels: tuple[int, ...] = STAGE_CHANNELS):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(3, channels[0], 3, 2, 1, bias=False)),
        ] + _bn_relu(channels[0])))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_channels = channels[0]
        for index, (n, out_channels) in enumerate(zip(repeats, channels[1:-1])):
            blocks = OrderedDict()
            for i in range(n):
                blocks[f"block{i + 1}"] = WeightNetShuffleBlock(in_channels, out_channels, 2 if i == 0 else 1)
                in_channels = out_channels
            self.add_module(f"stage{index + 2}", nn.Sequential(blocks))
        self.num_stages = len(repeats)
        self.conv_last = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, channels[-1], 1, bias=False)),
        ] + _bn_relu(channels[-1])))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[-1], num_classes, bias=False)  # official: bias=False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.stem(x))
        for index in range(2, self.num_stages + 2):
            x = getattr(self, f"stage{index}")(x)
        return self.fc(self.flatten(self.avgpool(self.conv_last(x))))


@register_model(small_input=(3, 64, 64))
def weightnet(num_classes: int = 1000) -> WeightNetShuffleNetV2:
    return WeightNetShuffleNetV2(num_classes=num_classes)
