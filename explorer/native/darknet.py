"""Darknet-19, the YOLOv2 classification backbone (Redmon & Farhadi, YOLO9000, CVPR 2017, Table 6).

    conv 32 3×3 · max 2/2 · conv 64 3×3 · max 2/2
    · conv 128 3×3 · conv 64 1×1 · conv 128 3×3 · max 2/2
    · conv 256 3×3 · conv 128 1×1 · conv 256 3×3 · max 2/2
    · conv 512 3×3 · conv 256 1×1 · conv 512 3×3 · conv 256 1×1 · conv 512 3×3 · max 2/2
    · conv 1024 3×3 · conv 512 1×1 · conv 1024 3×3 · conv 512 1×1 · conv 1024 3×3
    · conv 1000 1×1 · global average pool · softmax

19 convolutions and 5 max-pools (stride 32). Every convolution but the last is followed by
batch norm and leaky ReLU (slope 0.1) and has no bias; 3×3 convs pad 1. The table leaves the
last 1×1 conv's details open: as in the official darknet19.cfg it has a bias, no batch norm
and a linear activation. The model returns the logits (the softmax belongs to the loss).

Cost at 224×224: 2,790,989,824 multiply-accumulates (20,842,376 parameters). The paper's
"5.58 billion operations" counts a multiply and an add separately: 2 × 2.791 G = 5.582 G, so
the two agree once the units match (both count the convolutions only; batch norm, leaky ReLU
and pooling are elementwise work reported separately here).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.native.layers import ConvBNLeaky
from explorer.native.registry import register_model

# (filters, kernel) per conv; "M" is a 2×2/2 max-pool. The last 1000-way conv is added separately.
DARKNET19_CFG = [
    (32, 3), "M",
    (64, 3), "M",
    (128, 3), (64, 1), (128, 3), "M",
    (256, 3), (128, 1), (256, 3), "M",
    (512, 3), (256, 1), (512, 3), (256, 1), (512, 3), "M",
    (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3),
]


class Darknet19(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = []
        channels, conv_index, pool_index = in_channels, 0, 0
        for item in DARKNET19_CFG:
            if item == "M":
                pool_index += 1
                layers.append((f"pool{pool_index}", nn.MaxPool2d(kernel_size=2, stride=2)))
            else:
                filters, kernel = item
                conv_index += 1
                layers.append((f"conv{conv_index}", ConvBNLeaky(channels, filters, kernel)))
                channels = filters
        self.features = nn.Sequential(OrderedDict(layers))
        # Convolution 19: 1×1 to the classes, linear, with bias (darknet19.cfg).
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.avgpool(self.classifier(self.features(x))))


@register_model(small_input=(3, 64, 64))
def darknet19(num_classes: int = 1000, in_channels: int = 3) -> Darknet19:
    return Darknet19(num_classes=num_classes, in_channels=in_channels)
