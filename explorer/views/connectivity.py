"""Channel connectivity of a block: how many paths join each input channel to each output channel.

A chain of group convs and permutations (IGCV1, IGCV2, IGCV3, ShuffleNet) is a product of sparse
matrices; the point of the designs is that the product is dense. Here each conv is replaced by its
connectivity pattern (its centre tap 1 for every input channel of its group, no bias), norms and
activations by the identity, and the block is run on one-hot 1×1 channel maps: entry (j, i) of the
result counts the paths from input channel i to output channel j (a residual shortcut adds its own).
Each conv's and permutation's own 0/1 matrix is returned too, in call order, with the paths from the
block's input up to it while the factors form one chain (blocks of up to 512 input channels).

Only blocks made of plain convs, BatchNorm, activations, dropout, identities and channel
permutations are traced; anything else (attention, deformable convs, pooling) is refused with its type.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from explorer.errors import ExplorerError

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Hardsigmoid, nn.Sigmoid,
                nn.PReLU)
_PASS_THROUGH = (nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d, *_ACTIVATIONS)
_EXACT = 2 ** 53  # path counts are summed in float64: exact below this
_CHAIN_CHANNELS = 512  # the paths factor by factor are traced up to this many input channels (products are C³)


def _is_permutation(module: nn.Module) -> bool:
    return type(module).__name__ == "ChannelShuffle" and not any(True for _ in module.parameters())


def _unsupported(module: nn.Module) -> list[str]:
    """Layers the trace cannot stand for: any leaf but a plain conv, BN, activation, dropout, identity or
    permutation, and any module with weights of its own that is not one of those (e.g. a deformable conv)."""
    bad = []
    for name, leaf in module.named_modules():
        supported = type(leaf) is nn.Conv2d or isinstance(leaf, _PASS_THROUGH) or _is_permutation(leaf)
        is_leaf = not any(True for _ in leaf.children())
        own_weights = any(True for _ in leaf.parameters(recurse=False))
        if not supported and (is_leaf or own_weights):
            bad.append(f"{name or '(the block itself)'} ({type(leaf).__name__})")
    return bad


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if type(m) is nn.Conv2d]


def connectivity_candidates(model: nn.Module) -> list[dict[str, Any]]:
    """Blocks worth tracing: made of supported layers only, with 2–12 convs, at least one of them grouped,
    and a sum of conv paths (no multiplying gates). A Sequential that holds exactly the convs of its parent or
    of one child (a one-block stage, a swap's inner chain) is left out for that block."""
    conv_counts = {name: len(_convs(module)) for name, module in model.named_modules()}
    out = []
    for name, module in model.named_modules():
        count = conv_counts[name]
        if not name or not 2 <= count <= 12:
            continue
        if isinstance(module, nn.Sequential):  # a wrapper with the same convs as its block: list the block
            parent = name.rpartition(".")[0]
            if conv_counts[parent] == count or any(conv_counts[f"{name}.{child}"] == count
                                                   for child, _ in module.named_children()):
                continue
        convs = _convs(module)
        if not any(c.groups > 1 for c in convs) or _unsupported(module):
            continue
        if not _is_linear(_pattern_copy(module), convs[0].in_channels):  # gates that multiply: it would be refused
            continue
        out.append({"name": name, "type": type(module).__name__, "convs": count,
                    "in_channels": convs[0].in_channels, "out_channels": convs[-1].out_channels})
    return out


class _ConvPattern(nn.Module):
    """A conv's connectivity pattern: its centre tap 1 for every input channel of its group, no bias.

    On the 1×1 maps the trace runs, a conv whose padding makes it read exactly its centre tap is a matrix
    product with its block-diagonal (out, in) 0/1 matrix. That is what runs: float64 convolution kernels are
    slow paths (a dense 3×3 conv on 960 one-hot channels took 9 s on 2 threads, the product 70 ms). Any other
    input, or a conv that reads another tap, runs the conv itself, with the same pattern as its weight."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.in_channels, self.out_channels, self.groups = conv.in_channels, conv.out_channels, conv.groups
        self.kernel_size, self.stride, self.padding, self.dilation = (conv.kernel_size, conv.stride, conv.padding,
                                                                      conv.dilation)
        centre = (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
        weight = torch.zeros(conv.weight.shape, dtype=torch.float64)
        weight[:, :, centre[0], centre[1]] = 1.0
        self.register_buffer("weight", weight)
        # block diagonal: output j reads input i when both lie in the same group
        out_group = torch.arange(self.out_channels) // (self.out_channels // self.groups)
        in_group = torch.arange(self.in_channels) // (self.in_channels // self.groups)
        self.register_buffer("matrix", (out_group[:, None] == in_group[None, :]).to(torch.float64))
        self.reads_centre_of_one_pixel = self._output_of_one_pixel_is_its_centre_tap(conv, centre)

    @staticmethod
    def _output_of_one_pixel_is_its_centre_tap(conv: nn.Conv2d, centre: tuple[int, int]) -> bool:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            return False
        for k, s, p, d, c in zip(conv.kernel_size, conv.stride, conv.padding, conv.dilation, centre):
            if (1 + 2 * p - d * (k - 1) - 1) // s + 1 != 1 or p != d * c:  # one output pixel, read by the centre tap
                return False
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reads_centre_of_one_pixel and x.shape[-2:] == (1, 1):
            return (x[:, :, 0, 0] @ self.matrix.T)[:, :, None, None]
        return nn.functional.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)


def _pattern_copy(module: nn.Module) -> nn.Module:
    """A float64 CPU copy where every plain conv is its connectivity pattern (_ConvPattern), and norms and
    activations are gone."""
    clone = copy.deepcopy(module).to(device="cpu", dtype=torch.float64).eval()
    for name, leaf in list(clone.named_modules()):
        if not name:
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = clone.get_submodule(parent_name) if parent_name else clone
        if type(leaf) is nn.Conv2d:
            setattr(parent, attr, _ConvPattern(leaf))
        elif isinstance(leaf, _PASS_THROUGH) and not isinstance(leaf, nn.Identity):
            setattr(parent, attr, nn.Identity())
    return clone


def _channel_map(module: nn.Module, channels: int) -> np.ndarray:
    """(out, in) matrix of the module's response to each one-hot channel.

    The input is 1×1: a padded conv of any stride then reads exactly its centre tap, and the memory stays
    channels² numbers even for the widest blocks."""
    with torch.no_grad():
        y = module(torch.eye(channels, dtype=torch.float64)[:, :, None, None])
    counts = y[:, :, 0, 0].numpy().T
    if np.abs(counts).max(initial=0) >= _EXACT:
        raise ExplorerError("this block has too many paths to count exactly (over 2^53 between two channels); "
                            "pick a smaller block")
    return np.rint(counts).astype(np.int64)


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b for path counts: in float64 (BLAS; numpy's int64 matmul is a slow triple loop), exact below 2^53."""
    product = a.astype(np.float64) @ b.astype(np.float64)
    if product.max(initial=0) >= _EXACT:
        raise ExplorerError("this block has too many paths to count exactly (over 2^53 between two channels); "
                            "pick a smaller block")
    return np.rint(product).astype(np.int64)


def _is_linear(pattern: nn.Module, channels: int) -> bool:
    """With weights as patterns and nonlinearities gone, a chain of convs and permutations is linear; a
    forward that multiplies branches (attention) or resamples (deformable sampling) is not."""
    generator = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1.0):  # small signed inputs keep gates (sigmoids) away from saturation, where they look linear
        a, b = (scale * torch.randn(2, channels, 1, 1, dtype=torch.float64, generator=generator) for _ in range(2))
        with torch.no_grad():
            ya, yb, ysum = pattern(a), pattern(b), pattern(a + 3 * b)
        if not torch.allclose(ysum, ya + 3 * yb, rtol=1e-8, atol=1e-12 * scale):
            return False
    return True


