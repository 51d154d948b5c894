"""HRNet's three output representations: Wang, Sun, Cheng, Jiang, Deng, Zhao, Liu, Mu, Tan, Wang, Liu &
Xiao, "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI 2020 (arXiv 1908.07919),
Section III-C and Figure 4, on timm's `hrnet_w18` body.

The body (timm `hrnet_w18`, features_only, feature_location="" — the four parallel branches themselves,
not the classification head's "incre" bottlenecks): a stem of two 3×3/2 convs, then four stages ending
in branches at 1/4, 1/8, 1/16, 1/32 of the input with C, 2C, 4C, 8C = 18, 36, 72, 144 channels.
On it, the paper's representation heads (the "neck") and the task layers it uses them with:

- HRNetV1 (human pose, 256×192): only the highest-resolution branch; a 1×1 conv (with bias) to
  K = 17 COCO keypoint heatmaps at 1/4. As in the official pose code (leoxiaobin/
  deep-high-resolution-net.pytorch, pose_hrnet.py: the last stage is built with
  multi_scale_output=False), the last fusion of stage 4 computes the 1/4 output only: we drop timm's
  fuse layers towards the three lower outputs, which HRNetV1 never reads.
- HRNetV2 (segmentation, Cityscapes 512×1024 crops): the three lower branches upsampled bilinearly
  to 1/4 and concatenated with the first (15C = 270 channels), then "a 1×1 convolution to mix the four
  representations"; the official code (HRNet/HRNet-Semantic-Segmentation, seg_hrnet.py, `last_layer`)
  makes it a 1×1 conv 270 → 270 with bias, BN, ReLU, followed by the 1×1 classifier (with bias) to
  the 19 Cityscapes classes. The logits stay at 1/4: the paper upsamples them to the input size in
  the loss and at test time, outside the network. align_corners=False (that code's default; its
  later README says align_corners=True: the cost is the same).
- HRNetV2p (detection, Faster R-CNN at 800): V2's concatenation reduced to 256 channels by a 1×1 conv
  (with bias, no BN, no activation), average-pooled by 1, 2, 4, 8, 16 into five levels ("same as FPN,
  we also use 5 levels"), each followed by its own 3×3 conv 256 → 256 (with bias) — the official
  HRFPN neck (HRNet/HRNet-Object-Detection, mmdet/models/necks/hrfpn.py). Returns the five levels
  p2..p6 (strides 4..64); the detector's RPN and RoI heads are not part of this model.

Fusion upsampling inside the body is timm's (1×1 conv, BN, nearest ×2^k, as the official code; the
paper's text says bilinear).

Counts. The paper's GFLOPs are multiply-adds of the convolutions divided by 2^30 (the official
get_model_summary, deep-high-resolution-net lib/utils/utils.py, prints flops_sum / 1024**3): we give
the engine's multiply-adds (MACs) and, in brackets, MACs / 2^30 for comparison.
- V1-W18 at 256×192: 9,318,215 parameters, 3,188,385,792 MACs (2.97). No W18 pose figure is
  published; the same construction at W32 / W48 gives 28,536,113 / 63,595,745 parameters and
  7.12 / 14.61 at 256×192, 16.02 / 32.88 at 384×288 (Table I: 28.5 M / 63.6 M; 7.10 / 14.6,
  16.0 / 32.9 GFLOPs).
- V2-W18 with the 19-class classifier at 512×1024: 9,641,119 parameters, 36,850,262,016 MACs (34.32).
  No Cityscapes W18 figure (Table III lists W40 and W48); the same construction at 1024×2048 gives
  65,859,379 parameters and 696.17 at W48 (Table III: 65.9 M, 696.2), 45,894,435 and 498.67 at W40
  (45.2 M, 493.2: +1.5 % / +1.1 %). With the 98-landmark classifier (WFLW) at 256×256: 9,662,528
  parameters and 4.37 (Appendix D: HRNetV2-W18 9.3 M, 4.3 G; the 9.3 M is within 0.3 % of the V1-W18
  count above, not of a V2 model: the 270-channel mixing conv alone has 73,710 parameters).
- V2p-W18 at 800×800: 12,582,036 parameters (the neck: 270·256 + 256 + 5·(256·256·9 + 256) =
  3,019,776), 76,046,164,656 MACs. The paper gives only whole detectors (Table VII, Faster R-CNN
  with HRNetV2p-W18: 26.2 M, 159.1 GFLOPs): no figure for the backbone and neck alone.
"""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.registry import register_model

