"""Small shared blocks: channel shuffle, STN, activation and norm registries.

Every forward here uses only shapes and tensor ops, so it also runs on the ``meta``
device (no ``.item()``, no branching on tensor values).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ChannelShuffle",
    "channel_shuffle",
    "STN",
    "LayerNorm2d",
    "batch_norm",
    "group_norm",
    "layer_norm_2d",
    "gn_groups",
    "ACTIVATIONS",
    "NORMS",
    "make_act",
    "make_norm",
]


# --------------------------------------------------------------------------- shuffle
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (N, g·n, H, W) → view (N, g, n) → transpose → flatten.

    Output channel j·g + i holds input channel i·n + j, so every group of the next
    grouped conv sees one channel from each group of the previous one.
    """
    if groups <= 1:
        return x
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Channel shuffle (Zhang et al., ShuffleNet 2018). No parameters."""

    PAPER = dict(
        name="Channel shuffle",
        title="ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
        url="https://arxiv.org/abs/1707.01083",
        year=2018,
        description="Interleaves the channels of g groups so that information flows between the groups of consecutive grouped convolutions.",
    )

    def __init__(self, groups: int = 2):
        super().__init__()
        if groups < 1:
            raise ValueError("groups must be ≥ 1")
        self.groups = int(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % self.groups:
            raise ValueError(f"{x.shape[1]} channels do not split into {self.groups} groups")
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


# --------------------------------------------------------------------------- STN
class STN(nn.Module):
    """Spatial transformer (Jaderberg et al. 2015) with an affine transformer.

    localisation net (two stride-2 3×3 convs + ReLU, global average pool, two FCs)
    → θ ∈ R^{2×3} → ``F.affine_grid`` (grid generator) → ``F.grid_sample`` (sampler).
    The last FC has zero weights and bias [1, 0, 0, 0, 1, 0], so θ starts as the
    identity and the block starts as the identity map (as in the paper's experiments
    and the official PyTorch tutorial). The global pool makes it size-agnostic; the
    output has the input's size. ``last_theta`` holds the last θ (detached).
    """

    PAPER = dict(
        name="STN",
        title="Spatial Transformer Networks",
        url="https://arxiv.org/abs/1506.02025",
        year=2015,
        description="A small localisation network predicts an affine transform per sample and the feature map is resampled through it, letting the network learn to undo translation, scale and rotation.",
    )

    def __init__(self, channels: int, hidden: int = 16, fc_hidden: int = 32, mode: str = "bilinear",
                 padding_mode: str = "zeros", align_corners: bool = False):
        super().__init__()
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, align_corners
        self.localization = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(hidden, fc_hidden),
            nn.ReLU(),
            nn.Linear(fc_hidden, 6),
        )
        last = self.localization[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], device=last.bias.device))
        self.last_theta: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.localization(x).reshape(x.shape[0], 2, 3).to(x.dtype)
        self.last_theta = theta.detach()
        grid = F.affine_grid(theta, list(x.shape), align_corners=self.align_corners)
        return F.grid_sample(x, grid, mode=self.mode, padding_mode=self.padding_mode,
                             align_corners=self.align_corners)


# --------------------------------------------------------------------------- norms
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over C for N×C×H×W tensors (channels-last: permute → LayerNorm(C) → permute back)."""

    def __init__(self, channels: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__(channels, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def gn_groups(channels: int, max_groups: int = 32) -> int:
    """The largest divisor of ``channels`` that is ≤ ``max_groups`` (32 → 32 groups for 64 ch, 24 for 48 ch)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def batch_norm(channels: int, eps: float = 1e-5, momentum: float = 0.1) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


def group_norm(channels: int, max_groups: int = 32, eps: float = 1e-5) -> nn.GroupNorm:
    return nn.GroupNorm(gn_groups(channels, max_groups), channels, eps=eps)


def layer_norm_2d(channels: int, eps: float = 1e-5) -> LayerNorm2d:
    return LayerNorm2d(channels, eps=eps)


NORMS = {"bn": batch_norm, "gn": group_norm, "ln": layer_norm_2d}

ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def make_act(name: str | None) -> nn.Module:
    if name is None or name == "none":
        return nn.Identity()
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


def make_norm(name: str | None, channels: int) -> nn.Module:
    if name is None or name == "none":
        return nn.Identity()
    try:
        return NORMS[name](channels)
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; choose from {sorted(NORMS)}") from None

