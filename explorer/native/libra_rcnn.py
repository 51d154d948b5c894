"""Libra R-CNN: Pang, Chen, Shi, Feng, Ouyang & Lin, "Libra R-CNN: Towards Balanced Learning for Object
Detection", CVPR 2019 (arXiv 1904.02701), with a ResNet-50-FPN Faster R-CNN.

    image → torchvision ResNet-50 + FPN (P2..P5 and the extra "pool" level P6, 256 channels)
    → balanced feature pyramid (BFP, Sec. 3.2) → torchvision RPN and RoI heads, unchanged.

Balanced feature pyramid:
  1. rescale every level to the size of P4 (the paper's C4): adaptive max pooling for the finer
     levels P2, P3; nearest interpolation for the coarser P5, P6;
  2. integrate: average the rescaled levels, C = (1/L) Σ_l C_l;
  3. refine C with an embedded-Gaussian non-local block (Wang et al., CVPR 2018):
     θ, φ, g = 1×1 convs 256 → 256, y = softmax(θ(C)ᵀ φ(C)) g(C) over the P4 positions,
     R = C + W_z(y) with W_z a 1×1 conv 256 → 256;
  4. rescale R back to each level's size (nearest interpolation for P2, P3; adaptive max pooling for
     P5, P6) and add it to that level: P_l' = P_l + resize(R).

Where the paper is silent we follow its official config (mmdetection, libra_faster_rcnn_r50_fpn_1x:
`BFP(in_channels=256, num_levels=5, refine_level=2, refine_type='non_local')` after a 5-output FPN):
- the extra "pool" level is balanced too. torchvision's FPN makes it as the official FPN does
  (P6 = max-pool of P5 with kernel 1, stride 2), so all five levels are gathered, averaged and
  refined, and the residual is added to P6 as well; the RPN sees the balanced P2..P6, the RoI
  heads the balanced P2..P5 (torchvision's MultiScaleRoIAlign uses '0'..'3');
- the non-local block keeps all 256 channels (reduction 1), does not scale θᵀφ by 1/√C
  (use_scale=False), and its four 1×1 convs have biases and no normalisation.

The training side of Libra R-CNN is not part of the network: IoU-balanced negative sampling
(`explorer.losses.sample_negatives`) and the balanced L1 loss with α = 0.5, γ = 1.5
(`explorer.losses.balanced_l1`, `balanced_l1_grad`) live in explorer/losses.py.

Parameters: torchvision's fasterrcnn_resnet50_fpn untrained (plain BatchNorm, 91 classes) has
41,808,406; the BFP adds exactly its non-local block, 4 × (256·256 + 256) = 263,168 (averaging and
rescaling have no parameters), so 42,071,574 in all. The paper gives no parameter or FLOP counts.

Cost at 800×800 (the catalog size): 125,797,483,008 multiply-adds with the builder's seed-0 weights
and input (the RoI heads' share depends on how many proposals survive NMS, so it changes with the
data). The BFP costs 3,855,360,000 (3.1 %): its non-local block over the N = 50·50 positions of P4,
C = 256, is 4·N·C² for the 1×1 convs plus 2·N²·C for θᵀφ and the attention-weighted sum. As for
torchvision's Faster R-CNN, the post-processing ops of the RPN and RoI heads (top-k, sort, nonzero,
NMS) have no cost formula in the engine; everything the BFP adds is costed.

Published accuracy: COCO test-dev box AP 38.7 with ResNet-50-FPN (paper's Table 1), 2.5 points over
FPN Faster R-CNN as the abstract states; Papers with Code's extraction of the paper lists 38.5 on
COCO minival for the same model.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from explorer.native.registry import register_model

REFINE_LEVEL = 2  # index of P4 in (P2, P3, P4, P5, P6): the level all others are gathered to
# torchvision's own RPN / RoI post-processing (top-k, NMS, ...): data-dependent, with no cost formula.
TORCHVISION_POSTPROCESSING = frozenset({"aten.topk.default", "aten.nonzero.default", "torchvision.nms.default",
                                        "aten.sort.default"})


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block, as the official BFP configures it (no reduction, no scaling)."""

    def __init__(self, channels: int = 256):
        super().__init__()
        self.theta = nn.Conv2d(channels, channels, 1)
        self.phi = nn.Conv2d(channels, channels, 1)
        self.g = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        phi = self.phi(x).flatten(2)  # (B, C, HW)
        g = self.g(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        attention = torch.softmax(torch.bmm(theta, phi), dim=-1)  # (B, HW, HW)
        y = torch.bmm(attention, g).transpose(1, 2).reshape(b, c, h, w)
        return x + self.conv_out(y)


class BalancedFeaturePyramid(nn.Module):
    """Gather all levels to the refine level's size, average, refine, scatter back as a residual."""

    def __init__(self, channels: int = 256, refine_level: int = REFINE_LEVEL):
        super().__init__()
        self.refine_level = refine_level
        self.refine = NonLocalBlock(channels)

    def forward(self, features: OrderedDict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        levels = list(features.values())
        size = levels[self.refine_level].shape[-2:]
        gathered = [
            F.adaptive_max_pool2d(x, size) if i < self.refine_level else F.interpolate(x, size=size, mode="nearest")
            for i, x in enumerate(levels)
        ]
        balanced = self.refine(sum(gathered) / len(gathered))
        out = OrderedDict()
        for i, (name, x) in enumerate(features.items()):
            if i < self.refine_level:
                residual = F.interpolate(balanced, size=x.shape[-2:], mode="nearest")
            else:
                residual = F.adaptive_max_pool2d(balanced, x.shape[-2:])
            out[name] = x + residual
        return out


class BackboneWithBFP(nn.Module):
    """torchvision's ResNet-50 body and FPN (same names as its BackboneWithFPN), then the BFP."""

    def __init__(self, backbone_with_fpn: nn.Module):
        super().__init__()
        self.body = backbone_with_fpn.body
        self.fpn = backbone_with_fpn.fpn
        self.out_channels = backbone_with_fpn.out_channels
        self.bfp = BalancedFeaturePyramid(self.out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.bfp(self.fpn(self.body(x)))


class LibraRCNN(nn.Module):
    """Takes a batch tensor (as explorer.models.ListInputWrapper does for torchvision detectors) and
    returns what torchvision's Faster R-CNN returns in eval mode: one dict of boxes / labels / scores
    per image. The balanced feature pyramid is `model.backbone.bfp` (also `.bfp`)."""

    def __init__(self, faster_rcnn: nn.Module):
        super().__init__()
        self.model = faster_rcnn

    @property
    def bfp(self) -> BalancedFeaturePyramid:
        return self.model.backbone.bfp

    def forward(self, images: torch.Tensor):
        return self.model(list(images))


@register_model(small_input=(3, 128, 128), small_options={"min_size": 128, "max_size": 128},
                uncosted_ops=TORCHVISION_POSTPROCESSING)
def libra_rcnn(**kwargs) -> LibraRCNN:
    """Faster R-CNN R50-FPN with a balanced feature pyramid; keyword options go to torchvision's
    fasterrcnn_resnet50_fpn (num_classes, min_size, max_size, ...). No weights are downloaded."""
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
    model.backbone = BackboneWithBFP(model.backbone)
    return LibraRCNN(model)
