"""Build an nn.Module from a ModelSpec: torchvision, timm or native, on any device (meta included)."""
from __future__ import annotations

import contextlib
import functools
import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from explorer.blocks.options import BUILDER_OPTIONS, show_value
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


@dataclass(frozen=True, eq=False)
class ResolvedSpec:
    """A spec resolved against the catalog once, where it enters the engine: the catalog variant its arch
    names and the input it takes per sample (the spec's own, else the variant's native size). The engine's
    steps (input check, builder options, build, example input, forward errors) read these instead of each
    resolving the arch again; each of them also still takes a plain ModelSpec."""
    spec: ModelSpec
    variant: Variant
    input_size: tuple[int, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(batch, *input_size): the shape of the example input."""
        return (self.spec.batch, *self.input_size)

    def with_batch(self, batch: int) -> ResolvedSpec:
        """The same model at another batch size (nothing to resolve again)."""
        return ResolvedSpec(self.spec.with_(batch=batch), self.variant, self.input_size)

    # One spec resolves to one variant and input: equal (and cached, e.g. by real_build_bytes) as its spec is.
    def __eq__(self, other) -> bool:
        return isinstance(other, ResolvedSpec) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash((ResolvedSpec, self.spec))


def resolve_spec(spec: ModelSpec | ResolvedSpec) -> ResolvedSpec:
    """The one place a spec is resolved against the catalog (an already resolved one is returned as is)."""
    if isinstance(spec, ResolvedSpec):
        return spec
    variant = resolve(spec.arch)
    return ResolvedSpec(spec, variant, tuple(spec.input_size or native_input_size(variant)))


def input_size_of(spec: ModelSpec | ResolvedSpec, variant: Variant | None = None) -> tuple[int, ...]:
    if isinstance(spec, ResolvedSpec):
        return spec.input_size
    return spec.input_size or native_input_size(variant or resolve(spec.arch))


# The builder options a person may set, per library (torchvision: per task). Everything else is refused by
# name: pretrained / weights / weights_backbone would download, checkpoint_path / pretrained_cfg would read
# server files, and architecture-defining arguments (depths, widths, blocks) are what the catalog is for.
# Each name has a type and range in explorer.blocks.options.BUILDER_OPTIONS.
TORCHVISION_OPTIONS = {
    "classification": ("num_classes", "dropout", "attention_dropout", "stochastic_depth_prob", "image_size",
                       "width_mult", "aux_logits", "transform_input"),
    "detection": ("num_classes", "min_size", "max_size", "box_detections_per_img", "detections_per_img",
                  "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "topk_candidates", "num_keypoints"),
    "segmentation": ("num_classes", "aux_loss"),
    "video": ("num_classes", "dropout", "attention_dropout", "stochastic_depth_prob"),
}
TIMM_OPTIONS = ("num_classes", "in_chans", "img_size", "global_pool", "output_stride", "drop_rate", "drop_path_rate",
                "drop_block_rate", "proj_drop_rate", "attn_drop_rate", "pos_drop_rate")


def _forwarded_native_options() -> dict[str, tuple[str, ...]]:
    """Native builders that take **kwargs: the options they pass on (to their model class, or to
    torchvision's Faster R-CNN for Libra R-CNN)."""
    from explorer.native.gcn import GCN
    from explorer.native.sequence import Bert, Seq2SeqLSTM, Transformer

    def init_options(cls) -> tuple[str, ...]:
        return tuple(n for n in inspect.signature(cls.__init__).parameters if n != "self")

    return {"transformer_base": init_options(Transformer), "bert_base": init_options(Bert),
            "bert_large": init_options(Bert), "seq2seq_lstm": init_options(Seq2SeqLSTM), "gcn": init_options(GCN),
            "libra_rcnn": ("num_classes", "min_size", "max_size", "box_detections_per_img",
                           "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")}


@functools.lru_cache(maxsize=None)
def native_options(name: str) -> tuple[str, ...]:
    """The keyword options a native builder accepts (those a catalog variant fixes excluded)."""
    builder = NATIVE_BUILDERS.get(name)
    if builder is None:
        return ()
    fixed = builder.keywords if isinstance(builder, functools.partial) else {}
    function = builder.func if isinstance(builder, functools.partial) else builder
    names, forwards = [], False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            forwards = True
        elif parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY) and parameter.name not in fixed:
            names.append(parameter.name)
    if forwards:
        names += [n for n in _forwarded_native_options().get(name, ()) if n not in names]
    return tuple(names)


def allowed_options(variant: Variant) -> tuple[tuple[str, ...], str]:
    """(the option names a model takes, who takes them, for messages)."""
    if variant.library == "torchvision":
        task = torchvision_task(variant) or "classification"
        return TORCHVISION_OPTIONS[task], f"torchvision {task} models"
    if variant.library == "timm":
        return TIMM_OPTIONS, "timm models"
    return native_options(variant.name), variant.id


def check_options(spec: ModelSpec | ResolvedSpec, variant: Variant | None = None):
    """Refuse, before any builder runs, an option the model's library does not allow or a value out of range."""
    if isinstance(spec, ResolvedSpec):
        spec, variant = spec.spec, spec.variant
    variant = variant or resolve(spec.arch)
    allowed, who = allowed_options(variant)
    for name, value in spec.options:
        if name not in allowed:
            shown = show_value(name)
            raise ExplorerError(f"cannot build {spec.arch}: option {shown} is not allowed; "
                                + (f"allowed for {who}: {', '.join(allowed)}" if allowed else f"{who} takes no options"))
        rule = BUILDER_OPTIONS.get(name)
        if rule is None:  # a native builder's option without a declared range (a test keeps this list empty)
            raise ExplorerError(f"cannot build {spec.arch}: option {name} has no declared range, so it is not allowed")
        if not rule.accepts(value):
            raise ExplorerError(f"cannot build {spec.arch}: option {name}={show_value(value)} is refused: "
                                f"it needs {rule.requirement(name)}")


def _builder_kwargs(resolved: ResolvedSpec) -> dict[str, Any]:
    variant, spec = resolved.variant, resolved.spec
    kwargs = {**dict(variant.default_options), **spec.options_dict}  # the catalog row's defaults, then the spec's
    if variant.library == "torchvision":
        task = torchvision_task(variant)
        if task in ("detection", "segmentation"):
            # Their builders default to downloading ImageNet backbone weights: never at run time.
            kwargs.setdefault("weights_backbone", None)
        if task == "classification" and variant.name.startswith("vit_"):
            # torchvision builds ViT for one resolution (its 384/518 weights set image_size likewise).
            size = resolved.input_size
            if len(size) == 3 and size[1] == size[2]:
                kwargs.setdefault("image_size", size[1])
    if variant.library == "timm":
        cfg = timm_pretrained_cfg(variant.name)
        size = resolved.input_size
        if cfg.get("fixed_input_size") and len(size) == 3 and tuple(size) != tuple(cfg.get("input_size", size)):
            # timm builds these (ViT, Swin, CoAtNet, ...) for one resolution: build for the one asked.
            kwargs.setdefault("img_size", tuple(size[1:]))
    return kwargs


def _construct_with_swaps(variant: Variant, kwargs: dict[str, Any], swaps, input_size) -> nn.Module:
    model = _construct(variant, kwargs)
    _apply_swaps(model, swaps, input_size)
    return model


def _apply_swaps(model: nn.Module, swaps, input_size) -> list[str]:
    if not swaps:
        return []
    from explorer.swaps import apply_swaps

    return apply_swaps(model, swaps, input_size)


class _LargeTensorsOnMeta(TorchFunctionMode):
    """Builders that compute with tensors while they build (torchvision's RegNet reads its stage widths with
    .tolist()) cannot run under torch.device("meta"). Under this mode they get real tensors only for small
    factory calls (at most SMALL elements: such bookkeeping, a bias, a norm's scale); every larger one is made
    on the meta device, so the build takes no memory for its weights whatever size it asks for."""

    SMALL = 4096

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors():
            probe = func(*args, **{**kwargs, "device": "meta"})  # the shape, without the memory
            if not isinstance(probe, torch.Tensor) or probe.numel() > self.SMALL:
                return probe
        return func(*args, **kwargs)


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


def build_model(spec: ModelSpec | ResolvedSpec, device: str | torch.device = "cpu") -> nn.Module:
    """The model in eval mode with random weights on `device`.

    On 'meta' the weights take no memory; builders that compute with tensors at
    construction time (e.g. torchvision's RegNet) get real tensors only for their
    small bookkeeping (see _LargeTensorsOnMeta). On any other device the build is
    first sized on 'meta' and refused above the limit (check_build_size).
    """
    resolved = resolve_spec(spec)
    spec, variant, size = resolved.spec, resolved.variant, resolved.input_size
    check_input(resolved)
    check_options(resolved)
    kwargs = _builder_kwargs(resolved)
    device = torch.device(device)
    if device.type != "meta":
        check_build_size(resolved)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if device.type == "meta":
                try:
                    with torch.device("meta"):
                        model = _construct_with_swaps(variant, kwargs, spec.swaps, size)
                except (NotImplementedError, RuntimeError):
                    with _LargeTensorsOnMeta():
                        model = _construct(variant, kwargs)
                    model = model.to("meta")
                    with torch.device("meta"):
                        _apply_swaps(model, spec.swaps, size)
            else:
                # Same random weights every time, so data-dependent costs (detection proposals) repeat.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = _construct_with_swaps(variant, kwargs, spec.swaps, size).to(device)
        _check_patch_grid(model, resolved)
    except ExplorerError:
        raise
    except TypeError as exc:
        raise ExplorerError(f"cannot build {spec.arch} with options {spec.options_dict}: {one_line(exc)}") from None
    except Exception as exc:  # a library's own validation (bad option values, ...)
        if "image_size" in kwargs and "image_size" not in spec.options_dict:
            raise ExplorerError(f"{spec.arch} cannot take input {format_shape(size)}: {one_line(exc)}") from None
        raise ExplorerError(f"cannot build {spec.arch}: {one_line(exc)}") from None
    return model.eval()


_INPUT_DIMS = {"image": ("C,H,W", "3,224,224"), "volume": ("C,D,H,W", "1,96,96,96")}


def check_input(spec: ModelSpec | ResolvedSpec, variant: Variant | None = None):
    """An image model takes C,H,W and a volume model C,D,H,W: say so before a library says something obscure."""
    if isinstance(spec, ResolvedSpec):
        spec, variant = spec.spec, spec.variant
    variant = variant or resolve(spec.arch)
    form = _INPUT_DIMS.get(variant.input_kind)
    if form and spec.input_size is not None and len(spec.input_size) != len(form[0].split(",")):
        raise ExplorerError(f"{spec.arch} takes {'an' if variant.input_kind == 'image' else 'a'} {variant.input_kind}: "
                            f"give its input as {form[0]} ({len(form[0].split(','))} numbers, e.g. {form[1]}), "
                            f"not {format_shape(spec.input_size)}")


def _check_patch_grid(model: nn.Module, resolved: ResolvedSpec):
    """timm's patch embeddings silently drop the pixels past the last whole patch: refuse such inputs."""
    _check_torchvision_swin_grid(model, resolved)
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    spec, size = resolved.spec, resolved.input_size
    # Only non-overlapping patches (kernel = stride): PVT v2's overlapping 7×7/4 embedding takes any size.
    if not isinstance(proj, nn.Conv2d) or proj.stride != proj.kernel_size or len(size) != 3:
        return
    patch = proj.kernel_size
    if size[1] % patch[0] or size[2] % patch[1]:
        raise ExplorerError(f"{spec.arch} cannot take input {format_shape((spec.batch, *size))}: "
                            f"{size[1]}×{size[2]} is not a whole number of its {patch[0]}×{patch[1]} patches")


def _check_torchvision_swin_grid(model: nn.Module, resolved: ResolvedSpec):
    """torchvision's Swin (v1, v2) cuts the pixels past the last whole 4×4 patch without a word (225×225 is
    costed as 224×224) and pads odd maps before each patch merging: refuse sides that are not a multiple of
    patch × 2^(stages − 1) (32 for swin_t), as timm's Swin does."""
    from torchvision.models.swin_transformer import SwinTransformer

    spec, size = resolved.spec, resolved.input_size
    if not isinstance(model, SwinTransformer) or len(size) != 3:
        return
    patch = model.features[0][0].stride[0]
    merges = sum(type(m).__name__.startswith("PatchMerging") for m in model.modules())
    step = patch * 2 ** merges
    height, width = size[1:]
    if height % step or width % step:
        below = (max(step, height // step * step), max(step, width // step * step))
        above = (-(-height // step) * step, -(-width // step) * step)
        examples = " or ".join(dict.fromkeys(f"{h}×{w}" for h, w in (below, above)))
        raise ExplorerError(f"{spec.arch} cannot take input {format_shape((spec.batch, *size))}: torchvision's Swin "
                            f"needs sides that are multiples of {step} (its {patch}×{patch} patches, merged "
                            f"{merges} times) or it silently drops pixels; sizes that work: {examples}")


def swapped_modules(spec: ModelSpec) -> list[str]:
    """Names of the modules the spec's swaps replaced or changed, in order (built on the meta device)."""
    model = build_model(spec.with_(swaps=()), "meta")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(dict.fromkeys(_apply_swaps(model, spec.swaps, input_size_of(spec))))


# --- the size of a real build ---------------------------------------------------------------------------

MAX_BUILD_BYTES = 4 * 1024 ** 3  # 4 GiB; EXPLORER_MAX_BUILD_BYTES overrides it


def max_build_bytes() -> int:
    text = os.environ.get("EXPLORER_MAX_BUILD_BYTES", "").strip()
    if not text:
        return MAX_BUILD_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ExplorerError(f"EXPLORER_MAX_BUILD_BYTES must be a positive whole number of bytes, got {show_value(text)}")
    return limit


@functools.lru_cache(maxsize=256)
def real_build_bytes(spec: ModelSpec | ResolvedSpec) -> tuple[int, int]:
    """(bytes of the parameters and buffers, bytes of one input) that building `spec` for real takes, from a
    meta build: numel × element size of every tensor (fp32 weights: 4 bytes each)."""
    model = build_model(spec, "meta")
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    inputs = example_input(spec, "meta")
    return weights, inputs.numel() * inputs.element_size()


def check_build_size(spec: ModelSpec | ResolvedSpec):
    """Refuse a real (CPU or GPU) build whose weights, buffers and input would take more than the limit.
    Every non-meta build_model goes through here, so no request can make the server allocate unchecked."""
    weights, inputs = real_build_bytes(spec)
    spec = spec.spec if isinstance(spec, ResolvedSpec) else spec
    limit = max_build_bytes()
    if weights + inputs > limit:
        raise ExplorerError(
            f"{spec.arch} is too large to build here: its parameters and buffers take about {_gb(weights)} "
            f"and its input {_gb(inputs)}, over the limit of {_gb(limit)} for a real build "
            f"(EXPLORER_MAX_BUILD_BYTES)")


def _gb(size: int) -> str:
    return f"{size / 1e9:.3g} GB"


def example_input(spec: ModelSpec | ResolvedSpec, device: str | torch.device = "cpu", dtype=torch.float32) -> torch.Tensor:
    """The model's own kind of input: images / volumes / node features as floats, token ids as integers."""
    resolved = resolve_spec(spec)
    variant, shape = resolved.variant, resolved.input_shape
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
def forward_errors(spec: ModelSpec | ResolvedSpec, size: tuple[int, ...] | None = None):
    """Turn a model's refusal of an input into a one-line ExplorerError (`size`: the resolved spec's, unless given)."""
    if size is None:
        size = input_size_of(spec)
    if isinstance(spec, ResolvedSpec):
        spec = spec.spec
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
