"""The two-tower AlexNet of Krizhevsky, Sutskever & Hinton (NeurIPS 2012), on one device.

The paper split the network across two GPUs; a layer that only sees the half of the
previous layer on its own GPU is a grouped convolution with groups=2 here (conv2, conv4,
conv5), while conv3 and the fully connected layers connect across both towers.

    227×227×3 → conv1 96 11×11/4 → 55 → ReLU → LRN → max-pool 3/2 → 27
              → conv2 256 5×5 pad 2, groups 2 → 27 → ReLU → LRN → max-pool 3/2 → 13
              → conv3 384 3×3 pad 1 (across towers) → conv4 384 3×3 groups 2
              → conv5 256 3×3 groups 2 → 13 → max-pool 3/2 → 6
              → FC 4096 → FC 4096 → FC 1000 (dropout 0.5 on the two hidden FC layers).

Input 227, not the paper's "224": (224 − 11)/4 + 1 is not an integer, and the paper's own
55×55 conv1 output needs 227 (see the seed notes, I-2). LRN: size 5, α = 1e-4, β = 0.75, k = 2
(paper section 3.3). 60,965,224 parameters against the paper's "60 million"; 724 M multiply-adds.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.native.registry import register_model


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


class AlexNetOriginal(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 96, kernel_size=11, stride=4)),  # 227 -> 55
            ("relu1", nn.ReLU(inplace=True)),
            ("norm1", _lrn()),
            ("pool1", nn.MaxPool2d(kernel_size=3, stride=2)),  # overlapping pooling: 55 -> 27
            ("conv2", nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2)),  # 27 -> 27
            ("relu2", nn.ReLU(inplace=True)),
            ("norm2", _lrn()),
            ("pool2", nn.MaxPool2d(kernel_size=3, stride=2)),  # 27 -> 13
            ("conv3", nn.Conv2d(256, 384, kernel_size=3, padding=1)),  # both towers feed both towers
            ("relu3", nn.ReLU(inplace=True)),
            ("conv4", nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)),
            ("relu4", nn.ReLU(inplace=True)),
            ("conv5", nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)),
            ("relu5", nn.ReLU(inplace=True)),
            ("pool5", nn.MaxPool2d(kernel_size=3, stride=2)),  # 13 -> 6
        ]))
        # No adaptive pooling, as in the paper: the FC head expects exactly 6×6×256, which only a
        # 227 input gives (the document's 224 gives 54×54 after conv1 and 5×5 after pool5).
        self.flatten = nn.Flatten()
        # "We use dropout in the first two fully-connected layers": on the outputs of fc6 and fc7.
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


@register_model
def alexnet_original(num_classes: int = 1000, dropout: float = 0.5) -> AlexNetOriginal:
    return AlexNetOriginal(num_classes=num_classes, dropout=dropout)
