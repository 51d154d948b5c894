"""Inception-ResNet-v1: Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning", AAAI 2017 (arXiv 1602.07261), Figures 7 and 10-15.

    299×299×3 → stem (Figure 14) → 35×35×256
    → 5 × Inception-ResNet-A (Figure 10) → Reduction-A (Figure 7; k=192, l=192, m=256, n=384) → 17×17×896
    → 10 × Inception-ResNet-B (Figure 11) → Reduction-B (Figure 12) → 8×8×1792
    → 5 × Inception-ResNet-C (Figure 13) → 8×8 average pool → 1792 → dropout (keep 0.8) → FC 1000

Stem (Figure 14; "V" = valid padding, others "same"): 3×3/2 V 32 (149) · 3×3 V 32 (147) ·
3×3 64 (147) · max-pool 3×3/2 V (73) · 1×1 80 · 3×3 V 192 (71) · 3×3/2 V 256 (35).

Each Inception-ResNet block: parallel branches → concat → linear 1×1 conv back to the input
width → scaled → added to the input → ReLU. The paper scales residuals "by factors between
0.1 and 0.3"; we use 0.17 (A), 0.10 (B) and 0.20 (C), the values of the official TF-slim
Inception-ResNet code. As the paper says ("batch-normalization only on top of the traditional
layers, but not on top of the summations"), every conv has BN + ReLU except the linear 1×1
up-projection, which has a bias and no BN (as in the official code). 5 C blocks as in the
paper's Figure 15 (some face-recognition code adds a sixth one without ReLU; not here).
The paper gives no parameter or operation count for this network, only that its cost is
roughly that of Inception-v3. At 299: 22,756,328 parameters and 6.21 G multiply-adds, 9 % more
than Inception-v3's 5.71 G (torchvision's figure for the same input).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.native.layers import ConvBNReLU
from explorer.native.registry import register_model


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size, stride: int = 1, padding=0) -> ConvBNReLU:
    """Unpadded ("V" in Figure 14) unless a padding is given."""
    return ConvBNReLU(in_channels, out_channels, kernel_size, stride, padding)


class Stem(nn.Sequential):
    """Figure 14: 299×299×3 → 35×35×256."""

    def __init__(self, in_channels: int = 3):
        super().__init__(OrderedDict([
            ("conv1a", conv_bn_relu(in_channels, 32, 3, stride=2)),  # 149 V
            ("conv2a", conv_bn_relu(32, 32, 3)),  # 147 V
            ("conv2b", conv_bn_relu(32, 64, 3, padding=1)),  # 147
            ("pool3a", nn.MaxPool2d(3, stride=2)),  # 73 V
            ("conv3b", conv_bn_relu(64, 80, 1)),  # 73
            ("conv4a", conv_bn_relu(80, 192, 3)),  # 71 V
            ("conv4b", conv_bn_relu(192, 256, 3, stride=2)),  # 35 V
        ]))


class ResidualInception(nn.Module):
    """Branches → concat → linear 1×1 up-projection → × scale → + input → ReLU."""

    def __init__(self, channels: int, branches: list[nn.Module], concat_channels: int, scale: float):
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.up = nn.Conv2d(concat_channels, channels, 1, bias=True)  # linear: no BN, no activation
        self.scale = scale
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.relu(x + self.scale * self.up(mixed))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def block_a(channels: int = 256, scale: float = 0.17) -> ResidualInception:
    """Figure 10 (35×35): 1×1 32 | 1×1 32 → 3×3 32 | 1×1 32 → 3×3 32 → 3×3 32 → 1×1 256."""
    return ResidualInception(channels, [
        conv_bn_relu(channels, 32, 1),
        nn.Sequential(conv_bn_relu(channels, 32, 1), conv_bn_relu(32, 32, 3, padding=1)),
        nn.Sequential(conv_bn_relu(channels, 32, 1), conv_bn_relu(32, 32, 3, padding=1),
                      conv_bn_relu(32, 32, 3, padding=1)),
    ], 96, scale)


def block_b(channels: int = 896, scale: float = 0.10) -> ResidualInception:
    """Figure 11 (17×17): 1×1 128 | 1×1 128 → 1×7 128 → 7×1 128 → 1×1 896."""
    return ResidualInception(channels, [
        conv_bn_relu(channels, 128, 1),
        nn.Sequential(conv_bn_relu(channels, 128, 1), conv_bn_relu(128, 128, (1, 7), padding=(0, 3)),
                      conv_bn_relu(128, 128, (7, 1), padding=(3, 0))),
    ], 256, scale)


def block_c(channels: int = 1792, scale: float = 0.20) -> ResidualInception:
    """Figure 13 (8×8): 1×1 192 | 1×1 192 → 1×3 192 → 3×1 192 → 1×1 1792."""
    return ResidualInception(channels, [
        conv_bn_relu(channels, 192, 1),
        nn.Sequential(conv_bn_relu(channels, 192, 1), conv_bn_relu(192, 192, (1, 3), padding=(0, 1)),
                      conv_bn_relu(192, 192, (3, 1), padding=(1, 0))),
    ], 384, scale)


class Concat(nn.Module):
    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def reduction_a(in_channels: int = 256, k: int = 192, l: int = 192, m: int = 256, n: int = 384) -> Concat:
    """Figure 7 (35 → 17): max-pool 3×3/2 V | 3×3/2 V n | 1×1 k → 3×3 l → 3×3/2 V m."""
    return Concat([
        nn.MaxPool2d(3, stride=2),
        conv_bn_relu(in_channels, n, 3, stride=2),
        nn.Sequential(conv_bn_relu(in_channels, k, 1), conv_bn_relu(k, l, 3, padding=1),
                      conv_bn_relu(l, m, 3, stride=2)),
    ])


def reduction_b(in_channels: int = 896) -> Concat:
    """Figure 12 (17 → 8): max-pool 3×3/2 V | 1×1 256 → 3×3/2 V 384 | 1×1 256 → 3×3/2 V 256
    | 1×1 256 → 3×3 256 → 3×3/2 V 256. Output 896 + 384 + 256 + 256 = 1792."""
    return Concat([
        nn.MaxPool2d(3, stride=2),
        nn.Sequential(conv_bn_relu(in_channels, 256, 1), conv_bn_relu(256, 384, 3, stride=2)),
        nn.Sequential(conv_bn_relu(in_channels, 256, 1), conv_bn_relu(256, 256, 3, stride=2)),
        nn.Sequential(conv_bn_relu(in_channels, 256, 1), conv_bn_relu(256, 256, 3, padding=1),
                      conv_bn_relu(256, 256, 3, stride=2)),
    ])


class InceptionResNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 scale_a: float = 0.17, scale_b: float = 0.10, scale_c: float = 0.20):
        super().__init__()
        self.stem = Stem()
        self.blocks_a = nn.Sequential(*[block_a(256, scale_a) for _ in range(5)])
        self.reduction_a = reduction_a(256, k=192, l=192, m=256, n=384)
        self.blocks_b = nn.Sequential(*[block_b(896, scale_b) for _ in range(10)])
        self.reduction_b = reduction_b(896)
        self.blocks_c = nn.Sequential(*[block_c(1792, scale_c) for _ in range(5)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the 8×8 average pool at 299
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)  # keep 0.8
        self.fc = nn.Linear(1792, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks_a(self.stem(x))
        x = self.blocks_b(self.reduction_a(x))
        return self.blocks_c(self.reduction_b(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.avgpool(self.forward_features(x)))  # the 1792-d features
        return self.fc(self.dropout(x))


@register_model(small_input=(3, 96, 96))
def inception_resnet_v1(num_classes: int = 1000, dropout: float = 0.2, scale_a: float = 0.17,
                        scale_b: float = 0.10, scale_c: float = 0.20) -> InceptionResNetV1:
    return InceptionResNetV1(num_classes=num_classes, dropout=dropout, scale_a=scale_a, scale_b=scale_b, scale_c=scale_c)
