"""Attention blocks: N×C×H×W → N×C×H×W, constructor ``(channels, **options)``.

Each block is written from its paper; where the paper and the authors' code differ,
the class docstring says which one is followed. All forwards are shape-only in their
control flow, so they run on the ``meta`` device.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

__all__ = ["SE", "ECA", "CBAM", "SK", "GC", "sSE", "cSE", "scSE", "ULSAM", "identity", "eca_kernel_size"]


def identity(channels: int, **options) -> nn.Module:
    """The "none" attention: an ``nn.Identity`` (options are accepted and ignored)."""
    return nn.Identity()


# --------------------------------------------------------------------------- SE
class SE(nn.Module):
    """Squeeze-and-Excitation (Hu et al.): s = σ(W2 δ(W1 GAP(x))), y = s ⊙ x.

    W1: C → C/r, W2: C/r → C, both with bias (as in the released models), δ = ReLU.
    Hidden width is ``max(1, C // r)``. Params: C·h + h + h·C + C.
    """

    PAPER = dict(
        name="SE",
        title="Squeeze-and-Excitation Networks",
        url="https://arxiv.org/abs/1709.01507",
        year=2018,
        description="Global-average-pools each channel, passes the vector through a two-layer bottleneck MLP and rescales every channel by the resulting sigmoid gate.",
    )

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean((2, 3), keepdim=True)
        return torch.sigmoid(self.fc2(self.act(self.fc1(z))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


# --------------------------------------------------------------------------- ECA
def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """ECA's adaptive kernel size k = ψ(C) = |log2(C)/γ + b/γ|_odd.

    "Nearest odd" is taken as the official code does it: t = int(|(log2 C + b)/γ|),
    k = t if t is odd else t + 1 (so the tie at t = 6 for C = 2048 goes up to 7).
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al.): GAP → 1-D conv (k, no bias) across channels → σ → scale.

    No dimensionality reduction; k is adaptive (``eca_kernel_size``) unless ``kernel_size``
    is given. Params: k.
    """

    PAPER = dict(
        name="ECA",
        title="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
        url="https://arxiv.org/abs/1910.03151",
        year=2020,
        description="Replaces SE's bottleneck MLP by a single k-tap 1-D convolution over the pooled channel vector, so each channel's gate depends on its k neighbours and the block has only k weights.",
    )

    def __init__(self, channels: int, gamma: float = 2.0, b: float = 1.0, kernel_size: int | None = None):
        super().__init__()
        k = kernel_size if kernel_size is not None else eca_kernel_size(channels, gamma, b)
        self.kernel_size = int(k)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        z = x.mean((2, 3)).reshape(n, 1, c)
        return torch.sigmoid(self.conv(z)).reshape(n, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"k={self.kernel_size}"


# --------------------------------------------------------------------------- CBAM
class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al.): channel then spatial attention.

    Channel: M_c = σ(MLP(AvgPool(x)) + MLP(MaxPool(x))), shared MLP C → C/r → C (ReLU,
    with biases, as in the authors' code). Spatial: M_s = σ(f^{7×7}([Avg_c(x); Max_c(x)])),
    a 2 → 1 conv without bias. The paper's formula has no norm in f^{7×7}; the authors'
    code adds a BatchNorm (``spatial_bn=True`` reproduces that, +2 params).
    """

    PAPER = dict(
        name="CBAM",
        title="CBAM: Convolutional Block Attention Module",
        url="https://arxiv.org/abs/1807.06521",
        year=2018,
        description="Applies a channel gate computed from both average- and max-pooled descriptors through a shared MLP, then a spatial gate from a 7×7 convolution over the channel-wise average and max maps.",
    )

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel: int = 7, spatial_bn: bool = False):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)
        self.spatial_norm = nn.BatchNorm2d(1) if spatial_bn else nn.Identity()

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        avg = x.mean((2, 3), keepdim=True)
        mx = x.amax((2, 3), keepdim=True)
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_norm(self.spatial(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)


# --------------------------------------------------------------------------- SK
class SK(nn.Module):
    """Selective Kernel unit (Li et al.), C → C, stride 1.

    Split: M branches of 3×3 grouped conv + BN + ReLU with dilations ``dilations``
    (default (1, 2): a 3×3 and a "5×5" realised as dilated 3×3, as in the paper).
    Fuse: U = ΣU_m, s = GAP(U), z = ReLU(BN(W s)), W: C → d, d = max(C/r, L).
    Select: per-channel softmax over the M branches of A_m z (A_m ∈ R^{C×d}, no bias,
    as in the paper's formula); V = Σ a_m ⊙ U_m.
    Groups: G = 32 where it divides C, otherwise gcd(C, G) (1 when C is odd).
    """

    PAPER = dict(
        name="SK",
        title="Selective Kernel Networks",
        url="https://arxiv.org/abs/1903.06586",
        year=2019,
        description="Runs branches with different receptive fields (3×3 and dilated 3×3), fuses them, and lets a per-channel softmax attention choose how much of each branch every channel keeps.",
    )

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2), groups: int = 32,
                 reduction: int = 16, min_dim: int = 32):
        super().__init__()
        self.groups = math.gcd(channels, groups) or 1
        self.num_branches = len(dilations)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=d, dilation=d, groups=self.groups, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            )
            for d in dilations
        )
        self.dim = max(channels // reduction, min_dim)
        self.fc = nn.Sequential(nn.Conv2d(channels, self.dim, 1, bias=False), nn.BatchNorm2d(self.dim), nn.ReLU())
        self.select = nn.Conv2d(self.dim, channels * self.num_branches, 1, bias=False)

    def branch_weights(self, feats: torch.Tensor) -> torch.Tensor:
        """Softmax attention (N, M, C, 1, 1) from the stacked branch outputs (N, M, C, H, W)."""
        n, m, c = feats.shape[:3]
        z = self.fc(feats.sum(1).mean((2, 3), keepdim=True))
        return self.select(z).reshape(n, m, c, 1, 1).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([b(x) for b in self.branches], dim=1)
        return (feats * self.branch_weights(feats)).sum(1)


# --------------------------------------------------------------------------- GC
class GC(nn.Module):
    """Global Context block (Cao et al., GCNet).

    Context modeling: a_j = softmax_j(W_k x_j) (1×1 conv C → 1, with bias), c = Σ_j a_j x_j.
    Transform: W_v2 ReLU(LN(W_v1 c)), bottleneck C → C·ratio → C, LayerNorm over
    [C·ratio, 1, 1]. Fusion: y = x + transform (``fusion="add"``, the paper's default;
    ``"mul"`` gives x · σ(transform)). As in the authors' code the last conv is zero-
    initialised, so an "add" block starts as the identity.
    """

    PAPER = dict(
        name="GC",
        title="GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
        url="https://arxiv.org/abs/1904.11492",
        year=2019,
        description="Pools one query-independent global context vector with a softmax attention map, transforms it through a LayerNorm bottleneck and adds it to every position.",
    )

    def __init__(self, channels: int, ratio: float = 0.25, fusion: str = "add"):
        super().__init__()
        if fusion not in ("add", "mul"):
            raise ValueError("fusion must be 'add' or 'mul'")
        self.fusion = fusion
        planes = max(1, int(channels * ratio))
        self.context = nn.Conv2d(channels, 1, 1)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, planes, 1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(),
            nn.Conv2d(planes, channels, 1),
        )
        if fusion == "add":
            nn.init.zeros_(self.transform[-1].weight)
            nn.init.zeros_(self.transform[-1].bias)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return self.context(x).reshape(n, 1, h * w).softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        attn = self.attention_map(x)                                     # N, 1, HW
        ctx = torch.bmm(x.reshape(n, c, h * w), attn.transpose(1, 2))    # N, C, 1
        t = self.transform(ctx.reshape(n, c, 1, 1))
        return x + t if self.fusion == "add" else x * torch.sigmoid(t)


