"""Loading weights into a built model: the libraries' own pretrained weights (cache first), or a checkpoint.

Nothing is downloaded unless the caller allows it. Checkpoints load with
`torch.load(..., weights_only=True)` or safetensors; missing, unexpected and mismatched keys are
reported, never fatal.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from explorer.catalog import Variant
from explorer.errors import ExplorerError


def torchvision_cache_path(variant: Variant) -> Path:
    import torchvision.models as tvm

    weights = tvm.get_model_weights(variant.name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_pretrained(model: nn.Module, variant: Variant, allow_download: bool = False) -> dict[str, Any]:
    """Load the library's default pretrained weights into `model` (built by us, same architecture)."""
    if variant.library == "torchvision":
        import torchvision.models as tvm

        try:
            weights = tvm.get_model_weights(variant.name).DEFAULT
        except (ValueError, KeyError):
            raise ExplorerError(f"torchvision ships no pretrained weights for {variant.name}") from None
        path = torchvision_cache_path(variant)
        if not path.exists() and not allow_download:
            raise ExplorerError(f"pretrained weights for {variant.name} are not in the cache ({path}); "
                                "allow the download to fetch them")
        state = weights.get_state_dict(progress=False, check_hash=False) if not path.exists() else \
            torch.load(path, map_location="cpu", weights_only=True)
        return load_state(model, state, source=f"torchvision {weights}")
    if variant.library == "timm":
        import timm

        previous = os.environ.get("HF_HUB_OFFLINE")
        if not allow_download:
            os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            reference = timm.create_model(variant.name, pretrained=True)
        except Exception as exc:  # offline and not cached, or no weights for this name
            raise ExplorerError(f"timm pretrained weights for {variant.name} are not available here: "
                                f"{str(exc).splitlines()[0][:160]}") from None
        finally:
            if previous is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = previous
        return load_state(model, reference.state_dict(), source=f"timm {variant.name}")
    raise ExplorerError(f"{variant.id} has no library weights; load a checkpoint instead")


def read_checkpoint(data: bytes, filename: str) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or .pt/.pth loaded with weights_only=True."""
    name = filename.lower()
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load

            state = load(data)
        elif name.endswith((".pt", ".pth", ".bin")):
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        else:
            raise ExplorerError("checkpoints must be .safetensors, .pt or .pth files")
    except ExplorerError:
        raise
    except Exception as exc:
        raise ExplorerError(f"cannot read {filename} as a weights-only checkpoint: {str(exc).splitlines()[0][:200]}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExplorerError(f"{filename} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unwrap_keys(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint keys moved under the wrappers attention swaps add: a module P that a swap wrapped in
    Sequential(P, attention) keeps its weights under P.0. A prefix P counts as wrapped only when every
    checkpoint key under it exists in the model under P.0 with the same shape."""
    wrapped: dict[str, bool] = {}

    def is_wrapped(prefix: str) -> bool:
        if prefix not in wrapped:
            under = [k for k in state if k.startswith(prefix + ".")]
            moved = [f"{prefix}.0.{k[len(prefix) + 1:]}" for k in under]
            wrapped[prefix] = bool(under) and all(m in own and own[m].shape == state[k].shape
                                                  for k, m in zip(under, moved))
        return wrapped[prefix]

    # Look for wrapped prefixes among the keys the model lacks; then move every key under one (a moved
    # key may collide with a different tensor of the same name, e.g. a BN weight with the conv after it).
    found = set()
    for key in state:
        if key not in own:
            parts = key.split(".")
            prefix = next((".".join(parts[:i]) for i in range(1, len(parts)) if is_wrapped(".".join(parts[:i]))), None)
            if prefix:
                found.add(prefix)
    out = {}
    for key, value in state.items():
        prefix = next((p for p in found if key.startswith(p + ".")), None)
        out[f"{prefix}.0.{key[len(prefix) + 1:]}" if prefix else key] = value
    return out


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Load what fits (a layer a swap wrapped is found under its wrapper); report what did not."""
    own = model.state_dict()
    state = _unwrap_keys(state, own)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    result = model.load_state_dict(usable, strict=False)
    return {
        "source": source,
        "loaded": len(usable),
        "missing": sorted(set(result.missing_keys)),
        "unexpected": sorted(k for k in state if k not in own),
        "mismatched": [{"key": k, "checkpoint": list(state[k].shape), "model": list(own[k].shape)} for k in mismatched],
    }
