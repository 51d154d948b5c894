"""Memory and training cost: will the model fit, and what does one training step cost?

Everything runs on PyTorch's `meta` device: the model's forward (and, for training, its backward and the
optimizer's step) executes under a TorchDispatchMode that sees every aten op. The mode tracks storages,
not tensors, so views and in-place ops share their bytes; a storage counts as freed as soon as PyTorch
itself drops it (its last reference dies: autograd releases saved tensors node by node, Python frees
temporaries), which is what a caching allocator's `max_memory_allocated` measures, minus its rounding.

Definitions (bytes use each tensor's dtype; GB = 10⁹ bytes, as everywhere in the app):
- weights: parameters and buffers.
- inference peak: weights + the peak of live activations (the input included) over a no-grad forward.
- saved activations: what autograd keeps for backward, counted once per storage
  (`torch.autograd.graph.saved_tensors_hooks`), parameters excluded.
- gradients: the `.grad` of every parameter the loss reaches. Backward temporaries: every other storage
  the backward creates (incoming gradients, recomputed buffers).
- optimizer state: what `torch.optim` itself allocates, traced (SGD 0; SGD with momentum one fp32 buffer,
  4 B/param; Adam/AdamW two, 8 B/param). Under bf16/fp16 the optimizer runs on fp32 master weights
  (4 B/param, kept beside the half-precision weights) with fp32 copies of the gradients.
- training peak: the largest live total over forward, backward and the optimizer's step, in the steady
  state (optimizer state and master weights resident; gradients freed by `zero_grad(set_to_none=True)`).
- MACs as in explorer.cost (FLOPs = 2 × MACs), backward counted op by op: the first layer computes no input
  gradient, attention's backward recomputes its scores (≈2.5× its forward). Attention runs PyTorch's
  memory-efficient SDPA kernel here (what a GPU runs), so neither its memory nor its backward is the
  L×L math path's.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from explorer.catalog import resolve
from explorer.cost import MAC_FORMULAS, is_data_dependent, meta_fast_path
from explorer.errors import ExplorerError
from explorer.estimates import TRAIN_WARMUP_STEPS  # the estimate counts the same steps
from explorer.models import DTYPES, build_model, dtype_of, example_input, forward_errors, input_size_of
from explorer.spec import MAX_BATCH, ModelSpec

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
# What each optimizer keeps per parameter, in fp32 bytes (the traced state must agree; a test checks it).
OPTIMIZER_STATE_BYTES_PER_PARAM = {"sgd": 0, "momentum": 4, "adam": 8, "adamw": 8}
MASTER_WEIGHT_BYTES_PER_PARAM = 4
GPU_PRESETS_GB = (16, 24, 40, 80, 141)
MIN_MEMORY_BYTES = 10**6
MAX_MEMORY_BYTES = 10**14  # 100 TB
_SIZE_RE = re.compile(r"^\s*([0-9]{1,9}(?:\.[0-9]{1,6})?)\s*(B|KB|KIB|MB|MIB|GB|GIB|TB|TIB)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {"B": 1, "KB": 10**3, "KIB": 2**10, "MB": 10**6, "MIB": 2**20, "GB": 10**9, "GIB": 2**30,
               "TB": 10**12, "TIB": 2**40}
_expired = torch.UntypedStorage._expired
_aten = torch.ops.aten
_next_sequence_nr = torch._C._autograd._get_sequence_nr
CATEGORIES = ("weights", "gradients", "optimizer", "activations", "temporaries")


def parse_memory_size(text: str) -> int:
    """'24GB', '24 GiB', '80' (GB) -> bytes; GB = 10⁹ bytes, GiB = 2³⁰. Bounded: 1 MB to 100 TB."""
    match = _SIZE_RE.match(str(text)[:40])
    if not match:
        raise ExplorerError(f"memory size {str(text)[:40]!r} must look like 24GB, 80 GiB or 512MB")
    value = float(match.group(1)) * _UNIT_BYTES[(match.group(2) or "GB").upper()]
    if not MIN_MEMORY_BYTES <= value <= MAX_MEMORY_BYTES:
        raise ExplorerError(f"memory size {str(text)[:40]!r} must lie between 1 MB and 100 TB")
    return int(value)


def check_optimizer(name: str) -> str:
    if name not in OPTIMIZERS:
        raise ExplorerError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {str(name)[:40]!r}")
    return name


# --- the trace ----------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Block:
    """One storage: its bytes, where it came from, and the module that made it."""
    nbytes: int
    origin: str  # "weights", "input", "forward", "backward", "step"
    module: str
    saved: bool = False
    is_grad: bool = False


def _new_storages(out) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(out)
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


@dataclass
class _Trace:
    """What one traced run saw. Byte counts are of storages; `peak_blocks` are those live at the peak."""
    resident_bytes: int = 0  # optimizer state and master weights, there all step long (steady state)
    budget_bytes: int | None = None
    live: dict = field(default_factory=dict)  # storage address -> (weak reference, block)
    weights: dict = field(default_factory=dict)
    live_bytes: dict = field(default_factory=lambda: {"weights": 0, "input": 0, "forward": 0, "backward": 0, "step": 0})
    peak_total: int = 0
    peak_blocks: list = field(default_factory=list)
    peak_where: tuple = ("", "")
    forward_activation_peak: int = 0
    module_activation_peak: dict = field(default_factory=dict)  # innermost module -> live activation bytes
    module_order: list = field(default_factory=list)  # innermost modules in forward order
    macs: dict = field(default_factory=lambda: {"forward": {}, "backward": {}})
    first_over: dict | None = None
    step_temporaries_peak: int = 0  # the optimizer step's own allocations, at their largest

    def total(self) -> int:
        return sum(self.live_bytes.values()) + self.resident_bytes

    def activations(self) -> int:
        return self.live_bytes["input"] + self.live_bytes["forward"]


def _backward_fast_path(func, args):
    """Outputs of the two backward ops whose meta kernels (Python decompositions) dominate a trace's time;
    the shapes and dtypes are those of the real kernels (a test checks them against the CPU's)."""
    if func is _aten.threshold_backward.default and args[0].device.type == "meta":
        return torch.empty_like(args[0])
    if func is _aten.native_batch_norm_backward.default and args[1].device.type == "meta":
        grad_out, x, weight, *_, mask = args
        channels = (x.shape[1],)
        like = weight if weight is not None else x.new_empty(channels)
        return (torch.empty_like(x) if mask[0] else None, torch.empty_like(like) if mask[1] else None,
                torch.empty_like(like) if mask[2] else None)
    return None


def _conv_backward_macs(grad_out, x, weight, bias_sizes, stride, padding, dilation, transposed, output_padding,
                        groups, output_mask, out_val=None) -> int:
    """The input gradient (a transposed conv) and the weight gradient each take as many MACs as the forward
    conv, groups included. (FlopCounterMode's weight-gradient formula ignores groups: a depthwise conv's
    comes out `channels` times too large.)"""
    spatial = (x.shape if transposed else grad_out.shape)[2:]
    forward = x.shape[0] * math.prod(spatial) * math.prod(weight.shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


_BACKWARD_MAC_FORMULAS = {_aten.convolution_backward.default: _conv_backward_macs}


class _MemoryMode(TorchDispatchMode):
    """Registers every storage an op creates; frees what PyTorch has dropped; counts MACs per module."""

    def __init__(self, trace: _Trace, names: dict[int, str]):
        super().__init__()
        self.trace, self.names = trace, names
        self.phase = "forward"
        self.stack: list[str] = []  # the modules whose forward is running, outermost first
        self.node_module: dict[int, str] = {}  # autograd node (by sequence number) -> the module that made it

    @contextlib.contextmanager
    def modules_tracked(self):
        """Global module hooks for the trace's length: which of the model's modules is running."""
        def pre(module, inputs):
            name = self.names.get(id(module))
            if name is not None:
                self.stack.append(name)

        def post(module, inputs, output):
            name = self.names.get(id(module))
            if name is not None and self.stack and self.stack[-1] == name:
                self.stack.pop()

        handles = [register_module_forward_pre_hook(pre), register_module_forward_hook(post, always_call=True)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def module(self) -> str:
        """The innermost module running the current op. In the backward: the module whose forward made the
        autograd node now running (autograd numbers its nodes as it makes them)."""
        if self.phase == "backward":
            node = torch._C._current_autograd_node()
            return self.node_module.get(node._sequence_nr(), "") if node is not None else ""
        return self.stack[-1] if self.stack else ""

    def register(self, tensor: torch.Tensor, origin: str, module: str) -> _Block | None:
        """The storage's block, made (and counted) the first time the storage is seen."""
        storage = tensor.untyped_storage()
        key = StorageWeakRef(storage)
        trace = self.trace
        if key.cdata in trace.weights:
            return None
        entry = trace.live.get(key.cdata)
        if entry is not None:
            return entry[1]
        block = _Block(storage.nbytes(), origin, module)
        trace.live_bytes[origin] += block.nbytes
        if origin == "weights":  # never freed: kept apart, so the sweep need not look at them
            trace.weights[key.cdata] = key
        else:
            trace.live[key.cdata] = (key, block)
        return block

    def sweep(self):
        """Drop the storages PyTorch has freed since the last op."""
        trace = self.trace
        dead = [cdata for cdata in trace.live if _expired(cdata)]
        for cdata in dead:
            _, block = trace.live.pop(cdata)
            trace.live_bytes[block.origin] -= block.nbytes

    def block_of(self, tensor: torch.Tensor) -> _Block | None:
        entry = self.trace.live.get(StorageWeakRef(tensor.untyped_storage()).cdata)
        return entry[1] if entry is not None else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.sweep()
        out = None if kwargs else meta_fast_path(func, args)
        if out is None and not kwargs:
            out = _backward_fast_path(func, args)
        if out is None:
            out = func(*args, **kwargs)
        trace, module = self.trace, self.module()
        if self.phase == "forward" and torch.is_grad_enabled():
            # the node autograd made for this op (if any) took the last sequence number; the first op to see a
            # number is the one that made it
            self.node_module.setdefault(_next_sequence_nr() - 1, module)
        formula = _BACKWARD_MAC_FORMULAS.get(func) or MAC_FORMULAS.get(func)
        if formula is not None and self.phase != "step":
            macs = int(formula(*args, out_val=out, **kwargs))
            per_module = trace.macs[self.phase]
            per_module[module] = per_module.get(module, 0) + macs
        for tensor in _new_storages(out):
            if tensor.device.type == "meta":
                self.register(tensor, self.phase, module)
        total = trace.total()
        if self.phase == "step":
            trace.step_temporaries_peak = max(trace.step_temporaries_peak, trace.live_bytes["step"])
        if self.phase == "forward":
            activations = trace.activations()
            trace.forward_activation_peak = max(trace.forward_activation_peak, activations)
            if trace.module_activation_peak.get(module, -1) < activations:
                if module not in trace.module_activation_peak:
                    trace.module_order.append(module)
                trace.module_activation_peak[module] = activations
        if total > trace.peak_total:
            trace.peak_total = total
            trace.peak_blocks = [block for _, block in trace.live.values()]
            trace.peak_where = (self.phase, module)
        if trace.budget_bytes is not None and trace.first_over is None and total > trace.budget_bytes:
            trace.first_over = {"phase": self.phase, "module": module or "(model)", "op": str(func), "live_bytes": total}
        return out


_ORIGINAL_SDPA = F.scaled_dot_product_attention
_SDPA_LOCK = threading.Lock()
_SDPA_USERS = 0


def _efficient_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention as PyTorch's memory-efficient kernel on meta tensors, as a GPU runs it: it
    saves q, k, v, the output and the log-sum-exp, never the L×L scores (the meta device would otherwise take
    the math path). Real tensors, and cases that kernel does not take (boolean masks, grouped keys), keep theirs."""
    tensors = (query, key, value)
    if (enable_gqa or any(not isinstance(t, torch.Tensor) or t.device.type != "meta" or t.dim() != 4 for t in tensors)
            or len({t.dtype for t in tensors}) != 1 or query.shape[:2] != key.shape[:2] or key.shape[:2] != value.shape[:2]
            or (attn_mask is not None and (attn_mask.dtype == torch.bool or attn_mask.dim() > 4))):
        return _ORIGINAL_SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                              scale=scale, enable_gqa=enable_gqa)
    bias = None
    if attn_mask is not None:
        bias = attn_mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, bias, needs_grad, dropout_p, is_causal, scale=scale)[0]


@contextlib.contextmanager
def _efficient_attention():
    """Routes F.scaled_dot_product_attention through _efficient_sdpa while traces run. A module attribute, not a
    TorchFunctionMode: a mode is off inside the functions it handles, so nn.MultiheadAttention's own call would
    escape it. Other threads' real tensors pass straight through to the original."""
    global _SDPA_USERS
    with _SDPA_LOCK:
        _SDPA_USERS += 1
        F.scaled_dot_product_attention = _efficient_sdpa
    try:
        yield
    finally:
        with _SDPA_LOCK:
            _SDPA_USERS -= 1
            if _SDPA_USERS == 0:
                F.scaled_dot_product_attention = _ORIGINAL_SDPA


def floating_outputs(out) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]


def make_optimizer(name: str, params: list[torch.Tensor]):
    # foreach=True: the multi-tensor kernels a GPU runs by default, with their whole-list temporaries
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.01, foreach=True)
    if name == "momentum":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=True)
    if name == "adam":
        return torch.optim.Adam(params, foreach=True)
    return torch.optim.AdamW(params, foreach=True)


