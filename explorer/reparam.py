"""Structural re-parameterisation, proved: fold train-time blocks into plain layers and compare.

DO-Conv, RepVGG and DBB train with extra structure (over-parameterised kernels, parallel
branches with BN) that is linear at inference, so each folds into one conv. The report gives
both models' cost and the largest output difference on a real input.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from explorer.cost import trace_costs
from explorer.errors import ExplorerError
from explorer.models import build_model, example_input, forward_errors, input_size_of
from explorer.spec import ModelSpec


def foldable(module: nn.Module) -> bool:
    return callable(getattr(module, "fold", None))


def fold_model(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `model` with every foldable block replaced by its folded layer."""
    folded = copy.deepcopy(model)
    names = [name for name, m in folded.named_modules() if name and foldable(m)]
    count = 0
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = folded.get_submodule(parent_name) if parent_name else folded
        block = getattr(parent, attr, None)
        if block is not None and foldable(block):
            setattr(parent, attr, block.fold())
            count += 1
    return folded, count


def _cost(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    total = trace_costs(model, x).total
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "macs": total.macs, "memory_access_bytes": total.memory_access_bytes}


def fold_report(spec: ModelSpec) -> dict[str, Any]:
    size = input_size_of(spec)
    with forward_errors(spec, size):
        model = build_model(spec, device="cpu")
        _randomise_batch_norms(model)
        folded, count = fold_model(model)
        if count == 0:
            raise ExplorerError(f"{spec.arch} has no foldable blocks: swap in doconv, repvgg or dbb first")
        folded.eval()
        x = example_input(spec, "cpu")
        with torch.no_grad():
            before = model(x)
            after = folded(x)
        diff = (before - after).abs().max().item()
        return {
            "arch": spec.arch,
            "swaps": list(spec.swaps),
            "folded": count,
            "train": _cost(model, x),
            "folded_cost": _cost(folded, x),
            "max_abs_diff": diff,
            "output_scale": before.abs().max().item(),
            "dtype": "float32",
        }


def _randomise_batch_norms(model: nn.Module, seed: int = 0):
    """Fresh BNs have mean 0 / var 1, which would hide a folding mistake: give them real statistics."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
