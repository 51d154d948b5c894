"""ESPNet (Mehta et al., ECCV 2018) and ESPNetv2 (Mehta et al., CVPR 2019), from the papers.

ESPNet — the ESP module (Figure 1): a 1×1 conv reduces M input channels to d = N/K (K = 5),
K parallel 3×3 convs dilated by 2^(k-1) = 1, 2, 4, 8, 16 read that map, and hierarchical
feature fusion (HFF) adds the dilated outputs cumulatively (d2, d2+d4, d2+d4+d8, …) before the
K outputs are concatenated back to N channels, so the large-rate branches do not leave a
gridding pattern; a residual adds the input when N = M. BN + PReLU follow.
ESPNet (Figure 4d), for a 1024×512 Cityscapes image and C classes:
    level 1: 3×3/2 conv to 16 (512×256) ‖ the image average-pooled once            → 19
    level 2: strided ESP to 64 (256×128), α2 = 2 ESP modules;
             [ESP output ‖ strided ESP output ‖ image pooled twice]                 → 131
    level 3: strided ESP to 128 (128×64), α3 = 8 ESP modules; [strided ‖ output]    → 256
    decoder: 1×1 conv to C at 1/8, BN, 2× up (transposed conv); the level-2 map
             projected to C by 1×1 conv, concatenated, ESP (2C → C, no residual), 2× up;
             concatenated with the level-1 map (19 + C), 3×3 conv to C, 2× up (transposed)
             → C×1024×512.
Where the paper leaves detail open we follow the official code (sacmehta/ESPNet, train/Model.py):
the strided ESP reduces with a 3×3/2 conv instead of the 1×1; when N is not divisible by 5 the
rate-1 branch takes the remainder (N − 4·⌊N/5⌋ channels) and is concatenated without fusion;
BN eps 1e-3; convs have no bias; the 2× upsamplings are 2×2/2 transposed convs without bias,
the second followed by BN + PReLU; C = 20 (Cityscapes' 19 classes + the ignored label, the
official default); α2 = 2, α3 = 8 (the official training default; the released models have α2 = 2, α3 = 3/5/8).

ESPNetv2 — the EESP unit: a grouped 1×1 conv (K = 4 groups) reduces to d = N/K,
K depthwise 3×3 convs with dilations r_k read it, HFF adds them cumulatively, the K outputs are
concatenated, BN + PReLU, and a grouped 1×1 conv (K groups) expands back to N; a residual adds
the input, then PReLU. The strided EESP runs the depthwise convs with stride 2, has
no residual, and concatenates its output with a 3×3/2 average pool of the input; the sum with
the input image (average-pooled to the same size, then 3×3 conv + 1×1 conv: the long-range
"input reinforcement" shortcut) goes through PReLU. The ImageNet network of the paper at
width s = 2.0, 224×224:
    conv 3×3/2 → 32 (112)
    strided EESP → 128 (56)
    strided EESP → 256 (28), EESP ×3
    strided EESP → 512 (14), EESP ×7
    strided EESP → 1024 (7), EESP ×3
    depthwise 3×3 conv, grouped (K = 4) 1×1 conv → 1280, global average pool, FC 1000
From the official code (sacmehta/ESPNetv2, imagenet/Model.py): the dilation rates per level
are limited by a receptive-field cap (13, 11, 9, 7, 5 at 112, 56, 28, 14, 7): rates 1, 2, 3, 4
up to 28×28, then 1, 1, 2, 3 at 14×14 and 1, 1, 1, 2 at 7×7; the input-reinforcement shortcut is
used by the first three strided units only (not the 14 → 7 one); the level-1 width stays 32 for
s > 1 (the other widths are ⌈32·s/4⌉·4 · 2^level); BN eps 1e-5; only the FC has a bias.

ESPNet (C = 20, α2 = 2, α3 = 8): 365,109 parameters (published: 0.364 M), 4.78 G multiply-adds
at 1024×512. ESPNetv2 s = 2.0: 3,491,934 parameters and 286.1 M multiply-adds at 224 (the
official README: 3.49 M and 284.8 M).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.layers import ConvBNAct
from explorer.native.registry import register_model

# --------------------------------------------------------------------------- ESPNet (v1)

ESP_BRANCHES = 5  # dilation rates 1, 2, 4, 8, 16


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
          groups: int = 1) -> nn.Conv2d:
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                     groups=groups, bias=False)


class BNPReLU(nn.Sequential):
    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__(OrderedDict([("bn", nn.BatchNorm2d(channels, eps=eps)), ("act", nn.PReLU(channels))]))


class ConvBNPReLU(ConvBNAct):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, eps: float = 1e-3):
        super().__init__(in_channels, out_channels, kernel_size, stride, groups=groups, eps=eps,
                         act=nn.PReLU(out_channels))


class ESPModule(nn.Module):
    """Reduce (1×1, or 3×3/2 when strided) → 5 dilated 3×3 convs → HFF → concat (→ + input) → BN-PReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, residual: bool = True):
        super().__init__()
        d = out_channels // ESP_BRANCHES
        first = out_channels - (ESP_BRANCHES - 1) * d  # the rate-1 branch takes the remainder
        self.residual = residual and stride == 1 and in_channels == out_channels
        self.reduce = _conv(in_channels, d, 3 if stride == 2 else 1, stride)
        self.dilated = nn.ModuleList(
            [_conv(d, first if k == 0 else d, 3, dilation=2 ** k) for k in range(ESP_BRANCHES)]
        )
        self.dilations = tuple(2 ** k for k in range(ESP_BRANCHES))
        self.post = BNPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        outputs = [self.dilated[0](reduced)]
        fused = None
        for branch in self.dilated[1:]:  # hierarchical feature fusion: cumulative sums
            out = branch(reduced)
            fused = out if fused is None else fused + out
            outputs.append(fused)
        out = torch.cat(outputs, dim=1)
        if self.residual:
            out = out + x
        return self.post(out)


