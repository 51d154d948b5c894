"""Drop-in replacements for ``nn.Conv2d``.

Every block takes the ``nn.Conv2d`` constructor arguments
``(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True)``
plus its own keyword options, and has ``from_conv(conv, **options)`` that builds a
replacement with the conv's geometry (same output shape) on the conv's device and
dtype, copying the conv's weights where the block contains a plain conv kernel.

Forwards use shapes only, never tensor values, so they run on the ``meta`` device.
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from explorer.blocks.attention import SK
from explorer.blocks.misc import ChannelShuffle, make_act, make_norm
from explorer.shapes import pair as _pair

__all__ = [
    "ConvBlock",
    "Conv2d",
    "DepthwiseSeparableConv",
    "GroupShuffleConv",
    "GhostConv",
    "DeformConv",
    "ModulatedDeformConv",
    "PSConv",
    "CondConv",
    "WeightNetConv",
    "InterleavedGroupConv",
    "InterleavedSparseConv",
    "branch_widths",
    "CONV_ARGS",
]

CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias")




def resolve_padding(padding, kernel_size, dilation) -> tuple[int, int]:
    """nn.Conv2d padding (int, pair, 'valid' or 'same') as a symmetric (ph, pw) pair."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if padding == "same":
            out = []
            for k, d in zip(_pair(kernel_size), _pair(dilation)):
                total = d * (k - 1)
                if total % 2:
                    raise ValueError("padding='same' with an even effective kernel is asymmetric; not supported")
                out.append(total // 2)
            return tuple(out)
        raise ValueError(f"unknown padding {padding!r}")
    return _pair(padding)


def reset_conv_parameters(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    """nn.Conv2d's default init: kaiming_uniform(a=√5) ⇒ U(±1/√fan_in) for weight and bias."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    nn.init.uniform_(weight, -bound, bound)
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


class ConvBlock(nn.Module):
    """Base for conv replacements: stores the geometry and provides ``from_conv``."""

    PAPER: dict = {}
    #: options that are conv arguments but have a block-specific default
    EXTRA_OPTIONS: dict = {}

    def _init_geometry(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels, self.out_channels, self.groups = int(in_channels), int(out_channels), int(groups)
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        self.padding = resolve_padding(padding, self.kernel_size, self.dilation)

    def _copy_from_conv(self, conv: nn.Conv2d) -> None:
        """Copy the conv's weights into the block's plain kernel, where it has one."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options):
        if getattr(conv, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"padding_mode={conv.padding_mode!r} is not supported (zeros only)")
        kwargs = dict(
            in_channels=conv.in_channels,
            out_channels=conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=resolve_padding(conv.padding, conv.kernel_size, conv.dilation),
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        kwargs.update(cls._from_conv_overrides(conv, options))
        kwargs.update(options)
        with torch.device(conv.weight.device):
            block = cls(**kwargs)
        block = block.to(dtype=conv.weight.dtype)
        with torch.no_grad():
            block._copy_from_conv(conv)
        return block

    @classmethod
    def _from_conv_overrides(cls, conv: nn.Conv2d, options: dict) -> dict:
        return {}

    @classmethod
    def options(cls) -> dict:
        """Block-specific options and their defaults (the conv arguments excluded)."""
        sig = inspect.signature(cls.__init__)
        opts = {n: p.default for n, p in sig.parameters.items()
                if n != "self" and n not in CONV_ARGS and p.kind is p.POSITIONAL_OR_KEYWORD}
        opts.update(cls.EXTRA_OPTIONS)
        return opts

    def _conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}")


# --------------------------------------------------------------------------- plain
class Conv2d(nn.Conv2d):
    """The plain convolution, with ``from_conv`` (an exact copy)."""

    PAPER = dict(
        name="Convolution",
        title="Gradient-Based Learning Applied to Document Recognition",
        url="http://yann.lecun.com/exdb/publis/pdf/lecun-98.pdf",
        year=1998,
        description="A dense k×k convolution: every output channel is a learned weighted sum over a local window of all (or its group's) input channels.",
    )
    EXTRA_OPTIONS: dict = {}

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options):
        with torch.device(conv.weight.device):
            block = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                        bias=conv.bias is not None, padding_mode=conv.padding_mode)
        block = block.to(dtype=conv.weight.dtype)
        with torch.no_grad():
            block.weight.copy_(conv.weight)
            if conv.bias is not None:
                block.bias.copy_(conv.bias)
        return block

    @classmethod
    def options(cls) -> dict:
        return {"padding_mode": "zeros"}


