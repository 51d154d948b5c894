"""Swapping blocks in a built model, described by short strings that travel in specs and URLs.

Syntax of one swap (a spec holds a list of them, applied in order):

    ACTION:BLOCK[(name=value,...)]@WHERE

- ACTION `conv`: replace the convolutions WHERE matches with BLOCK (a key of explorer.blocks.CONVS),
  built from each conv's own channels, kernel, stride, padding and dilation.
- ACTION `attn`: replace the attention modules a model already has (e.g. MobileNetV3's or SE-ResNet's SE)
  with BLOCK (a key of explorer.blocks.ATTENTION); in a model without any, add BLOCK to the residual
  blocks WHERE matches (on the residual branch, before the addition, as SENet does).
- ACTION `act`: replace the activation modules WHERE matches with BLOCK (a key of ACTIVATIONS).
- ACTION `norm`: replace the BatchNorm2d modules WHERE matches with BLOCK (bn, gn, ln; a key of NORMS).
- ACTION `front`: insert BLOCK in front of the whole model (`front:stn@input`: a spatial transformer
  resamples the input before the first layer; it appears as the module `stn`).
- ACTION `tfm`: transformer settings, BLOCK one of `window(size=N)`, `shift(size=N)` (Swin's window
  attention), `patch(size=N)` (a ViT's patch embedding) and `score(kind=dot|scaled_dot|general|additive)`
  (the score function of global attention); see explorer/transformer_swaps.py.
- WHERE: comma-separated glob patterns over module names (`layer4.*.conv2`, `layer3.*`), or `all`.
- Options are JSON scalars (`attn:se(reduction=8)@all`); nothing is ever evaluated.

Examples: `conv:dcnv2@layer2.*.conv2,layer3.*.conv2,layer4.*.conv2` (DCNv2 on ResNet-50: 13 layers),
`attn:eca@all`, `act:hswish@all`. A swap that cannot fit is refused with the reason.
"""
from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from explorer.blocks.options import SWAP_OPTIONS, show_value
from explorer.errors import ExplorerError
from explorer import transformer_swaps
from explorer.transformer_swaps import global_attention_points, patch_embedding, window_attention_points

_SWAP_RE = re.compile(r"^(conv|attn|act|norm|front|tfm):([a-z0-9_]+)(?:\(([^()]*)\))?@([A-Za-z0-9_.*?\[\],\-]+)$")

# Presets straight from the papers (for ResNet-style models; each names the layers it changes).
PRESETS: dict[str, dict[str, Any]] = {
    "dcnv1": {"swaps": ["conv:dcn@layer4.*.conv2"], "title": "DCNv1: deformable 3×3 convs in res5 (3 layers)",
              "paper": "Dai et al., Deformable Convolutional Networks, ICCV 2017"},
    "dcnv2": {"swaps": ["conv:dcnv2@layer2.*.conv2,layer3.*.conv2,layer4.*.conv2"],
              "title": "DCNv2: modulated deformable 3×3 convs in stages 3–5 (13 layers on ResNet-50)",
              "paper": "Zhu et al., Deformable ConvNets v2, CVPR 2019"},
    "se": {"swaps": ["attn:se@all"], "title": "SE-ResNet: squeeze-and-excitation in every residual block",
           "paper": "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018"},
    "eca": {"swaps": ["attn:eca@all"], "title": "ECA-ResNet: efficient channel attention in every residual block",
            "paper": "Wang et al., ECA-Net, CVPR 2020"},
    "cbam": {"swaps": ["attn:cbam@all"], "title": "CBAM-ResNet: channel + spatial attention in every residual block",
             "paper": "Woo et al., CBAM, ECCV 2018"},
    "sk": {"swaps": ["conv:sk@layer*.*.conv2"], "title": "SK-ResNet: selective-kernel units replace the 3×3 convs",
           "paper": "Li et al., Selective Kernel Networks, CVPR 2019"},
    "doconv": {"swaps": ["conv:doconv@all"], "title": "DO-Conv everywhere (folds back to plain convs)",
               "paper": "Cao et al., DO-Conv, IEEE TIP 2022"},
    "ghost": {"swaps": ["conv:ghost@layer*.*.conv*"], "title": "Ghost-ResNet: Ghost modules replace the block convs",
              "paper": "Han et al., GhostNet, CVPR 2020"},
    "shuffle": {"swaps": ["conv:shuffle(groups=4)@layer*.*.conv1,layer*.*.conv3"],
                "title": "ShuffleNet-style grouped 1×1 convs with channel shuffle in every bottleneck",
                "paper": "Zhang et al., ShuffleNet, CVPR 2018"},
    "igc": {"swaps": ["conv:igc@layer*.*.conv2"],
            "title": "IGCV1 interleaved group convs (M = 2) in place of every residual block's 3×3 conv",
            "paper": "Zhang et al., Interleaved Group Convolutions, ICCV 2017"},
    "igcv2": {"swaps": ["conv:igcv2@layer*.*.conv2"],
              "title": "IGCV2 blocks (channel-wise 3×3, two group 1×1 convs) in place of every residual block's 3×3 conv",
              "paper": "Xie et al., IGCV2: Interleaved Structured Sparse Convolutional Neural Networks, CVPR 2018"},
}