def _state_bytes(optimizer) -> int:
    seen, total = set(), 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.device.type == "meta":
                key = StorageWeakRef(value.untyped_storage())
                if key not in seen:
                    seen.add(key)
                    total += value.untyped_storage().nbytes()
    return total


@dataclass
class _Run:
    trace: _Trace
    saved_blocks: list
    grad_blocks: list
    optimizer_state_bytes: int = 0
    master_bytes: int = 0
    step_temporary_bytes: int = 0
    stage_inputs: dict = field(default_factory=dict)


def _run(model: nn.Module, x: torch.Tensor, *, train: bool, optimizer: str, budget: int | None) -> _Run:
    """One traced inference forward, or one traced training step (forward, backward, optimizer step)."""
    trace = _Trace(budget_bytes=budget)
    params = [p for p in model.parameters()]
    trainable = [p for p in params if p.requires_grad] if train else []
    master_bytes = state_bytes = 0
    state_optimizer = None
    if train:
        for p in trainable:
            p.grad = None
        # the optimizer's state exists before the step we trace (steady state): make it first, outside the trace
        mixed = any(p.dtype != torch.float32 for p in trainable)
        master = [torch.empty_like(p, dtype=torch.float32).requires_grad_() for p in trainable] if mixed else trainable
        state_optimizer = make_optimizer(optimizer, master)
        for p in master:
            p.grad = torch.zeros_like(p)
        state_optimizer.step()
        for p in master:
            p.grad = None
        state_bytes = _state_bytes(state_optimizer)
        master_bytes = sum(p.untyped_storage().nbytes() for p in master) if mixed else 0
        trace.resident_bytes = state_bytes + master_bytes
    mode = _MemoryMode(trace, {id(module): name for name, module in model.named_modules()})
    for tensor in [*params, *model.buffers()]:
        mode.register(tensor, "weights", "")
    mode.register(x, "input", "")
    saved_keys: list[_Block] = []
    stage_inputs: dict[str, int] = {}
    hooks = []

    def pack(tensor):
        block = mode.block_of(tensor)
        if block is not None:
            block.saved = True
            saved_keys.append(block)
        return tensor

    for name, module in model.named_modules():
        if train and name and any(True for _ in module.children()):  # a container: a stage one could checkpoint
            def pre(mod, inputs, name=name):
                seen = {}
                for t in tree_flatten(inputs)[0]:
                    if isinstance(t, torch.Tensor):
                        seen[StorageWeakRef(t.untyped_storage())] = t.untyped_storage().nbytes()
                stage_inputs[name] = sum(seen.values())
            hooks.append(module.register_forward_pre_hook(pre))
    grad_context = torch.enable_grad() if train else torch.no_grad()
    model.train(train)
    try:
        with grad_context, _efficient_attention(), mode.modules_tracked(), mode:
            if train:
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    out = model(x)
                losses = floating_outputs(out)
                if not losses or not any(t.requires_grad for t in losses):
                    raise ExplorerError("the model's output carries no gradient: nothing to train")
                terms = [t.float().sum() for t in losses if t.requires_grad]
                loss = terms[0]
                for term in terms[1:]:  # not sum(): its start value 0 would add one more tensor
                    loss = loss + term
                del terms
                del out, losses
                mode.phase = "backward"
                loss.backward()
                del loss
                mode.sweep()
                mode.phase = "step"
                if state_optimizer is not None and trainable:
                    if master is not trainable:
                        for m, p in zip(master, trainable):
                            m.grad = p.grad.float()  # fp32 copies of the gradients for the master step
                            mode.register(m.grad, "step", "")
                    state_optimizer.step()
                    mode.sweep()
            else:
                out = model(x)
                del out
    finally:
        for hook in hooks:
            hook.remove()
        model.eval()
    grad_blocks = list({id(b): b for b in (mode.block_of(p.grad) for p in trainable if p.grad is not None)
                        if b is not None}.values())
    for block in grad_blocks:
        block.is_grad = True
    if train:
        for p in trainable:
            p.grad = None
    unique_saved = list({id(b): b for b in saved_keys}.values())
    return _Run(trace, unique_saved, grad_blocks, state_bytes, master_bytes, trace.step_temporaries_peak, stage_inputs)


