"""The transformer side of the swaps (`tfm:BLOCK(options)@WHERE`): window size and shift of Swin's
window attention, the patch size of a ViT, and the attention score function.

    tfm:window(size=8)@all        Swin: every matched window-attention block uses 8×8 windows (a block
                                  that shifted keeps shifting, by half the new window)
    tfm:shift(size=0)@all         Swin: shift by `size` tokens (0: plain W-MSA, no shifted windows)
    tfm:patch(size=32)@all        ViT/DeiT: 32×32 patches (the input side must divide by it)
    tfm:score(kind=additive)@all  global attention: dot | scaled_dot | general | additive

Works on torchvision's and timm's ViT and Swin (WHERE matches the attention modules' names; `all`
matches every one). Changed sizes get new tables: the relative-position bias table of a new window size,
the patch embedding and positional embedding of a new patch size are resampled from the old ones
(bilinear), so with random weights the model is as random as before and with pretrained weights it
stays close to them, but it is a different model and would need fine-tuning.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.blocks.scored_attention import SCORES, ScoreFunction, ScoredMultiheadAttention, ScoredTimmAttention

BLOCKS = {"window": "window size", "shift": "shift size", "patch": "patch size", "score": "attention score"}


def _is_tv_window_attention(m: nn.Module) -> bool:
    return hasattr(m, "shift_size") and hasattr(m, "window_size") and hasattr(m, "define_relative_position_index")


def _is_timm_swin_block(m: nn.Module) -> bool:
    return hasattr(m, "shift_size") and hasattr(m, "window_size") and hasattr(m, "set_input_size") and hasattr(m, "attn")


def _is_timm_attention(m: nn.Module) -> bool:
    return type(m).__name__ == "Attention" and hasattr(m, "qkv") and hasattr(m, "head_dim") and hasattr(m, "proj")


def window_attention_points(model: nn.Module) -> list[dict[str, Any]]:
    """Every Swin window-attention module (by its name), with its window and shift."""
    points = []
    for name, m in model.named_modules():
        if _is_tv_window_attention(m):
            points.append({"name": name, "window": list(m.window_size), "shift": list(m.shift_size),
                           "heads": m.num_heads})
        elif _is_timm_swin_block(m):
            points.append({"name": f"{name}.attn", "window": list(m.window_size), "shift": list(m.shift_size),
                           "heads": m.attn.num_heads})
    return points


def global_attention_points(model: nn.Module) -> list[dict[str, Any]]:
    """Every global attention module whose score function can be swapped."""
    points = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.MultiheadAttention, ScoredMultiheadAttention)) or _is_timm_attention(m) \
                or isinstance(m, ScoredTimmAttention):
            score = m.score.kind if hasattr(m, "score") else "scaled_dot"
            points.append({"name": name, "type": type(m).__name__, "heads": m.num_heads,
                           "head_dim": m.head_dim, "score": score})
    return points


def patch_embedding(model: nn.Module) -> dict[str, Any] | None:
    """The ViT patch embedding: torchvision's `conv_proj` or timm's `patch_embed`."""
    if hasattr(model, "conv_proj") and hasattr(model, "patch_size") and hasattr(model, "encoder"):
        return {"name": "conv_proj", "patch": model.patch_size, "library": "torchvision"}
    embed = getattr(model, "patch_embed", None)
    if embed is not None and hasattr(model, "set_input_size") and hasattr(embed, "patch_size") \
            and getattr(model, "pos_embed", None) is not None:
        return {"name": "patch_embed", "patch": embed.patch_size[0], "library": "timm"}
    return None


def token_maps(model: nn.Module, input_size: tuple[int, ...] | None = None) -> dict[str, tuple[int, int]]:
    """The token map (rows, columns) each window-attention module sees, by the module's name.

    timm's Swin blocks record theirs; torchvision's do not, so they are followed from the input (C,H,W):
    the patch embedding divides the sides by its stride, each patch merging halves them (rounding up, as
    torchvision pads odd maps). Empty for a torchvision Swin when `input_size` is not known."""
    maps: dict[str, tuple[int, int]] = {}
    side = None
    for name, m in model.named_modules():
        if _is_timm_swin_block(m):
            maps[f"{name}.attn"] = tuple(m.input_resolution)
        elif _is_tv_window_attention(m) and side is not None:
            maps[name] = side
        elif side is None and isinstance(m, nn.Conv2d) and m.kernel_size == m.stride and input_size is not None \
                and len(input_size) == 3:
            side = (input_size[1] // m.stride[0], input_size[2] // m.stride[1])  # the patch embedding
        elif side is not None and type(m).__name__.startswith("PatchMerging"):
            side = (-(-side[0] // 2), -(-side[1] // 2))
    return maps


def apply(model: nn.Module, block: str, options: dict[str, Any], matches,
          input_size: tuple[int, ...] | None = None) -> tuple[list[str], list[str]]:
    """Apply one tfm swap; returns (changed module names, refusal reasons)."""
    unknown = set(options) - {"size", "kind"}
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
    if block == "score":
        return _swap_scores(model, options.get("kind"), matches)
    size = options.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or (block != "shift" and size < 1):
        raise ValueError(f"{block} needs a whole-number size=N (e.g. tfm:{block}(size=8)@all)")
    if block == "patch":
        return _swap_patch(model, size, matches)
    if block == "window":
        _check_window_fits(model, size, matches, input_size)
    return _swap_windows(model, block, size, matches)


def _check_window_fits(model: nn.Module, size: int, matches, input_size):
    """A window larger than the token map would be padded to the window (torchvision: 3000×3000 tokens on a
    56×56 map, 10¹⁷ MACs) or silently cut to the map (timm): refuse it."""
    maps = token_maps(model, input_size)
    matched = {name: hw for name, hw in maps.items() if matches(name)}
    too_small = [(name, hw) for name, hw in matched.items() if size > min(hw)]
    if too_small:
        name, (h, w) = too_small[0]
        stages = ", ".join(f"{a}×{b}" for a, b in dict.fromkeys(matched.values()))
        largest = min(min(hw) for hw in matched.values())
        at = f" at input {input_size[1]}×{input_size[2]}" if input_size and len(input_size) == 3 else ""
        raise ValueError(f"window size {size} is larger than the {h}×{w} token map of {name} "
                         f"(the matched blocks' maps{at}: {stages}); the window can be at most {largest} "
                         f"here, or match fewer blocks")


def _swap_windows(model, block: str, size: int, matches) -> tuple[list[str], list[str]]:
    changed, refused = [], []
    points = window_attention_points(model)
    if not points:
        return [], ["the model has no Swin window attention"]
    for point in points:
        if not matches(point["name"]):
            continue
        name = point["name"]
        if block == "window":
            _set_window(model, name, size)
        else:
            window = point["window"]
            if size >= min(window):
                refused.append(f"{name}: a shift of {size} is not smaller than its {window[0]}×{window[1]} window")
                continue
            _set_shift(model, name, size)
        changed.append(name)
    return changed, refused


def _set_window(model: nn.Module, name: str, size: int):
    m = model.get_submodule(name)
    if _is_tv_window_attention(m):
        table = getattr(m, "relative_position_bias_table", None)
        old_window = list(m.window_size)
        m.shift_size = [size // 2 if s else 0 for s in m.shift_size]
        m.window_size = [size, size]
        device = next(m.parameters()).device
        with torch.device(device):
            m.define_relative_position_bias_table()
            m.define_relative_position_index()
        if table is not None and m.relative_position_bias_table.dim() == 2:  # v1: resample the old table
            _resample_bias_table(table, old_window, m.relative_position_bias_table, m.window_size)
    else:  # timm: the block recomputes its window, shift and mask for its feature size
        blk = model.get_submodule(name.rpartition(".")[0])
        blk.set_input_size(blk.input_resolution, (size, size))


def _resample_bias_table(old: torch.Tensor, old_window, new: nn.Parameter, new_window):
    if old.device.type == "meta":
        return
    heads = old.shape[1]
    grid = old.detach().T.reshape(1, heads, 2 * old_window[0] - 1, 2 * old_window[1] - 1)
    sizes = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    with torch.no_grad():
        new.copy_(F.interpolate(grid, size=sizes, mode="bilinear", align_corners=False).reshape(heads, -1).T)


def _set_shift(model: nn.Module, name: str, size: int):
    m = model.get_submodule(name)
    if _is_tv_window_attention(m):
        m.shift_size = [size, size]
    else:
        blk = model.get_submodule(name.rpartition(".")[0])
        blk.target_shift_size = (size, size)
        blk.shift_size = (size, size)
        with torch.device(next(blk.parameters()).device):
            blk._init_buffers()  # timm recomputes the attention mask from shift_size


def _swap_patch(model: nn.Module, size: int, matches) -> tuple[list[str], list[str]]:
    embed = patch_embedding(model)
    if embed is None:
        return [], ["the model has no ViT patch embedding (torchvision conv_proj or timm patch_embed)"]
    if not matches(embed["name"]):
        return [], []
    if embed["library"] == "timm":
        image = model.patch_embed.img_size
        if image[0] % size or image[1] % size:
            return [], [f"its {image[0]}×{image[1]} input does not divide into {size}×{size} patches"]
        with torch.device(model.pos_embed.device):
            model.set_input_size(patch_size=(size, size))
        return [embed["name"]], []
    image = model.image_size
    if image % size:
        return [], [f"its {image}×{image} input does not divide into {size}×{size} patches"]
    old = model.conv_proj
    with torch.device(old.weight.device):
        conv = nn.Conv2d(old.in_channels, old.out_channels, kernel_size=size, stride=size)
        if old.weight.device.type != "meta":
            with torch.no_grad():
                conv.weight.copy_(F.interpolate(old.weight, size=(size, size), mode="bilinear", align_corners=False)
                                  * (model.patch_size / size) ** 2)  # keep the response to a flat patch
                conv.bias.copy_(old.bias)
        pos = model.encoder.pos_embedding
        grid = image // size
        new_pos = torch.zeros(1, grid * grid + 1, pos.shape[-1])
        if pos.device.type != "meta":
            old_grid = int(round((pos.shape[1] - 1) ** 0.5))
            patch_pos = pos.detach()[:, 1:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode="bilinear", align_corners=False)
            new_pos = torch.cat([pos.detach()[:, :1], patch_pos.flatten(2).transpose(1, 2)], dim=1)
    model.conv_proj = conv
    model.encoder.pos_embedding = nn.Parameter(new_pos)
    model.patch_size = size
    model.seq_length = grid * grid + 1
    return ["conv_proj"], []


def _swap_scores(model: nn.Module, kind, matches) -> tuple[list[str], list[str]]:
    if kind not in SCORES:
        raise ValueError(f"score needs kind= one of {', '.join(SCORES)}")
    changed, refused = [], []
    for point in global_attention_points(model):
        name = point["name"]
        if not matches(name):
            continue
        m = model.get_submodule(name)
        if isinstance(m, (ScoredMultiheadAttention, ScoredTimmAttention)):  # swapped before: new score only
            with torch.device(next(m.parameters()).device):
                m.score = ScoreFunction(kind, m.num_heads, m.head_dim)
            new = m
        elif isinstance(m, nn.MultiheadAttention):
            try:
                new = ScoredMultiheadAttention(m, kind)
            except ValueError as exc:
                refused.append(f"{name}: {exc}")
                continue
        else:
            try:
                new = ScoredTimmAttention(m, kind)
            except ValueError as exc:
                refused.append(f"{name}: {exc}")
                continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
        changed.append(name)
    if not changed and not refused and window_attention_points(model):
        refused.append("Swin's window attention adds a relative-position bias to scaled dot products; "
                       "score swaps apply to global attention (ViT, DeiT, DETR, BERT ...)")
    return changed, refused