# --------------------------------------------------------------------------- depthwise separable
class DepthwiseSeparableConv(ConvBlock):
    """Depthwise k×k conv (groups = C_in, ``depth_multiplier`` outputs per channel, no bias)
    followed by a pointwise 1×1 conv (keeps the original ``groups``; bias as given).

    ``norm``/``act`` (registry names, default none) go between the two convs, as in
    MobileNet's layer; the default is a pure linear factorisation of the conv.
    """

    PAPER = dict(
        name="Depthwise-separable conv",
        title="MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
        url="https://arxiv.org/abs/1704.04861",
        year=2017,
        description="Factorises a convolution into a per-channel spatial (depthwise) filter and a 1×1 pointwise channel mixer, cutting cost by roughly a factor k².",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, depth_multiplier: int = 1, norm: str | None = None, act: str | None = None):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        mid = in_channels * depth_multiplier
        self.depthwise = nn.Conv2d(in_channels, mid, self.kernel_size, groups=in_channels, bias=False,
                                   **self._conv_kwargs())
        self.norm = make_norm(norm, mid)
        self.act = make_act(act)
        self.pointwise = nn.Conv2d(mid, out_channels, 1, groups=groups, bias=bias)

    def forward(self, x):
        return self.pointwise(self.act(self.norm(self.depthwise(x))))


# --------------------------------------------------------------------------- group conv + shuffle
class GroupShuffleConv(ConvBlock):
    """Grouped k×k conv followed by a channel shuffle (ShuffleNet's GConv + shuffle).

    ``groups`` defaults to 4 here (not 1) and is rounded down to gcd(C_in, C_out, groups)
    so any conv can be swapped. ``from_conv`` uses max(4, conv.groups) unless given.
    """

    PAPER = dict(
        name="Group conv + channel shuffle",
        title="ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
        url="https://arxiv.org/abs/1707.01083",
        year=2018,
        description="A grouped convolution that divides the cost by the group count, followed by a channel shuffle so that the next grouped layer mixes information across groups.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=4,
                 bias=True):
        super().__init__()
        groups = math.gcd(math.gcd(in_channels, out_channels), int(groups)) or 1
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self.conv = nn.Conv2d(in_channels, out_channels, self.kernel_size, groups=groups, bias=bias,
                              **self._conv_kwargs())
        self.shuffle = ChannelShuffle(groups)

    @classmethod
    def _from_conv_overrides(cls, conv, options):
        return {"groups": max(4, conv.groups)}

    @classmethod
    def options(cls) -> dict:
        return {"groups": 4}

    def forward(self, x):
        return self.shuffle(self.conv(x))