class ImagePyramid(nn.Module):
    """The input image average-pooled (3×3/2) `times` times: fed back in at lower levels."""

    def __init__(self, times: int):
        super().__init__()
        self.pools = nn.Sequential(*[nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pools(x)


class ESPNet(nn.Module):
    def __init__(self, num_classes: int = 20, alpha2: int = 2, alpha3: int = 8):
        super().__init__()
        c = num_classes
        # Encoder (ESPNet-C).
        self.level1 = ConvBNPReLU(3, 16, 3, stride=2)
        self.image_half = ImagePyramid(1)
        self.image_quarter = ImagePyramid(2)
        self.level1_fuse = BNPReLU(16 + 3)
        self.level2_down = ESPModule(16 + 3, 64, stride=2)
        self.level2 = nn.Sequential(*[ESPModule(64, 64) for _ in range(alpha2)])
        self.level2_fuse = BNPReLU(64 + 64 + 3)
        self.level3_down = ESPModule(64 + 64 + 3, 128, stride=2)
        self.level3 = nn.Sequential(*[ESPModule(128, 128) for _ in range(alpha3)])
        self.level3_fuse = BNPReLU(128 + 128)
        self.level3_classifier = _conv(256, c, 1)
        # Decoder.
        self.level3_bn = nn.BatchNorm2d(c, eps=1e-3)
        self.up3 = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)
        self.level2_classifier = _conv(64 + 64 + 3, c, 1)
        self.merge2 = nn.Sequential(OrderedDict([
            ("fuse", BNPReLU(2 * c)),
            ("esp", ESPModule(2 * c, c, residual=False)),
        ]))
        self.up2 = nn.Sequential(OrderedDict([
            ("deconv", nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)),
            ("post", BNPReLU(c)),
        ]))
        self.merge1 = ConvBNPReLU(16 + 3 + c, c, 3)
        self.up1 = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level1 = self.level1_fuse(torch.cat([self.level1(x), self.image_half(x)], dim=1))
        down2 = self.level2_down(level1)
        level2 = self.level2_fuse(torch.cat([self.level2(down2), down2, self.image_quarter(x)], dim=1))
        down3 = self.level3_down(level2)
        level3 = self.level3_fuse(torch.cat([down3, self.level3(down3)], dim=1))
        out = self.up3(self.level3_bn(self.level3_classifier(level3)))  # 1/8 → 1/4
        out = self.up2(self.merge2(torch.cat([self.level2_classifier(level2), out], dim=1)))  # → 1/2
        out = self.merge1(torch.cat([out, level1], dim=1))
        return self.up1(out)  # → full resolution, C score maps


@register_model(small_input=(3, 64, 64))
def espnet(num_classes: int = 20, alpha2: int = 2, alpha3: int = 8) -> ESPNet:
    return ESPNet(num_classes=num_classes, alpha2=alpha2, alpha3=alpha3)


# --------------------------------------------------------------------------- ESPNetv2

EESP_BRANCHES = 4
# Receptive-field cap of the EESP units at 112, 56, 28, 14, 7 (official code), and the map from
# a 3×3 kernel's effective size to its dilation rate.
RF_LIMITS = (13, 11, 9, 7, 5)
REPEATS = (0, 3, 7, 3)  # EESP units after the strided units of levels 3, 4, 5