@dataclass(frozen=True)
class Swap:
    action: str
    block: str
    options: tuple[tuple[str, Any], ...]
    where: tuple[str, ...]

    def __str__(self) -> str:
        opts = f"({','.join(f'{k}={json.dumps(v)}' for k, v in self.options)})" if self.options else ""
        return f"{self.action}:{self.block}{opts}@{','.join(self.where)}"


MAX_SWAP_TEXT = 1000
MAX_SWAPS = 64


def parse_swap(text: str) -> Swap:
    if not isinstance(text, str) or len(text) > MAX_SWAP_TEXT:
        raise ExplorerError(f"a swap is text of at most {MAX_SWAP_TEXT} characters")
    match = _SWAP_RE.match(text.strip())
    if not match:
        raise ExplorerError(f"swap {text!r} does not read as ACTION:BLOCK@WHERE (e.g. attn:se@all, conv:dcnv2@layer4.*.conv2)")
    action, block, options_text, where = match.groups()
    registry = _registry(action)
    if block not in registry:
        raise ExplorerError(f"unknown {action} block {block!r}; choose from {', '.join(sorted(registry))}")
    options = []
    for part in filter(None, (options_text or "").split(",")):
        if "=" not in part:
            raise ExplorerError(f"swap option {part!r} must look like name=value")
        key, raw = (s.strip() for s in part.split("=", 1))
        if not re.match(r"^[a-z][a-z0-9_]*$", key):
            raise ExplorerError(f"invalid swap option name {key!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if not isinstance(value, (int, float, str, bool)):
            raise ExplorerError(f"swap option {key} must be a number, a string or true/false")
        options.append((key, value))
    swap = Swap(action, block, tuple(options), tuple(w for w in where.split(",") if w))
    _check_options(swap)
    return swap


def _check_options(swap: Swap):
    """Every option of the block is declared with a type and range (explorer.blocks.options): refuse the rest."""
    rules = SWAP_OPTIONS[(swap.action, swap.block)]
    for name, value in swap.options:
        if name not in rules:
            known = ", ".join(rules)
            raise ExplorerError(f"swap {swap}: {swap.block} has no option {name!r}"
                                + (f" (its options: {known})" if known else " (it takes none)"))
        if not rules[name].accepts(value):
            raise ExplorerError(f"swap {swap}: option {name}={show_value(value)} is refused: "
                                f"{swap.block} needs {rules[name].requirement(name)}")


def expand_swaps(swaps) -> list[str]:
    """Preset names (`preset:dcnv2`) become their swaps; other strings pass through."""
    out = []
    for text in swaps:
        if text.startswith("preset:"):
            name = text.split(":", 1)[1]
            if name not in PRESETS:
                raise ExplorerError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
            out.extend(PRESETS[name]["swaps"])
        else:
            out.append(text)
    return out


def _registry(action: str) -> dict:
    from explorer import blocks

    return {"conv": blocks.CONVS, "attn": blocks.ATTENTION, "act": blocks.ACTIVATIONS, "norm": blocks.NORMS,
            "front": {"stn": blocks.STN}, "tfm": transformer_swaps.BLOCKS}[action]


def _matches(name: str, where: tuple[str, ...]) -> bool:
    return any(pattern == "all" or fnmatch.fnmatchcase(name, pattern) for pattern in where)


# --- where blocks can go ---------------------------------------------------------------------------

_ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Hardsigmoid)
_RESIDUAL_BLOCK = re.compile(r"Bottleneck|BasicBlock|Residual")
_NOT_ON_THE_BRANCH = {"shortcut", "downsample", "skip", "act", "relu", "drop_path", "se", "attn"}


