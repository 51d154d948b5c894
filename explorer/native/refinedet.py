"""RefineDet: Zhang, Wen, Bian, Lei & Li, "Single-Shot Refinement Neural Network for Object Detection",
CVPR 2018 (arXiv 1711.06897): RefineDet320 with the VGG-16 backbone, for the 21 PASCAL VOC classes.

    image (B, 3, 320, 320) → VGG-16 (fc6/fc7 as convolutions) and the extra layers conv6_1/conv6_2
    → four ARM sources: conv4_3 (512, 40×40, L2Norm), conv5_3 (512, 20×20, L2Norm), fc7 (1024, 10×10),
      conv6_2 (512, 5×5): strides 8, 16, 32, 64
    → ARM: per source a 3×3 conv for 3 anchors × 2 scores (object or not) and one for 3 × 4 offsets
    → TCBs, top-down: conv3×3-ReLU-conv3×3 on the source, plus the 2× deconvolution of the next higher
      TCB's output (element-wise sum), ReLU, conv3×3-ReLU: four 256-channel ODM maps P3..P6
    → ODM: per map a 3×3 conv for 3 anchors × 21 class scores and one for 3 × 4 offsets.

The forward returns the raw ARM and ODM predictions (no anchors, no decoding, no negative-anchor
filtering, no NMS): {"arm_loc": (B, N, 4), "arm_conf": (B, N, 2), "odm_loc": (B, N, 4),
"odm_conf": (B, N, 21)}, N = 3 · (40² + 20² + 10² + 5²) = 6375 anchors at 320×320 (the official README's
"Number of Boxes" for RefineDet320; 16,320 for RefineDet512, which is this network at 512×512).

Where the paper is silent, the layers follow the official Caffe code (sfzhang15/RefineDet,
examples/refinedet/VGG16_VOC2012_320.py, the same net as examples/refinenet/VGG16_VOC2007_320.py, and
python/caffe/model_libs.py):
- VGG-16 is SSD's "fully convolutional reduced" VGG (VGGNetBody(fully_conv, reduced, dilated=False)):
  pool5 stays 2×2 stride 2 (unlike SSD's 3×3 stride-1 pool5), fc6 is a 3×3 conv with dilation 3 and
  1024 channels, fc7 a 1×1 conv with 1024 channels, both with ReLU and without dropout; so fc7 is at
  stride 32, which the four strides 8-64 need;
- conv6_1 is 1×1 to 256 channels and conv6_2 3×3 stride 2 to 512 channels, each with ReLU;
- L2Norm (per-position normalisation over channels with a learned per-channel scale) starts at 10 on
  conv4_3 and 8 on conv5_3; the TCBs read the normalised maps;
- each TCB's convolutions have 256 channels; the deconvolution is 2×2 with stride 2 (and a bias), with
  no ReLU before the sum; the top TCB (on conv6_2) has no deconvolution and a ReLU after its second conv;
- the prediction convs are 3×3 with padding 1; 3 anchors per position (one size, ratios 1, 2, 1/2);
- no BatchNorm anywhere (use_batchnorm = False: "only the non batch norm version has been tested").
All pooling rounds up, as Caffe does (only matters for sides that are not multiples of 32); the TCB sums
need the input side to be a multiple of 64.

The VGG-16 trunk here (torchvision's `vgg16().features` layout, so its ImageNet weights load by name,
plus pool5/fc6/fc7) is shared with M2Det (explorer/native/m2det.py), whose pool5 and fc6 differ.

Published figures: 80.0 % mAP on VOC2007 test (trained on VOC07+12; paper Table 1 and the official
README). Neither the paper nor the README gives a parameter or FLOP count.
Ours at 320×320: 34,440,884 parameters (VGG-16 reduced trunk 20,483,904; L2Norm 1,024; conv6_1/conv6_2
1,442,560; TCBs 11,407,104; ARM 414,792; ODM 691,500) and 37.77 G multiply-accumulates (trunk 31.90 G,
TCBs 5.27 G, ARM + ODM 0.55 G).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.registry import register_model

# torchvision's vgg16 `features` up to relu5_3 (its cfg "D"; "M" = 2×2 max-pool, stride 2).
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
CONV4_3 = 22  # index of relu4_3 in that layout

NUM_ANCHORS = 3
TCB_CHANNELS = 256


class VGG16Features(nn.Sequential):
    """torchvision's vgg16 `features` layout without pool5 (indices 0-29); returns (conv4_3, conv5_3)."""

    def __init__(self):
        layers, in_channels = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # Caffe rounds pooled sizes up
            else:
                layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = v
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i, layer in enumerate(self):
            x = layer(x)
            if i == CONV4_3:
                conv4_3 = x  # the next layer (pool4) is not in-place
        return conv4_3, x


