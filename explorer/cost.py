"""The cost engine: parameters, MACs, memory access cost and activations, per layer and in total.

One forward pass runs under a TorchDispatchMode that sees every aten op. Each op is
costed once and attributed to every module on the call stack (so a block's figures
include its children) and to the innermost module as its "self" cost.

Definitions (units are part of the names):
- MACs: multiply-accumulates of convolutions, matrix products, attention, deformable
  conv and grid sampling. FLOPs = 2 × MACs. Bias additions are not counted, as in
  torchvision's `_ops` metadata.
- elementwise ops: one per output element of pointwise ops (activations, additions,
  scaling); one per input element of normalisation, softmax, pooling and reductions.
  Reported separately, never folded into MACs.
- memory access cost: elements read (distinct input tensors, weights included) plus
  elements written (outputs) by every op that is not a view; bytes use each tensor's
  dtype. For a stride-1 "same" conv without bias this is hw(cᵢ+cₒ) + k²cᵢcₒ elements,
  the ShuffleNetV2 / VoVNet quantity. It is NOT "MACs".
- activations: elements written by the MAC ops (conv/linear/attention outputs), the
  definition of Radosavovic et al. (RegNet); per layer, the elements of the module's output.
- uncounted ops: ops with no formula here, listed by name and count (their memory
  traffic is still counted).
"""
from __future__ import annotations

import collections
import copy
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.utils.flop_counter as flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from explorer.models import build_model, dtype_of, example_input, forward_errors, resolve_spec
from explorer.reports import CostReport, LayerRow
from explorer.spec import ModelSpec

aten = torch.ops.aten


# --- MAC formulas -----------------------------------------------------------------------------

def _sdpa_macs(query, key, value, *args, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape) // 2


def _native_mha_macs(query, key, value, embed_dim, num_head, qkv_weight, *args, **kwargs) -> int:
    # nn.MultiheadAttention's fused fast path: q/k/v projections, QK^T, AV, output projection.
    batch, lq, e = query.shape
    lk = key.shape[1]
    projections = batch * (lq + 2 * lk) * e * e + batch * lq * e * e
    attention = 2 * batch * lq * lk * e
    return projections + attention


def _deform_conv2d_macs(inp, weight, offset, mask, bias, *args, **kwargs) -> int:
    use_mask = bool(args[-1]) if args else False
    n, c_in = inp.shape[:2]
    c_out, c_in_per_group, kh, kw = weight.shape
    h_out, w_out = offset.shape[-2:]
    taps = n * h_out * w_out * kh * kw
    conv = taps * c_out * c_in_per_group
    bilinear = taps * c_in * 4  # each sampled value interpolates 4 neighbours
    modulation = taps * c_in if use_mask else 0
    return conv + bilinear + modulation


_GRID_SAMPLE_TAPS = {0: 4, 1: 0, 2: 16}  # bilinear, nearest, bicubic


def _grid_sampler_macs(inp, grid, interpolation_mode, *args, **kwargs) -> int:
    n, c = inp.shape[:2]
    points = math.prod(grid.shape[1:-1])
    return n * c * points * _GRID_SAMPLE_TAPS.get(int(interpolation_mode), 4)


def _affine_grid_macs(theta, size, *args, **kwargs) -> int:
    n = size[0]
    points = math.prod(size[2:])
    return n * points * theta.shape[-1] * theta.shape[-2]


def _roi_align_macs(inp, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, *args, **kwargs) -> int:
    # Each output bin averages sampling_ratio² bilinear samples (4 taps each); an adaptive
    # ratio (<= 0) depends on the boxes, and torchvision's detectors use 2.
    samples = max(int(sampling_ratio), 1) ** 2 if int(sampling_ratio) > 0 else 4
    return rois.shape[0] * inp.shape[1] * pooled_height * pooled_width * samples * 4