def _residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module, str, int]]:
    """(name, block, attribute of the residual branch's last layer, its output channels).

    torchvision / timm ResNets: the last BN (bn3 or bn2). Other residual blocks (SpineNet, IGCV1, Darknet-53,
    ...): the last child registered on the branch, i.e. not the shortcut or the activation after the sum.
    """
    found = []
    for name, module in model.named_modules():
        if not _RESIDUAL_BLOCK.search(type(module).__name__):
            continue
        if hasattr(module, "bn3") or hasattr(module, "bn2"):
            attr = "bn3" if hasattr(module, "bn3") else "bn2"
        else:
            branch = [n for n, child in module.named_children()
                      if n not in _NOT_ON_THE_BRANCH and not isinstance(child, (*_ACTIVATION_TYPES, nn.Identity))]
            if not branch:
                continue
            attr = branch[-1]
        channels = _output_channels(getattr(module, attr))
        if channels:
            found.append((name, module, attr, channels))
    return found


def _output_channels(layer: nn.Module) -> int | None:
    """Channels a layer ends with: its last BatchNorm2d's, else its last Conv2d's."""
    modules = list(layer.modules())
    bn = next((m for m in reversed(modules) if isinstance(m, nn.BatchNorm2d)), None)
    if bn is not None:
        return bn.num_features
    conv = next((m for m in reversed(modules) if isinstance(m, nn.Conv2d)), None)
    return conv.out_channels if conv is not None else None


_ATTENTION_TYPES = ("SqueezeExcitation", "SEModule", "SqueezeExcite", "EcaModule", "CbamModule", "EffectiveSEModule")


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    found = []
    for name, module in model.named_modules():
        if type(module).__name__ in _ATTENTION_TYPES:
            first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
            if first_conv is not None:
                found.append((name, module, first_conv.in_channels))
    return found


def swap_points(model: nn.Module) -> dict[str, list[dict[str, Any]]]:
    """Every place a block can go or be replaced, grouped by kind, with each one's stage."""
    convs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            convs.append({
                "name": name, "stage": _stage(name), "in_channels": module.in_channels,
                "out_channels": module.out_channels, "kernel": list(module.kernel_size),
                "stride": list(module.stride), "groups": module.groups,
            })
    return {
        "conv": convs,
        "residual_block": [{"name": n, "stage": _stage(n), "type": type(m).__name__, "channels": c}
                           for n, m, _, c in _residual_blocks(model)],
        "attention": [{"name": n, "stage": _stage(n), "type": type(m).__name__, "channels": c}
                      for n, m, c in _attention_modules(model)],
        "activation": [{"name": n, "stage": _stage(n), "type": type(m).__name__}
                       for n, m in model.named_modules() if isinstance(m, _ACTIVATION_TYPES)],
        "norm": [{"name": n, "stage": _stage(n), "type": type(m).__name__, "channels": m.num_features}
                 for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)],
        "window_attention": [{**p, "stage": _stage(p["name"])} for p in window_attention_points(model)],
        "global_attention": [{**p, "stage": _stage(p["name"])} for p in global_attention_points(model)],
        "patch_embedding": [{**p, "stage": _stage(p["name"])} for p in filter(None, [patch_embedding(model)])],
    }


def _stage(name: str) -> str:
    return name.split(".", 1)[0] if name else "(model)"


# --- applying swaps -------------------------------------------------------------------------------------

def _set_submodule(model: nn.Module, name: str, new: nn.Module):
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _conv_refusal(block: str, conv: nn.Conv2d, options: dict[str, Any]) -> str | None:
    if conv.groups != 1 and block != "sk":  # an SK unit brings its own grouping (SKNet on ResNeXt)
        return f"it is a grouped/depthwise conv (groups={conv.groups}); {block} replaces full convs"
    if block in {"dcn", "dcnv2", "psconv", "sk", "dwsep", "repvgg", "dbb", "igc"} and max(conv.kernel_size) < 3:
        return f"it is a {conv.kernel_size[0]}×{conv.kernel_size[1]} conv; {block} needs a spatial kernel (3×3 or larger)"
    if block in {"repvgg", "dbb"} and (conv.kernel_size != (3, 3) or conv.dilation != (1, 1)):
        return f"{block} folds into a 3×3 conv with dilation 1; this conv is {conv.kernel_size[0]}×{conv.kernel_size[1]}"
    groups = options.get("groups", 1)
    if isinstance(groups, int) and groups > 1 and (conv.in_channels % groups or conv.out_channels % groups):
        return f"its channels ({conv.in_channels}→{conv.out_channels}) do not divide into {groups} groups"
    return None