def channel_paths(model: nn.Module, name: str) -> dict[str, Any]:
    """Path counts through the block `name` and each of its sparse factors, in call order."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ExplorerError(f"no module named {name!r} in this model") from None
    bad = _unsupported(module)
    if bad:
        raise ExplorerError(f"{name} cannot be traced channel by channel: it contains "
                            f"{', '.join(bad[:4])}{' …' if len(bad) > 4 else ''}")
    convs = _convs(module)
    if not convs:
        raise ExplorerError(f"{name} has no convolution")
    pattern = _pattern_copy(module)
    factors: list[dict[str, Any]] = []
    hooks = []
    for leaf_name, leaf in pattern.named_modules():
        if isinstance(leaf, _ConvPattern) or _is_permutation(leaf):
            hooks.append(leaf.register_forward_hook(
                lambda m, args, out, leaf_name=leaf_name: factors.append({"name": leaf_name, "module": m,
                                                                         "in": args[0].shape[1]})))
    try:
        paths = _channel_map(pattern, convs[0].in_channels)
    except RuntimeError as exc:  # e.g. an unpadded k×k conv, which a 1×1 input cannot feed
        raise ExplorerError(f"{name} could not be run on one-hot 1×1 channel maps (it needs padded convs): "
                            f"{str(exc).splitlines()[0][:160]}") from None
    finally:
        for hook in hooks:
            hook.remove()
    if not _is_linear(pattern, convs[0].in_channels):
        raise ExplorerError(f"{name} cannot be traced channel by channel: its forward is not a sum of conv paths "
                            "(it multiplies or resamples features)")
    described = []
    # Paths from the block's input, factor by factor (for blocks up to _CHAIN_CHANNELS input channels).
    so_far = np.eye(convs[0].in_channels, dtype=np.int64) if convs[0].in_channels <= _CHAIN_CHANNELS else None
    for factor in factors:
        m = factor["module"]
        matrix = _channel_map(m, factor["in"])
        if isinstance(m, _ConvPattern):
            if m.groups == m.in_channels:  # depthwise, with a channel multiplier when it widens
                shape = "channel-wise" + (f" ×{m.out_channels // m.in_channels}" if m.out_channels != m.in_channels else "")
            else:
                shape = f"{m.groups} groups of {m.in_channels // m.groups}" if m.groups > 1 else "dense"
            kind = f"{m.kernel_size[0]}×{m.kernel_size[1]} conv, {shape}"
        else:
            kind = f"shuffle of {m.groups} groups"
        entry = {"name": factor["name"], "kind": kind, "matrix": matrix.astype(np.uint8),  # one conv: 0/1
                 "nonzero": int((matrix != 0).sum()), "shape": list(matrix.shape)}
        if so_far is not None and matrix.shape[1] == so_far.shape[0]:
            so_far = _product(matrix, so_far)
            entry.update(so_far=so_far, reached_so_far=float((so_far > 0).mean()))
        else:  # a branch that does not start where the chain stands (a shortcut, a side path)
            so_far = None
        described.append(entry)
    return {
        "module": name,
        "type": type(module).__name__,
        "in_channels": int(paths.shape[1]),
        "out_channels": int(paths.shape[0]),
        "factors": described,
        "paths": paths,
        "min_paths": int(paths.min()),
        "max_paths": int(paths.max()),
        "dense": bool(paths.min() > 0),
        "exactly_one_path": bool((paths == 1).all()),
        "reached_fraction": float((paths > 0).mean()),
        # True when the block is a plain chain: the product of its factors is the whole block (None: not traced).
        "product_of_factors": None if convs[0].in_channels > _CHAIN_CHANNELS else bool(
            so_far is not None and np.array_equal(so_far, paths)),
    }