# --- the report -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _model_for(spec_key: str, dtype: str) -> nn.Module:
    spec = ModelSpec.from_dict(json.loads(spec_key))
    return build_model(spec.with_(batch=1), device="meta").to(dtype_of(dtype))


def _traced(spec: ModelSpec, dtype: str, train: bool, optimizer: str,
            budget: int | None = None) -> tuple[nn.Module, _Run]:
    size = input_size_of(spec, resolve(spec.arch))
    model = _model_for(spec.with_(batch=1).key(), dtype)
    x = example_input(spec, "meta", dtype_of(dtype))
    with forward_errors(spec, size):
        try:
            return model, _run(model, x, train=train, optimizer=optimizer, budget=budget)
        except ExplorerError:
            raise
        except Exception as exc:
            if is_data_dependent(exc):
                raise ExplorerError(f"{spec.arch}'s forward depends on its data (e.g. detection post-processing); "
                                    "its memory cannot be traced on the meta device") from None
            raise


def _breakdown(run: _Run, weights_bytes: int) -> dict[str, int]:
    """The live bytes at the peak, by category."""
    blocks = run.trace.peak_blocks
    out = dict.fromkeys(CATEGORIES, 0)
    out["weights"] = weights_bytes
    out["optimizer"] = run.trace.resident_bytes
    for block in blocks:
        if block.origin in ("input", "forward"):
            out["activations"] += block.nbytes
        elif block.is_grad:
            out["gradients"] += block.nbytes
        elif block.origin in ("backward", "step"):
            out["temporaries"] += block.nbytes
    return out