# --------------------------------------------------------------------------- Ghost
class GhostConv(ConvBlock):
    """Ghost module (Han et al.): a primary conv (the original geometry) produces
    m = ceil(C_out / ratio) intrinsic maps; cheap depthwise ``dw_size``×``dw_size`` convs
    produce (ratio − 1)·m ghost maps from them; the concatenation is sliced to C_out.

    The paper's formulation has no norm/activation; GhostNet's code adds BN (+ReLU) after
    each conv, which ``norm``/``act`` can reproduce. The primary conv keeps ``groups``
    where it divides both C_in and m, otherwise gcd(groups, C_in, m).
    """

    PAPER = dict(
        name="Ghost conv",
        title="GhostNet: More Features from Cheap Operations",
        url="https://arxiv.org/abs/1911.11907",
        year=2020,
        description="Computes only a fraction of the output maps with a full convolution and generates the rest from them by cheap depthwise filters.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, ratio: int = 2, dw_size: int = 3, norm: str | None = None, act: str | None = None):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        if ratio < 2:
            raise ValueError("ratio must be ≥ 2")
        self.ratio = ratio
        self.init_channels = math.ceil(out_channels / ratio)
        g = math.gcd(math.gcd(groups, in_channels), self.init_channels) or 1
        self.primary = nn.Sequential(
            nn.Conv2d(in_channels, self.init_channels, self.kernel_size, groups=g, bias=bias, **self._conv_kwargs()),
            make_norm(norm, self.init_channels),
            make_act(act),
        )
        self.cheap = nn.Sequential(
            nn.Conv2d(self.init_channels, self.init_channels * (ratio - 1), dw_size, padding=dw_size // 2,
                      groups=self.init_channels, bias=bias),
            make_norm(norm, self.init_channels * (ratio - 1)),
            make_act(act),
        )

    def forward(self, x):
        y = self.primary(x)
        return torch.cat([y, self.cheap(y)], dim=1)[:, : self.out_channels]


# --------------------------------------------------------------------------- DCN v1 / v2
class DeformConv(ConvBlock):
    """Deformable convolution v1 (Dai et al. 2017) on ``torchvision.ops.deform_conv2d``.

    y(p0) = Σ_n w(p_n) · x(p0 + p_n + Δp_n), bilinear sampling. The offsets come from a
    conv on the same input with the main conv's kernel, stride, padding and dilation
    (the paper: "same spatial resolution and dilation as the current conv layer"; a 3×3
    offset conv for a 3×3 layer) and 2·G_off·k_h·k_w outputs, zero-initialised, so the
    block starts as the plain conv. Offset layout (torchvision): for each offset group,
    for each kernel tap in row-major order, a (Δy, Δx) pair. ``from_conv`` copies the
    main kernel and bias, so a fresh block equals the conv it replaces.
    """

    PAPER = dict(
        name="DCN v1",
        title="Deformable Convolutional Networks",
        url="https://arxiv.org/abs/1703.06211",
        year=2017,
        description="Adds a learned 2-D offset to every sampling tap of the kernel, predicted per position by a side convolution, so the receptive field can bend to the object's shape.",
    )

    _mask_factor = 0  # offset channels per tap beyond (Δy, Δx)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, offset_groups: int = 1):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        if in_channels % offset_groups:
            raise ValueError("offset_groups must divide in_channels")
        self.offset_groups = offset_groups
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        reset_conv_parameters(self.weight, self.bias, in_channels // groups * kh * kw)
        taps = offset_groups * kh * kw
        self.offset_conv = nn.Conv2d(in_channels, (2 + self._mask_factor) * taps, self.kernel_size, bias=True,
                                     **self._conv_kwargs())
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    @property
    def num_taps(self) -> int:
        return self.offset_groups * self.kernel_size[0] * self.kernel_size[1]

    def deform(self, x, offset, mask=None):
        """The deformable conv with explicit offsets (N, 2·G·kh·kw, H', W') and optional mask."""
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)

    def offsets(self, x):
        return self.offset_conv(x)

    def forward(self, x):
        return self.deform(x, self.offsets(x))

    def _copy_from_conv(self, conv):
        self.weight.copy_(conv.weight)
        if self.bias is not None and conv.bias is not None:
            self.bias.copy_(conv.bias)


class ModulatedDeformConv(DeformConv):
    """Modulated deformable convolution (DCNv2, Zhu et al.).

    y(p) = Σ_k w_k · x(p + p_k + Δp_k) · Δm_k. One conv (same geometry as the main conv)
    predicts 3·G·kh·kw channels: the first 2·G·kh·kw are offsets, the last G·kh·kw pass
    through a sigmoid to give Δm ∈ [0, 1]. As in the paper and the official code that
    conv is zero-initialised, so at init Δp = 0 and Δm = σ(0) = 0.5: the block computes
    0.5·(W ∗ x) + b, i.e. half the plain conv's response plus its bias. The official code
    does not rescale the mask. ``mask_scale=2.0`` (not the paper) makes Δm = 2σ(·) ∈ [0, 2]
    so that a fresh block equals the conv it replaces.
    """

    PAPER = dict(
        name="DCN v2",
        title="Deformable ConvNets v2: More Deformable, Better Results",
        url="https://arxiv.org/abs/1811.11168",
        year=2019,
        description="Deformable convolution whose taps also carry a learned sigmoid modulation weight, letting each sampling point be both moved and attenuated.",
    )

    _mask_factor = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, offset_groups: int = 1, mask_scale: float = 1.0):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         offset_groups=offset_groups)
        self.mask_scale = float(mask_scale)

    def offsets_and_mask(self, x):
        out = self.offset_conv(x)
        k = self.num_taps
        return out[:, : 2 * k], torch.sigmoid(out[:, 2 * k:]) * self.mask_scale

    def forward(self, x):
        offset, mask = self.offsets_and_mask(x)
        return self.deform(x, offset, mask)


