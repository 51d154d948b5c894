"""GA-RPN: Wang, Chen, Yang, Loy & Lin, "Region Proposal by Guided Anchoring", CVPR 2019
(arXiv 1901.03278), on a ResNet-50-FPN.

    image → torchvision ResNet-50 + FPN (P2..P5 and "pool" = P6, 256 channels, strides 4..64)
    → one GA-RPN head shared by the five levels:
        x = ReLU(3×3 conv 256 → 256)                       (the RPN's shared conv)
        loc   = sigmoid(1×1 conv 256 → 1)                  p(object centre at this position)
        shape = 1×1 conv 256 → 2                           (dw, dh) of the one anchor per position
        offsets = 1×1 conv 2 → 4·2·3·3 = 72 on the shape map (no bias)
        x' = ReLU(3×3 deformable conv 256 → 256, 4 offset groups, no bias)(x, offsets)
        objectness = 1×1 conv 256 → 1, box = 1×1 conv 256 → 4 on the adapted features x'.

The anchor at a position of a level with stride s is w = σ·s·e^dw, h = σ·s·e^dh with σ = 8 (the
paper's anchor shape prediction; `anchor_wh`); the official code also scales dw, dh by its target
stds (0.14) when decoding, which the paper does not mention. The deformable conv is a torchvision
DeformConv2d, so the explorer's deformable-offset view finds it (`head.feature_adaption.conv_adaption`).

Channels and the rest follow the official config (mmdetection ga_rpn_r50_fpn_1x: GARPNHead with
in_channels = feat_channels = 256, one square base anchor per position, deform_groups = 4 and the
offset conv on the detached shape prediction, as its FeatureAdaption does). Differences, on purpose:
- the official head evaluates the two output 1×1 convs as masked convolutions at inference, only
  where loc ≥ 0.01 (the paper's "90 % fewer anchors"); here they run at every position, so the MACs
  counted for those two convs are an upper bound (they are about 0.1 % of the head's);
- no proposal decoding or NMS: the model returns the raw per-level maps, as a dict
  {level: {"loc", "shape", "objectness", "box"}} with level in p2..p6;
- the backbone has plain BatchNorm (as torchvision builds an untrained detector backbone).

Parameters: backbone 26,852,416 (= torchvision fasterrcnn_resnet50_fpn's backbone), head 1,182,104:
3×3 conv 590,080 + loc 257 + shape 514 + offset conv 144 + deformable conv 589,824 + objectness 257
+ box 1,028. Multiply-adds at 800×800: 151,857,578,464 (backbone 88,381,440,000, head
63,476,138,464 over the 53,294 positions of P2..P6; the deformable conv counts its 4-tap bilinear
sampling too). The paper gives no parameter or FLOP counts; it reports proposal recall (COCO
test-dev, ResNet-50-FPN, as Papers with Code lists the paper's results: GA-RPN AR@100 59.2,
AR@300 65.2, AR@1000 68.5, AR_S 40.9, AR_M 67.8, AR_L 79.0) and, in its abstract, 9.1 % higher
recall than the RPN baseline with 90 % fewer anchors.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import DeformConv2d

from explorer.native.registry import register_model

LEVELS = ("p2", "p3", "p4", "p5", "p6")
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
ANCHOR_SCALE = 8  # σ of the paper: the anchor side is σ·stride at dw = dh = 0


class FeatureAdaption(nn.Module):
    """3×3 deformable conv whose offsets come from the predicted anchor shape (a 1×1 conv on (dw, dh))."""

    def __init__(self, channels: int = 256, kernel_size: int = 3, deform_groups: int = 4):
        super().__init__()
        self.conv_offset = nn.Conv2d(2, deform_groups * 2 * kernel_size * kernel_size, 1, bias=False)
        self.conv_adaption = DeformConv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        # The official code detaches the shape map: the adaption does not train the shape branch.
        return self.relu(self.conv_adaption(x, self.conv_offset(shape.detach())))


class GARPNHead(nn.Module):
    def __init__(self, in_channels: int = 256, feat_channels: int = 256, deform_groups: int = 4):
        super().__init__()
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv_loc = nn.Conv2d(feat_channels, 1, 1)
        self.conv_shape = nn.Conv2d(feat_channels, 2, 1)
        self.feature_adaption = FeatureAdaption(feat_channels, 3, deform_groups)
        self.conv_cls = nn.Conv2d(feat_channels, 1, 1)
        self.conv_reg = nn.Conv2d(feat_channels, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.relu(self.rpn_conv(x))
        shape = self.conv_shape(x)
        adapted = self.feature_adaption(x, shape)
        return {
            "loc": torch.sigmoid(self.conv_loc(x)),
            "shape": shape,
            "objectness": self.conv_cls(adapted),
            "box": self.conv_reg(adapted),
        }


class GARPN(nn.Module):
    def __init__(self):
        super().__init__()
        # As torchvision builds the backbone of an untrained detector: plain BatchNorm, all layers trainable.
        self.backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=nn.BatchNorm2d,
                                            trainable_layers=5)
        self.head = GARPNHead(self.backbone.out_channels)

    def forward(self, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        features = self.backbone(images).values()  # '0'..'3', 'pool' = P2..P6
        return {level: self.head(x) for level, x in zip(LEVELS, features)}


def anchor_wh(shape: torch.Tensor, stride: int, scale: float = ANCHOR_SCALE) -> torch.Tensor:
    """The guided anchors' (w, h) in pixels from a level's shape map (B, 2, H, W): σ·s·exp(dw, dh)."""
    return scale * stride * torch.exp(shape)


@register_model(small_input=(3, 32, 32))
def ga_rpn() -> GARPN:
    return GARPN()