def _mkldnn_rnn_layer_macs(inp, w_ih, w_hh, *args, **kwargs) -> int:
    # One RNN layer and direction (oneDNN's fused kernel on the CPU): every time step multiplies the
    # input by W_ih (gates×I) and the hidden state by W_hh (gates×H).
    steps = inp.numel() // inp.shape[-1]
    return steps * (w_ih.numel() + w_hh.numel())


def _mv_macs(mat, vec, *args, **kwargs) -> int:
    return mat.shape[0] * mat.shape[1]


def _addmv_macs(bias, mat, vec, *args, **kwargs) -> int:
    return mat.shape[0] * mat.shape[1]


def _dot_macs(a, b, *args, **kwargs) -> int:
    return a.shape[0]


def _flop_registry_macs(func):
    formula = flop_counter.flop_registry[func]  # takes raw args and `out_val`, returns FLOPs

    def macs(*args, **kwargs):
        return formula(*args, **kwargs) // 2

    return macs


def _build_mac_formulas():
    formulas = {}
    for func in flop_counter.flop_registry:
        if isinstance(func, torch._ops.OpOverloadPacket):
            for name in func.overloads():
                formulas[getattr(func, name)] = _flop_registry_macs(func)
        elif isinstance(func, torch._ops.OpOverload):
            formulas[func] = _flop_registry_macs(func)
    extra = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_macs,
        "_scaled_dot_product_attention_math": _sdpa_macs,
        "_native_multi_head_attention": _native_mha_macs,
        "grid_sampler_2d": _grid_sampler_macs,
        "affine_grid_generator": _affine_grid_macs,
        "mv": _mv_macs,
        "addmv": _addmv_macs,
        "dot": _dot_macs,
        "mkldnn_rnn_layer": _mkldnn_rnn_layer_macs,
    }
    for name, formula in extra.items():
        packet = getattr(aten, name, None)
        if packet is not None:
            for overload in packet.overloads():
                formulas[getattr(packet, overload)] = formula
    import torchvision  # noqa: F401  (registers the torchvision:: ops)

    formulas[torch.ops.torchvision.deform_conv2d.default] = _deform_conv2d_macs
    formulas[torch.ops.torchvision.roi_align.default] = _roi_align_macs
    return formulas


# Normalisation / softmax / pooling ops: one elementwise op per INPUT element.
_PER_INPUT_ELEMENT = {
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "native_layer_norm", "native_group_norm", "_softmax", "_safe_softmax", "_log_softmax",
    "max_pool1d", "max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d",
    "avg_pool3d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "_local_scalar_dense", "cumsum", "_weight_norm_interface", "rms_norm",
    "_fused_rms_norm", "native_dropout", "_pdist_forward", "_cdist_forward", "im2col", "col2im",
}
# Pointwise ops without the `pointwise` tag: one elementwise op per OUTPUT element.
_PER_OUTPUT_ELEMENT = {
    "hardswish", "hardswish_", "hardsigmoid_", "mish", "mish_", "softplus", "elu", "elu_",
    "leaky_relu_", "gelu_", "upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bilinear2d_aa",
    "upsample_linear1d", "upsample_trilinear3d", "prelu", "_prelu_kernel", "glu", "silu_", "rsub",
}
# Ops that move or create data without arithmetic: no compute, memory traffic only.
_DATA_MOVEMENT = {
    "cat", "stack", "clone", "copy_", "_to_copy", "constant_pad_nd", "reflection_pad2d",
    "replication_pad2d", "index", "index_select", "gather", "scatter", "scatter_add", "roll", "flip",
    "repeat", "embedding", "new_zeros", "new_ones", "new_full", "new_empty", "new_empty_strided",
    "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "fill_", "zero_", "arange",
    "scalar_tensor", "lift_fresh", "lift_fresh_copy", "_unsafe_index", "upsample_nearest1d",
    "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact2d", "index_put_", "index_put",
    "masked_scatter", "tril", "triu", "_pad_circular", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "linspace", "tensor", "bernoulli_", "rand", "randn",
    "randint", "normal_", "uniform_", "empty", "empty_like", "empty_strided", "set_", "resize_",
    "_reshape_alias", "unfold", "diag_embed", "expand_copy", "slice_scatter", "select_scatter",
    "copy", "alias_copy", "detach_copy", "max_unpool2d", "one_hot", "_unique2",
    "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk",
}
# These allocate without writing anything.
_NO_TRAFFIC = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "set_", "resize_"}
# Ops whose result is a view even though the schema does not say so.
_VIEW_LIKE = {"_unsafe_view", "_reshape_alias", "lift_fresh", "as_strided_"}


