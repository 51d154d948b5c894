"""Re-parameterisable convolutions: train-time structures with an exact ``fold()`` to one ``nn.Conv2d``.

* ``DOConv``: depthwise over-parameterised conv (kernel composition W' = Dᵀ ∘ W).
* ``RepVGGBlock``: k×k-BN + 1×1-BN + identity-BN.
* ``DBB``: Diverse Branch Block (k×k, 1×1, 1×1→avg, 1×1→k×k; each with BN).

``fold()`` returns an ``nn.Conv2d`` (bias=True for the BN blocks) equal to the block in
eval mode (BN with running statistics). In train mode BN normalises with batch
statistics, so the folded conv only matches after ``.eval()``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.blocks.convs import ConvBlock, reset_conv_parameters

__all__ = ["DOConv", "RepVGGBlock", "DBB", "fuse_bn", "merge_1x1_kxk"]


# --------------------------------------------------------------------------- transforms
def fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d, bias: torch.Tensor | None = None):
    """conv (kernel, bias) followed by BN (running stats) → (kernel', bias')  [DBB transform I]."""
    std = (bn.running_var + bn.eps).sqrt()
    t = (bn.weight if bn.affine else torch.ones_like(std)) / std
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    b = bias if bias is not None else torch.zeros_like(std)
    return kernel * t.reshape(-1, 1, 1, 1), beta + (b - bn.running_mean) * t


def merge_1x1_kxk(k1, b1, k2, b2, groups: int):
    """1×1 conv (k1: mid × C_in/g, b1) then k×k conv (k2: C_out × mid/g × kh × kw, b2) → one k×k conv
    [DBB transform III, per group]. Valid when the k×k conv's zero padding is replaced by b1
    (see ``_BNAndPad``)."""
    g = groups
    mid, cin_g = k1.shape[:2]
    out, mid_g, kh, kw = k2.shape
    k1g = k1.reshape(g, mid // g, cin_g)
    k2g = k2.reshape(g, out // g, mid_g, kh, kw)
    k = torch.einsum("gomhw,gmi->goihw", k2g, k1g).reshape(out, cin_g, kh, kw)
    b = b2 + torch.einsum("gomhw,gm->go", k2g, b1.reshape(g, mid // g)).reshape(out)
    return k, b


def _center(kernel_1x1: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """A 1×1 kernel zero-padded to kh×kw at the centre  [DBB transform VI]."""
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    return F.pad(kernel_1x1, [pw, kw - 1 - pw, ph, kh - 1 - ph])


def _identity_kernel(channels: int, in_per_group: int, kh: int, kw: int, like: torch.Tensor) -> torch.Tensor:
    k = torch.zeros(channels, in_per_group, kh, kw, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    k[idx, idx % in_per_group, (kh - 1) // 2, (kw - 1) // 2] = 1.0
    return k


def _avg_kernel(channels: int, groups: int, kh: int, kw: int, like: torch.Tensor) -> torch.Tensor:
    """Average pooling as a grouped conv kernel (channels × channels/groups × kh × kw)  [DBB transform V]."""
    return _identity_kernel(channels, channels // groups, 1, 1, like).expand(-1, -1, kh, kw) / (kh * kw)


def _conv_bn(cin, cout, k, groups, stride=1, padding=0, dilation=1) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout),
    ))


class _RepBase(ConvBlock):
    """Shared pieces: the centred 1×1 branch alignment and building the folded conv."""

    def _check_odd(self):
        kh, kw = self.kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"{type(self).__name__} needs odd kernel sizes")

    def _pointwise_pad(self) -> list[int]:
        """F.pad amounts that align a stride-s 1×1 conv with the centre tap of the k×k conv.

        p1 = padding − dilation·(k−1)/2; negative values crop (e.g. a 3×3 conv with padding 0)."""
        (ph, pw), (dh, dw), (kh, kw) = self.padding, self.dilation, self.kernel_size
        p1h, p1w = ph - dh * (kh - 1) // 2, pw - dw * (kw - 1) // 2
        return [p1w, p1w, p1h, p1h]

    def _aligned(self, x):
        pads = self._pointwise_pad()
        return x if not any(pads) else F.pad(x, pads)

    def _make_conv(self, kernel, bias) -> nn.Conv2d:
        with torch.device(kernel.device):
            conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=self.groups,
                             bias=bias is not None, dtype=kernel.dtype)
        with torch.no_grad():
            conv.weight.copy_(kernel)
            if bias is not None:
                conv.bias.copy_(bias)
        return conv


# --------------------------------------------------------------------------- DO-Conv
class DOConv(ConvBlock):
    """Depthwise over-parameterised convolution (Cao et al., DO-Conv).

    Trainable W ∈ R^{C_out × C_in/g × D_mul} and D ∈ R^{C_in × (kh·kw) × D_mul}. The
    forward pass uses kernel composition W'[o, i, m] = Σ_s D_eff[c(o,i), m, s] · W[o, i, s]
    (c = the actual input channel of group-local index i), then one ``F.conv2d`` with W'.
    D_eff = D + d_diag, where D is zero-initialised and d_diag is a constant buffer (not a
    parameter, so parameter counts stay right) holding the (kh·kw) identity tiled
    D_mul // (kh·kw) times, zero-padded: D_eff starts as the identity and the block starts
    as a conv with kernel reshape(W). D_mul defaults to kh·kw and must be ≥ kh·kw (the
    paper's rule); for 1×1 kernels there is no D. With groups > 1 D is indexed by the
    real input channel (the official code's reshape pairs output groups with the wrong D
    rows; harmless for training, but not the paper's DO-GConv). ``fold()`` gives the
    equivalent nn.Conv2d; ``from_conv`` puts the conv's kernel in W so the block equals it.
    """

    PAPER = dict(
        name="DO-Conv",
        title="DO-Conv: Depthwise Over-parameterized Convolutional Layer",
        url="https://arxiv.org/abs/2006.12030",
        year=2020,
        description="Trains a convolution as the composition of a depthwise kernel D and a conventional kernel W, extra parameters that speed up training, then multiplies them into a single ordinary kernel for inference.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, D_mul: int | None = None):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        kh, kw = self.kernel_size
        mn = kh * kw
        self.D_mul = mn if (D_mul is None or mn <= 1) else int(D_mul)
        if mn > 1 and self.D_mul < mn:
            raise ValueError(f"D_mul={self.D_mul} must be ≥ kh·kw={mn}")
        cin_g = in_channels // groups
        self.W = nn.Parameter(torch.empty(out_channels, cin_g, self.D_mul))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        reset_conv_parameters(self.W, self.bias, cin_g * self.D_mul)
        if mn > 1:
            self.D = nn.Parameter(torch.zeros(in_channels, mn, self.D_mul))
            eye = torch.eye(mn).reshape(1, mn, mn).repeat(in_channels, 1, self.D_mul // mn)
            rest = self.D_mul % mn
            if rest:
                eye = torch.cat([eye, torch.zeros(in_channels, mn, rest)], dim=2)
            self.register_buffer("d_diag", eye, persistent=False)
        else:
            self.register_parameter("D", None)

    def composed_weight(self) -> torch.Tensor:
        """W' = Dᵀ ∘ W as a conv kernel (C_out × C_in/g × kh × kw)."""
        kh, kw = self.kernel_size
        cin_g = self.in_channels // self.groups
        if self.D is None:
            return self.W.reshape(self.out_channels, cin_g, kh, kw)
        g = self.groups
        d = (self.D + self.d_diag).reshape(g, cin_g, kh * kw, self.D_mul)
        w = self.W.reshape(g, self.out_channels // g, cin_g, self.D_mul)
        return torch.einsum("gims,gois->goim", d, w).reshape(self.out_channels, cin_g, kh, kw)

    def forward(self, x):
        return F.conv2d(x, self.composed_weight(), self.bias, groups=self.groups, **self._conv_kwargs())

    def forward_feature_composition(self, x):
        """O = W × (D ∘ P): a depthwise conv with D (C_in·D_mul outputs) then a grouped 1×1 conv with W.

        Mathematically equal to ``forward`` (kernel composition), at a different cost."""
        if self.D is None:
            return self.forward(x)
        kh, kw = self.kernel_size
        d = (self.D + self.d_diag).permute(0, 2, 1).reshape(self.in_channels * self.D_mul, 1, kh, kw)
        feat = F.conv2d(x, d, None, groups=self.in_channels, **self._conv_kwargs())
        w = self.W.reshape(self.out_channels, -1, 1, 1)
        return F.conv2d(feat, w, self.bias, groups=self.groups)

    def fold(self) -> nn.Conv2d:
        with torch.no_grad():
            k = self.composed_weight()
            with torch.device(k.device):
                conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                                 padding=self.padding, dilation=self.dilation, groups=self.groups,
                                 bias=self.bias is not None, dtype=k.dtype)
            conv.weight.copy_(k)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def _copy_from_conv(self, conv):
        kh, kw = self.kernel_size
        self.W.zero_()
        self.W[..., : kh * kw].copy_(conv.weight.reshape(self.out_channels, -1, kh * kw))
        if self.D is not None:
            self.D.zero_()
        if self.bias is not None and conv.bias is not None:
            self.bias.copy_(conv.bias)


# --------------------------------------------------------------------------- RepVGG
class RepVGGBlock(_RepBase):
    """RepVGG block (Ding et al. 2021) as a conv replacement: BN(k×k conv) + BN(1×1 conv) + BN(x).

    The identity-BN branch exists when C_in = C_out, stride 1 and the k×k conv keeps the
    spatial alignment (padding = dilation·(k−1)/2); the 1×1 branch is centred on the k×k
    kernel's middle tap for any padding. The block's trailing ReLU is left out (the
    surrounding model keeps its own activation); the convs have no bias (BN's β plays
    that role), so ``bias`` is accepted and ignored. ``fold()`` → one k×k nn.Conv2d with
    bias. ``from_conv`` starts the k×k branch from the conv's kernel (the block then
    differs from the conv by the other branches and the BNs).
    """

    PAPER = dict(
        name="RepVGG block",
        title="RepVGG: Making VGG-style ConvNets Great Again",
        url="https://arxiv.org/abs/2101.03697",
        year=2021,
        description="Trains a 3×3 conv with parallel 1×1 and identity branches, each batch-normalised, and merges the three linear branches into one 3×3 kernel for a plain, fast inference model.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, use_1x1: bool = True, use_identity: bool = True):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self._check_odd()
        self.dense = _conv_bn(in_channels, out_channels, self.kernel_size, groups, **self._conv_kwargs())
        kh, kw = self.kernel_size
        self.pointwise = (_conv_bn(in_channels, out_channels, 1, groups, stride=self.stride)
                          if use_1x1 and (kh, kw) != (1, 1) else None)
        aligned = not any(self._pointwise_pad())
        self.identity = (nn.BatchNorm2d(out_channels)
                         if use_identity and in_channels == out_channels and self.stride == (1, 1) and aligned
                         else None)

    def forward(self, x):
        y = self.dense(x)
        if self.pointwise is not None:
            y = y + self.pointwise(self._aligned(x))
        if self.identity is not None:
            y = y + self.identity(x)
        return y

    def fold(self) -> nn.Conv2d:
        kh, kw = self.kernel_size
        with torch.no_grad():
            k, b = fuse_bn(self.dense.conv.weight, self.dense.bn)
            if self.pointwise is not None:
                k1, b1 = fuse_bn(self.pointwise.conv.weight, self.pointwise.bn)
                k, b = k + _center(k1, kh, kw), b + b1
            if self.identity is not None:
                kid = _identity_kernel(self.out_channels, self.in_channels // self.groups, kh, kw, k)
                k2, b2 = fuse_bn(kid, self.identity)
                k, b = k + k2, b + b2
            return self._make_conv(k, b)

    def _copy_from_conv(self, conv):
        self.dense.conv.weight.copy_(conv.weight)


# --------------------------------------------------------------------------- DBB
class _BNAndPad(nn.Module):
    """BN, then pad with the value BN gives a zero input (β − μγ/σ) instead of zero.

    Needed for exactness: in the folded conv the image is zero-padded *before* the 1×1
    conv + BN, so the border sees BN's bias, not 0 (the DBB paper's padding caveat)."""

    def __init__(self, channels: int, padding: tuple[int, int]):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.padding = tuple(padding)

    def pad_value(self):
        bn = self.bn
        return bn.bias - bn.running_mean * bn.weight / (bn.running_var + bn.eps).sqrt()

    def forward(self, x):
        y = self.bn(x)
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return y
        v = self.pad_value().reshape(1, -1, 1, 1)
        return F.pad(y - v, [pw, pw, ph, ph]) + v


class DBB(_RepBase):
    """Diverse Branch Block (Ding et al., CVPR 2021), the four branches of the paper's Figure:

    1. k×k conv + BN;
    2. 1×1 conv + BN (centred on the k×k window, as in RepVGG);
    3. 1×1 conv + BN → k×k average pooling (stride s) + BN;
    4. 1×1 conv + BN → k×k conv (stride s) + BN; the 1×1 is identity-initialised (a zero
       parameter plus a constant identity, as the official code) when its width equals C_in.
    The block output is their sum (no non-linearity). Between a 1×1 and its k×k op the BN
    output is padded with BN's zero-input value (``_BNAndPad``), which makes the fold exact.
    For depthwise convs (groups = C_in = C_out) branch 2 is dropped and branch 3 is just
    average pooling + BN, as in the official code. ``internal_channels`` (width of branch 4's
    1×1; default C_in — the official code uses 2·C_in for depthwise) is rounded to a
    multiple of ``groups``. Needs odd kernels and dilation 1 (average pooling has no dilation).
    ``fold()`` composes transforms I (BN), II (add), III (1×1→k×k), V (avg) and VI (pad).
    """

    PAPER = dict(
        name="DBB",
        title="Diverse Branch Block: Building a Convolution as an Inception-like Unit",
        url="https://arxiv.org/abs/2103.13425",
        year=2021,
        description="Trains a convolution as an Inception-like sum of k×k, 1×1, 1×1-then-average-pool and 1×1-then-k×k branches with BN, all of which fold exactly into one k×k kernel for inference.",
    )

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, internal_channels: int | None = None):
        super().__init__()
        self._init_geometry(in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        self._check_odd()
        if self.dilation != (1, 1):
            raise ValueError("DBB needs dilation=1 (its average-pooling branch has no dilated form)")
        k, s, p = self.kernel_size, self.stride, self.padding
        self.depthwise = groups == in_channels == out_channels
        self.origin = _conv_bn(in_channels, out_channels, k, groups, stride=s, padding=p)
        self.pointwise = None if self.depthwise else _conv_bn(in_channels, out_channels, 1, groups, stride=s)
        if self.depthwise:
            self.avg = nn.Sequential(OrderedDict(
                pool=nn.AvgPool2d(k, stride=s, padding=p, count_include_pad=True),
                bn=nn.BatchNorm2d(out_channels),
            ))
        else:
            self.avg = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False),
                pad_bn=_BNAndPad(out_channels, p),
                pool=nn.AvgPool2d(k, stride=s, padding=0),
                bn=nn.BatchNorm2d(out_channels),
            ))
        mid = in_channels if internal_channels is None else int(internal_channels)
        mid = max(groups, mid - mid % groups)
        self.internal_channels = mid
        self.seq_conv1 = nn.Conv2d(in_channels, mid, 1, groups=groups, bias=False)
        if mid == in_channels:
            nn.init.zeros_(self.seq_conv1.weight)
            self.register_buffer("seq_id", _identity_kernel(mid, in_channels // groups, 1, 1,
                                                            self.seq_conv1.weight), persistent=False)
        else:
            self.seq_id = None
        self.seq_pad_bn = _BNAndPad(mid, p)
        self.seq_conv2 = nn.Conv2d(mid, out_channels, k, stride=s, padding=0, groups=groups, bias=False)
        self.seq_bn = nn.BatchNorm2d(out_channels)

    def _seq_kernel1(self):
        w = self.seq_conv1.weight
        return w if self.seq_id is None else w + self.seq_id

    def forward(self, x):
        y = self.origin(x)
        if self.pointwise is not None:
            y = y + self.pointwise(self._aligned(x))
        y = y + self.avg(x)
        z = F.conv2d(x, self._seq_kernel1(), None, groups=self.groups)
        y = y + self.seq_bn(self.seq_conv2(self.seq_pad_bn(z)))
        return y

    def fold(self) -> nn.Conv2d:
        kh, kw = self.kernel_size
        g = self.groups
        with torch.no_grad():
            k, b = fuse_bn(self.origin.conv.weight, self.origin.bn)
            if self.pointwise is not None:
                k1, b1 = fuse_bn(self.pointwise.conv.weight, self.pointwise.bn)
                k, b = k + _center(k1, kh, kw), b + b1
            if self.depthwise:
                ka, ba = fuse_bn(_avg_kernel(self.out_channels, g, kh, kw, k), self.avg.bn)
            else:
                k1, b1 = fuse_bn(self.avg.conv.weight, self.avg.pad_bn.bn)
                k2, b2 = fuse_bn(_avg_kernel(self.out_channels, g, kh, kw, k), self.avg.bn)
                ka, ba = merge_1x1_kxk(k1, b1, k2, b2, g)
            k, b = k + ka, b + ba
            k1, b1 = fuse_bn(self._seq_kernel1(), self.seq_pad_bn.bn)
            k2, b2 = fuse_bn(self.seq_conv2.weight, self.seq_bn)
            ks, bs = merge_1x1_kxk(k1, b1, k2, b2, g)
            return self._make_conv(k + ks, b + bs)

    def _copy_from_conv(self, conv):
        self.origin.conv.weight.copy_(conv.weight)