def _inclusive(per_module: dict[str, int], names: list[str], reduce=sum) -> dict[str, int]:
    """Per-module figures rolled up to every ancestor (`reduce` = sum for MACs, max for peaks)."""
    out = {name: [] for name in names}
    for module, value in per_module.items():
        parts = module.split(".") if module else []
        for depth in range(len(parts) + 1):
            ancestor = ".".join(parts[:depth])
            if ancestor in out:
                out[ancestor].append(value)
    return {name: (reduce(values) if values else 0) for name, values in out.items()}


def _containers(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"{prefix}{name}", child) for name, child in module.named_children() if any(True for _ in child.children())]


def _stages(model: nn.Module, saved_by_module: dict[str, int]) -> list[str]:
    """The blocks a person would checkpoint: the top-level ones, or, while one block holds most of what is saved
    (a ViT's encoder, MobileNet's `features`), the blocks inside it."""
    total = sum(saved_by_module.values()) or 1
    containers = _containers("", model)
    for _ in range(4):
        if not containers:
            return []
        saved = _inclusive(saved_by_module, [name for name, _ in containers])
        name, largest = max(containers, key=lambda item: saved[item[0]])
        inner = _containers(name + ".", largest)
        if saved[name] < 0.6 * total or not inner:
            break
        containers = inner
    return [name for name, _ in containers]


