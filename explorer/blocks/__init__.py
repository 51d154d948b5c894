"""Block library of the architecture explorer: swappable attention, convolution, activation and norm blocks.

Registries (key → factory):

* ``ATTENTION[key](channels, **options)`` → module mapping N×C×H×W to the same shape.
* ``CONVS[key](in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
  groups=1, bias=True, **options)`` and ``CONVS[key].from_conv(conv, **options)``.
* ``ACTIVATIONS[key]()`` and ``NORMS[key](channels)``.

``describe()`` gives, per registry and key, the block's name, paper, year, a one-line
description and its options with defaults.
"""
from __future__ import annotations

import inspect

from explorer.blocks.attention import CBAM, ECA, GC, SE, SK, ULSAM, eca_kernel_size, identity, scSE, sSE
from explorer.blocks.convs import (
    CONV_ARGS,
    CondConv,
    Conv2d,
    DeformConv,
    DepthwiseSeparableConv,
    GhostConv,
    GroupShuffleConv,
    InterleavedGroupConv,
    InterleavedSparseConv,
    ModulatedDeformConv,
    PSConv,
    SKConv,
    WeightNetConv,
)
from explorer.blocks.misc import ACTIVATIONS, NORMS, STN, ChannelShuffle, LayerNorm2d, gn_groups
from explorer.blocks.reparam import DBB, DOConv, RepVGGBlock

__all__ = [
    "ATTENTION", "CONVS", "ACTIVATIONS", "NORMS", "MISC", "describe",
    "SE", "ECA", "CBAM", "SK", "GC", "sSE", "scSE", "ULSAM", "eca_kernel_size",
    "Conv2d", "DepthwiseSeparableConv", "GroupShuffleConv", "GhostConv", "DeformConv", "ModulatedDeformConv",
    "DOConv", "PSConv", "CondConv", "WeightNetConv", "RepVGGBlock", "DBB", "InterleavedGroupConv",
    "InterleavedSparseConv",
    "STN", "ChannelShuffle", "LayerNorm2d", "gn_groups",
]

ATTENTION = {
    "none": identity,
    "se": SE,
    "eca": ECA,
    "cbam": CBAM,
    "sk": SK,
    "gc": GC,
    "sse": sSE,
    "scse": scSE,
    "ulsam": ULSAM,
}

CONVS = {
    "conv": Conv2d,
    "dwsep": DepthwiseSeparableConv,
    "shuffle": GroupShuffleConv,
    "igc": InterleavedGroupConv,
    "igcv2": InterleavedSparseConv,
    "ghost": GhostConv,
    "dcn": DeformConv,
    "dcnv2": ModulatedDeformConv,
    "doconv": DOConv,
    "psconv": PSConv,
    "condconv": CondConv,
    "weightnet": WeightNetConv,
    "sk": SKConv,
    "repvgg": RepVGGBlock,
    "dbb": DBB,
}

MISC = {"stn": STN, "shuffle": ChannelShuffle}

# Papers for the entries that are not our own classes.
_EXTERNAL = {
    ("attention", "none"): dict(name="None", title=None, url=None, year=None,
                                description="No attention: the feature map passes through unchanged."),
    ("activations", "relu"): dict(
        name="ReLU", title="Rectified Linear Units Improve Restricted Boltzmann Machines",
        url="https://www.cs.toronto.edu/~hinton/absps/reluICML.pdf", year=2010,
        description="Passes positive values and zeroes negative ones."),
    ("activations", "relu6"): dict(
        name="ReLU6", title="Convolutional Deep Belief Networks on CIFAR-10",
        url="https://www.cs.toronto.edu/~kriz/conv-cifar10-aug2010.pdf", year=2010,
        description="ReLU clipped at 6, which keeps activations in a range that low-precision arithmetic handles well."),
    ("activations", "hswish"): dict(
        name="Hard-swish", title="Searching for MobileNetV3", url="https://arxiv.org/abs/1905.02244", year=2019,
        description="A piecewise-linear approximation of swish, x·ReLU6(x+3)/6, that is cheap on mobile hardware."),
    ("activations", "gelu"): dict(
        name="GELU", title="Gaussian Error Linear Units (GELUs)", url="https://arxiv.org/abs/1606.08415",
        year=2016, description="Weights each input by the standard normal CDF at that input, a smooth ReLU-like gate."),
    ("activations", "silu"): dict(
        name="SiLU / Swish",
        title="Sigmoid-Weighted Linear Units for Neural Network Function Approximation in Reinforcement Learning",
        url="https://arxiv.org/abs/1702.03118", year=2017,
        description="Multiplies the input by its own sigmoid, x·σ(x), a smooth non-monotonic ReLU alternative."),
    ("norms", "bn"): dict(
        name="BatchNorm",
        title="Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
        url="https://arxiv.org/abs/1502.03167", year=2015,
        description="Normalises each channel with batch statistics during training and running averages at inference, then applies a learned scale and shift."),
    ("norms", "gn"): dict(
        name="GroupNorm", title="Group Normalization", url="https://arxiv.org/abs/1803.08494", year=2018,
        description="Normalises each sample over groups of channels (here the largest divisor of C up to 32), independent of batch size."),
    ("norms", "ln"): dict(
        name="LayerNorm (channels-last)", title="Layer Normalization", url="https://arxiv.org/abs/1607.06450",
        year=2016,
        description="Normalises each pixel's C-dimensional feature vector on its own, as ConvNeXt does for N×C×H×W maps."),
}

_SKIP_ARGS = {"attention": ("channels",), "convs": CONV_ARGS, "norms": ("channels",), "activations": ()}


def _options(registry: str, factory) -> dict:
    if hasattr(factory, "options") and registry == "convs":
        return dict(factory.options())
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    return {n: p.default for n, p in sig.parameters.items()
            if n not in ("self",) + tuple(_SKIP_ARGS[registry])
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty}


def describe() -> dict[str, dict[str, dict]]:
    """{registry: {key: {name, title, url, year, description, options}}} for every registry key.

    Registries: "attention", "convs", "activations", "norms". ``options`` maps each
    block-specific option to its default (conv-like blocks: beyond nn.Conv2d's arguments).
    """
    out: dict[str, dict[str, dict]] = {}
    for registry, table in (("attention", ATTENTION), ("convs", CONVS), ("activations", ACTIVATIONS),
                            ("norms", NORMS)):
        entries = {}
        for key, factory in table.items():
            info = _EXTERNAL.get((registry, key)) or getattr(factory, "PAPER", None)
            if not info:
                raise RuntimeError(f"no paper metadata for {registry}/{key}")
            entry = {f: info.get(f) for f in ("name", "title", "url", "year", "description")}
            entry["options"] = _options(registry, factory)
            entries[key] = entry
        out[registry] = entries
    return out