_OP_NAMES: dict[Any, str] = {}  # op overload -> its name without the namespace; asked for several times per op
_IS_VIEW: dict[Any, bool] = {}


def _op_name(func) -> str:
    name = _OP_NAMES.get(func)
    if name is None:
        name = _OP_NAMES[func] = func._schema.name.split("::", 1)[-1]
    return name


def is_view(func) -> bool:
    """Whether an aten op returns a view of its input (shares its storage): no bytes of its own."""
    view = _IS_VIEW.get(func)
    if view is None:
        returns = func._schema.returns
        view = _IS_VIEW[func] = (_op_name(func) in _VIEW_LIKE or torch.Tag.inplace_view in func.tags or (
            bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)))
    return view


# aten op -> its MAC formula; an op in this table has multiply-accumulates (graph and memory read it too).
MAC_FORMULAS = _build_mac_formulas()


@dataclass
class Totals:
    macs: int = 0
    elementwise_ops: int = 0
    read_elements: int = 0
    write_elements: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    activations: int = 0  # elements written by MAC ops

    def add(self, other: "Totals"):  # field by field: called for every op and every module on the stack
        self.macs += other.macs
        self.elementwise_ops += other.elementwise_ops
        self.read_elements += other.read_elements
        self.write_elements += other.write_elements
        self.read_bytes += other.read_bytes
        self.write_bytes += other.write_bytes
        self.activations += other.activations

    @property
    def memory_access_elements(self) -> int:
        return self.read_elements + self.write_elements

    @property
    def memory_access_bytes(self) -> int:
        return self.read_bytes + self.write_bytes


@dataclass
class _OpCost:
    category: str  # "mac", "elementwise", "data", "uncounted"
    totals: Totals


def _tensors(tree) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(tree)
    seen, out = set(), []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor) and id(leaf) not in seen:
            seen.add(id(leaf))
            out.append(leaf)
    return out


def cost_of_op(func, args, kwargs, out) -> _OpCost:
    """Cost one aten op call from its arguments' and outputs' shapes."""
    name = _op_name(func)
    totals = Totals()
    inputs = _tensors((args, kwargs))
    outputs = _tensors(out)
    if name not in _NO_TRAFFIC:
        for t in inputs:
            totals.read_elements += t.numel()
            totals.read_bytes += t.numel() * t.element_size()
        for t in outputs:
            totals.write_elements += t.numel()
            totals.write_bytes += t.numel() * t.element_size()
    if func in MAC_FORMULAS:
        totals.macs = int(MAC_FORMULAS[func](*args, out_val=out, **kwargs))
        totals.activations = outputs[0].numel() if outputs else 0
        return _OpCost("mac", totals)
    if name in _PER_INPUT_ELEMENT or (torch.Tag.reduction in func.tags):
        totals.elementwise_ops = inputs[0].numel() if inputs else 0
        return _OpCost("elementwise", totals)
    if torch.Tag.pointwise in func.tags or name in _PER_OUTPUT_ELEMENT:
        totals.elementwise_ops = outputs[0].numel() if outputs else 0
        return _OpCost("elementwise", totals)
    if name in _DATA_MOVEMENT:
        return _OpCost("data", totals)
    return _OpCost("uncounted", totals)