class VGG16Trunk(nn.Module):
    """VGG-16 with fc6/fc7 as convolutions (SSD's "VGG16-reduced"), returning conv4_3, conv5_3 and fc7.

    pool5_stride 2 (RefineDet): 2×2 max-pool, fc7 at stride 32. pool5_stride 1 (SSD, M2Det): 3×3
    max-pool with stride 1, fc7 at stride 16. fc6 is 3×3 with `fc6_dilation` and 1024 channels.
    """

    def __init__(self, pool5_stride: int, fc6_dilation: int):
        super().__init__()
        self.features = VGG16Features()
        if pool5_stride == 2:
            self.pool5 = nn.MaxPool2d(2, 2, ceil_mode=True)
        else:
            self.pool5 = nn.MaxPool2d(3, 1, padding=1)
        self.fc6 = nn.Conv2d(512, 1024, 3, padding=fc6_dilation, dilation=fc6_dilation)
        self.relu6 = nn.ReLU(inplace=True)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.relu7 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        conv4_3, conv5_3 = self.features(x)
        fc7 = self.relu7(self.fc7(self.relu6(self.fc6(self.pool5(conv5_3)))))
        return conv4_3, conv5_3, fc7


class L2Norm(nn.Module):
    """Normalise each position's channel vector to unit L2 norm, then scale each channel (learned)."""

    def __init__(self, channels: int, scale: float, eps: float = 1e-10):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).sum(dim=1, keepdim=True) + self.eps)
        return x * self.weight.view(1, -1, 1, 1)


class RefineDetBackbone(nn.Module):
    """VGG-16 trunk, L2Norm on conv4_3/conv5_3 and the extra layers: the four ARM sources."""

    def __init__(self):
        super().__init__()
        self.vgg = VGG16Trunk(pool5_stride=2, fc6_dilation=3)
        self.conv4_3_norm = L2Norm(512, 10.0)
        self.conv5_3_norm = L2Norm(512, 8.0)
        self.conv6_1 = nn.Conv2d(1024, 256, 1)
        self.conv6_2 = nn.Conv2d(256, 512, 3, stride=2, padding=1)
        self.out_channels = (512, 512, 1024, 512)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        conv4_3, conv5_3, fc7 = self.vgg(x)
        conv6_2 = F.relu(self.conv6_2(F.relu(self.conv6_1(fc7))))
        return [self.conv4_3_norm(conv4_3), self.conv5_3_norm(conv5_3), fc7, conv6_2]


class TransferConnectionBlock(nn.Module):
    """ARM feature → ODM feature; all but the top block add the 2× deconvolution of the block above."""

    def __init__(self, in_channels: int, top: bool, channels: int = TCB_CHANNELS):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.deconv = None if top else nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, higher: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv2(F.relu(self.conv1(x)))
        if self.deconv is not None:
            x = x + self.deconv(higher)
        return F.relu(self.conv3(F.relu(x)))


class TransferConnections(nn.Module):
    """The four TCBs (P3..P6), run from the top (conv6_2) down."""

    def __init__(self, in_channels=(512, 512, 1024, 512)):
        super().__init__()
        last = len(in_channels) - 1
        self.tcbs = nn.ModuleList(TransferConnectionBlock(c, top=i == last) for i, c in enumerate(in_channels))

    def forward(self, sources: list[torch.Tensor]) -> list[torch.Tensor]:
        outs, higher = [], None
        for tcb, x in zip(reversed(self.tcbs), reversed(sources)):
            higher = tcb(x, higher)
            outs.append(higher)
        return outs[::-1]


def flatten_predictions(maps: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
    """(B, A·k, H, W) maps → (B, ΣA·H·W, k), anchors ordered by level, row, column, anchor."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, per_anchor) for m in maps], dim=1)


class RefineDetHead(nn.Module):
    """ARM (objectness + coarse offsets on the backbone sources) and ODM (classes + offsets on the TCBs)."""

    def __init__(self, arm_channels, num_classes: int, odm_channels: int = TCB_CHANNELS,
                 num_anchors: int = NUM_ANCHORS):
        super().__init__()
        self.num_classes = num_classes

        def convs(channels, outputs):
            return nn.ModuleList(nn.Conv2d(c, num_anchors * outputs, 3, padding=1) for c in channels)

        self.arm_loc = convs(arm_channels, 4)
        self.arm_conf = convs(arm_channels, 2)
        self.odm_loc = convs([odm_channels] * len(arm_channels), 4)
        self.odm_conf = convs([odm_channels] * len(arm_channels), num_classes)

    def forward(self, arm_sources: list[torch.Tensor], odm_sources: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "arm_loc": flatten_predictions([conv(x) for conv, x in zip(self.arm_loc, arm_sources)], 4),
            "arm_conf": flatten_predictions([conv(x) for conv, x in zip(self.arm_conf, arm_sources)], 2),
            "odm_loc": flatten_predictions([conv(x) for conv, x in zip(self.odm_loc, odm_sources)], 4),
            "odm_conf": flatten_predictions([conv(x) for conv, x in zip(self.odm_conf, odm_sources)], self.num_classes),
        }


class RefineDet(nn.Module):
    def __init__(self, num_classes: int = 21):
        super().__init__()
        self.backbone = RefineDetBackbone()
        self.neck = TransferConnections(self.backbone.out_channels)
        self.head = RefineDetHead(self.backbone.out_channels, num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        sources = self.backbone(images)
        return self.head(sources, self.neck(sources))


@register_model(small_input=(3, 64, 64))
def refinedet320(num_classes: int = 21) -> RefineDet:
    return RefineDet(num_classes)