def memory_report(spec: ModelSpec, *, dtype: str = "fp32", train: bool = False, optimizer: str = "adam",
                  fits_bytes: int | None = None, with_layers: bool = True) -> dict[str, Any]:
    """Memory (bytes) and MACs of one inference forward, or one training step, at the spec's batch."""
    dtype_of(dtype)
    check_optimizer(optimizer)
    model, run = _traced(spec, dtype, train, optimizer)
    result = {"spec": spec.to_dict(), "arch": spec.arch, "batch": spec.batch, "input_shape": [spec.batch, *input_size_of(spec)],
              **_summary(model, run, train=train, optimizer=optimizer, dtype=dtype, with_layers=with_layers)}
    if fits_bytes is not None:
        result["fits"] = largest_batch(spec, fits_bytes, dtype=dtype, train=train, optimizer=optimizer)
    return result


def module_memory(model: nn.Module, x: torch.Tensor, *, train: bool = False, optimizer: str = "sgd",
                  with_layers: bool = False) -> dict[str, Any]:
    """The same figures for any module on meta tensors (`x` on meta; its dtype is the model's)."""
    check_optimizer(optimizer)
    run = _run(model, x, train=train, optimizer=optimizer, budget=None)
    dtype = next((name for name, value in DTYPES.items() if value == x.dtype), str(x.dtype))
    return _summary(model, run, train=train, optimizer=optimizer, dtype=dtype, with_layers=with_layers)