# Meta tensors carry only shapes, yet many meta kernels run Python decompositions (batch
# norm, layer norm, Linear's addmm, softmax, in-place activations) that dominate the analysis
# time. For these ops the output's metadata is plain, so we make it directly; tests check it
# (shape, dtype, strides) against the real kernels.
_INPLACE_UNARY = {"relu_", "hardtanh_", "silu_", "hardswish_", "sigmoid_", "gelu_", "leaky_relu_"}
_UNARY = {"relu", "hardtanh", "silu", "hardswish", "hardsigmoid", "sigmoid", "gelu", "clamp_min", "leaky_relu"}
_BINARY = {"add", "mul", "sub", "div"}
_BATCH_NORM = {"native_batch_norm", "_native_batch_norm_legit_no_training"}


def meta_fast_path(func, args):
    """The op's output on meta tensors without running its meta kernel, or None."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.device.type != "meta":
        return None
    name = _op_name(func)
    if name in _INPLACE_UNARY:
        return x
    if name in _UNARY:
        return torch.empty_like(x)
    if name in _BINARY or name.rstrip("_") in _BINARY:
        other = args[1] if len(args) > 1 else None
        if type(other) in (int, float) and len(args) == 2 and x.is_floating_point() and _dense(x):
            return x if name.endswith("_") else torch.empty_like(x)  # a float tensor and a Python number
        if not isinstance(other, torch.Tensor) or other.shape != x.shape or other.dtype != x.dtype or other.stride() != x.stride():
            return None
        return x if name.endswith("_") else torch.empty_like(x)
    if name in _BATCH_NORM and x.dim() >= 2:
        channels = (x.shape[1],)
        # the saved mean and inverse std stay fp32 under an fp16 / bf16 input, as the kernels make them
        stats = torch.float32 if x.dtype in _REDUCED_PRECISION else x.dtype
        return torch.empty_like(x), x.new_empty(channels, dtype=stats), x.new_empty(channels, dtype=stats)
    if name == "native_layer_norm":
        return _layer_norm_fast_path(x, *args[1:])
    if name == "addmm" and len(args) == 3:
        return _addmm_fast_path(x, *args[1:])
    if name == "_safe_softmax" and len(args) == 2 and x.is_floating_point() and x.is_contiguous():
        return torch.empty_like(x)
    return None


_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def _dense(x: torch.Tensor) -> bool:
    """Whether the tensor's elements fill its storage without gaps or overlaps, in some order of its dims (a
    transposed attention query): an elementwise op's output then keeps its strides, as empty_like does."""
    expected = 1
    for size, stride in sorted(zip(x.shape, x.stride()), key=lambda dim: dim[1]):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def _layer_norm_fast_path(x, normalized_shape, weight=None, bias=None, eps=None):
    """(output, mean, rstd): the output contiguous in the input's dtype, the statistics over the leading dims
    (fp32 for fp16/bf16 inputs), as the meta kernel makes them; None where the arguments would not pass its checks."""
    normalized = tuple(normalized_shape)
    if (not normalized or x.dtype not in (torch.float32, *_REDUCED_PRECISION) or x.dim() < len(normalized)
            or tuple(x.shape[x.dim() - len(normalized):]) != normalized):
        return None
    for param in (weight, bias):
        if param is not None and (param.device.type != "meta" or tuple(param.shape) != normalized or param.dtype != x.dtype):
            return None
    stats = (*x.shape[:x.dim() - len(normalized)], *(1,) * len(normalized))
    stats_dtype = torch.float32 if x.dtype in _REDUCED_PRECISION else x.dtype
    return x.new_empty(x.shape), x.new_empty(stats, dtype=stats_dtype), x.new_empty(stats, dtype=stats_dtype)