WIDTH = 18  # C: branch widths C, 2C, 4C, 8C
NUM_KEYPOINTS = 17  # COCO
NUM_CLASSES = 19  # Cityscapes evaluation classes
PYRAMID_CHANNELS = 256
PYRAMID_LEVELS = 5  # strides 4, 8, 16, 32, 64


def hrnet_body(width: int = WIDTH) -> nn.Module:
    """timm's HRNet without any head: returns the four branch outputs (C, 2C, 4C, 8C at 1/4 … 1/32)."""
    return timm.create_model(f"hrnet_w{width}", pretrained=False, features_only=True,
                             feature_location="", out_indices=(1, 2, 3, 4))


def upsample_concat(features: list[torch.Tensor]) -> torch.Tensor:
    """Bilinearly upsample every branch to the first one's size and concatenate: 15C channels."""
    size = features[0].shape[-2:]
    ups = [features[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]]
    return torch.cat(ups, dim=1)


class HighestResolution(nn.Module):
    """HRNetV1's representation: the 1/4 branch only."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return features[0]


class ConcatMix(nn.Module):
    """HRNetV2's representation: upsample + concatenate, then the 1×1 mixing conv, BN, ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.mix = nn.Sequential(
            nn.Conv2d(channels, channels, 1),  # with bias, as the official last_layer
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.mix(upsample_concat(features))


class ConcatPyramid(nn.Module):
    """HRNetV2p's representation: V2's concatenation → 1×1 conv → average pools → one 3×3 conv per level."""

    def __init__(self, channels: int, out_channels: int = PYRAMID_CHANNELS, levels: int = PYRAMID_LEVELS):
        super().__init__()
        self.reduce = nn.Conv2d(channels, out_channels, 1)
        self.pools = nn.ModuleList([nn.Identity()] + [nn.AvgPool2d(2 ** i) for i in range(1, levels)])
        self.convs = nn.ModuleList([nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(levels)])

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.reduce(upsample_concat(features))
        # Level i has stride 4·2^i: named p2 … p6 like FPN's levels.
        return {f"p{i + 2}": conv(pool(x)) for i, (pool, conv) in enumerate(zip(self.pools, self.convs))}


class HRNetV1(nn.Module):
    def __init__(self, width: int = WIDTH, num_keypoints: int = NUM_KEYPOINTS):
        super().__init__()
        self.backbone = hrnet_body(width)
        last = self.backbone.stage4[-1]
        last.fuse_layers = last.fuse_layers[:1]  # the final fusion computes the 1/4 output only
        self.neck = HighestResolution()
        self.head = nn.Conv2d(width, num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.backbone(x)))


class HRNetV2(nn.Module):
    def __init__(self, width: int = WIDTH, num_classes: int = NUM_CLASSES):
        super().__init__()
        channels = 15 * width
        self.backbone = hrnet_body(width)
        self.neck = ConcatMix(channels)
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.backbone(x)))


class HRNetV2p(nn.Module):
    def __init__(self, width: int = WIDTH, out_channels: int = PYRAMID_CHANNELS):
        super().__init__()
        self.backbone = hrnet_body(width)
        self.neck = ConcatPyramid(15 * width, out_channels)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.neck(self.backbone(x))


@register_model(small_input=(3, 64, 64))
def hrnet_w18_v1(width: int = WIDTH, num_keypoints: int = NUM_KEYPOINTS) -> HRNetV1:
    """HRNetV1: 1/4 branch → 1×1 conv to keypoint heatmaps (width: timm's hrnet_w{width} body)."""
    return HRNetV1(width, num_keypoints)


@register_model(small_input=(3, 64, 64))
def hrnet_w18_v2(width: int = WIDTH, num_classes: int = NUM_CLASSES) -> HRNetV2:
    """HRNetV2: all branches upsampled and concatenated → 1×1 mix (BN, ReLU) → 1×1 classifier at 1/4."""
    return HRNetV2(width, num_classes)


@register_model(small_input=(3, 64, 64))
def hrnet_w18_v2p(width: int = WIDTH, out_channels: int = PYRAMID_CHANNELS) -> HRNetV2p:
    """HRNetV2p: V2's concatenation → five pooled levels p2..p6 of 256 channels (no detector heads)."""
    return HRNetV2p(width, out_channels)