def _summary(model: nn.Module, run: _Run, *, train: bool, optimizer: str, dtype: str, with_layers: bool) -> dict[str, Any]:
    trace = run.trace
    params_bytes = sum(p.untyped_storage().nbytes() for p in model.parameters())
    buffers_bytes = sum(b.untyped_storage().nbytes() for b in model.buffers())
    weights_bytes = params_bytes + buffers_bytes
    forward_macs = sum(trace.macs["forward"].values())
    backward_macs = sum(trace.macs["backward"].values())
    saved_bytes = sum(b.nbytes for b in run.saved_blocks)
    breakdown = _breakdown(run, weights_bytes)
    result: dict[str, Any] = {
        "mode": "training" if train else "inference",
        "dtype": dtype,
        "optimizer": optimizer if train else None,
        "params": sum(p.numel() for p in model.parameters()),
        "params_bytes": params_bytes,
        "buffers_bytes": buffers_bytes,
        "weights_bytes": weights_bytes,
        "gradients_bytes": sum(b.nbytes for b in run.grad_blocks) if train else None,
        "optimizer_bytes": run.optimizer_state_bytes if train else None,
        "master_weights_bytes": run.master_bytes if train else None,
        "saved_activations_bytes": saved_bytes if train else None,
        "activation_peak_bytes": trace.forward_activation_peak,
        "peak_bytes": trace.peak_total,
        "peak_phase": trace.peak_where[0],
        "peak_module": trace.peak_where[1] or "(model)",
        "peak_breakdown_bytes": breakdown,
        "optimizer_step_temporaries_bytes": run.step_temporary_bytes if train else None,
        "forward_macs": forward_macs,
        "backward_macs": backward_macs if train else None,
        "training_step_macs": forward_macs + backward_macs if train else None,
        "training_step_flops": 2 * (forward_macs + backward_macs) if train else None,
        "backward_to_forward": (backward_macs / forward_macs if forward_macs else None) if train else None,
    }
    names = [name for name, _ in model.named_modules()]
    if train:
        saved_by_module: dict[str, int] = {}
        for block in run.saved_blocks:
            saved_by_module[block.module] = saved_by_module.get(block.module, 0) + block.nbytes
        result["checkpointing"] = _checkpointing(model, run, _stages(model, saved_by_module), saved_bytes, trace.peak_total)
    if with_layers:
        result["layers"] = _layer_rows(model, run, train, names)
        result["depth_profile"] = [{"name": name or "(model)", "live_activation_bytes": trace.module_activation_peak[name]}
                                   for name in trace.module_order]
    return result


def _layer_rows(model: nn.Module, run: _Run, train: bool, names: list[str]) -> list[dict[str, Any]]:
    trace = run.trace
    saved_self: dict[str, int] = {}
    for block in run.saved_blocks:
        saved_self[block.module] = saved_self.get(block.module, 0) + block.nbytes
    fwd = _inclusive(trace.macs["forward"], names)
    bwd = _inclusive(trace.macs["backward"], names)
    saved = _inclusive(saved_self, names)
    peak = _inclusive(trace.module_activation_peak, names, reduce=max)
    rows = []
    for name, module in model.named_modules():
        params_bytes = sum(p.untyped_storage().nbytes() for p in module.parameters())
        rows.append({
            "name": name or "(model)",
            "type": type(module).__name__,
            "depth": 0 if not name else name.count(".") + 1,
            "is_leaf": not any(True for _ in module.children()),
            "params_bytes": params_bytes,
            "forward_macs": fwd[name],
            "backward_macs": bwd[name] if train else None,
            "saved_activations_bytes": saved[name] if train else None,
            "activation_peak_bytes": peak[name],
        })
    return rows


def _checkpointing(model: nn.Module, run: _Run, stages: list[str], saved_total: int, peak: int) -> dict[str, Any]:
    """What-if: checkpoint a stage and autograd keeps only its input; its activations are made again, one
    stage at a time, during the backward (its forward MACs once more). Estimates from the traced figures."""
    names = [name for name, _ in model.named_modules()]
    saved_self: dict[str, int] = {}
    for block in run.saved_blocks:
        saved_self[block.module] = saved_self.get(block.module, 0) + block.nbytes
    saved = _inclusive(saved_self, names)
    fwd = _inclusive(run.trace.macs["forward"], names)
    rows = []
    for stage in stages:
        kept = run.stage_inputs.get(stage, 0)
        rows.append({
            "stage": stage, "saved_activations_bytes": saved[stage], "input_bytes": kept,
            "saved_if_checkpointed_bytes": saved_total - saved[stage] + kept,
            "peak_if_checkpointed_bytes": max(peak - saved[stage] + kept, 0),
            "recompute_macs": fwd[stage],
        })
    all_saved = sum(r["saved_activations_bytes"] for r in rows)
    all_inputs = sum(r["input_bytes"] for r in rows)
    largest = max((r["saved_activations_bytes"] for r in rows), default=0)
    return {
        "stages": rows,
        "all_stages": {
            "saved_if_checkpointed_bytes": saved_total - all_saved + all_inputs,
            "peak_if_checkpointed_bytes": max(peak - all_saved + all_inputs + largest, 0),
            "recompute_macs": sum(r["recompute_macs"] for r in rows),
        } if rows else None,
    }