def _addmm_fast_path(bias, mat1, mat2):
    """bias + mat1 @ mat2 (a Linear's op): a contiguous m×n result; None outside the plain case."""
    if not (isinstance(mat1, torch.Tensor) and isinstance(mat2, torch.Tensor) and mat1.device.type == "meta"
            and mat2.device.type == "meta" and mat1.dim() == 2 and mat2.dim() == 2 and mat1.shape[1] == mat2.shape[0]
            and bias.dtype == mat1.dtype == mat2.dtype and mat1.is_floating_point() and bias.dim() <= 2):
        return None
    rows, cols = mat1.shape[0], mat2.shape[1]
    if bias.dim() >= 1 and bias.shape[-1] not in (1, cols) or bias.dim() == 2 and bias.shape[0] not in (1, rows):
        return None  # the bias does not broadcast: the real kernel raises
    return mat1.new_empty((rows, cols))


class _SkipMetaInit(TorchDispatchMode):
    """While a model is built on the meta device: in-place ops on meta tensors (the weight initialisers'
    normal_, uniform_, erfinv_, clamp_, ...) have no values to write and change no shape, yet their meta kernels
    run Python decompositions (most of ConvNeXt-XL's build). They return their tensor unchanged."""

    _KEEP = frozenset({"resize_", "set_", "as_strided_"})  # in-place ops that do change the metadata

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.device.type == "meta" and _skippable_on_meta(func):
            return x
        return func(*args, **(kwargs or {}))


_SKIPPABLE: dict[Any, bool] = {}


def _skippable_on_meta(func) -> bool:
    skippable = _SKIPPABLE.get(func)
    if skippable is None:
        name = _op_name(func)
        skippable = _SKIPPABLE[func] = (name.endswith("_") and func._schema.is_mutable and name not in _SkipMetaInit._KEEP
                                        and torch.Tag.inplace_view not in func.tags)
    return skippable


def build_on_meta(spec) -> nn.Module:
    """explorer.models.build_model on the meta device, without running the weight initialisers' kernels."""
    with _SkipMetaInit():
        return build_model(spec, device="meta")


class CostEngineError(Exception):
    """An internal failure of the cost engine (never blamed on the person's input)."""


class _CostMode(TorchDispatchMode):
    """Costs every non-view aten op and hands it to the module stack (and every op, with its cost or None for a
    view, to the observer when there is one)."""

    def __init__(self, recorder: "_Recorder", observer=None):
        super().__init__()
        self.recorder = recorder
        self.observer = observer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = meta_fast_path(func, args) if not kwargs else None
        if out is None:
            out = func(*args, **kwargs)
        cost = None
        if not is_view(func):
            try:
                cost = cost_of_op(func, args, kwargs, out)
            except Exception as exc:  # a bug in a formula must not pass for a bad input
                raise CostEngineError(f"costing {func} failed: {exc!r}") from exc
            self.recorder.record(func, cost)
        if self.observer is not None:
            self.observer.op(func, args, kwargs, out, cost)
        return out


@dataclass
class _ModuleStats:
    inclusive: Totals = field(default_factory=Totals)
    self_: Totals = field(default_factory=Totals)
    calls: int = 0
    output_shape: Any = None
    output_elements: int = 0


class _Recorder:
    def __init__(self):
        self.stack: list[str] = []
        self.modules: dict[str, _ModuleStats] = collections.defaultdict(_ModuleStats)
        self.total = Totals()
        self.by_op: dict[str, dict[str, Any]] = {}

    def record(self, func, cost: _OpCost):
        self.total.add(cost.totals)
        name = str(func)
        entry = self.by_op.setdefault(name, {"op": name, "category": cost.category, "count": 0, "totals": Totals(), "modules": collections.Counter()})
        entry["count"] += 1
        entry["totals"].add(cost.totals)
        for module_name in set(self.stack):
            self.modules[module_name].inclusive.add(cost.totals)
        if self.stack:
            self.modules[self.stack[-1]].self_.add(cost.totals)
            entry["modules"][self.stack[-1]] += 1