# --------------------------------------------------------------------------- sSE / cSE / scSE
class sSE(nn.Module):  # noqa: N801 (paper's name)
    """Spatial squeeze, channel excitation (Roy et al. 2018): q = σ(1×1 conv C → 1), y = q ⊙ x. Params: C + 1."""

    PAPER = dict(
        name="sSE",
        title="Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks",
        url="https://arxiv.org/abs/1803.02579",
        year=2018,
        description="Squeezes the channels with a 1×1 convolution into one sigmoid map and uses it as a per-pixel gate shared by all channels.",
    )

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class cSE(SE):  # noqa: N801
    """Roy et al.'s cSE: an SE block with their reduction factor r = 2."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__(channels, reduction)


class scSE(nn.Module):  # noqa: N801
    """Concurrent spatial and channel SE (Roy et al.).

    ``mode="add"`` (default): y = cSE(x) + sSE(x), the MICCAI 2018 paper's formula.
    ``mode="max"``: element-wise max, the aggregation the journal extension
    (Roy et al., IEEE TMI 2019, arXiv 1808.08127) found best. cSE uses r = 2 as in the paper.
    """

    PAPER = dict(
        name="scSE",
        title="Concurrent Spatial and Channel 'Squeeze & Excitation' in Fully Convolutional Networks",
        url="https://arxiv.org/abs/1803.02579",
        year=2018,
        description="Runs a channel gate (SE, r=2) and a spatial gate (sSE) in parallel on the same input and combines the two recalibrated maps by addition (or max).",
    )

    def __init__(self, channels: int, reduction: int = 2, mode: str = "add"):
        super().__init__()
        if mode not in ("add", "max"):
            raise ValueError("mode must be 'add' or 'max'")
        self.mode = mode
        self.cse = cSE(channels, reduction)
        self.sse = sSE(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cse(x), self.sse(x)
        return a + b if self.mode == "add" else torch.maximum(a, b)


# --------------------------------------------------------------------------- ULSAM
class ULSAM(nn.Module):
    """Ultra-Lightweight Subspace Attention Module (Saini et al.), following the paper's equations.

    The C channels are split into g subspaces F_1..F_g; for each
      dw_n = DW^{1×1}(F_n), mp_n = MaxPool^{3×3, s1, p1}(dw_n), pw_n = PW^{1}(mp_n) (G → 1),
      A_n = softmax over H·W of pw_n,  F̂_n = A_n ⊗ F_n ⊕ F_n,
    and F̂ = concat(F̂_1..F̂_g). The g subspaces are computed at once: one depthwise 1×1
    conv over all C channels and one grouped 1×1 conv C → g (groups g), which is exactly
    the per-subspace layers side by side. Params: 2C (DW) + C + g (PW).

    The authors' code adds BN + ReLU after both convs (``norm_act=True`` reproduces that,
    with PyTorch's default BN momentum rather than the code's ``momentum=0.9``). The copy
    in the source notes also has ``out = self.maxpool(x)``, which drops the DW branch; that
    bug is not reproduced. If g does not divide C, gcd(C, g) subspaces are used.
    """

    PAPER = dict(
        name="ULSAM",
        title="ULSAM: Ultra-Lightweight Subspace Attention Module for Compact Convolutional Neural Networks",
        url="https://arxiv.org/abs/2006.15102",
        year=2020,
        description="Splits the channels into g subspaces and learns one softmax spatial attention map per subspace from a depthwise 1×1 conv, 3×3 max-pool and a single-output pointwise conv, applied with a residual.",
    )

    def __init__(self, channels: int, subspaces: int = 4, norm_act: bool = False):
        super().__init__()
        self.subspaces = math.gcd(channels, subspaces) or 1
        self.dw = nn.Conv2d(channels, channels, 1, groups=channels)
        self.dw_post = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU()) if norm_act else nn.Identity()
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.pw = nn.Conv2d(channels, self.subspaces, 1, groups=self.subspaces)
        self.pw_post = nn.Sequential(nn.BatchNorm2d(self.subspaces), nn.ReLU()) if norm_act else nn.Identity()

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """A_n for every subspace: (N, g, H, W), each map summing to 1 over H·W."""
        n, _, h, w = x.shape
        a = self.pw_post(self.pw(self.pool(self.dw_post(self.dw(x)))))
        return a.reshape(n, self.subspaces, h * w).softmax(-1).reshape(n, self.subspaces, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        a = self.attention_maps(x).reshape(n, self.subspaces, 1, h, w)
        xs = x.reshape(n, self.subspaces, c // self.subspaces, h, w)
        return (xs * a + xs).reshape(n, c, h, w)