def apply_swap(model: nn.Module, swap: Swap, input_size: tuple[int, ...] | None = None) -> list[str]:
    """Apply one swap in place; returns the names of the modules it changed."""
    _check_options(swap)
    factory = _registry(swap.action)[swap.block]
    options = dict(swap.options)
    changed: list[str] = []
    refused: list[str] = []
    if swap.action == "conv":
        targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and _matches(n, swap.where)]
        for name, conv in targets:
            reason = _conv_refusal(swap.block, conv, options)
            if reason:
                refused.append(f"{name}: {reason}")
                continue
            _set_submodule(model, name, _build(factory.from_conv, conv, options, swap))
            changed.append(name)
    elif swap.action == "attn":
        own = _attention_modules(model)
        if own:  # the model has attention modules (MobileNetV3, SE-ResNet, ...): replace them
            for name, _module, channels in own:
                if _matches(name, swap.where):
                    _set_submodule(model, name, _build(factory, channels, options, swap))
                    changed.append(name)
        else:  # on each residual branch after its last layer, before the addition (SENet's placement)
            blocks = _residual_blocks(model)
            for name, block, attr, channels in blocks:
                if _matches(name, swap.where):
                    setattr(block, attr, nn.Sequential(getattr(block, attr), _build(factory, channels, options, swap)))
                    changed.append(f"{name}.{attr}")
            if not blocks:
                refused.append("attention goes on a residual block's branch (before the addition) or replaces the "
                               "model's own attention modules, and this model has neither")
    elif swap.action == "act":
        for name, module in list(model.named_modules()):
            if isinstance(module, _ACTIVATION_TYPES) and _matches(name, swap.where):
                _set_submodule(model, name, _build(factory, None, options, swap))
                changed.append(name)
    elif swap.action == "norm":
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.BatchNorm2d) and _matches(name, swap.where):
                _set_submodule(model, name, _build(factory, module.num_features, options, swap))
                changed.append(name)
    elif swap.action == "tfm":
        try:
            changed, refused = transformer_swaps.apply(model, swap.block, options, lambda n: _matches(n, swap.where),
                                                       input_size)
        except ValueError as exc:
            raise ExplorerError(f"swap {swap}: {exc}") from None
    else:  # front
        if swap.where != ("input",):
            raise ExplorerError(f"swap {swap}: a front module goes @input")
        if hasattr(model, "stn"):
            raise ExplorerError(f"swap {swap}: this model already has a module named stn")
        first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        if first_conv is None:
            raise ExplorerError(f"swap {swap}: a spatial transformer needs an image model (no conv found)")
        model.add_module("stn", _build(factory, first_conv.in_channels, options, swap))
        # The model's own forward stays untouched: a pre-hook resamples its input through the STN.
        model.register_forward_pre_hook(_through_stn)
        changed.append("stn")
    if not changed and not refused and swap.action in ("conv", "act", "norm"):
        kind = {"conv": "convolution", "act": "activation", "norm": "BatchNorm2d layer"}[swap.action]
        refused.append(f"no {kind} is named like {', '.join(swap.where)} (see the swap points of this model)")
    if not changed:
        detail = f": {'; '.join(refused[:3])}" if refused else ""
        raise ExplorerError(f"swap {swap} fits nowhere in this model{detail}")
    return changed


def _through_stn(model: nn.Module, args):
    return (model.stn(args[0]), *args[1:])


def _build(factory, first, options, swap):
    try:
        return factory(**options) if first is None else factory(first, **options)
    except TypeError as exc:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if unknown:
            from explorer.blocks import describe

            registry = {"conv": "convs", "attn": "attention", "act": "activations", "norm": "norms"}.get(swap.action)
            known = describe()[registry][swap.block]["options"] if registry else {}
            raise ExplorerError(f"swap {swap}: {swap.block} has no option {unknown.group(1)!r}"
                                + (f" (its options: {', '.join(known)})" if known else " (it takes none)")) from None
        raise ExplorerError(f"swap {swap}: {exc}") from None
    except (ValueError, AssertionError) as exc:
        raise ExplorerError(f"swap {swap} cannot fit: {exc}") from None


def apply_swaps(model: nn.Module, swaps, input_size: tuple[int, ...] | None = None) -> list[str]:
    """Apply the swaps in order; `input_size` (C,H,W) lets window swaps check the token maps of a model
    that does not record them (torchvision's Swin)."""
    texts = expand_swaps(swaps)
    if len(texts) > MAX_SWAPS:
        raise ExplorerError(f"{len(texts)} swaps; a model takes at most {MAX_SWAPS}")
    parsed = [parse_swap(text) for text in texts]  # all refused or all applied: check every one first
    changed = []
    for swap in parsed:
        changed.extend(apply_swap(model, swap, input_size))
    return changed