def _shape_of(value):
    tensors = [leaf for leaf in tree_flatten(value)[0] if isinstance(leaf, torch.Tensor)]
    if len(tensors) == 1:
        return list(tensors[0].shape), tensors[0].numel()
    shapes = [list(t.shape) for t in tensors[:4]]
    return shapes, sum(t.numel() for t in tensors)


def _attach_hooks(model: nn.Module, recorder: _Recorder, observer=None):
    handles = []
    for name, module in model.named_modules():
        def pre(mod, inputs, name=name):
            recorder.stack.append(name)
            recorder.modules[name].calls += 1
            if observer is not None:
                observer.enter(name)

        def post(mod, inputs, output, name=name):
            if recorder.stack and recorder.stack[-1] == name:
                recorder.stack.pop()
            shape, elements = _shape_of(output)
            stats = recorder.modules[name]
            stats.output_shape, stats.output_elements = shape, elements
            if observer is not None:
                observer.leave(name, output)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post, always_call=True))
    return handles


def _count_params(module: nn.Module, recurse: bool) -> tuple[int, int]:
    params = list(module.parameters(recurse=recurse))
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def trace_costs(model: nn.Module, inputs: torch.Tensor, grad_enabled: bool = False, observer=None) -> _Recorder:
    """Run one forward pass of `model` on `inputs` and record every op's cost.

    `observer` (explorer.graph's data-flow recorder) rides along on the same pass: `begin(model, inputs)`, then
    `enter(name)` / `leave(name, output)` around every module call and `op(func, args, kwargs, out, cost)` for
    every aten op (cost None for a view), then `end(output)`."""
    recorder = _Recorder()
    if observer is not None:
        observer.begin(model, inputs)
    handles = _attach_hooks(model, recorder, observer)
    try:
        with torch.set_grad_enabled(grad_enabled), _CostMode(recorder, observer):
            output = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if observer is not None:
        observer.end(output)
    return recorder


def _container_totals(model: nn.Module, recorder: _Recorder) -> dict[str, Totals]:
    """Inclusive totals of containers that are never called themselves (ModuleList, ModuleDict, ...):
    the sum of their children's, so a roll-up by stage shows what the stage costs."""
    out: dict[str, Totals] = {}

    def visit(name: str, module: nn.Module) -> Totals:
        stats = recorder.modules.get(name)
        children = [visit(f"{name}.{child}" if name else child, m) for child, m in module.named_children()]
        if stats is not None and stats.calls:
            return stats.inclusive
        summed = Totals()
        for child in children:
            summed.add(child)
        out[name] = summed
        return summed

    visit("", model)
    return out


def _layer_rows(model: nn.Module, recorder: _Recorder, total: Totals) -> list[LayerRow]:
    rows = []
    containers = _container_totals(model, recorder)
    for name, module in model.named_modules():
        stats = recorder.modules.get(name, _ModuleStats())
        params, trainable = _count_params(module, recurse=True)
        own_params, _ = _count_params(module, recurse=False)
        inc, own = containers.get(name, stats.inclusive), stats.self_
        rows.append(
            {
                "name": name or "(model)",
                "type": type(module).__name__,
                "depth": 0 if not name else name.count(".") + 1,
                "is_leaf": not any(True for _ in module.children()),
                "calls": stats.calls,
                "output_shape": stats.output_shape,
                "output_elements": stats.output_elements,
                "params": params,
                "trainable_params": trainable,
                "self_params": own_params,
                "macs": inc.macs,
                "self_macs": own.macs,
                "flops": 2 * inc.macs,
                "elementwise_ops": inc.elementwise_ops,
                "memory_access_bytes": inc.memory_access_bytes,
                "memory_access_elements": inc.memory_access_elements,
                "self_memory_access_bytes": own.memory_access_bytes,
                "activations": inc.activations,
                "share_macs": inc.macs / total.macs if total.macs else 0.0,
                "share_memory_access": inc.memory_access_bytes / total.memory_access_bytes if total.memory_access_bytes else 0.0,
            }
        )
    return rows