def eesp_dilations(branches: int, rf_limit: int) -> tuple[int, ...]:
    """Branch k has effective size 3 + 2k (dilation k + 1) unless that exceeds the cap, then 3 (rate 1);
    sorted so that HFF adds the branches in order of receptive field."""
    sizes = sorted(3 + 2 * k if 3 + 2 * k <= rf_limit else 3 for k in range(branches))
    return tuple((size - 1) // 2 for size in sizes)


class EESP(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, branches: int = EESP_BRANCHES,
                 rf_limit: int = 7):
        super().__init__()
        if out_channels % branches:
            raise ValueError(f"EESP output {out_channels} does not split into {branches} branches")
        d = out_channels // branches
        self.stride = stride
        self.reduce = ConvBNPReLU(in_channels, d, 1, groups=branches, eps=1e-5)
        self.dilations = eesp_dilations(branches, rf_limit)
        self.depthwise = nn.ModuleList([_conv(d, d, 3, stride, dilation=r, groups=d) for r in self.dilations])
        self.post_cat = BNPReLU(out_channels, eps=1e-5)
        self.expand = ConvBNAct(out_channels, out_channels, 1, groups=branches)  # no activation
        self.act = nn.PReLU(out_channels) if stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        outputs = [self.depthwise[0](reduced)]
        for branch in self.depthwise[1:]:
            outputs.append(outputs[-1] + branch(reduced))  # HFF
        out = self.expand(self.post_cat(torch.cat(outputs, dim=1)))
        if self.act is None:  # strided: the down-sampling unit adds the pooled input and activates
            return out
        if out.shape == x.shape:
            out = out + x
        return self.act(out)


class StridedEESP(nn.Module):
    """[3×3/2 avg pool of the input ‖ strided EESP (out − in channels)] (+ reinforced image) → PReLU."""

    def __init__(self, in_channels: int, out_channels: int, rf_limit: int, reinforce: bool):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.eesp = EESP(in_channels, out_channels - in_channels, stride=2, rf_limit=rf_limit)
        self.reinforce = nn.Sequential(OrderedDict([
            ("conv3x3", ConvBNPReLU(3, 3, 3, eps=1e-5)),
            ("conv1x1", _conv(3, out_channels, 1)),
            ("bn", nn.BatchNorm2d(out_channels)),
        ])) if reinforce else None
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.pool(x)
        out = torch.cat([pooled, self.eesp(x)], dim=1)
        if self.reinforce is not None and image is not None:
            while image.shape[-1] > pooled.shape[-1]:  # pool the image down to this level (shapes only)
                image = F.avg_pool2d(image, kernel_size=3, stride=2, padding=1)
            out = out + self.reinforce(image)
        return self.act(out)


def espnetv2_widths(scale: float) -> tuple[int, ...]:
    """Output widths of levels 1-5 and of the last 1×1 conv (official code's configuration)."""
    base = 32
    scaled = -(-int(base * scale) // EESP_BRANCHES) * EESP_BRANCHES
    level1 = base if scaled > base else scaled
    if scale <= 1.5:
        last = 1024
    elif scale <= 2.0:
        last = 1280
    else:
        raise ValueError(f"ESPNetv2 is defined for s <= 2, got {scale}")
    return (level1, *(scaled * 2 ** i for i in range(1, 5)), last)


class ESPNetv2(nn.Module):
    def __init__(self, scale: float = 2.0, num_classes: int = 1000):
        super().__init__()
        w = espnetv2_widths(scale)
        self.level1 = ConvBNPReLU(3, w[0], 3, stride=2, eps=1e-5)  # 112
        self.level2 = StridedEESP(w[0], w[1], RF_LIMITS[0], reinforce=True)  # 56
        self.level3_down = StridedEESP(w[1], w[2], RF_LIMITS[1], reinforce=True)  # 28
        self.level3 = nn.Sequential(*[EESP(w[2], w[2], rf_limit=RF_LIMITS[2]) for _ in range(REPEATS[1])])
        self.level4_down = StridedEESP(w[2], w[3], RF_LIMITS[2], reinforce=True)  # 14
        self.level4 = nn.Sequential(*[EESP(w[3], w[3], rf_limit=RF_LIMITS[3]) for _ in range(REPEATS[2])])
        self.level5_down = StridedEESP(w[3], w[4], RF_LIMITS[3], reinforce=False)  # 7
        self.level5 = nn.Sequential(*[EESP(w[4], w[4], rf_limit=RF_LIMITS[4]) for _ in range(REPEATS[3])])
        self.head = nn.Sequential(OrderedDict([
            ("depthwise", ConvBNPReLU(w[4], w[4], 3, groups=w[4], eps=1e-5)),
            ("expand", ConvBNPReLU(w[4], w[5], 1, groups=EESP_BRANCHES, eps=1e-5)),
        ]))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(w[5], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x
        x = self.level2(self.level1(x), image)
        x = self.level3(self.level3_down(x, image))
        x = self.level4(self.level4_down(x, image))
        x = self.head(self.level5(self.level5_down(x)))
        return self.fc(self.dropout(self.flatten(self.avgpool(x))))


@register_model(small_input=(3, 64, 64))
def espnetv2(scale: float = 2.0, num_classes: int = 1000) -> ESPNetv2:
    return ESPNetv2(scale=scale, num_classes=num_classes)