def _peak_at(spec: ModelSpec, batch: int, dtype: str, train: bool, optimizer: str, budget: int | None = None) -> _Run:
    return _traced(spec.with_(batch=batch), dtype, train, optimizer, budget=budget)[1]


def largest_batch(spec: ModelSpec, budget_bytes: int, *, dtype: str = "fp32", train: bool = False,
                  optimizer: str = "adam") -> dict[str, Any]:
    """The largest batch (1..MAX_BATCH) whose traced peak fits `budget_bytes`, and where the next batch breaks.

    Peaks grow linearly in the batch (a fixed part, weights and optimizer state, plus a per-sample part),
    so two traces give the line, and traces at the answer and one above it confirm it."""
    traced: dict[int, _Trace] = {}

    def peak(batch: int) -> int:
        if batch not in traced:
            traced[batch] = _peak_at(spec, batch, dtype, train, optimizer, budget=budget_bytes).trace
        return traced[batch].peak_total

    def crossing(a: int, b: int) -> int:
        """The last batch under the budget on the line through the peaks at batches a and b."""
        slope = (peak(b) - peak(a)) / (b - a)
        return MAX_BATCH if slope <= 0 else math.floor(a + (budget_bytes - peak(a)) / slope)

    best = 0
    if peak(1) <= budget_bytes:
        # lo fits, hi does not (None: no batch up to MAX_BATCH found that does not). Peaks are nearly linear in
        # the batch, so the line through two traced batches lands on or next to the answer: a few traces in all.
        lo, hi, last = 1, None, 2
        for attempt in range(24):
            if hi is None:
                guess = crossing(1, last) if attempt < 8 else min(MAX_BATCH, 2 * lo)
            else:
                guess = crossing(lo, hi) if attempt < 8 else (lo + hi) // 2
            guess = max(lo + 1, min(guess, (hi or MAX_BATCH + 1) - 1, MAX_BATCH))
            if guess <= lo:
                break
            if peak(guess) <= budget_bytes:
                lo = guess
            else:
                hi = guess
            last = guess
            if hi is not None and hi - lo <= 1:
                break
            if hi is None and lo == MAX_BATCH:
                break
        best = lo
    result = {"budget_bytes": budget_bytes, "largest_batch": best, "capped": best == MAX_BATCH,
              "mode": "training" if train else "inference", "dtype": dtype}
    if best < MAX_BATCH:  # where the next batch goes over
        over = traced.get(best + 1) or _peak_at(spec, best + 1, dtype, train, optimizer, budget=budget_bytes).trace
        traced[best + 1] = over
        result["breaks_at"] = {"batch": best + 1, "peak_bytes": over.peak_total, **(over.first_over or {})}
    if best >= 1:
        result["peak_at_largest_bytes"] = traced[best].peak_total
    result["traces"] = len(traced)
    return result


def fits_table(spec: ModelSpec, *, dtype: str = "fp32", optimizer: str = "adam",
               sizes_gb: tuple[float, ...] = GPU_PRESETS_GB) -> list[dict[str, Any]]:
    """The largest inference and training batch for each memory size."""
    return [{"memory_gb": size,
             "inference": largest_batch(spec, int(size * 1e9), dtype=dtype, train=False),
             "training": largest_batch(spec, int(size * 1e9), dtype=dtype, train=True, optimizer=optimizer)}
            for size in sizes_gb]


MEMORY_NOTES = (
    "Bytes of storages as PyTorch allocates them, traced on the meta device; a GPU adds its CUDA context "
    "(several hundred MB) and the caching allocator's rounding. GB = 10⁹ bytes: a card sold as 24 GB holds "
    "24 GiB ≈ 25.8 GB, which leaves room for both."
)


# --- a real training step, timed (run as a job: real tensors never run in the web server) -------------

MAX_TRAIN_RUNS = 50
MAX_TRAIN_SECONDS = 60.0


