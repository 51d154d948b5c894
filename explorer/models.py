"""Build an nn.Module from a ModelSpec: torchvision, timm or native, on any device (meta included)."""
from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
import torch.nn as nn

from explorer.catalog import Variant, native_input_size, resolve, timm_pretrained_cfg, torchvision_task
from explorer.errors import ExplorerError
from explorer.native import NATIVE_BUILDERS
from explorer.spec import ModelSpec


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def dtype_of(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ExplorerError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


class ListInputWrapper(nn.Module):
    """torchvision detection models take a list of images; this lets them take a batch tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model(list(images))


def input_size_of(spec: ModelSpec, variant: Variant | None = None) -> tuple[int, ...]:
    return spec.input_size or native_input_size(variant or resolve(spec.arch))


def _builder_kwargs(variant: Variant, spec: ModelSpec) -> dict[str, Any]:
    kwargs = spec.options_dict
    if variant.library == "torchvision":
        task = torchvision_task(variant)
        if task in ("detection", "segmentation"):
            # Their builders default to downloading ImageNet backbone weights: never at run time.
            kwargs.setdefault("weights_backbone", None)
        if task == "classification" and variant.name.startswith("vit_"):
            # torchvision builds ViT for one resolution (its 384/518 weights set image_size likewise).
            size = input_size_of(spec, variant)
            if len(size) == 3 and size[1] == size[2]:
                kwargs.setdefault("image_size", size[1])
    if variant.library == "timm":
        cfg = timm_pretrained_cfg(variant.name)
        size = input_size_of(spec, variant)
        if cfg.get("fixed_input_size") and len(size) == 3 and tuple(size) != tuple(cfg.get("input_size", size)):
            # timm builds these (ViT, Swin, CoAtNet, ...) for one resolution: build for the one asked.
            kwargs.setdefault("img_size", tuple(size[1:]))
    return kwargs


def _construct_with_swaps(variant: Variant, kwargs: dict[str, Any], swaps) -> nn.Module:
    model = _construct(variant, kwargs)
    if swaps:
        from explorer.swaps import apply_swaps

        apply_swaps(model, swaps)
    return model


def _construct(variant: Variant, kwargs: dict[str, Any]) -> nn.Module:
    if variant.library == "torchvision":
        import torchvision.models as tvm

        model = tvm.get_model(variant.name, weights=None, **kwargs)
        if torchvision_task(variant) == "detection":
            model = ListInputWrapper(model)
        return model
    if variant.library == "timm":
        import timm

        return timm.create_model(variant.name, pretrained=False, **kwargs)
    if variant.name not in NATIVE_BUILDERS:
        raise ExplorerError(f"{variant.id} needs a native implementation that is not written yet")
    return NATIVE_BUILDERS[variant.name](**kwargs)


def build_model(spec: ModelSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The model in eval mode with random weights on `device`.

    On 'meta' the weights take no memory; builders that compute with tensors at
    construction time (e.g. torchvision's RegNet) are built on the CPU and moved.
    """
    variant = resolve(spec.arch)
    check_input(spec, variant)
    kwargs = _builder_kwargs(variant, spec)
    device = torch.device(device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if device.type == "meta":
                try:
                    with torch.device("meta"):
                        model = _construct_with_swaps(variant, kwargs, spec.swaps)
                except (NotImplementedError, RuntimeError):
                    model = _construct_with_swaps(variant, kwargs, spec.swaps).to("meta")
            else:
                # Same random weights every time, so data-dependent costs (detection proposals) repeat.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = _construct_with_swaps(variant, kwargs, spec.swaps).to(device)
        _check_patch_grid(model, spec, variant)
    except ExplorerError:
        raise
    except TypeError as exc:
        raise ExplorerError(f"cannot build {spec.arch} with options {spec.options_dict}: {one_line(exc)}") from None
    except Exception as exc:  # a library's own validation (bad option values, ...)
        if "image_size" in kwargs and "image_size" not in spec.options_dict:
            size = format_shape(input_size_of(spec, variant))
            raise ExplorerError(f"{spec.arch} cannot take input {size}: {one_line(exc)}") from None
        raise ExplorerError(f"cannot build {spec.arch}: {one_line(exc)}") from None
    return model.eval()


_INPUT_DIMS = {"image": ("C,H,W", "3,224,224"), "volume": ("C,D,H,W", "1,96,96,96")}


def check_input(spec: ModelSpec, variant: Variant | None = None):
    """An image model takes C,H,W and a volume model C,D,H,W: say so before a library says something obscure."""
    variant = variant or resolve(spec.arch)
    form = _INPUT_DIMS.get(variant.input_kind)
    if form and spec.input_size is not None and len(spec.input_size) != len(form[0].split(",")):
        raise ExplorerError(f"{spec.arch} takes {'an' if variant.input_kind == 'image' else 'a'} {variant.input_kind}: "
                            f"give its input as {form[0]} ({len(form[0].split(','))} numbers, e.g. {form[1]}), "
                            f"not {format_shape(spec.input_size)}")


def _check_patch_grid(model: nn.Module, spec: ModelSpec, variant: Variant):
    """timm's patch embeddings silently drop the pixels past the last whole patch: refuse such inputs."""
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    size = input_size_of(spec, variant)
    # Only non-overlapping patches (kernel = stride): PVT v2's overlapping 7×7/4 embedding takes any size.
    if not isinstance(proj, nn.Conv2d) or proj.stride != proj.kernel_size or len(size) != 3:
        return
    patch = proj.kernel_size
    if size[1] % patch[0] or size[2] % patch[1]:
        raise ExplorerError(f"{spec.arch} cannot take input {format_shape((spec.batch, *size))}: "
                            f"{size[1]}×{size[2]} is not a whole number of its {patch[0]}×{patch[1]} patches")


def swapped_modules(spec: ModelSpec) -> list[str]:
    """Names of the modules the spec's swaps replaced or changed, in order (built on the meta device)."""
    from explorer.swaps import apply_swaps

    model = build_model(spec.with_(swaps=()), "meta")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(dict.fromkeys(apply_swaps(model, spec.swaps)))


def example_input(spec: ModelSpec, device: str | torch.device = "cpu", dtype=torch.float32) -> torch.Tensor:
    """The model's own kind of input: images / volumes / node features as floats, token ids as integers."""
    variant = resolve(spec.arch)
    size = input_size_of(spec, variant)
    shape = (spec.batch, *size)
    meta = torch.device(device).type == "meta"
    generator = torch.Generator().manual_seed(0)
    if variant.input_kind == "tokens":
        if meta:
            return torch.empty(shape, device=device, dtype=torch.long)
        return torch.randint(0, variant.vocab_size or 1000, shape, generator=generator).to(device)
    if meta:
        return torch.empty(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, dtype=dtype).to(device)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


@contextlib.contextmanager
def forward_errors(spec: ModelSpec, size: tuple[int, ...]):
    """Turn a model's refusal of an input into a one-line ExplorerError."""
    try:
        yield
    except ExplorerError:
        raise
    except (RuntimeError, ValueError, AssertionError, IndexError, TypeError) as exc:
        if is_out_of_memory(exc):
            raise  # the device's limit, not the input's shape: the caller reports it

        raise ExplorerError(f"{spec.arch} cannot take input {format_shape((spec.batch, *size))}: {one_line(exc)}") from None


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def format_shape(shape) -> str:
    return "×".join(str(s) for s in shape)
