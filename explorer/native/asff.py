"""YOLOv3 with adaptively spatial feature fusion (ASFF): Liu, Huang & Wang, "Learning Spatial Fusion for
Single-Shot Object Detection", arXiv 1911.09516, on YOLOv3 (Redmon & Farhadi, "YOLOv3: An Incremental
Improvement", arXiv 1804.02767), 80 COCO classes, 608×608.

    image → Darknet-53 (C3 256 ch /8, C4 512 ch /16, C5 1024 ch /32)
    → YOLOv3 neck: levels 0, 1, 2 = 512 ch /32, 256 ch /16, 128 ch /8
    → three ASFF modules, one per output level, each fusing all three levels
    → YOLOv3 heads: 3×3 conv to 2× the channels, 1×1 conv to 3·(5 + 80) = 255 (3 anchors per level).

Darknet-53 follows the YOLOv3 paper's Table 1: conv 32 3×3, then five stages of a stride-2 3×3 conv
(64, 128, 256, 512, 1024) followed by 1, 2, 8, 8, 4 residual blocks (1×1 conv to half the channels,
3×3 conv back, identity added); its classifier (avgpool, 1000-way FC) is not part of the detector.
Every conv is conv (no bias) → BatchNorm → LeakyReLU(0.1), except the heads' last 1×1 convs
(bias, linear). The paper gives no table for the neck; it is the official darknet yolov3.cfg's:
    level 0: 1×1 512, 3×3 1024, 1×1 512, 3×3 1024, 1×1 512 on C5;
    level 1: 1×1 256 on level 0, ×2 nearest upsampling, concat C4 (768 ch), then 1×1 256, 3×3 512,
             1×1 256, 3×3 512, 1×1 256;
    level 2: the same from level 1 with 128 / 256 channels and C3 (384 ch).

ASFF. Output level l has the channels of input level l (512 / 256 / 128). Each input
level n is resized to level l: the same level as it is; 1/2 downsampling by a 3×3 stride-2 conv;
1/4 by a 3×3 stride-2 max pooling then a 3×3 stride-2 conv; upsampling by a 1×1 conv to level l's
channels then nearest interpolation (×2 or ×4). Each resized map x_n goes through a 1×1 conv to
compress_c = 16 channels; the three are concatenated and a 1×1 conv (bias, no BN) gives 3 logits per
pixel; a softmax over the three levels gives weights α, β, γ (summing to 1 at every pixel), and the
fused map is α·x_0 + β·x_1 + γ·x_2. `fusion_weights(images)` returns these (B, 3, H, W) weights.

Where the paper is silent we follow its official code (ruinmessi/ASFF, its YOLOv3 + ASFF model):
the resize, compression and weight convs are conv-BN-LeakyReLU(0.1), the max pool is 3×3 stride 2
padding 1, the weight logits come from a 1×1 conv with bias. The official ASFF module ends with a
3×3 "expand" conv to 1024 / 512 / 256 channels: that conv is YOLOv3's head 3×3 conv, so here it stays
in `head` and the ASFF modules hold only what fusion adds. Differences from the official code, on
purpose: its YOLOv3 baseline adds an SPP block and feeds a 256-channel level 2 to ASFF (fusion
widths 512 / 256 / 256), and its heads add guided-anchoring feature adaption and an anchor-free
branch (part of the paper's strong baseline); we keep the plain YOLOv3 of the paper and the
fusion widths 512 / 256 / 128 of the paper's (and catalog's) description.

Outputs: {"stride32": (B, 255, H/32, W/32), "stride16": (B, 255, H/16, W/16), "stride8": ...}, raw
head maps (per anchor: x, y, w, h, objectness, 80 class logits). YOLOv3's anchors (COCO, pixels):
(116,90), (156,198), (373,326) at stride 32; (30,61), (62,45), (59,119) at 16; (10,13), (16,30),
(33,23) at 8.

Parameters: YOLOv3 61,949,149 (exactly the count Ultralytics' YOLOv3 and Keras ports of yolov3.cfg
report at 80 classes, the usual "62 M"; the YOLOv3 paper itself gives none), plus
ASFF 2,341,081 (levels 0 / 1 / 2: 1,796,339 / 439,539 / 105,203) = 64,290,230. Multiply-adds at
608×608: YOLOv3 70,345,950,208 (2 × = 140.69 G, exactly darknet's "140.69 Bn" FLOPs for YOLOv3-608),
ASFF adds 1,246,120,016 (+1.8 %; levels 0 / 1 / 2: 647,703,312 / 491,121,728 / 107,294,976), in all
71,592,070,224. Darknet-53 as the paper's classifier (plus its 1024 → 1000 FC) at 256×256:
9,285,115,904 multiply-adds = 18.57 G FLOPs against Table 2's "18.7 Bn operations" (0.7 % less).
The ASFF paper states no parameter or FLOP counts; it reports COCO AP 40.6 for YOLOv3-608 + ASFF
against 38.8 for its baseline (the official README: test-dev, V100 time 22 ms against 20 ms).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from explorer.native.layers import ConvBNLeaky
from explorer.native.registry import register_model

NUM_ANCHORS = 3
COMPRESS_C = 16  # the official code uses 8 when RFB is added (ASFF*), 16 otherwise
LEVEL_CHANNELS = (512, 256, 128)  # ASFF levels 0, 1, 2 = strides 32, 16, 8
OUTPUTS = ("stride32", "stride16", "stride8")


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvBNLeaky(channels, channels // 2, 1)
        self.conv2 = ConvBNLeaky(channels // 2, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class Darknet53(nn.Module):
    """YOLOv3 Table 1 without the classifier; returns C3 (/8), C4 (/16), C5 (/32)."""

    STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))  # (channels, residual blocks)

    def __init__(self):
        super().__init__()
        self.stem = ConvBNLeaky(3, 32, 3)
        channels = 32
        for i, (out, blocks) in enumerate(self.STAGES, start=1):
            self.add_module(f"stage{i}", nn.Sequential(ConvBNLeaky(channels, out, 3, stride=2),
                                                       *(Residual(out) for _ in range(blocks))))
            channels = out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3 = self.stage3(self.stage2(self.stage1(self.stem(x))))
        c4 = self.stage4(c3)
        return c3, c4, self.stage5(c4)


def conv_set(in_channels: int, channels: int) -> nn.Sequential:
    """yolov3.cfg's five convs before each head: 1×1 c, 3×3 2c, 1×1 c, 3×3 2c, 1×1 c."""
    return nn.Sequential(ConvBNLeaky(in_channels, channels, 1), ConvBNLeaky(channels, 2 * channels, 3),
                         ConvBNLeaky(2 * channels, channels, 1), ConvBNLeaky(channels, 2 * channels, 3),
                         ConvBNLeaky(2 * channels, channels, 1))