def train_bench(spec: ModelSpec, settings: dict[str, Any],
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One training step on real tensors, timed phase by phase (forward with the loss, backward, optimizer
    step): median and p10/p90 over the runs, after warm-up steps that also create the optimizer's state.
    On CUDA, the measured peak (torch.cuda.max_memory_allocated over one step) beside the predicted one.
    `settings`: device (auto|cuda|mps|cpu), dtype (fp32, or bf16/fp16 under autocast), optimizer,
    min_runs (1..50), max_seconds (timing budget, at most 60 s). The step waits for its device's queue.
    `progress(text)`, when given, hears the steps done out of those planned ("3 of about 7 training steps")."""
    import time

    import numpy as np

    from explorer.device_queue import queue_for
    from explorer.latency import BenchSettings, autocast_context, synchronize
    from explorer.models import is_out_of_memory, one_line

    optimizer_name = check_optimizer(str(settings.get("optimizer", "adam")))
    min_runs, max_seconds = settings.get("min_runs", 5), settings.get("max_seconds", 10.0)
    if not isinstance(min_runs, int) or isinstance(min_runs, bool) or not 1 <= min_runs <= MAX_TRAIN_RUNS:
        raise ExplorerError(f"min_runs must be an integer from 1 to {MAX_TRAIN_RUNS}, got {str(min_runs)[:40]}")
    if not isinstance(max_seconds, (int, float)) or isinstance(max_seconds, bool) or not 0 < max_seconds <= MAX_TRAIN_SECONDS:
        raise ExplorerError(f"max_seconds must be above 0 and at most {MAX_TRAIN_SECONDS:g}, got {str(max_seconds)[:40]}")
    bench_settings = BenchSettings(device=str(settings.get("device", "auto")), dtype=str(settings.get("dtype", "fp32")))
    device, dtype = bench_settings.resolved_device(), bench_settings.dtype
    predicted = memory_report(spec, dtype="fp32", train=True, optimizer=optimizer_name, with_layers=False)
    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    measured_peak, error = None, None
    with queue_for(device).hold():
        model = optimizer = None
        try:
            with forward_errors(spec, input_size_of(spec)):
                model = build_model(spec, device=device).train()
                x = example_input(spec, device)
                optimizer = make_optimizer(optimizer_name, [p for p in model.parameters() if p.requires_grad])

                steps_done = [0]

                def report(planned: int):
                    if progress is not None:
                        progress(f"{steps_done[0]:,} of about {planned:,} training steps "
                                 f"({TRAIN_WARMUP_STEPS} untimed)")

                def step(timed: bool):
                    report(TRAIN_WARMUP_STEPS + max(min_runs, len(phases["forward"]) + (1 if timed else 0)))
                    steps_done[0] += 1
                    marks = [time.perf_counter()]
                    with autocast_context(device, dtype):
                        outputs = floating_outputs(model(x))
                        loss = outputs[0].float().sum()
                        for extra in outputs[1:]:
                            loss = loss + extra.float().sum()
                    synchronize(device)
                    marks.append(time.perf_counter())
                    loss.backward()
                    synchronize(device)
                    marks.append(time.perf_counter())
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    synchronize(device)
                    marks.append(time.perf_counter())
                    if timed:
                        for phase, start, end in zip(phases, marks, marks[1:]):
                            phases[phase].append(end - start)

                for _ in range(TRAIN_WARMUP_STEPS):  # warm-up: kernels chosen, allocator and optimizer state in place
                    step(False)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    step(True)
                    measured_peak = torch.cuda.max_memory_allocated()
                end = time.perf_counter() + max_seconds
                while len(phases["forward"]) < min_runs and (time.perf_counter() < end or len(phases["forward"]) < 2):
                    step(True)
                report(steps_done[0])  # the last count: every step done
        except ExplorerError:
            raise
        except Exception as exc:
            error = (f"{device} ran out of memory for a training step at batch {spec.batch}: try a smaller batch"
                     if is_out_of_memory(exc) else f"{device} training step failed: {one_line(exc)}")
        finally:
            model = optimizer = None  # released before the cache is emptied
            if device == "cuda":
                torch.cuda.empty_cache()

    def stats(seconds: list[float]) -> dict[str, float] | None:
        if not seconds:
            return None
        values = np.array(seconds) * 1e3
        return {"median_ms": float(np.median(values)), "p10_ms": float(np.percentile(values, 10)),
                "p90_ms": float(np.percentile(values, 90))}

    totals = [sum(parts) for parts in zip(*phases.values())]
    step_stats = stats(totals)
    return {
        "spec": spec.to_dict(), "arch": spec.arch, "batch": spec.batch, "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "dtype": dtype, "autocast": dtype != "fp32", "optimizer": optimizer_name, "runs": len(totals),
        "phases": {phase: stats(seconds) for phase, seconds in phases.items()},
        "step": step_stats,
        "samples_per_s": spec.batch / (step_stats["median_ms"] / 1e3) if step_stats else None,
        "training_step_macs": predicted["training_step_macs"],
        "achieved_tflops": (predicted["training_step_flops"] / (step_stats["median_ms"] / 1e3) / 1e12) if step_stats else None,
        "predicted_peak_bytes": predicted["peak_bytes"],  # fp32 throughout (the meta trace of this step)
        "measured_peak_bytes": measured_peak,
        "error": error,
    }
