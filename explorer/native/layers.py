"""Small building blocks shared by the native models: the conv → BatchNorm → activation unit.

`conv_bn_act` is the one place it is written; `ConvBNAct` is it as a module, and `ConvBNReLU` /
`ConvBNLeaky` the two presets several papers share. Models whose layers are numbered rather than named
(nn.Sequential(conv, bn, act) with children 0, 1, 2) unpack `conv_bn_act(...).values()`.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn


def conv_bn_act(in_channels: int, out_channels: int, kernel_size, stride=1, padding=None, *, groups: int = 1,
                dilation=1, eps: float = 1e-5, act: nn.Module | None = None,
                act_name: str = "act") -> OrderedDict[str, nn.Module]:
    """`conv` (no bias; padding (k − 1) / 2 · dilation, 'same' for an odd int kernel, unless given), `bn`
    (BatchNorm2d with `eps`, default momentum), then `act` under `act_name` when one is given."""
    if padding is None:
        padding = (kernel_size - 1) // 2 * dilation
    layers = OrderedDict([
        ("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                           groups=groups, bias=False)),
        ("bn", nn.BatchNorm2d(out_channels, eps=eps)),
    ])
    if act is not None:
        layers[act_name] = act
    return layers


class ConvBNAct(nn.Sequential):
    """conv_bn_act as a module (children `conv`, `bn`, and the activation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=None, **options):
        super().__init__(conv_bn_act(in_channels, out_channels, kernel_size, stride, padding, **options))


class ConvBNReLU(ConvBNAct):
    """Conv ('same' padding for odd kernels unless given, no bias) → BatchNorm → ReLU (child `relu`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, act=nn.ReLU(inplace=True),
                         act_name="relu")


class ConvBNLeaky(ConvBNAct):
    """Darknet's convolutional layer: conv ('same' padding, no bias) → BatchNorm → LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, act=nn.LeakyReLU(0.1, inplace=True))
