"""M2Det: Zhao, Sheng, Wang, Tang, Chen, Cai & Ling, "M2Det: A Single-Shot Object Detector based on
Multi-Level Feature Pyramid Network", AAAI 2019 (arXiv 1811.04533): M2Det320 with the VGG-16 backbone,
8 TUMs, 6 scales and 256 channels per TUM output, for the 81 COCO classes (80 + background).

    image (B, 3, 320, 320) → VGG-16 (SSD's reduced VGG: fc6/fc7 as convolutions, fc7 at stride 16)
    → FFMv1: conv4_3 (512, 40×40) → 3×3 conv to 256; fc7 (1024, 20×20) → 1×1 conv to 512 → 2× nearest
      upsample; concatenated: the 768-channel base feature at 40×40
    → 8 TUMs. Input of TUM 1: the base feature through a 1×1 conv to 128 channels; of TUM l > 1 (FFMv2):
      that same 128-channel map concatenated with TUM l-1's largest output (256): 384 channels.
      TUM encoder: 3×3 stride-2 convs 40 → 20 → 10 → 5 → 3, then an unpadded 3×3 conv 3 → 1;
      decoder: 1×1 conv on the 1×1 map, then 5 times nearest upsample + a 3×3 lateral conv of the
      encoder map of that size (the TUM input for the 40×40 one), each sum also leaving through a 1×1
      "smooth" conv. Outputs: 256 channels at 1, 3, 5, 10, 20 and 40.
    → SFAM: concatenate the 8 TUMs' outputs of each scale (8 × 256 = 2048 channels), then SE channel
      attention (global average pool, 2048 → 128 → 2048, ReLU, sigmoid, rescale)
    → BatchNorm on the 40×40 scale; per scale a 3×3 conv for 6 anchors × 81 class scores and one for
      6 × 4 offsets.

The forward returns the raw predictions (no anchors, no decoding, no NMS): {"loc": (B, N, 4),
"conf": (B, N, 81)}, N = 6 · (40² + 20² + 10² + 5² + 3² + 1²) = 12,810 anchors at 320×320.
`sfam_weights(images)` returns SFAM's attention weights, one (B, 2048) tensor per scale, largest first:
channel block l·256 … l·256 + 255 belongs to TUM l + 1 (shallow → deep).

Every conv outside the backbone and the prediction layers is conv (no bias) + BatchNorm + ReLU. Where the
paper is silent, this follows the official code (VDIGPKU/M2Det, m2det.py, layers/nn_utils.py,
configs/m2det320_vgg.py, configs/default_settings.py):
- the backbone is SSD's VGG-16: pool5 3×3 stride 1, fc6 3×3 with dilation 6 (1024 channels), fc7 1×1
  (the trunk is shared with RefineDet, whose pools all round up; the official code rounds up only at
  pool3, which gives the same sizes for any side that is a multiple of 4);
  FFMv1 reads relu4_3 and relu7 (base_out = [22, 34] in its layer list, deep_in = 1024 channels). The
  paper says "conv4_3 and conv5_3", the README "conv4-3 and conv6-2 (maybe the names are different)";
- the channel widths above (256 + 512 → 768; 128 from the base feature, 256 per TUM output: "we only
  allocate 256 channels to each scale of their TUM features", so SFAM sees 2048 channels, not 1024);
- TUM 1 also gets the 128-channel reduction of the base feature, not the 768-channel base itself;
- one 1×1 base-feature conv ("leach") and one SE pair are shared, by all TUMs and by all scales
  respectively: the official code builds them as nn.ModuleList([module] * n), which repeats one module;
- the upsampling is nearest-neighbour (the paper's figure is unclear), and the top-down path carries the
  unsmoothed sums: the 1×1 smooth convs only feed the outputs;
- SE reduction 16 (the paper's r); the BatchNorm on the largest scale (like SSD's L2Norm on conv4_3).
The official configs set sfam = False in m2det320_vgg.py but True in default_settings.py; the paper's
M2Det has SFAM (Table 2), so ours does.

Published figures: the paper gives 147 M parameters for M2Det800-VGG ("By contrast, M2Det 800-VGG has
only 147M parameters"); the official code builds the same layers at every input size (convolutions
only), so that count applies to M2Det320 as well. Ours: 133,159,604 (VGG-16 trunk 20,483,904; MLFPN
56,270,720; prediction convs 56,404,980), 9.4 % fewer. The paper gives no breakdown; we follow the
official configuration layer by layer (unsharing the leach and SE layers would add only 3.3 M).
COCO AP of M2Det320-VGG: 33.5 on test-dev single-scale (paper Table 1; 38.9 with multi-scale testing, the
figure its text quotes), 33.2 on minival (Table 2, "+SFAM" column).
No FLOP count is published; ours at 320×320: 73.21 G multiply-accumulates (VGG-16 33.63 G, MLFPN
19.51 G, the 2048-channel 3×3 prediction convs 20.07 G). The shared leach conv runs once here; the
official forward runs it once per TUM on the same base feature (7 × 0.157 G more).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.layers import ConvBNReLU
from explorer.native.refinedet import VGG16Trunk, flatten_predictions
from explorer.native.registry import register_model

PLANES = 256  # channels of each TUM output
NUM_LEVELS = 8  # TUMs
NUM_SCALES = 6
NUM_ANCHORS = 6
SE_REDUCTION = 16


class FFMv1(nn.Module):
    """conv4_3 (3×3 → 256) and 2× upsampled fc7 (1×1 → 512), concatenated: the 768-channel base feature."""

    def __init__(self, shallow_channels: int = 512, deep_channels: int = 1024):
        super().__init__()
        self.reduce = ConvBNReLU(shallow_channels, 256, 3)
        self.up_reduce = ConvBNReLU(deep_channels, 512, 1)
        self.out_channels = 256 + 512

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        deep = F.interpolate(self.up_reduce(deep), scale_factor=2, mode="nearest")
        return torch.cat([self.reduce(shallow), deep], dim=1)


class TUM(nn.Module):
    """Thinned U-shape module: returns its `scales` decoder outputs (PLANES channels), smallest first."""

    def __init__(self, in_channels: int, planes: int = PLANES, scales: int = NUM_SCALES):
        super().__init__()
        encoder = [ConvBNReLU(in_channels, planes, 3, stride=2)]
        encoder += [ConvBNReLU(planes, planes, 3, stride=2) for _ in range(scales - 3)]
        last = ConvBNReLU(planes, planes, 3)
        last.conv.padding = (0, 0)  # official: the last encoder conv is unpadded (3×3 → 1×1 at 320)
        self.encoder = nn.ModuleList(encoder + [last])
        self.top = ConvBNReLU(planes, planes, 1)
        self.lateral = nn.ModuleList([ConvBNReLU(planes, planes, 3) for _ in range(scales - 2)]
                                     + [ConvBNReLU(in_channels, planes, 3)])
        self.smooth = nn.ModuleList(ConvBNReLU(planes, planes, 1) for _ in range(scales - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        encoded = [x]
        for conv in self.encoder:
            encoded.append(conv(encoded[-1]))
        out = self.top(encoded[-1])
        outs = [out]
        # Lateral inputs, 3×3 up to 40×40: the encoder maps, then the TUM input itself.
        for lateral, smooth, skip in zip(self.lateral, self.smooth, reversed(encoded[:-1])):
            out = F.interpolate(out, size=skip.shape[-2:], mode="nearest") + lateral(skip)
            outs.append(smooth(out))
        return outs


class SFAM(nn.Module):
    """SE channel attention on each scale's concatenated multi-level feature (one SE pair for all scales)."""

    def __init__(self, channels: int = PLANES * NUM_LEVELS, reduction: int = SE_REDUCTION):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, C, 1, 1) channel weights in (0, 1)."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))

    def forward(self, scales: list[torch.Tensor]) -> list[torch.Tensor]:
        return [x * self.attention(x) for x in scales]