def analyse(spec: ModelSpec, *, with_layers: bool = True, grad_enabled: bool = False, dtype: str = "fp32",
            observer=None) -> CostReport:
    """Cost of the model a spec describes, as plain JSON-friendly data.

    `grad_enabled` runs the forward with autograd on (the counts must not change).
    `dtype` ("fp32", "fp16", "bf16") sets the weights' and input's dtype, hence the bytes moved.
    Runs on the meta device (no weights in memory) when the model allows it; models whose
    forward depends on data (e.g. detection post-processing) run once on the CPU instead.
    Totals without the per-layer rows are small and asked for again and again (compare rows,
    latency's achieved rates), so they are memoised.
    `observer` sees the same pass op by op (see trace_costs): the graph's data flow needs no pass of its own.
    """
    if with_layers or observer is not None:
        return _analyse(spec, with_layers=with_layers, grad_enabled=grad_enabled, dtype=dtype, observer=observer)
    return copy.deepcopy(_analyse_totals(spec, grad_enabled, dtype))


@functools.lru_cache(maxsize=256)
def _analyse_totals(spec: ModelSpec, grad_enabled: bool, dtype: str) -> CostReport:
    return _analyse(spec, with_layers=False, grad_enabled=grad_enabled, dtype=dtype)


def _analyse(spec: ModelSpec, *, with_layers: bool, grad_enabled: bool, dtype: str, observer=None) -> CostReport:
    resolved = resolve_spec(spec)  # once: the variant and input every step below reads
    variant, size = resolved.variant, resolved.input_size
    device = "meta"
    torch_dtype = dtype_of(dtype)
    with forward_errors(resolved):
        model = build_on_meta(resolved).to(torch_dtype)
        try:
            recorder = trace_costs(model, example_input(resolved, "meta", torch_dtype), grad_enabled, observer)
        except Exception as exc:
            if not is_data_dependent(exc):
                raise
            device = "cpu"
            model = build_model(resolved, device="cpu").to(torch_dtype)
            recorder = trace_costs(model, example_input(resolved, "cpu", torch_dtype), grad_enabled, observer)
    total = recorder.total
    params, trainable = _count_params(model, recurse=True)
    uncounted = [
        {"op": e["op"], "count": e["count"], "modules": sorted(e["modules"])[:8]}
        for e in recorder.by_op.values()
        if e["category"] == "uncounted"
    ]
    by_op = sorted(
        (
            {
                "op": e["op"],
                "category": e["category"],
                "count": e["count"],
                "macs": e["totals"].macs,
                "elementwise_ops": e["totals"].elementwise_ops,
                "memory_access_bytes": e["totals"].memory_access_bytes,
            }
            for e in recorder.by_op.values()
        ),
        key=lambda row: (-row["macs"], -row["memory_access_bytes"]),
    )
    result: CostReport = {
        "spec": spec.to_dict(),
        "arch": spec.arch,
        "builder": variant.builder,
        "input_shape": [spec.batch, *size],
        "params": params,
        "trainable_params": trainable,
        "macs": total.macs,
        "flops": 2 * total.macs,
        "elementwise_ops": total.elementwise_ops,
        "memory_access_bytes": total.memory_access_bytes,
        "memory_access_elements": total.memory_access_elements,
        "activations": total.activations,
        "dtype": dtype,
        "traced_on": device,
        "uncounted_ops": uncounted,
        "ops": by_op,
    }
    if with_layers:
        result["layers"] = _layer_rows(model, recorder, total)
    return result


def is_data_dependent(exc: BaseException) -> bool:
    """Did the forward fail only because meta tensors carry no data?"""
    text = str(exc).lower()
    return any(marker in text for marker in ("meta", "data-dependent", "data dependent", "no data"))