# --------------------------------------------------------------------------- PSConv
class PSConv(ConvBlock):
    """Poly-scale convolution (Li et al., ECCV 2020).

    One kernel W (C_out × C_in/g × k × k, exactly a conv's parameters) whose dilation
    varies per (output, input) channel pair: D(c, i) = dilation · pattern[(c + i) mod t]
    with c, i the channel indices inside their group, t = len(pattern). Within a row the
    dilations cycle with period t along the input channels, and each row is shifted by
    one phase from the previous one (the paper's rule; default t = 4, pattern {1, 2, 1, 4}).
    Padding per dilation keeps the conv's output size.

    Computation (the paper's appendix idea): the pairs with (c + i) mod t = p form, after
    permuting channels by their residue mod t, a grouped conv with g·t groups; so the
    block runs t grouped convs (dilation pattern[p] each) whose FLOPs add up to one dense
    conv, and un-permutes the output. When C_in/g or C_out/g is not a multiple of t it
    falls back to masked dense convs (one per distinct dilation; same result, more FLOPs).
    Needs odd kernel sizes. ``from_conv`` copies the kernel (pattern (1,) = the conv).
    """

    PAPER = dict(
        name="PSConv",
        title="PSConv: Squeezing Feature Pyramid into One Compact Poly-Scale Convolutional Layer",
        url="https://arxiv.org/abs/2007.06191",
        year=2020,
        description="Gives each input-output channel pair of one ordinary kernel its own dilation rate from a cyclic pattern, packing a multi-scale feature pyramid into a single layer at unchanged parameters and FLOPs.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, pattern: tuple[int, ...] = (1, 2, 1, 4)):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        kh, kw = self.kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError("PSConv needs odd kernel sizes (the padding per dilation must stay symmetric)")
        self.pattern = tuple(int(d) for d in pattern)
        if not self.pattern or min(self.pattern) < 1:
            raise ValueError("pattern must be a non-empty sequence of dilations ≥ 1")
        t = len(self.pattern)
        cin_g, cout_g = in_channels // groups, out_channels // groups
        self.weight = nn.Parameter(torch.empty(out_channels, cin_g, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        reset_conv_parameters(self.weight, self.bias, cin_g * kh * kw)
        self.grouped = cin_g % t == 0 and cout_g % t == 0

        if self.grouped:
            out_perm, col_idx, in_perm = [], [[] for _ in range(t)], [[] for _ in range(t)]
            for gi in range(groups):
                for a in range(t):
                    rows = [gi * cout_g + c for c in range(a, cout_g, t)]
                    out_perm += rows
                    for p in range(t):
                        b = (p - a) % t
                        cols = list(range(b, cin_g, t))
                        col_idx[p] += [cols] * len(rows)
                        in_perm[p] += [gi * cin_g + i for i in cols]
            out_inv = [0] * out_channels
            for pos, c in enumerate(out_perm):
                out_inv[c] = pos
            self.register_buffer("out_perm", torch.tensor(out_perm, dtype=torch.long), persistent=False)
            self.register_buffer("out_inv", torch.tensor(out_inv, dtype=torch.long), persistent=False)
            self.register_buffer("in_perm", torch.tensor(in_perm, dtype=torch.long), persistent=False)
            self.register_buffer("col_idx", torch.tensor(col_idx, dtype=torch.long), persistent=False)
        self.register_buffer("dilation_masks", self._masks(), persistent=False)

    def _dil_pad(self, d: int):
        dil = (self.dilation[0] * d, self.dilation[1] * d)
        pad = tuple(p + (e - b) * (k - 1) // 2
                    for p, e, b, k in zip(self.padding, dil, self.dilation, self.kernel_size))
        return dil, pad

    def dilation_matrix(self) -> torch.Tensor:
        """D (C_out × C_in/g): the dilation factor of every kernel slice (times ``dilation``)."""
        t = len(self.pattern)
        cout_g = self.out_channels // self.groups
        c = torch.arange(self.out_channels).remainder(cout_g).reshape(-1, 1)
        i = torch.arange(self.in_channels // self.groups).reshape(1, -1)
        return torch.tensor(self.pattern)[(c + i) % t]

    def _masks(self) -> torch.Tensor:
        d = self.dilation_matrix()
        return torch.stack([(d == v).float() for v in sorted(set(self.pattern))]).reshape(
            -1, self.out_channels, self.in_channels // self.groups, 1, 1)

    def forward(self, x):
        if not self.grouped:
            return self.forward_masked(x)
        kh, kw = self.kernel_size
        t = len(self.pattern)
        w = self.weight.index_select(0, self.out_perm)
        y = None
        for p, d in enumerate(self.pattern):
            dil, pad = self._dil_pad(d)
            idx = self.col_idx[p].reshape(self.out_channels, -1, 1, 1).expand(-1, -1, kh, kw)
            wp = torch.gather(w, 1, idx)
            yp = F.conv2d(x.index_select(1, self.in_perm[p]), wp, None, self.stride, pad, dil,
                          groups=self.groups * t)
            y = yp if y is None else y + yp
        y = y.index_select(1, self.out_inv)
        return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)

    def forward_masked(self, x):
        """Reference implementation: one masked dense conv per distinct dilation."""
        y = None
        for m, d in zip(self.dilation_masks, sorted(set(self.pattern))):
            dil, pad = self._dil_pad(d)
            yd = F.conv2d(x, self.weight * m, None, self.stride, pad, dil, groups=self.groups)
            y = yd if y is None else y + yd
        return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)

    def _copy_from_conv(self, conv):
        self.weight.copy_(conv.weight)
        if self.bias is not None and conv.bias is not None:
            self.bias.copy_(conv.bias)


# --------------------------------------------------------------------------- CondConv
class CondConv(ConvBlock):
    """Conditionally parameterised convolution (Yang et al., NeurIPS 2019).

    E experts W_e (each a full conv kernel + bias, each initialised like nn.Conv2d — the
    source notes' code computed fan-in over all experts); routing r(x) = σ(FC(GAP(x)))
    ∈ (0, 1)^E (dropout before the FC, default 0); W_x = Σ_e r_e W_e, b_x = Σ_e r_e b_e.
    The per-sample convs run as ONE grouped conv over the batch (input reshaped to
    1 × (N·C_in) × H × W, groups = N·g), not a Python loop over samples.
    Params: E·(conv weight + bias) + C_in·E + E.
    """

    PAPER = dict(
        name="CondConv",
        title="CondConv: Conditionally Parameterized Convolutions for Efficient Inference",
        url="https://arxiv.org/abs/1904.04971",
        year=2019,
        description="Keeps E expert kernels and mixes them per example with sigmoid routing weights computed from the pooled input, adding capacity at the cost of only one convolution per example.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, num_experts: int = 8, dropout: float = 0.0):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        kh, kw = self.kernel_size
        self.num_experts = num_experts
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(num_experts, out_channels)) if bias else None
        for e in range(num_experts):
            reset_conv_parameters(self.weight[e], None if self.bias is None else self.bias[e],
                                  in_channels // groups * kh * kw)
        self.dropout = nn.Dropout(dropout)
        self.routing = nn.Linear(in_channels, num_experts)

    def routing_weights(self, x):
        return torch.sigmoid(self.routing(self.dropout(x.mean((2, 3)))))

    def forward(self, x):
        n, c, h, w = x.shape
        r = self.routing_weights(x)                                             # N × E
        kh, kw = self.kernel_size
        weight = (r @ self.weight.reshape(self.num_experts, -1)).reshape(
            n * self.out_channels, self.in_channels // self.groups, kh, kw)
        bias = None if self.bias is None else (r @ self.bias).reshape(-1)
        y = F.conv2d(x.reshape(1, n * c, h, w), weight, bias, groups=n * self.groups, **self._conv_kwargs())
        return y.reshape(n, self.out_channels, y.shape[-2], y.shape[-1])


# --------------------------------------------------------------------------- WeightNet
class WeightNetConv(ConvBlock):
    """WeightNet (Ma et al., ECCV 2020): the conv kernel is generated per sample.

    GAP(x) → FC_r (C_in → max(16, C_in/16), the official code's reduce layer) →
    FC1 (→ M·C_out) → σ → grouped FC2 (groups G·C_out, M·C_out → C_out·C_in/g·kh·kw,
    no bias) → reshape to the kernel; the convs run as one grouped conv over the batch.
    Defaults M = 2, G = 2 as in the official code. G is reduced to gcd(G, M, C_in/g·kh·kw)
    when it does not divide both. FC2 is initialised so the generated kernel starts at
    nn.Conv2d's scale (≈ U(±1/√fan_in)), a choice of ours — the official code uses the
    framework default. A static bias is kept when ``bias=True``.
    """

    PAPER = dict(
        name="WeightNet",
        title="WeightNet: Revisiting the Design Space of Weight Networks",
        url="https://arxiv.org/abs/2007.11823",
        year=2020,
        description="Generates each example's convolution kernel from its pooled features through a sigmoid-activated FC and a grouped FC, a design space that contains SENet and CondConv as special cases.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, M: int = 2, G: int = 2, reduction: int = 16, min_reduced: int = 16):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        kh, kw = self.kernel_size
        fan_in = in_channels // groups * kh * kw
        self.M = M
        self.G = math.gcd(G, math.gcd(M, fan_in)) or 1
        hidden = max(min_reduced, in_channels // reduction)
        self.reduce = nn.Conv2d(in_channels, hidden, 1)
        self.fc1 = nn.Conv2d(hidden, M * out_channels, 1)
        self.fc2 = nn.Conv2d(M * out_channels, out_channels * fan_in, 1, groups=self.G * out_channels, bias=False)
        bound = 2.0 / ((M // self.G) * math.sqrt(fan_in))
        nn.init.uniform_(self.fc2.weight, -bound, bound)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))

    def generate_weight(self, x):
        """Per-sample kernels: (N, C_out, C_in/g, kh, kw)."""
        z = x.mean((2, 3), keepdim=True)
        wgen = self.fc2(torch.sigmoid(self.fc1(self.reduce(z))))
        return wgen.reshape(x.shape[0], self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def forward(self, x):
        n, c, h, w = x.shape
        weight = self.generate_weight(x).reshape(n * self.out_channels, c // self.groups, *self.kernel_size)
        y = F.conv2d(x.reshape(1, n * c, h, w), weight, None, groups=n * self.groups, **self._conv_kwargs())
        y = y.reshape(n, self.out_channels, y.shape[-2], y.shape[-1])
        return y if self.bias is None else y + self.bias.reshape(1, -1, 1, 1)


# --------------------------------------------------------------------------- interleaved group convs
class InterleavedGroupConv(ConvBlock):
    """IGCV1's interleaved group convolution (Zhang et al., ICCV 2017) in place of a conv.

    A primary k×k group conv with L partitions (M = C_out / L output channels each), a permutation that
    gathers the m-th channel of every partition, a secondary 1×1 group conv with M partitions of L
    channels, and the inverse permutation. Every output channel reaches every input channel by exactly
    one path (the complementary condition). ``secondary`` is M (default 2, as in IGC-L100M2, the paper's
    best ImageNet model); a pure linear factorisation — the paper's BN/ReLU sit outside the block.
    """

    PAPER = dict(
        name="Interleaved group conv (IGCV1)",
        title="Interleaved Group Convolutions for Deep Neural Networks",
        url="https://arxiv.org/abs/1707.02725",
        year=2017,
        description="A primary spatial group conv and a secondary 1×1 group conv whose partitions take one channel from each primary partition, so the product of the two sparse kernels is dense.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, secondary: int = 2):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        secondary = int(secondary)
        if secondary < 1 or out_channels % secondary:
            raise ValueError(f"secondary={secondary} (channels per primary partition) does not divide the "
                             f"{out_channels} output channels")
        primary = out_channels // secondary
        if in_channels % primary:
            raise ValueError(f"the {in_channels} input channels do not split into the {primary} primary partitions "
                             f"that secondary={secondary} gives ({out_channels} outputs / {secondary})")
        self.partitions = (primary, secondary)
        self.primary = nn.Conv2d(in_channels, out_channels, self.kernel_size, groups=primary, bias=False,
                                 **self._conv_kwargs())
        self.permute = ChannelShuffle(primary)  # channel m of primary partition l → position m·L + l
        self.secondary = nn.Conv2d(out_channels, out_channels, 1, groups=secondary, bias=bias)
        self.permute_back = ChannelShuffle(secondary)

    def forward(self, x):
        return self.permute_back(self.secondary(self.permute(self.primary(x))))


def branch_widths(in_channels: int, out_channels: int, count: int) -> tuple[int, ...]:
    """IGCV2's branch widths K_2…K_L for a chain of ``count`` group 1×1 convs after the channel-wise conv.

    Complementary condition: the widths multiply to ``in_channels``, so each output channel reaches each
    input channel by exactly one path. The last conv maps to ``out_channels``, so its group count
    (in_channels / K_L) must divide ``out_channels`` (a dense last conv always does). Among the widths
    that qualify, the one with the fewest weights — C_in·(K_2 + … + K_{L-1}) + C_out·K_L — wins: the
    paper's balance condition (equal widths, C^(1/(L-1))) when C_in = C_out and the root is whole.
    """
    def ordered_factorisations(n: int, parts: int):
        if parts == 1:
            yield (n,)
            return
        for first in range(1, n + 1):
            if n % first == 0:
                for rest in ordered_factorisations(n // first, parts - 1):
                    yield (first, *rest)

    best = None
    for widths in ordered_factorisations(in_channels, count):
        if out_channels % (in_channels // widths[-1]):
            continue
        weights = in_channels * sum(widths[:-1]) + out_channels * widths[-1]
        key = (weights, max(widths) - min(widths))
        if best is None or key < best[0]:
            best = (key, widths)
    return best[1]  # (1, …, 1, C_in) always qualifies: its last conv is dense


class InterleavedSparseConv(ConvBlock):
    """IGCV2's interleaved structured sparse convolution (Xie et al., CVPR 2018) in place of a conv.

    W1: a channel-wise (depthwise) k×k conv with the conv's stride, padding and dilation; then L − 1
    group 1×1 convs W2…WL with K_l channels per branch, each followed (except the last) by the
    permutation that makes the next conv's branches take one channel from each of its branches.
    In place of a stride-1 1×1 conv there is no W1: on MobileNet's pointwise convs, the depthwise conv
    before each is W1, and the swap turns MobileNet's layers into IGCV2 blocks at MobileNet's widths.
    ``chain`` is L (default 3: the smallest chain beyond Xception's L = 2); the widths come from
    ``branch_widths`` (complementary condition, fewest weights). A pure linear factorisation, like
    ``dwsep``: no norm or activation inside.
    """

    PAPER = dict(
        name="Interleaved structured sparse conv (IGCV2)",
        title="IGCV2: Interleaved Structured Sparse Convolutional Neural Networks",
        url="https://arxiv.org/abs/1804.06202",
        year=2018,
        description="A channel-wise spatial conv followed by a chain of sparse group 1×1 convs with permutations between them; the widths multiply to the channel count, so their product is a dense kernel made of few weights.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, chain: int = 3):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        chain = int(chain)
        if not 2 <= chain <= 8:  # the paper's chains are short (L = 3 or 4); the width search grows with L
            raise ValueError(f"chain={chain}: IGCV2 takes the channel-wise conv plus 1 to 7 group 1×1 convs "
                             "(chain from 2 to 8)")
        self.widths = branch_widths(in_channels, out_channels, chain - 1)
        layers: list[tuple[str, nn.Module]] = []
        # In place of a stride-1 1×1 conv (MobileNet's pointwise conv, whose depthwise conv is then IGCV2's W1)
        # the channel-wise conv would only scale each channel: the chain of group convs stands alone.
        if self.kernel_size != (1, 1) or self.stride != (1, 1):
            layers.append(("channelwise", nn.Conv2d(in_channels, in_channels, self.kernel_size, groups=in_channels,
                                                    bias=False, **self._conv_kwargs())))
        for index, width in enumerate(self.widths):
            last = index == len(self.widths) - 1
            branches = in_channels // width
            layers.append((f"group{index + 2}", nn.Conv2d(in_channels, out_channels if last else in_channels, 1,
                                                          groups=branches, bias=bias and last)))
            if not last:
                layers.append((f"permute{index + 2}", ChannelShuffle(branches)))
        self.chain = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        return self.chain(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", branch widths K={self.widths}"


# --------------------------------------------------------------------------- SK as a conv
class SKConv(SK):
    """The SK unit where SKNet puts it: in place of a bottleneck's 3×3 conv (in → out channels, stride).

    Same split / fuse / select as ``SK``; the branch convs carry the replaced conv's channels and
    stride, so the unit fits stride-2 blocks too.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1, dilation=1,
                 groups=1, bias=True, dilations: tuple[int, ...] = (1, 2), sk_groups: int = 32,
                 reduction: int = 16, min_dim: int = 32):
        nn.Module.__init__(self)
        self.groups = math.gcd(math.gcd(in_channels, out_channels), sk_groups) or 1
        self.num_branches = len(dilations)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=d, dilation=d, groups=self.groups, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            )
            for d in dilations
        )
        self.dim = max(out_channels // reduction, min_dim)
        self.fc = nn.Sequential(nn.Conv2d(out_channels, self.dim, 1, bias=False), nn.BatchNorm2d(self.dim), nn.ReLU())
        self.select = nn.Conv2d(self.dim, out_channels * self.num_branches, 1, bias=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options):
        with torch.device(conv.weight.device):
            return cls(conv.in_channels, conv.out_channels, 3, conv.stride, **options)