class MLFPN(nn.Module):
    """FFMv1, the alternating FFMv2 + TUMs and SFAM: six 2048-channel maps, largest first."""

    def __init__(self, num_levels: int = NUM_LEVELS, planes: int = PLANES, scales: int = NUM_SCALES):
        super().__init__()
        self.ffmv1 = FFMv1()
        # FFMv2's 1×1 conv of the base feature; one module for every TUM, as in the official code.
        self.leach = ConvBNReLU(self.ffmv1.out_channels, planes // 2, 1)
        self.tums = nn.ModuleList(TUM(planes // 2 if level == 0 else planes // 2 + planes, planes, scales)
                                  for level in range(num_levels))
        self.sfam = SFAM(planes * num_levels)
        self.norm = nn.BatchNorm2d(planes * num_levels)  # on the largest scale only, as in the official code

    def multi_level_features(self, conv4_3: torch.Tensor, fc7: torch.Tensor) -> list[torch.Tensor]:
        """The same-scale TUM outputs concatenated (SFAM's first stage), largest scale first."""
        base = self.leach(self.ffmv1(conv4_3, fc7))
        levels = [self.tums[0](base)]
        for tum in self.tums[1:]:
            levels.append(tum(torch.cat([base, levels[-1][-1]], dim=1)))  # FFMv2
        return [torch.cat([outs[i] for outs in levels], dim=1) for i in reversed(range(len(levels[0])))]

    def forward(self, conv4_3: torch.Tensor, fc7: torch.Tensor) -> list[torch.Tensor]:
        scales = self.sfam(self.multi_level_features(conv4_3, fc7))
        return [self.norm(scales[0])] + scales[1:]


class M2DetHead(nn.Module):
    """SSD-style prediction: per scale a 3×3 conv for class scores and one for box offsets."""

    def __init__(self, channels: int, num_classes: int, scales: int = NUM_SCALES, num_anchors: int = NUM_ANCHORS):
        super().__init__()
        self.num_classes = num_classes
        self.loc = nn.ModuleList(nn.Conv2d(channels, num_anchors * 4, 3, padding=1) for _ in range(scales))
        self.conf = nn.ModuleList(nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1) for _ in range(scales))

    def forward(self, scales: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {
            "loc": flatten_predictions([conv(x) for conv, x in zip(self.loc, scales)], 4),
            "conf": flatten_predictions([conv(x) for conv, x in zip(self.conf, scales)], self.num_classes),
        }


class M2Det(nn.Module):
    def __init__(self, num_classes: int = 81):
        super().__init__()
        self.backbone = VGG16Trunk(pool5_stride=1, fc6_dilation=6)
        self.neck = MLFPN()
        self.head = M2DetHead(PLANES * NUM_LEVELS, num_classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        conv4_3, _, fc7 = self.backbone(images)
        return self.head(self.neck(conv4_3, fc7))

    @torch.no_grad()
    def sfam_weights(self, images: torch.Tensor) -> list[torch.Tensor]:
        """SFAM's channel-attention weights, one (B, 2048) tensor per scale, largest scale first."""
        conv4_3, _, fc7 = self.backbone(images)
        return [self.neck.sfam.attention(x).flatten(1) for x in self.neck.multi_level_features(conv4_3, fc7)]


@register_model(small_input=(3, 288, 288))  # the TUMs' unpadded last conv needs 288
def m2det320(num_classes: int = 81) -> M2Det:
    return M2Det(num_classes)
