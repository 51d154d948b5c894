"""RepMLP: Ding, Xia, Zhang, Chu, Han & Ding, "RepMLP: Re-parameterizing Convolutions into Fully-connected
Layers for Image Recognition", arXiv 2105.01883 (2021), and its RepMLP-Res50-light-224.

RepMLP block, on a (N, C, H, W) map cut into (H/h)·(W/w) partitions of h×w:
- Global Perceptron: average-pool each partition to one pixel, BN, flatten the (C, H/h, W/w) grid,
  FC1 → ReLU → FC2 back to C·(H/h)·(W/w), and add the result to every pixel of its partition
  (a per-partition, per-channel bias: partitions alone would not see each other);
- Partition Perceptron: every partition, flattened to C·h·w, goes through FC3 (a grouped FC with g
  groups; the official code writes it as a grouped 1×1 conv on (N·parts, C·h·w, 1, 1), we keep
  that weight layout and compute it as a batched matrix product) and a BN on the O·h·w outputs;
- Local Perceptron (training only): conv k×k (k = 1, 3, 5, groups g, padding k/2) + BN on every
  partition, added to FC3's output.

Folding: BN into the conv or FC before it; the convs, zero-padded to the largest kernel,
summed; a conv on an h×w partition is an FC whose matrix repeats the kernel along the diagonals
(entry [(o, y, x), (c, y', x')] = K[o, c, y' - y + k/2, x' - x + k/2] when inside the kernel, else 0),
added to FC3; the BN after the average pool into FC1. The inference-time block (``RepMLP.fold()``)
has only the average pool, FC1, FC2 and FC3 with bias, and gives the same output in eval mode.

Here the kernel-to-FC matrix is built from two 0/1 shift matrices, S_a[y, y'] = [y' = y + a - k/2]:
FC[o, y, x, c, y', x'] = Σ_ab K[o, c, a, b]·S_a[y, y']·S_b[x, x'] (exact: one nonzero term per entry).
The official code gets the same matrix by running the conv on an identity matrix.

RepMLP-Res50-light-224 (official repo DingXiaoH/RepMLP, repmlp_resnet.py / repmlp_blocks.py): a
ResNet-50 (torchvision layout, stride on the 3×3; 3-4-6-3 blocks) in which every stride-1 block of
stages 2 and 3 (28×28 and 14×14) is a "RepMLP Light Block": 1×1 conv + BN + ReLU to C/8, RepMLP
(h = w = 7, k = 1, 3, 5, g = 4, FC1/FC2 reduction 1), ReLU, 1×1 conv + BN to C, identity shortcut,
ReLU. The other blocks are ResNet-50 bottlenecks. Conv-BN pairs outside RepMLP are left as they are
(the official deploy step also fuses them, which only trades each BN for a conv bias).

Parameters / MACs at 224: training-time 87.04 M / 3.30 G, folded (``deploy=True``) 86.17 M / 3.08 G
(the local-perceptron convs and the BNs go; FC3 gains a bias). The official README gives no figures;
PaddleViT (BR-IDL/PaddleViT), which ports the official training-time weights, lists 87.1 M and 3.3 G.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.layers import conv_bn_act
from explorer.native.registry import register_model


def _fuse_bn(weight: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, bias: torch.Tensor | None = None):
    """(W, b) with the eval-mode BN after it folded in: per output channel W·γ/σ, (b - μ)·γ/σ + β."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), shift