class YOLOv3FPN(nn.Module):
    """YOLOv3's top-down path: levels 0, 1, 2 with 512, 256, 128 channels at strides 32, 16, 8."""

    def __init__(self):
        super().__init__()
        self.level0 = conv_set(1024, 512)
        self.lateral1 = ConvBNLeaky(512, 256, 1)
        self.level1 = conv_set(256 + 512, 256)
        self.lateral2 = ConvBNLeaky(256, 128, 1)
        self.level2 = conv_set(128 + 256, 128)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> list[torch.Tensor]:
        p0 = self.level0(c5)
        p1 = self.level1(torch.cat([self.upsample(self.lateral1(p0)), c4], dim=1))
        p2 = self.level2(torch.cat([self.upsample(self.lateral2(p1)), c3], dim=1))
        return [p0, p1, p2]


def resize_to(source: int, target: int) -> nn.Module:
    """ASFF's rescaling of input level `source` to output level `target` (0 = coarsest)."""
    in_c, out_c = LEVEL_CHANNELS[source], LEVEL_CHANNELS[target]
    if source == target:
        return nn.Identity()
    if source == target + 1:  # one level finer: 1/2 downsampling
        return ConvBNLeaky(in_c, out_c, 3, stride=2)
    if source == target + 2:  # two levels finer: 1/4 downsampling
        return nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), ConvBNLeaky(in_c, out_c, 3, stride=2))
    return nn.Sequential(ConvBNLeaky(in_c, out_c, 1),  # coarser: match channels, then upsample
                         nn.Upsample(scale_factor=2 ** (target - source), mode="nearest"))


class ASFF(nn.Module):
    """Adaptive spatial fusion of the three levels into output level `level`."""

    def __init__(self, level: int, compress_c: int = COMPRESS_C):
        super().__init__()
        self.level = level
        channels = LEVEL_CHANNELS[level]
        self.resize = nn.ModuleList(resize_to(source, level) for source in range(3))
        self.weight_convs = nn.ModuleList(ConvBNLeaky(channels, compress_c, 1) for _ in range(3))
        self.weight_levels = nn.Conv2d(3 * compress_c, 3, 1)

    def resized_and_weights(self, levels: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        resized = [resize(x) for resize, x in zip(self.resize, levels)]
        logits = self.weight_levels(torch.cat([conv(x) for conv, x in zip(self.weight_convs, resized)], dim=1))
        return resized, torch.softmax(logits, dim=1)  # (B, 3, H, W): one weight per input level

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        resized, weights = self.resized_and_weights(levels)
        return sum(x * weights[:, i:i + 1] for i, x in enumerate(resized))


class Neck(nn.Module):
    def __init__(self):
        super().__init__()
        self.fpn = YOLOv3FPN()
        self.asff = nn.ModuleList(ASFF(level) for level in range(3))

    def forward(self, features: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        levels = self.fpn(*features)
        return [fusion(levels) for fusion in self.asff]


class YOLOHead(nn.Sequential):
    def __init__(self, channels: int, num_classes: int):
        super().__init__(OrderedDict([
            ("conv", ConvBNLeaky(channels, 2 * channels, 3)),  # ASFF's "expand" conv in the official code
            ("pred", nn.Conv2d(2 * channels, NUM_ANCHORS * (5 + num_classes), 1)),
        ]))


class YOLOv3ASFF(nn.Module):
    def __init__(self, num_classes: int = 80):
        super().__init__()
        self.backbone = Darknet53()
        self.neck = Neck()
        self.head = nn.ModuleList(YOLOHead(c, num_classes) for c in LEVEL_CHANNELS)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        fused = self.neck(self.backbone(images))
        return {name: head(x) for name, head, x in zip(OUTPUTS, self.head, fused)}

    @torch.no_grad()
    def fusion_weights(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each ASFF level's per-pixel softmax weights over input levels (0, 1, 2) = strides (32, 16, 8)."""
        levels = self.neck.fpn(*self.backbone(images))
        return {name: fusion.resized_and_weights(levels)[1] for name, fusion in zip(OUTPUTS, self.neck.asff)}


@register_model("asff", small_input=(3, 32, 32))
def yolov3_asff(num_classes: int = 80) -> YOLOv3ASFF:
    return YOLOv3ASFF(num_classes=num_classes)
