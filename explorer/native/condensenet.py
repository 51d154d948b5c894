"""CondenseNet (Huang, Liu, van der Maaten & Weinberger, CVPR 2018), ImageNet model CondenseNet-74
with C = G = 4, in its test-time (converted) form.

DenseNet with two changes: full dense connectivity across blocks (no
compression; a transition is a 2×2/2 average pool only) and an exponentially increasing
growth rate. ImageNet configuration (the paper's ImageNet model; the official training command):
    3×3/2 conv → 16 channels (2·k0) at 112×112
    dense blocks of 4, 6, 8, 10, 8 layers with growth rates k = 8, 16, 32, 64, 128
    at 112, 56, 28, 14, 7 (average-pool transitions in between)
    BN, ReLU, 7×7 average pool (2064 features), FC 1000
Each layer: BN-ReLU-1×1 "learned group convolution" to 4k (bottleneck 4), then BN-ReLU-3×3
group conv (G = 4 groups) to k, concatenated to its input.
During training the learned group conv is a dense 1×1 conv whose connections are pruned in
C − 1 condensing stages until each of its G output groups keeps 1/C of the input channels.
At test time it becomes an index layer that gathers, for each group in turn,
the in/C input channels that group kept (with C = G all of them together are in channels;
one input may be kept by several groups and another by none), BN and ReLU on the gathered
channels, a standard 1×1 group conv with G groups, and a channel shuffle (permutation) so that
each group of the following 3×3 group conv sees outputs of every 1×1 group.
Which channels each group keeps is learned: the index is a buffer that a trained checkpoint
sets. We start it at the interleaved pattern (group g keeps channels g, g + G, g + 2G, …), so
that every group sees every layer's features; the costs do not depend on it.
The classifier is pruned too (official code, CondenseLinear): the FC reads the half of the
2064 features (1032) with the largest weights, again through an index layer.
Choices after the official code (ShichenLiu/CondenseNet, models/condensenet_converted.py and
layers.py): the pre-activation order above; the shuffle after the 1×1 group conv; no bias in
the convs; the pruned FC (0.5 of its inputs) with bias.

Parameters 4,773,944 (the README: 4.8 M); 516.6 M multiply-adds at 224. The README's 529 M comes
from the official counter (utils.measure_model), which adds one op per ReLU input element and
per averaged element (12.7 M): 516.6 + 12.7 = 529.3 M.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.blocks.misc import ChannelShuffle
from explorer.native.registry import register_model

STAGES = (4, 6, 8, 10, 8)
GROWTH = (8, 16, 32, 64, 128)
BOTTLENECK = 4
GROUPS = 4  # G: groups of the 1×1 and 3×3 group convs
CONDENSE_FACTOR = 4  # C: each 1×1 group keeps 1/C of the input channels
CLASSIFIER_KEEP = 0.5


def interleaved_index(in_channels: int, groups: int, condense: int) -> list[int]:
    """Group g keeps in/C channels g, g + G, g + 2G, …, wrapping around (the default before training sets it)."""
    per_group = in_channels // condense
    return [(g + groups * i) % in_channels for g in range(groups) for i in range(per_group)]


class IndexSelect(nn.Module):
    """Gather channels by a stored index (a buffer, not a parameter: it is not trained by gradients)."""

    def __init__(self, index: list[int]):
        super().__init__()
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.index_select(x, 1, self.index)

    def extra_repr(self) -> str:
        return f"channels={self.index.numel()}"


class CondensedConv1x1(nn.Sequential):
    """Test-time learned group conv: index select → BN → ReLU → 1×1 group conv → shuffle."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = GROUPS, condense: int = CONDENSE_FACTOR):
        if in_channels % condense or out_channels % groups:
            raise ValueError(f"{in_channels} → {out_channels} channels do not condense with C={condense}, G={groups}")
        kept = in_channels // condense * groups
        super().__init__(OrderedDict([
            ("select", IndexSelect(interleaved_index(in_channels, groups, condense))),
            ("bn", nn.BatchNorm2d(kept)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(kept, out_channels, 1, groups=groups, bias=False)),
            ("shuffle", ChannelShuffle(groups)),
        ]))


class DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth_rate: int):
        super().__init__()
        mid = BOTTLENECK * growth_rate
        self.conv1 = CondensedConv1x1(in_channels, mid)
        self.conv2 = nn.Sequential(OrderedDict([
            ("bn", nn.BatchNorm2d(mid)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(mid, growth_rate, 3, padding=1, groups=GROUPS, bias=False)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv2(self.conv1(x))], dim=1)


class CondensedLinear(nn.Module):
    """The pruned classifier: index select of the kept features → FC."""

    def __init__(self, in_features: int, out_features: int, keep: float = CLASSIFIER_KEEP):
        super().__init__()
        kept = int(in_features * keep)
        self.select = IndexSelect(list(range(in_features - kept, in_features)))  # a checkpoint sets the real index
        self.linear = nn.Linear(kept, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.select(x))


class CondenseNet(nn.Module):
    def __init__(self, num_classes: int = 1000, stages: tuple[int, ...] = STAGES, growth: tuple[int, ...] = GROWTH):
        super().__init__()
        if len(stages) != len(growth):
            raise ValueError("one growth rate per dense block")
        channels = 2 * growth[0]
        features = OrderedDict([("init_conv", nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False))])
        for index, (layers, k) in enumerate(zip(stages, growth)):
            block = OrderedDict()
            for i in range(layers):
                block[f"layer{i + 1}"] = DenseLayer(channels, k)
                channels += k
            features[f"block{index + 1}"] = nn.Sequential(block)
            if index != len(stages) - 1:
                features[f"transition{index + 1}"] = nn.AvgPool2d(2, stride=2)
        features["norm"] = nn.BatchNorm2d(channels)
        features["relu"] = nn.ReLU(inplace=True)
        self.features = nn.Sequential(features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # 7×7 at 224
        self.flatten = nn.Flatten()
        self.classifier = CondensedLinear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


@register_model(small_input=(3, 64, 64))
def condensenet(num_classes: int = 1000) -> CondenseNet:
    return CondenseNet(num_classes=num_classes)
