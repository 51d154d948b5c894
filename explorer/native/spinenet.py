"""SpineNet: Du, Lin, Jin, Ghiasi, Tan, Cui, Le & Song, "SpineNet: Learning Scale-Permuted Backbone for
Recognition and Localization", CVPR 2020 (arXiv 1912.05027), as the RetinaNet detectors of its model zoo.

    image (B, 3, H, W) → stem: 7×7/2 conv (64) → BN → ReLU → 3×3/2 max-pool → two level-2 bottleneck groups
    → 15 scale-permuted blocks (levels, block types and input pairs found by the paper's search, below)
    → 1×1 conv + BN + ReLU to the endpoint width at each of P3..P7 (no FPN: the spine is the pyramid)
    → RetinaNet head: class and box subnets, convs shared across levels, 9 anchors per location.

The searched architecture (the paper's Figure 4 / SpineNet-49; the official TPU detection code lists it as
SPINENET_BLOCK_SPECS). Each block is (level, block type, (parent, parent), is an output); parents index the
list of features so far, where 0 and 1 are the two stem groups and block k of the list is feature k + 2:

    L2 bottleneck ← (0, 1)      L4 residual ← (0, 1)        L3 bottleneck ← (2, 3)     L4 bottleneck ← (2, 4)
    L6 residual ← (3, 5)        L4 bottleneck ← (3, 5)      L5 residual ← (6, 7)       L7 residual ← (6, 8)
    L5 bottleneck ← (8, 9)      L5 bottleneck ← (8, 10)     L4 bottleneck ← (5, 10)*   L3 bottleneck ← (4, 10)*
    L5 bottleneck ← (7, 12)*    L7 bottleneck ← (5, 14)*    L6 bottleneck ← (12, 14)*          (* = output)

49 layers: the stem conv, 2 stem bottlenecks (6), 11 bottlenecks (33) and 4 residual blocks (8), plus the
classifier of the ImageNet version. Level L has stride 2^L and 64 (L2), 128 (L3) or 256 (L4-L7) base filters;
a bottleneck block's output has 4× its filters, a residual block's its filters.

Cross-scale connections (resampling with alpha): a parent of C channels (C/4 for a bottleneck parent) goes
through a 1×1 conv to alpha·C channels (BN, ReLU); then to the target resolution: nearest upsampling, or a
3×3 stride-2 conv (BN, ReLU) followed by as many 3×3 stride-2 max-pools as still needed; then a 1×1 conv
(BN, no ReLU) to the target block's input width. The two resampled parents are summed; an output block also
adds, unchanged, every earlier block that nothing consumed yet and that already has the target's level and
width (in SpineNet-49 this adds feature 11, the 10th block, an L5 bottleneck, to the L5 output block); ReLU;
then the block.
Inside a block group the first block of the scale-permuted part never needs a projection shortcut (its input
already has the block's output width); only the first stem bottleneck (64 → 4·64·scale channels) has one.

Scaling (the official SCALING_MAP and model-zoo configs; the paper's Section 3.4 states the 0.65 width of 49S,
the 2/3/4 block repeats of 96/143/190 and alpha = 1.0 for 143 and 190):

    variant  filter scale  endpoint width  block repeats  resample alpha  head width × convs
    49S      0.65          128             1              0.5             128 × 4
    49       1.0           256             1              0.5             256 × 4
    96       1.0           256             2              0.5             256 × 4
    143      1.0           256             3              1.0             256 × 4
    190      1.3           512             4              1.0             512 × 7

Block repeats stack each block (stem groups included) that many times. SpineNet-190's endpoints are 512 wide
and its RetinaNet head has 7 convs of 512 (the model-zoo config spinenet190_retinanet.yaml), not 384 / 4.

RetinaNet head (the official TPU RetinanetHead): per subnet, `num_convs` 3×3 convs (with bias) shared by all
levels, each followed by a BatchNorm of its own per level and ReLU; then a 3×3 prediction conv (with bias)
to 91·9 class logits (the official configs' num_classes = 91: COCO's 90 category ids and background) and 4·9
box deltas. 9 anchors = 3 scales × aspect ratios {1, 2, 0.5}. No anchor decoding and no NMS: the model
returns {"class": {"P3": (B, 819, H/8, W/8), ...}, "box": {"P3": (B, 36, H/8, W/8), ...}}.

Against the published figures (TPU model zoo, RetinaNet, whole detector, FLOPs = multiply-adds; the paper's
Table 2 gives the same but 12.0 M for 49S and 66.9 M / 524.4 B for 143), counted by the engine at each
variant's catalog input:

    variant  input  params (published)          multiply-adds (published)
    49S      640    11.27 M (11.9 M)  -5.3 %    30.78 G (33.8 B)   -8.9 %
    49       640    28.54 M (28.5 M)  +0.2 %    85.28 G (85.4 B)   -0.1 %
    96       1024   42.97 M (43.0 M)  -0.1 %    265.02 G (265.4 B) -0.1 %
    143      1280   66.96 M (67.0 M)  -0.1 %    523.34 G (524.0 B) -0.1 %
    190      1280   163.64 M (163.6 M) +0.0 %   1881.66 G (1885 B) -0.2 %

The 49S gap: with 256-wide P3-P7 endpoints (the official SpineNet class's default) instead of the 49S
config's 128, feeding the same 128-wide head, the model has 11.94 M / 33.75 G, within 0.4 % of the published
figures, so those were counted with 256-wide endpoints. The model keeps the official 49S config (128);
endpoint_filters=256 gives the published figures. An independent PyTorch port (mmdetection, 80 classes)
reports 11.15 M / 30.04 B for 49S: the same shortfall (our count with 80 classes is 11.15 M as well).
With 80 classes instead of 91 SpineNet-49 would be 28.32 M / 83.34 G (-0.6 % / -2.4 %): 91 fits better.

Differences from the official model: ReLU everywhere (the model zoo's first table; its longer-schedule models
use swish, which costs the same multiply-adds: pass activation="swish"); no stochastic depth (training only);
max-pool and nearest resampling use PyTorch's symmetric padding where TensorFlow pads 'SAME' asymmetrically
(values differ at the borders, costs do not); inputs whose side is not a multiple of 128 resample to the
target level's exact size (ceil(side / 2^L)) with nearest interpolation.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.layers import conv_bn_act
from explorer.native.registry import register_model

MIN_LEVEL, MAX_LEVEL = 3, 7
FILTER_SIZE = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}
STEM_FILTERS = 64  # the 7×7 stem conv is not scaled by the filter multiplier
NUM_STEM_BLOCKS = 2
NUM_CLASSES = 91  # official configs: COCO's 90 category ids + background
NUM_ANCHORS = 9  # 3 scales × aspect ratios {1.0, 2.0, 0.5}

# (level, block type, (parent, parent), is_output); parents 0 and 1 are the stem groups.
BLOCK_SPECS: tuple[tuple[int, str, tuple[int, int], bool], ...] = (
    (2, "bottleneck", (0, 1), False),
    (4, "residual", (0, 1), False),
    (3, "bottleneck", (2, 3), False),
    (4, "bottleneck", (2, 4), False),
    (6, "residual", (3, 5), False),
    (4, "bottleneck", (3, 5), False),
    (5, "residual", (6, 7), False),
    (7, "residual", (6, 8), False),
    (5, "bottleneck", (8, 9), False),
    (5, "bottleneck", (8, 10), False),
    (4, "bottleneck", (5, 10), True),
    (3, "bottleneck", (4, 10), True),
    (5, "bottleneck", (7, 12), True),
    (7, "bottleneck", (5, 14), True),
    (6, "bottleneck", (12, 14), True),
)

# variant: filter scale, endpoint width, block repeats, resample alpha, head width, head convs.
SCALING = {
    "49S": dict(filter_scale=0.65, endpoint_filters=128, block_repeats=1, resample_alpha=0.5, head_filters=128, head_convs=4),
    "49": dict(filter_scale=1.0, endpoint_filters=256, block_repeats=1, resample_alpha=0.5, head_filters=256, head_convs=4),
    "96": dict(filter_scale=1.0, endpoint_filters=256, block_repeats=2, resample_alpha=0.5, head_filters=256, head_convs=4),
    "143": dict(filter_scale=1.0, endpoint_filters=256, block_repeats=3, resample_alpha=1.0, head_filters=256, head_convs=4),
    "190": dict(filter_scale=1.3, endpoint_filters=512, block_repeats=4, resample_alpha=1.0, head_filters=512, head_convs=7),
}

# TPU model zoo (tensorflow/tpu models/official/detection/MODEL_ZOO.md), RetinaNet trained from scratch:
# variant: (input side, params in M, FLOPs in B as multiply-adds).
PUBLISHED = {
    "49S": (640, 11.9, 33.8),
    "49": (640, 28.5, 85.4),
    "96": (1024, 43.0, 265.4),
    "143": (1280, 67.0, 524.0),
    "190": (1280, 163.6, 1885.0),
}


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "swish":
        return nn.SiLU(inplace=True)
    raise ValueError(f"activation must be 'relu' or 'swish', not {name!r}")


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, act: str | None = "relu") -> nn.Sequential:
    """Conv (no bias, 'same' padding) → BatchNorm → activation (none when act is None)."""
    return nn.Sequential(conv_bn_act(c_in, c_out, kernel, stride, act=None if act is None else _activation(act)))


def block_out_channels(block: str, filters: int) -> int:
    return 4 * filters if block == "bottleneck" else filters


class Bottleneck(nn.Module):
    """1×1 (filters) → 3×3 (filters) → 1×1 (4·filters), BN after each, ReLU after the first two and the sum."""

    def __init__(self, c_in: int, filters: int, act: str = "relu"):
        super().__init__()
        c_out = 4 * filters
        self.conv1 = conv_bn(c_in, filters, 1, act=act)
        self.conv2 = conv_bn(filters, filters, 3, act=act)
        self.conv3 = conv_bn(filters, c_out, 1, act=None)
        self.shortcut = conv_bn(c_in, c_out, 1, act=None) if c_in != c_out else None
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class Residual(nn.Module):
    """3×3 → 3×3 (filters each), BN after each, ReLU after the first and the sum."""

    def __init__(self, c_in: int, filters: int, act: str = "relu"):
        super().__init__()
        self.conv1 = conv_bn(c_in, filters, 3, act=act)
        self.conv2 = conv_bn(filters, filters, 3, act=None)
        self.shortcut = conv_bn(c_in, filters, 1, act=None) if c_in != filters else None
        self.act = _activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)


def block_group(block: str, c_in: int, filters: int, repeats: int, act: str) -> nn.Sequential:
    """`repeats` blocks of one type; only the first may change the width (stride is always 1)."""
    cls = Bottleneck if block == "bottleneck" else Residual
    c_out = block_out_channels(block, filters)
    return nn.Sequential(*[cls(c_in if i == 0 else c_out, filters, act) for i in range(repeats)])


def level_size(side: int, level: int) -> int:
    return math.ceil(side / 2 ** level)


class Resample(nn.Module):
    """A cross-scale connection: 1×1 conv to alpha·C → resample to the target level → 1×1 conv to the target width."""

    def __init__(self, c_in: int, in_block: str, in_level: int, c_target: int, target_level: int,
                 alpha: float, act: str = "relu"):
        super().__init__()
        base = c_in / 4 if in_block == "bottleneck" else c_in
        mid = int(base * alpha)
        self.in_level, self.target_level = in_level, target_level
        self.reduce = conv_bn(c_in, mid, 1, act=act)
        self.down = conv_bn(mid, mid, 3, stride=2, act=act) if in_level < target_level else None
        self.pools = nn.ModuleList(nn.MaxPool2d(3, 2, 1) for _ in range(target_level - in_level - 1))
        self.expand = conv_bn(mid, c_target, 1, act=None)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.reduce(x)
        if self.down is not None:
            x = self.down(x)
            for pool in self.pools:
                x = pool(x)
        if tuple(x.shape[-2:]) != tuple(size):  # upsampling, or a side that is not a multiple of 2^level
            x = F.interpolate(x, size=size, mode="nearest")
        return self.expand(x)


class ScalePermutedBlock(nn.Module):
    """Two resampled parents (and, for an output block, any unconsumed same-shape blocks) → sum → ReLU → block group."""

    def __init__(self, level: int, block: str, parents: tuple[int, int], merged: tuple[int, ...],
                 resample0: Resample, resample1: Resample, group: nn.Sequential, act: str):
        super().__init__()
        self.level, self.block_type, self.parents, self.merged = level, block, parents, merged
        self.resample0, self.resample1 = resample0, resample1
        self.act = _activation(act)
        self.block = group

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.resample0(feats[self.parents[0]], size) + self.resample1(feats[self.parents[1]], size)
        for j in self.merged:
            x = x + feats[j]
        return self.block(self.act(x))


class SpineNet(nn.Module):
    """The scale-permuted backbone: returns {"P3": ..., "P7": ...} at the endpoint width."""

    def __init__(self, filter_scale: float = 1.0, endpoint_filters: int = 256, block_repeats: int = 1,
                 resample_alpha: float = 0.5, activation: str = "relu",
                 block_specs=BLOCK_SPECS, min_level: int = MIN_LEVEL, max_level: int = MAX_LEVEL):
        super().__init__()
        act = activation
        self.min_level, self.max_level = min_level, max_level

        stem_filters = int(FILTER_SIZE[2] * filter_scale)
        self.stem = nn.Sequential(OrderedDict([
            ("conv", conv_bn(3, STEM_FILTERS, 7, stride=2, act=act)),
            ("pool", nn.MaxPool2d(3, 2, 1)),
        ]))
        self.stem_blocks = nn.ModuleList()
        c = STEM_FILTERS
        for _ in range(NUM_STEM_BLOCKS):
            self.stem_blocks.append(block_group("bottleneck", c, stem_filters, block_repeats, act))
            c = block_out_channels("bottleneck", stem_filters)

        # Build-time bookkeeping of every feature: (level, block type, channels) and how often it is consumed.
        feats = [(2, "bottleneck", c)] * NUM_STEM_BLOCKS
        outgoing = [0] * NUM_STEM_BLOCKS
        self.blocks = nn.ModuleList()
        self.output_index: dict[int, int] = {}
        for level, block, (p0, p1), is_output in block_specs:
            filters = int(FILTER_SIZE[level] * filter_scale)
            c_target = block_out_channels(block, filters)
            r0 = Resample(feats[p0][2], feats[p0][1], feats[p0][0], c_target, level, resample_alpha, act)
            r1 = Resample(feats[p1][2], feats[p1][1], feats[p1][0], c_target, level, resample_alpha, act)
            outgoing[p0] += 1
            outgoing[p1] += 1
            merged = []
            if is_output:  # unconsumed blocks of the same level and width join an output block as they are
                for j, (lvl, _, ch) in enumerate(feats):
                    if outgoing[j] == 0 and lvl == level and ch == c_target:
                        merged.append(j)
                        outgoing[j] += 1
            group = block_group(block, c_target, filters, block_repeats, act)
            self.blocks.append(ScalePermutedBlock(level, block, (p0, p1), tuple(merged), r0, r1, group, act))
            if is_output:
                if level in self.output_index:
                    raise ValueError(f"two output blocks at level {level}")
                self.output_index[level] = len(feats)
            feats.append((level, block, c_target))
            outgoing.append(0)
        self.feature_specs = feats

        self.endpoints = nn.ModuleDict({
            f"P{level}": conv_bn(feats[self.output_index[level]][2], endpoint_filters, 1, act=act)
            for level in range(min_level, max_level + 1)
        })
        self.out_channels = endpoint_filters

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        y = self.stem(x)
        feats = []
        for group in self.stem_blocks:
            y = group(y)
            feats.append(y)
        for block in self.blocks:
            feats.append(block(feats, (level_size(h, block.level), level_size(w, block.level))))
        return {name: conv(feats[self.output_index[int(name[1:])]]) for name, conv in self.endpoints.items()}


class RetinaNetHead(nn.Module):
    """Class and box subnets whose convs are shared by all levels; each level has its own BatchNorms."""

    def __init__(self, in_channels: int, width: int = 256, num_convs: int = 4, num_classes: int = NUM_CLASSES,
                 num_anchors: int = NUM_ANCHORS, levels: tuple[str, ...] = ("P3", "P4", "P5", "P6", "P7"),
                 activation: str = "relu"):
        super().__init__()
        self.levels = levels
        self.num_classes, self.num_anchors = num_classes, num_anchors

        def convs():
            return nn.ModuleList(nn.Conv2d(in_channels if i == 0 else width, width, 3, 1, 1) for i in range(num_convs))

        def norms():
            return nn.ModuleList(nn.ModuleDict({lvl: nn.BatchNorm2d(width) for lvl in levels}) for _ in range(num_convs))

        self.class_convs, self.class_norms = convs(), norms()
        self.box_convs, self.box_norms = convs(), norms()
        self.class_predict = nn.Conv2d(width, num_classes * num_anchors, 3, 1, 1)
        self.box_predict = nn.Conv2d(width, 4 * num_anchors, 3, 1, 1)
        self.act = _activation(activation)
        nn.init.constant_(self.class_predict.bias, -math.log((1 - 0.01) / 0.01))  # focal-loss prior 0.01

    def _subnet(self, x, convs, norms, level):
        for conv, norm in zip(convs, norms):
            x = self.act(norm[level](conv(x)))
        return x

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        classes, boxes = {}, {}
        for level in self.levels:
            f = features[level]
            classes[level] = self.class_predict(self._subnet(f, self.class_convs, self.class_norms, level))
            boxes[level] = self.box_predict(self._subnet(f, self.box_convs, self.box_norms, level))
        return {"class": classes, "box": boxes}


class SpineNetRetinaNet(nn.Module):
    """SpineNet backbone + RetinaNet head; returns per-level raw class logits and box deltas."""

    def __init__(self, variant: str = "49", num_classes: int = NUM_CLASSES, activation: str = "relu",
                 endpoint_filters: int | None = None):
        super().__init__()
        if variant not in SCALING:
            raise ValueError(f"unknown SpineNet variant {variant!r}; one of {sorted(SCALING)}")
        if num_classes < 1 or (endpoint_filters is not None and endpoint_filters < 1):
            raise ValueError("num_classes and endpoint_filters must be positive")
        s = SCALING[variant]
        endpoints = s["endpoint_filters"] if endpoint_filters is None else int(endpoint_filters)
        self.variant = variant
        self.backbone = SpineNet(s["filter_scale"], endpoints, s["block_repeats"], s["resample_alpha"], activation)
        self.head = RetinaNetHead(endpoints, s["head_filters"], s["head_convs"], num_classes, activation=activation)

    def forward(self, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        return self.head(self.backbone(images))


def _builder(variant: str):
    def build(num_classes: int = NUM_CLASSES, activation: str = "relu",
              endpoint_filters: int | None = None) -> SpineNetRetinaNet:
        return SpineNetRetinaNet(variant, num_classes=num_classes, activation=activation,
                                 endpoint_filters=endpoint_filters)

    build.__name__ = f"spinenet{variant.lower()}"
    build.__doc__ = f"RetinaNet with a SpineNet-{variant} backbone (raw per-level outputs, no decoding or NMS)."
    return build


for _variant in SCALING:  # spinenet49s, 49, 96, 143, 190 (P7 is 1×1 at 32×32: the cheapest real forward)
    register_model(f"spinenet{_variant.lower()}", _builder(_variant), small_input=(3, 32, 32))