def conv_to_fc(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The FC matrix (g-grouped, rows (o, y, x), columns (c, y', x') inside the group) equal to a
    zero-padded stride-1 'same' conv with ``kernel`` (O, C/g, k_h, k_w) on an h×w map.

    Returns (O·h·w, (C/g)·h·w), the weight layout of a grouped 1×1 conv on flattened partitions.
    """
    out_channels, in_per_group, kh, kw = kernel.shape
    rows = torch.arange(h, device=kernel.device)
    cols = torch.arange(w, device=kernel.device)
    taps_y = torch.arange(kh, device=kernel.device)
    taps_x = torch.arange(kw, device=kernel.device)
    # shift_y[a, y, y'] = 1 where y' = y + a - kh//2 (the tap a of output row y reads input row y').
    shift_y = (rows[None, None, :] == rows[None, :, None] + taps_y[:, None, None] - kh // 2).to(kernel.dtype)
    shift_x = (cols[None, None, :] == cols[None, :, None] + taps_x[:, None, None] - kw // 2).to(kernel.dtype)
    fc = torch.einsum("ocab,ayY,bxX->oyxcYX", kernel, shift_y, shift_x)
    return fc.reshape(out_channels * h * w, in_per_group * h * w)


class PartitionFC(nn.Conv2d):
    """FC3: a grouped FC on flattened partitions, stored as the official grouped 1×1 conv (weight
    (O·h·w, C·h·w/g, 1, 1), so that the official checkpoints load) but computed as one batched matrix
    product per group, which gives the same result and MACs and runs several times faster on CPUs
    than a grouped convolution over 1×1 "images" with thousands of channels."""

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool):
        super().__init__(in_features, out_features, 1, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, g = x.shape[0], self.groups
        weight = self.weight.view(g, self.out_channels // g, self.in_channels // g)
        out = torch.bmm(x.reshape(n, g, -1).transpose(0, 1), weight.transpose(1, 2))  # (g, n, out/g)
        out = out.transpose(0, 1).reshape(n, self.out_channels)
        if self.bias is not None:
            out = out + self.bias
        return out.view(n, self.out_channels, 1, 1)


class RepMLP(nn.Module):
    """The RepMLP block; ``deploy=True`` builds the folded (inference-time) structure."""

    def __init__(self, in_channels: int, out_channels: int, H: int, W: int, h: int = 7, w: int = 7,
                 reparam_conv_k=(1, 3, 5), fc1_fc2_reduction: int = 1, fc3_groups: int = 4, deploy: bool = False):
        super().__init__()
        if H % h or W % w:
            raise ValueError(f"a {H}×{W} map does not split into {h}×{w} partitions")
        if in_channels % fc3_groups or out_channels % fc3_groups:
            raise ValueError(f"channels {in_channels}→{out_channels} do not split into {fc3_groups} groups")
        if any(k % 2 == 0 or k > min(h, w) for k in reparam_conv_k):
            raise ValueError(f"local-perceptron kernels must be odd and at most the partition size, got {reparam_conv_k}")
        self.C, self.O, self.H, self.W, self.h, self.w = in_channels, out_channels, H, W, h, w
        self.h_parts, self.w_parts = H // h, W // w
        self.fc3_groups = fc3_groups
        self.reparam_conv_k = tuple(reparam_conv_k)
        self.fc1_fc2_reduction = fc1_fc2_reduction
        self.deploy = deploy
        parts = self.h_parts * self.w_parts
        self.need_global_perceptron = parts > 1
        if self.need_global_perceptron:
            hidden = in_channels * parts // fc1_fc2_reduction
            self.avg = nn.AvgPool2d(kernel_size=(h, w))
            self.avg_bn = None if deploy else nn.BatchNorm2d(in_channels)
            self.fc1 = nn.Linear(in_channels * parts, hidden)
            self.relu = nn.ReLU()
            self.fc2 = nn.Linear(hidden, in_channels * parts)
        self.fc3 = PartitionFC(in_channels * h * w, out_channels * h * w, fc3_groups, bias=deploy)
        self.fc3_bn = None if deploy else nn.BatchNorm1d(out_channels * h * w)
        self.local = nn.ModuleDict()
        if not deploy:
            for k in self.reparam_conv_k:
                self.local[f"conv{k}"] = nn.Sequential(*conv_bn_act(in_channels, out_channels, k,
                                                                    groups=fc3_groups).values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if tuple(x.shape[1:]) != (self.C, self.H, self.W):
            # FC1/FC2 (and the partition count) are sized for one map size: RepMLP is resolution-bound.
            raise ValueError(f"this RepMLP is built for {self.C}×{self.H}×{self.W} maps, got "
                             f"{'×'.join(map(str, x.shape[1:]))}")
        C, O, h, w, hp, wp = self.C, self.O, self.h, self.w, self.h_parts, self.w_parts
        if self.need_global_perceptron:
            v = self.avg(x)
            if self.avg_bn is not None:
                v = self.avg_bn(v)
            v = self.fc2(self.relu(self.fc1(v.reshape(n, C * hp * wp))))
            x = x.reshape(n, C, hp, h, wp, w) + v.reshape(n, C, hp, 1, wp, 1)
        else:
            x = x.reshape(n, C, hp, h, wp, w)
        partitions = x.permute(0, 2, 4, 1, 3, 5)  # (N, hp, wp, C, h, w)
        out = self.fc3(partitions.reshape(n * hp * wp, C * h * w, 1, 1)).reshape(n * hp * wp, O * h * w)
        if self.fc3_bn is not None:
            out = self.fc3_bn(out)
        out = out.reshape(n * hp * wp, O, h, w)
        if len(self.local):
            maps = partitions.reshape(n * hp * wp, C, h, w)
            for branch in self.local.values():
                out = out + branch(maps)
        out = out.reshape(n, hp, wp, O, h, w).permute(0, 3, 1, 4, 2, 5)  # (N, O, hp, h, wp, w)
        return out.reshape(n, O, self.H, self.W)

    @torch.no_grad()
    def fold(self) -> "RepMLP":
        """The inference-time block with the same function (in eval mode): local perceptron and all
        BNs merged into FC3 and FC1. Needs BN running statistics, so call it on a trained (or eval) block."""
        if self.deploy:
            return copy.deepcopy(self)
        ref = self.fc3.weight
        folded = RepMLP(self.C, self.O, self.H, self.W, self.h, self.w, self.reparam_conv_k, self.fc1_fc2_reduction,
                        self.fc3_groups, deploy=True).to(device=ref.device, dtype=ref.dtype)
        # Partition perceptron: FC3 (no bias) + BN1d.
        weight, bias = _fuse_bn(self.fc3.weight.flatten(1), self.fc3_bn)
        # Local perceptron: BN into each conv, pad to the largest kernel, sum, turn into FC3's layout.
        if len(self.local):
            largest = max(self.reparam_conv_k)
            kernel = torch.zeros_like(self.local[f"conv{largest}"][0].weight)
            conv_bias = torch.zeros(self.O, device=ref.device, dtype=ref.dtype)
            for k in self.reparam_conv_k:
                conv, bn = self.local[f"conv{k}"]
                k_weight, k_bias = _fuse_bn(conv.weight, bn)
                kernel += F.pad(k_weight, [(largest - k) // 2] * 4)
                conv_bias += k_bias
            weight = weight + conv_to_fc(kernel, self.h, self.w)
            bias = bias + conv_bias.repeat_interleave(self.h * self.w)
        folded.fc3.weight.copy_(weight.reshape_as(folded.fc3.weight))
        folded.fc3.bias.copy_(bias)
        # Global perceptron: BN(avg) = avg·s + t per channel, the same for every partition → FC1.
        if self.need_global_perceptron:
            bn = self.avg_bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            parts = self.h_parts * self.w_parts
            scale, shift = scale.repeat_interleave(parts), shift.repeat_interleave(parts)  # (c, hp, wp) order
            folded.fc1.weight.copy_(self.fc1.weight * scale[None, :])
            folded.fc1.bias.copy_(self.fc1.bias + self.fc1.weight @ shift)
            folded.fc2.load_state_dict(self.fc2.state_dict())
        return folded.train(self.training)

    def extra_repr(self) -> str:
        return (f"C={self.C}, O={self.O}, H={self.H}, W={self.W}, h={self.h}, w={self.w}, "
                f"groups={self.fc3_groups}, local_k={self.reparam_conv_k}, deploy={self.deploy}")


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = conv_bn_act(in_channels, out_channels, kernel_size, stride, act=nn.ReLU(inplace=True) if relu else None)
    return nn.Sequential(*layers.values())  # children 0, 1, 2


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (1×1 → 3×3 with the stride → 1×1, BN after each; projection shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        mid = out_channels // 4
        self.conv1 = conv_bn(in_channels, mid, 1)
        self.conv2 = conv_bn(mid, mid, 3, stride)
        self.conv3 = conv_bn(mid, out_channels, 1, relu=False)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = conv_bn(in_channels, out_channels, 1, stride, relu=False) if needs_projection else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class RepMLPLightBlock(nn.Module):
    """1×1 conv to C/8 → RepMLP → ReLU → 1×1 conv back to C, identity shortcut (stride 1, C in = C out)."""

    def __init__(self, channels: int, H: int, W: int, h: int = 7, w: int = 7, reparam_conv_k=(1, 3, 5),
                 fc3_groups: int = 4, deploy: bool = False):
        super().__init__()
        mid = channels // 8
        self.conv1 = conv_bn(channels, mid, 1)
        self.repmlp = RepMLP(mid, mid, H, W, h, w, reparam_conv_k, 1, fc3_groups, deploy=deploy)
        self.repmlp_relu = nn.ReLU(inplace=True)
        self.conv3 = conv_bn(mid, channels, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv3(self.repmlp_relu(self.repmlp(self.conv1(x)))) + x)


class RepMLPResNet(nn.Module):
    """ResNet-50 with RepMLP Light Blocks in the stride-1 blocks of stages 2 and 3."""

    def __init__(self, num_blocks=(3, 4, 6, 3), num_classes: int = 1000, image_size: int = 224, h: int = 7, w: int = 7,
                 reparam_conv_k=(1, 3, 5), fc3_groups: int = 4, deploy: bool = False):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
        channels, in_channels, downsample = (256, 512, 1024, 2048), 64, 4
        for index, (out_channels, blocks) in enumerate(zip(channels, num_blocks)):
            stride = 1 if index == 0 else 2
            downsample *= stride
            layers = [Bottleneck(in_channels, out_channels, stride)]
            for _ in range(1, blocks):
                if index in (1, 2):  # stages 2 and 3: 28×28 and 14×14 at 224
                    side = image_size // downsample
                    layers.append(RepMLPLightBlock(out_channels, side, side, h, w, reparam_conv_k, fc3_groups, deploy))
                else:
                    layers.append(Bottleneck(out_channels, out_channels))
            self.add_module(f"stage{index + 1}", nn.Sequential(*layers))
            in_channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def fold_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every training-time RepMLP replaced by its folded block."""
    model = copy.deepcopy(model)
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, RepMLP) and not m.deploy]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.fold())
    return model


@register_model("repmlp")
def repmlp_res50_light_224(deploy: bool = False, num_classes: int = 1000) -> RepMLPResNet:
    return RepMLPResNet((3, 4, 6, 3), num_classes=num_classes, image_size=224, h=7, w=7, reparam_conv_k=(1, 3, 5),
                        fc3_groups=4, deploy=deploy)
