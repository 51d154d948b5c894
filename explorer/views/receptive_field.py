"""Theoretical and effective receptive fields, computed from the model's graph.

Theoretical receptive field
---------------------------
Every tensor that depends on the input image carries, per spatial axis, three numbers:

* ``rf``    the size (in input pixels) of the region one unit sees;
* ``jump``  the distance (in input pixels) between two neighbouring units (the cumulative stride);
* ``start`` the centre (in input pixels) of the region seen by the first unit.

Coordinates are pixel indices: input pixel ``i`` has its centre at ``i``, so the input has
rf = 1, jump = 1, start = 0, and unit ``y`` of a layer sees the pixels
``start + y*jump - (rf-1)/2 .. start + y*jump + (rf-1)/2`` (see ``unit_box``).

The standard recursion for a window op (conv / pool) with kernel k, stride s, padding p, dilation d::

    k_eff     = d*(k-1) + 1
    jump_out  = jump_in * s
    rf_out    = rf_in + (k_eff - 1) * jump_in
    start_out = start_in + ((k_eff - 1)/2 - p) * jump_in

Other ops:

* elementwise / normalisation / activation / dropout: unchanged (normalisation statistics are
  ignored, as is conventional; BatchNorm in eval mode is exactly pointwise);
* merges (add, mul, cat along channels, ...): the union of the inputs' regions for the first unit.
  When the inputs share the jump and the centre (Inception branches, ResNet shortcut, DenseNet
  concatenation, HRNet fusion) this is exactly "the maximum rf among the inputs"; inputs with
  different jumps are unioned, keeping the jump nearest the map's average spacing, input size / map
  size (the row is flagged approximate);
* global pooling (adaptive pool to 1x1, mean over H and W, flatten of a spatial map, attention,
  matmul across positions): rf = the whole input (``global: True``);
* a merge of a local tensor with a globally pooled one (squeeze-and-excitation gates, ASPP image
  pooling): with ``global_context="separate"`` (default) the rf of the local inputs is reported and
  the row is flagged ``global_context: True`` (the unit also sees a pooled summary of the whole
  image); with ``global_context="include"`` the row becomes global;
* adaptive pools with uneven bins, interpolation, transposed convs, cyclic shifts and window
  attention are handled with the largest window a unit can see (``approximate: True``).

How the graph is obtained
-------------------------
1. ``torch.fx.symbolic_trace`` (method ``"fx"``): the graph's nodes are executed in order by an
   ``fx.Interpreter`` on one random input; every node's output gets the (rf, jump, start) computed
   from its argument nodes. torch.nn leaf modules (Conv2d, MaxPool2d, ...) are evaluated at the
   torch-function level (the F.conv2d / F.max_pool2d they call); ``fx.wrap``-ed Python functions are
   either special-cased (torchvision's ``shifted_window_attention``) or evaluated at the
   torch-function level too. The graph is first run on meta tensors (shapes only, nothing computed,
   the model untouched); where an op needs values it is run again on one real random input.
   Rows: one per graph node, plus one per container module (Sequential, Bottleneck, Inception, ...)
   placed after its last node; a container returning several tensors (HRNet stages) is described by
   the first of them.
2. When fx cannot trace the model (data-dependent Python control flow, iteration over tensors,
   ``list(images)``, ...), method ``"hooks"``: a forward-hook trace. Forward pre/post hooks on every
   module give the module rows and names; a ``TorchFunctionMode`` sees every torch function called
   outside torch.nn leaf modules (``torch.cat``, ``+``, ``F.interpolate``, ``x.flatten``, ...), and
   the dataflow is recovered from tensor identity. This follows the branch the input actually took.
   It runs the model on one real random input (never on meta: arbitrary forward code may cache
   tensors on the module). Hooks ignore forwards run by other threads on the same model meanwhile.

Limits: 2-D image inputs only. Attention and reshapes that mix positions (ViT, timm's Swin window
partition, MLP-Mixer token mixing) are reported as global from that point on; torchvision's Swin is
analysed with the window rule (rf grows by (M-1)*jump per block, centre position-dependent).

Effective receptive field
-------------------------
Luo et al., "Understanding the Effective Receptive Field in Deep CNNs" (NIPS 2016): the gradient of
the centre unit of a layer (summed over channels) w.r.t. the input, |.| summed over input channels,
averaged over random inputs.
"""
from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from explorer.errors import ExplorerError

__all__ = ["theoretical_rf", "receptive_field_report", "unit_box", "effective_rf", "find_row"]


# ---------------------------------------------------------------------------------------------
# State and small helpers
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RFState:
    rf: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    axes: tuple[int, int] | None  # positions of the H and W axes in the tensor (None: no spatial axes)
    size: tuple[int, int]  # spatial size of the tensor
    glob: bool = False  # depends on the whole input
    context: bool = False  # also depends on globally pooled context (not counted in rf)
    approx: bool = False  # an approximation was made somewhere upstream
    pooled: bool = False  # global because of global pooling (a summary of the whole image), not attention


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) == 0:
            raise ValueError("empty")
        if len(v) == 1:
            return int(v[0]), int(v[0])
        return int(v[-2]), int(v[-1])
    return int(v), int(v)


def _num(x: float) -> int | float:
    if isinstance(x, float) and math.isfinite(x) and abs(x - round(x)) < 1e-9:
        return int(round(x))
    if isinstance(x, float):
        return round(x, 4)
    return x


def _flat_tensors(obj: Any, out: list | None = None, depth: int = 0) -> list[torch.Tensor]:
    if out is None:
        out = []
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for o in obj:
            _flat_tensors(o, out, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for o in obj.values():
            _flat_tensors(o, out, depth + 1)
    return out


_ALIASES = {"iadd": "add", "radd": "add", "isub": "sub", "rsub": "sub", "imul": "mul", "rmul": "mul",
            "truediv": "div", "itruediv": "div", "rtruediv": "div", "true_divide": "div", "divide": "div",
            "multiply": "mul", "subtract": "sub", "concat": "cat", "concatenate": "cat",
            "max_pool2d_with_indices": "max_pool2d", "adaptive_max_pool2d_with_indices": "adaptive_max_pool2d",
            "swapaxes": "transpose", "swapdims": "transpose", "moveaxis": "movedim", "clip": "clamp",
            "upsample": "interpolate", "upsample_nearest": "interpolate", "upsample_bilinear": "interpolate"}
REDUCES = {"amax", "amin", "mean", "sum", "std", "var", "logsumexp", "prod", "nanmean", "nansum", "median",
           "norm", "all", "any", "argmax", "argmin", "std_mean", "var_mean"}


def _fname(f: Any) -> str:
    name = f if isinstance(f, str) else getattr(f, "__name__", None) or type(f).__name__
    name = name.strip("_") or name
    return _ALIASES.get(name, name)


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    if len(args) > i:
        return args[i]
    return default


POINTWISE = {
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "leaky_relu",
    "elu", "selu", "celu", "mish", "softplus", "softsign", "prelu", "rrelu", "logsigmoid", "threshold",
    "tanhshrink", "softshrink", "hardshrink", "silu_", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "batch_norm", "layer_norm", "group_norm", "instance_norm",
    "local_response_norm", "rms_norm", "clamp", "clamp_min", "clamp_max", "abs", "neg", "exp", "log", "sqrt",
    "rsqrt", "pow", "contiguous", "clone", "float", "half", "double", "bfloat16", "to", "type", "type_as",
    "detach", "sign", "erf", "sin", "cos", "reciprocal", "square", "stochastic_depth", "drop_path",
    "channel_shuffle", "native_channel_shuffle", "add", "sub", "mul", "div", "floor_divide", "maximum",
    "minimum", "where", "addcmul", "addcdiv", "lerp", "masked_fill", "fmod", "remainder", "requires_grad",
    "copy", "fill", "zero", "nan_to_num", "exp2", "log2", "log1p", "expm1", "floor", "ceil", "round",
    "trunc", "frac", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not",
    "bitwise_and", "bitwise_or", "cpu", "cuda", "new_empty", "relu_", "hardswish_", "clamp_", "sigmoid_",
    "batch_norm_elemt", "dequantize", "quantize_per_tensor", "xlogy", "atan2", "hypot", "addmm_",
}
SPLITS = {"chunk", "split", "tensor_split", "split_with_sizes", "unbind"}
RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
EXPANDS = {"expand", "expand_as", "repeat", "tile", "broadcast_to"}
MIXERS = {"matmul", "mm", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention",
          "multi_head_attention_forward", "addmm", "addbmm", "tensordot", "bilinear", "cdist", "unfold", "fold",
          "grid_sample", "lstm", "gru", "rnn_tanh", "rnn_relu", "conv1d", "conv3d", "conv_transpose1d",
          "conv_transpose3d", "embedding", "kron", "outer", "fft_fft2", "fft_rfft2", "fft_fftn"}
DIM_OPS = {"softmax": (1, None), "log_softmax": (1, None), "softmin": (1, None), "cumsum": (1, None),
           "cumprod": (1, None), "logcumsumexp": (1, None), "cummax": (1, None), "cummin": (1, None),
           "glu": (1, -1), "normalize": (2, 1), "sort": (1, -1), "argsort": (1, -1), "topk": (2, -1)}


# ---------------------------------------------------------------------------------------------
# Propagation
# ---------------------------------------------------------------------------------------------

class _Propagator:
    """(rf, jump, start) per tensor, keyed by tensor identity (tensors are kept alive meanwhile)."""

    def __init__(self, input_hw: tuple[int, int], global_context: str = "separate"):
        if global_context not in ("separate", "include"):
            raise ExplorerError(f"global_context must be 'separate' or 'include', got {global_context!r}")
        self.H, self.W = input_hw
        self.include_context = global_context == "include"
        self.states: dict[int, RFState] = {}
        self.keep: list[torch.Tensor] = []
        self.notes: dict[int, str] = {}  # note of the op that produced a tensor
        self.errors: list[str] = []

    # -- bookkeeping --
    def get(self, t: Any) -> RFState | None:
        return self.states.get(id(t)) if isinstance(t, torch.Tensor) else None

    def set(self, t: torch.Tensor, st: RFState, note: str | None = None) -> None:
        self.states[id(t)] = st
        self.keep.append(t)
        if note:
            self.notes[id(t)] = note
        else:
            self.notes.pop(id(t), None)

    def seed(self, x: torch.Tensor) -> None:
        nd = x.dim()
        self.set(x, RFState((1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (nd - 2, nd - 1), (x.shape[-2], x.shape[-1])))

    def global_state(self, out: torch.Tensor | None, ins: list[RFState], axes=None,
                     pooled: bool | None = None) -> RFState:
        if pooled is None:
            pooled = bool(ins) and all(s.glob and s.pooled for s in ins)
        size = (1, 1)
        if out is not None and axes is not None and max(axes) < out.dim():
            size = (int(out.shape[axes[0]]), int(out.shape[axes[1]]))
        else:
            axes = None
        return RFState((float(self.H), float(self.W)), (float(self.H), float(self.W)),
                       ((self.H - 1) / 2, (self.W - 1) / 2), axes, size, glob=True,
                       context=any(s.context for s in ins), approx=any(s.approx for s in ins), pooled=pooled)

    # -- entry point --
    def handle(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        outs = _flat_tensors(result)
        if not outs:
            return
        ins = [(t, self.get(t)) for t in _flat_tensors((args, kwargs))]
        ins = [(t, s) for t, s in ins if s is not None]
        if not ins:
            return
        name = _fname(func)
        try:
            res = self.transfer(name, args, kwargs, ins, outs)
        except Exception as exc:  # never break the traced forward; flag the row instead
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            res = (self.global_state(outs[0], [s for _, s in ins]), f"could not analyse {name}: treated as global")
        states, note = res
        if isinstance(states, RFState):
            states = [states] * len(outs)
        for t, st in zip(outs, states):
            if st is not None:
                self.set(t, st, note)

    # -- transfer functions --
    def transfer(self, name, args, kwargs, ins, outs):
        out = outs[0]
        t0, s0 = ins[0]
        if name == "conv2d":
            w = _arg(args, kwargs, 1, "weight")
            k = tuple(w.shape[-2:])
            d = _pair(_arg(args, kwargs, 5, "dilation", 1))
            p = _arg(args, kwargs, 4, "padding", 0)
            if isinstance(p, str):
                p = (0, 0) if p == "valid" else tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))
            return self.window(s0, t0, out, k, _pair(_arg(args, kwargs, 3, "stride", 1)), _pair(p), d), None
        if name == "conv_transpose2d":
            w = _arg(args, kwargs, 1, "weight")
            k = tuple(w.shape[-2:])
            return self.transposed(s0, t0, out, k, _pair(_arg(args, kwargs, 3, "stride", 1)),
                                   _pair(_arg(args, kwargs, 4, "padding", 0)),
                                   _pair(_arg(args, kwargs, 7, "dilation", 1)))
        if name in ("max_pool2d", "avg_pool2d", "lp_pool2d"):
            if name == "lp_pool2d":
                k = _pair(_arg(args, kwargs, 2, "kernel_size"))
                s = _arg(args, kwargs, 3, "stride")
                p, d = (0, 0), (1, 1)
            else:
                k = _pair(_arg(args, kwargs, 1, "kernel_size"))
                s = _arg(args, kwargs, 2, "stride")
                p = _pair(_arg(args, kwargs, 3, "padding", 0))
                d = _pair(_arg(args, kwargs, 4, "dilation", 1)) if name == "max_pool2d" else (1, 1)
            s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else _pair(s)
            st = self.window(s0, t0, out, k, s, p, d)
            return [st] * len(outs), None
        if name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
            return self.adaptive(s0, t0, out)
        if name == "interpolate":
            mode = _arg(args, kwargs, 3, "mode", "nearest")
            return self.upsample(s0, t0, out, mode)
        if name == "pixel_shuffle":
            r = int(_arg(args, kwargs, 1, "upscale_factor"))
            return self.per_axis(s0, t0, out, lambda rf, j, st, i: (rf, j / r, st)), None
        if name == "pixel_unshuffle":
            r = int(_arg(args, kwargs, 1, "downscale_factor"))
            return self.window(s0, t0, out, (r, r), (r, r), (0, 0), (1, 1)), None
        if name == "pad":
            return self.pad(s0, t0, out, _arg(args, kwargs, 1, "pad"))
        if name == "getitem":
            return self.getitem(s0, t0, out, args[1] if len(args) > 1 else kwargs.get("idx"))
        if name in ("cat", "stack"):
            dim = _arg(args, kwargs, 1, "dim", 0)
            return self.cat(name, ins, out, dim)
        if name in ("max", "min"):
            other = _arg(args, kwargs, 1, "other", kwargs.get("dim"))
            if isinstance(other, torch.Tensor):
                return self.merge(name, ins, out, quiet=True)
            if other is None:
                return self.global_state(out, [s0], pooled=True), "full reduction: global"
            return self.reduce(s0, t0, outs, other, _arg(args, kwargs, 2, "keepdim", False))
        if name in REDUCES:
            return self.reduce(s0, t0, outs, _arg(args, kwargs, 1, "dim"), _arg(args, kwargs, 2, "keepdim", False))
        if name in RESHAPES:
            return self.reshape(s0, t0, out), None
        if name in EXPANDS:
            return self.expand(s0, t0, out), None
        if name == "permute":
            dims = list(args[1:]) if len(args) > 2 else _arg(args, kwargs, 1, "dims")
            if isinstance(dims, int):
                dims = [dims]
            return self.permute(s0, t0, out, [int(d) % t0.dim() for d in dims]), None
        if name == "transpose":
            d0, d1 = int(_arg(args, kwargs, 1, "dim0")) % t0.dim(), int(_arg(args, kwargs, 2, "dim1")) % t0.dim()
            perm = list(range(t0.dim()))
            perm[d0], perm[d1] = perm[d1], perm[d0]
            return self.permute(s0, t0, out, perm), None
        if name == "t" and t0.dim() == 2:
            return self.permute(s0, t0, out, [1, 0]), None
        if name in SPLITS:
            default = 0
            dim = _arg(args, kwargs, 1 if name == "unbind" else 2, "dim", default)
            return self.split(name, s0, t0, outs, dim)
        if name in ("linear", "matmul") and len(ins) == 1 and ins[0][0] is args[0]:
            if s0.glob:
                return self.global_state(out, [s0]), None
            if s0.axes is None or t0.dim() - 1 in s0.axes:
                return self.global_state(out, [s0]), f"{name} across positions: global"
            return self.pointwise(s0, t0, out, name, quiet=True)
        if name in MIXERS or name == "linear":
            return self.global_state(out, [s for _, s in ins]), f"{name} mixes positions: global"
        if name in DIM_OPS:
            pos, default = DIM_OPS[name]
            dim = _arg(args, kwargs, pos, "dim", default)
            if dim is None:
                dim = 0 if t0.dim() in (0, 1, 3) else 1
            if s0.axes is not None and int(dim) % t0.dim() in s0.axes:
                return self.global_state(out, [s0]), f"{name} over a spatial axis: global"
            return [self.pointwise(s0, t0, o, name, quiet=True)[0] for o in outs], None
        if name == "flip":
            dims = list(args[1:]) if len(args) > 2 else _arg(args, kwargs, 1, "dims")
            dims = [int(d) % t0.dim() for d in ([dims] if isinstance(dims, int) else dims)]
            if s0.axes is not None and any(d in s0.axes for d in dims):
                return self.global_state(out, [s0]), "flip of a spatial axis: global"
            return self.pointwise(s0, t0, out, name, quiet=True)
        if name == "roll":
            return self.roll(s0, t0, out, _arg(args, kwargs, 1, "shifts"), _arg(args, kwargs, 2, "dims"))
        # elementwise and everything else: merge the inputs if the spatial layout is unchanged
        return self.merge(name, ins, out, quiet=name in POINTWISE)

    # A single-input op keeping the layout.
    def pointwise(self, s0, t0, out, name, quiet=False):
        return self.merge(name, [(t0, s0)], out, quiet=quiet)

    def _out_axes(self, st: RFState, t: torch.Tensor, out: torch.Tensor):
        if st.axes is None:
            return None
        off = out.dim() - t.dim()
        axes = (st.axes[0] + off, st.axes[1] + off)
        if min(axes) < 0 or max(axes) >= out.dim():
            return None
        return axes

    def merge(self, name, ins, out, quiet=False, axes_override=None):
        states = [s for _, s in ins]
        locs = [(t, s) for t, s in ins if not s.glob]
        if not locs:
            return self.global_state(out, states, self._out_axes(ins[0][1], ins[0][0], out)), None
        t0, s0 = locs[0]
        axes = axes_override or self._out_axes(s0, t0, out)
        if axes is None:
            return self.global_state(out, states), f"{name}: spatial layout lost, treated as global"
        size = (int(out.shape[axes[0]]), int(out.shape[axes[1]]))
        same = [(t, s) for t, s in locs if s.size == size]
        if not same:
            return self.global_state(out, states, axes), f"unknown op {name} changes the spatial size: global"
        has_global = len(same) < len(ins)
        if any(s.glob and not s.pooled for s in states):
            return self.global_state(out, states, axes, pooled=False), f"{name} with a global input: global"
        if has_global and self.include_context:
            return self.global_state(out, states, axes), f"{name} with a globally pooled input: global"
        note = None if quiet else f"{name}: assumed elementwise"
        rf, jump, start = [], [], []
        approx = any(s.approx for s in states)
        for i in range(2):
            jumps = [s.jump[i] for _, s in same]
            lo = min(s.start[i] - (s.rf[i] - 1) / 2 for _, s in same)
            hi = max(s.start[i] + (s.rf[i] - 1) / 2 for _, s in same)
            chosen = jumps[0]
            if max(jumps) - min(jumps) > 1e-9:
                # Paths that reach one size by different routes (an upsampled top-down path beside a lateral
                # one) disagree on the jump when sizes are odd; keep the jump nearest the map's average
                # spacing, input / size — the exact lateral one in an FPN — so errors do not compound.
                nominal = (self.H, self.W)[i] / size[i]
                chosen = min(jumps, key=lambda j: abs(j - nominal))
                approx = True
                note = f"{name}: inputs with different jumps, the one nearest input/size kept"
            rf.append(hi - lo + 1)
            jump.append(chosen)
            start.append((lo + hi) / 2)
        context = any(s.context for s in states) or has_global
        st = RFState(tuple(rf), tuple(jump), tuple(start), axes, size, context=context, approx=approx)
        if has_global and note is None and len(same) < len(locs):
            note = f"{name}: broadcast input treated as context"
        return st, note

    def per_axis(self, s0, t0, out, fn, approx=False, axes_required_last=True):
        nd = t0.dim()
        if s0.glob:
            return self.global_state(out, [s0], self._out_axes(s0, t0, out))
        if s0.axes is None or (axes_required_last and s0.axes != (nd - 2, nd - 1)):
            return self.global_state(out, [s0])
        axes = (out.dim() - 2, out.dim() - 1) if axes_required_last else s0.axes
        rf, j, st = [], [], []
        for i in range(2):
            a, b, c = fn(s0.rf[i], s0.jump[i], s0.start[i], i)
            rf.append(a)
            j.append(b)
            st.append(c)
        size = (int(out.shape[axes[0]]), int(out.shape[axes[1]]))
        return RFState(tuple(rf), tuple(j), tuple(st), axes, size, context=s0.context, approx=s0.approx or approx)

    def window(self, s0, t0, out, k, s, p, d):
        def fn(rf, j, st, i):
            keff = d[i] * (k[i] - 1) + 1
            return rf + (keff - 1) * j, j * s[i], st + ((keff - 1) / 2 - p[i]) * j
        return self.per_axis(s0, t0, out, fn)

    def transposed(self, s0, t0, out, k, s, p, d):
        def fn(rf, j, st, i):
            keff = d[i] * (k[i] - 1) + 1
            # Output o reads inputs i with i*s - p + t*d = o: at most floor((k_eff-1)/s) + 1 of them.
            return rf + ((keff - 1) // s[i]) * j, j / s[i], st + ((p[i] - (keff - 1) / 2) / s[i]) * j
        return self.per_axis(s0, t0, out, fn, approx=True), "transposed conv: largest window over output phases"

    def adaptive(self, s0, t0, out):
        if s0.glob:
            return self.global_state(out, [s0], self._out_axes(s0, t0, out)), None
        nd = t0.dim()
        if s0.axes != (nd - 2, nd - 1):
            return self.global_state(out, [s0]), "adaptive pool on a non-spatial layout"
        ins = (int(t0.shape[-2]), int(t0.shape[-1]))
        outs = (int(out.shape[-2]), int(out.shape[-1]))
        if outs == (1, 1):
            return (self.global_state(out, [s0], (out.dim() - 2, out.dim() - 1), pooled=True),
                    "global pooling: the whole input")
        uneven = False

        def fn(rf, j, st, i):
            nonlocal uneven
            I, O = ins[i], outs[i]
            if I == O:
                return rf, j, st
            if I % O == 0:
                k = I // O
                return rf + (k - 1) * j, j * k, st + (k - 1) / 2 * j
            uneven = True
            bins = [(math.floor(o * I / O), math.ceil((o + 1) * I / O)) for o in range(O)]
            kmax = max(e - b for b, e in bins)
            return rf + (kmax - 1) * j, j * I / O, st + (bins[0][1] - 1) / 2 * j

        st = self.per_axis(s0, t0, out, fn)
        if uneven:
            return replace(st, approx=True), "adaptive pool with uneven bins: largest bin"
        return st, None

    def upsample(self, s0, t0, out, mode):
        if s0.glob:
            return self.global_state(out, [s0], self._out_axes(s0, t0, out)), None
        mode = str(mode or "nearest")
        if mode == "area":
            return self.adaptive(s0, t0, out)
        taps = 1 if mode.startswith("nearest") else (4 if mode == "bicubic" else 2)
        ins = (int(t0.shape[-2]), int(t0.shape[-1]))
        outs = (int(out.shape[-2]), int(out.shape[-1]))

        def fn(rf, j, st, i):
            I, O = ins[i], outs[i]
            if I == O:
                return rf, j, st
            return rf + (taps - 1) * j, j * I / O, st + (taps - 1) / 2 * j
        approx = taps > 1 or any(o % i and i % o for i, o in zip(ins, outs))
        st = self.per_axis(s0, t0, out, fn, approx=approx)
        return st, (f"{mode} interpolation: {taps}-tap window, average jump" if approx else None)

    def pad(self, s0, t0, out, pad):
        if s0.glob or s0.axes is None:
            return self.merge("pad", [(t0, s0)], out, quiet=True)
        nd = t0.dim()
        start = list(s0.start)
        for i, a in enumerate(s0.axes):
            e = nd - 1 - a
            if 2 * e < len(pad):
                start[i] = s0.start[i] - pad[2 * e] * s0.jump[i]
        size = (int(out.shape[s0.axes[0]]), int(out.shape[s0.axes[1]]))
        return replace(s0, start=tuple(start), size=size), None

    def roll(self, s0, t0, out, shifts, dims):
        if s0.glob or s0.axes is None or dims is None:
            return self.global_state(out, [s0]), "roll: global"
        shifts = [shifts] if isinstance(shifts, int) else list(shifts)
        dims = [dims] if isinstance(dims, int) else list(dims)
        start = list(s0.start)
        touched = False
        for sh, d in zip(shifts, dims):
            d = int(d) % t0.dim()
            if d in s0.axes:
                i = s0.axes.index(d)
                start[i] -= sh * s0.jump[i]
                touched = True
        if not touched:
            return replace(s0), None
        return replace(s0, start=tuple(start), approx=True), "cyclic shift: wraps around at the border"

    def getitem(self, s0, t0, out, idx):
        if s0.glob or s0.axes is None:
            return self.merge("getitem", [(t0, s0)], out, quiet=True)
        if not isinstance(idx, tuple):
            idx = (idx,)
        if any(isinstance(i, torch.Tensor) or isinstance(i, (list, bool)) for i in idx):
            return self.merge("getitem", [(t0, s0)], out)
        n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
        expanded: list[Any] = []
        for i in idx:
            if i is Ellipsis:
                expanded.extend([slice(None)] * (t0.dim() - n_real))
            else:
                expanded.append(i)
        expanded.extend([slice(None)] * (t0.dim() - sum(1 for i in expanded if i is not None)))
        in_d, out_d = 0, 0
        new_axes = [None, None]
        start, jump = list(s0.start), list(s0.jump)
        for item in expanded:
            if item is None:
                out_d += 1
                continue
            if in_d in s0.axes:
                i = s0.axes.index(in_d)
                if isinstance(item, int):
                    return self.global_state(out, [s0]), "indexing drops a spatial axis: global"
                b, _, step = item.indices(int(t0.shape[in_d]))
                start[i] = s0.start[i] + b * s0.jump[i]
                jump[i] = s0.jump[i] * step
                new_axes[i] = out_d
            if isinstance(item, int):
                in_d += 1
            else:
                in_d += 1
                out_d += 1
        if None in new_axes or max(new_axes) >= out.dim():
            return self.global_state(out, [s0]), "indexing: spatial layout lost"
        axes = (new_axes[0], new_axes[1])
        size = (int(out.shape[axes[0]]), int(out.shape[axes[1]]))
        return RFState(s0.rf, tuple(jump), tuple(start), axes, size, context=s0.context, approx=s0.approx), None

    def cat(self, name, ins, out, dim):
        locs = [(t, s) for t, s in ins if not s.glob and s.axes is not None]
        if not locs:
            return self.merge(name, ins, out, quiet=True)
        t0, s0 = locs[0]
        if name == "cat":
            d = int(dim) % t0.dim()
            if d in s0.axes:
                return self.global_state(out, [s for _, s in ins]), "cat along a spatial axis: global"
            return self.merge(name, ins, out, quiet=True, axes_override=s0.axes)
        d = int(dim) % out.dim()
        axes = tuple(a + (1 if d <= a else 0) for a in s0.axes)
        return self.merge(name, ins, out, quiet=True, axes_override=axes)

    def reduce(self, s0, t0, outs, dim, keepdim):
        out = outs[0]
        if dim is None:
            return self.global_state(out, [s0], pooled=True), "full reduction: global"
        dims = [dim] if isinstance(dim, int) else list(dim)
        dims = [int(d) % t0.dim() for d in dims]
        if s0.glob or s0.axes is None:
            return self.global_state(out, [s0]), None
        if any(d in s0.axes for d in dims):
            axes = s0.axes if keepdim else None
            return (self.global_state(out, [s0], axes, pooled=True),
                    "reduction over space (global pooling): the whole input")
        axes = s0.axes if keepdim else tuple(a - sum(1 for d in dims if d < a) for a in s0.axes)
        return [replace(s0, axes=axes) for _ in outs], None

    def reshape(self, s0, t0, out):
        if s0.glob or s0.axes is None:
            return self.global_state(out, [s0], self._out_axes(s0, t0, out))
        ins, outs = list(t0.shape), list(out.shape)

        def prod(xs):
            p = 1
            for x in xs:
                p *= int(x)
            return p

        new = []
        for a in s0.axes:
            found = None
            for k in range(len(outs)):
                if outs[k] == ins[a] and prod(outs[:k]) == prod(ins[:a]) and prod(outs[k + 1:]) == prod(ins[a + 1:]):
                    found = k
                    break
            if found is None:
                return self.global_state(out, [s0])
            new.append(found)
        if new[0] == new[1]:
            return self.global_state(out, [s0])
        return replace(s0, axes=(new[0], new[1]))

    def expand(self, s0, t0, out):
        if s0.glob or s0.axes is None:
            return self.global_state(out, [s0], self._out_axes(s0, t0, out))
        axes = self._out_axes(s0, t0, out)
        if axes is None or (int(out.shape[axes[0]]), int(out.shape[axes[1]])) != s0.size:
            return self.global_state(out, [s0])
        return replace(s0, axes=axes)

    def permute(self, s0, t0, out, perm):
        if s0.axes is None:
            return self.global_state(out, [s0])
        axes = (perm.index(s0.axes[0]), perm.index(s0.axes[1]))
        return replace(s0, axes=axes)

    def split(self, name, s0, t0, outs, dim):
        d = int(dim) % t0.dim()
        if s0.axes is not None and d in s0.axes and not s0.glob:
            return [self.global_state(o, [s0]) for o in outs], f"{name} along a spatial axis: global"
        if name == "unbind" and s0.axes is not None:
            axes = tuple(a - (1 if d < a else 0) for a in s0.axes)
            return [replace(s0, axes=axes) for _ in outs], None
        return [replace(s0) for _ in outs], None

    def window_attention(self, s0, t0, out, window):
        """torchvision's shifted_window_attention on B,H,W,C: each token attends to an M x M window."""
        if s0.glob or s0.axes is None:
            return self.merge("shifted_window_attention", [(t0, s0)], out, quiet=True)
        m = _pair(window)
        rf = tuple(s0.rf[i] + (m[i] - 1) * s0.jump[i] for i in range(2))
        return (replace(s0, rf=rf, approx=True),
                f"window attention ({m[0]}x{m[1]}): rf exact, centre depends on the position in the window")


# ---------------------------------------------------------------------------------------------
# Tracing front ends
# ---------------------------------------------------------------------------------------------

class _Recorder(TorchFunctionMode):
    def __init__(self, prop: _Propagator, on_op: Callable | None = None):
        super().__init__()
        self.prop = prop
        self.on_op = on_op

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        self.prop.handle(func, args, kwargs, result)
        if self.on_op is not None:
            self.on_op(func, result)
        return result


def _is_torch_leaf(m: nn.Module) -> bool:
    mod = type(m).__module__
    return (mod.startswith("torch.nn") or mod.startswith("torch.ao.nn")) and not isinstance(
        m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))


def _row(prop: _Propagator, name: str, type_: str, op: str, t: torch.Tensor | None, st: RFState,
         note: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "op": op,
        "rf": [_num(float(v)) for v in st.rf],
        "jump": [_num(float(v)) for v in st.jump],
        "start": [_num(float(v)) for v in st.start],
        "output_hw": list(st.size),
        "global": st.glob,
        "global_context": st.context,
        "approximate": st.approx or note is not None and ("approx" in note or "assumed" in note),
        "note": note,
    }


def _state_of(prop: _Propagator, value: Any) -> tuple[torch.Tensor | None, RFState | None]:
    for t in _flat_tensors(value):
        st = prop.get(t)
        if st is not None:
            return t, st
    return None, None


def _call(module: nn.Module, fn: Callable, meta: bool):
    """Run ``fn()`` (which calls ``module``); on meta, with every parameter/buffer swapped for a meta
    tensor of the same shape, so that only shapes are computed."""
    if not meta:
        return fn()
    state = {k: torch.empty_like(v, device="meta") for k, v in module.named_parameters()}
    state.update({k: torch.empty_like(v, device="meta") for k, v in module.named_buffers()})

    class _Runner(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self):
            return fn()

    runner = _Runner(module)
    return torch.func.functional_call(runner, {f"m.{k}": v for k, v in state.items()}, ())


def _trace_fx(gm: torch.fx.GraphModule, x: torch.Tensor, prop: _Propagator, meta: bool) -> list[dict[str, Any]]:
    nodes = list(gm.graph.nodes)
    node_rows: dict[torch.fx.Node, dict[str, Any]] = {}
    counts: Counter = Counter()
    modules = dict(gm.named_modules())

    class Interp(torch.fx.Interpreter):
        def run_node(self, n):
            if n.op == "placeholder":
                result = super().run_node(n)
                if isinstance(result, torch.Tensor) and result is x:
                    prop.seed(result)
                return result
            if n.op not in ("call_module", "call_function", "call_method"):
                return super().run_node(n)
            target_name = _fname(n.target)
            if n.op == "call_function" and target_name == "shifted_window_attention":
                result = super().run_node(n)
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                st = prop.get(args[0])
                if st is not None:
                    out_st, note = prop.window_attention(st, args[0], result, _arg(args, kwargs, 4, "window_size"))
                    prop.set(result, out_st, note)
            else:
                with _Recorder(prop):
                    result = super().run_node(n)
            t, st = _state_of(prop, result)
            if st is None:
                return result
            stack = list((n.meta.get("nn_module_stack") or {}).keys())
            if n.op == "call_module":
                name = stack[-1] if stack and stack[-1].split("@")[0] == n.target else n.target
                type_ = type(modules[n.target]).__name__
                kind = "module"
            else:
                scope = stack[-1] if stack else ""
                base = f"{scope}.{target_name}" if scope else target_name
                k = counts[base]
                counts[base] += 1
                name = base if k == 0 else f"{base}@{k}"
                type_ = target_name
                kind = "function"
            node_rows[n] = _row(prop, name, type_, kind, t, st, prop.notes.get(id(t)))
            return result

    with torch.no_grad():
        _call(gm, lambda: Interp(gm).run(x), meta)

    # Containers (modules fx inlined): the call's output is the first node inside it whose value is
    # used outside it (for modules returning several tensors, e.g. HRNet stages, the first one, as
    # the hook trace reports); the row is placed after the last node executed inside the call.
    stacks = {n: set((n.meta.get("nn_module_stack") or {}).keys()) for n in nodes}
    leaf_names = {r["name"] for r in node_rows.values() if r["op"] == "module"}
    last: dict[str, int] = {}
    output: dict[str, torch.fx.Node] = {}
    types: dict[str, str] = {}
    for i, n in enumerate(nodes):
        if n not in node_rows:
            continue
        for key, val in (n.meta.get("nn_module_stack") or {}).items():
            if key in leaf_names:
                continue
            cls = val[1] if isinstance(val, tuple) and len(val) > 1 else None
            types[key] = getattr(cls, "__name__", str(cls))
            last[key] = i
            if key not in output and any(key not in stacks.get(u, ()) for u in n.users):
                output[key] = n
    after: dict[int, list[str]] = {}
    for key, i in last.items():
        after.setdefault(i, []).append(key)
    rows: list[dict[str, Any]] = []
    for i, n in enumerate(nodes):
        if n not in node_rows:
            continue
        rows.append(node_rows[n])
        for key in sorted(after.get(i, []), key=lambda k: -k.count(".")):
            row = dict(node_rows[output.get(key, n)])
            row.update(name=key, type=types[key], op="container")
            rows.append(row)
    return rows


def _trace_hooks(model: nn.Module, x: torch.Tensor, prop: _Propagator, meta: bool) -> list[dict[str, Any]]:
    names: dict[int, str] = {}
    for name, m in model.named_modules():
        names.setdefault(id(m), name)
    stack: list[tuple[str, nn.Module]] = []
    calls: Counter = Counter()
    fcounts: Counter = Counter()
    rows: list[dict[str, Any]] = []
    handles = []

    # Hooks live on the (possibly shared) model: ignore forwards run by other threads meanwhile.
    me = threading.get_ident()

    def pre(m, inputs):
        if threading.get_ident() != me:
            return
        base = names[id(m)]
        k = calls[base]
        calls[base] += 1
        stack.append((base if k == 0 else f"{base}@{k}", m))

    def post(m, inputs, output):
        if threading.get_ident() != me or not stack:
            return
        name, mod = stack.pop()
        t, st = _state_of(prop, output)
        if st is not None and name:
            rows.append(_row(prop, name, type(mod).__name__, "module" if _is_torch_leaf(mod) else "container",
                             t, st, prop.notes.get(id(t))))

    def on_op(func, result):
        if stack and _is_torch_leaf(stack[-1][1]):
            return
        t, st = _state_of(prop, result)
        if st is None or (t is not None and t is x):
            return
        fname = _fname(func)
        if fname in ("get", "size", "dim"):
            return
        scope = stack[-1][0] if stack else ""
        base = f"{scope}.{fname}" if scope else fname
        k = fcounts[base]
        fcounts[base] += 1
        rows.append(_row(prop, base if k == 0 else f"{base}@{k}", fname, "function", t, st, prop.notes.get(id(t))))

    try:
        for name, m in model.named_modules():
            if name == "":
                continue
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        prop.seed(x)
        with torch.no_grad(), _Recorder(prop, on_op):
            _call(model, lambda: model(x), meta)
    finally:
        for h in handles:
            h.remove()
    return rows


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def _input_chw(input_size) -> tuple[int, int, int]:
    size = tuple(int(s) for s in input_size)
    if len(size) == 2:
        return 3, size[0], size[1]
    if len(size) == 3:
        return size
    if len(size) == 4 and size[0] == 1:
        return size[1], size[2], size[3]
    raise ExplorerError(f"receptive fields need an image input (C, H, W), got {input_size}")


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, (p.dtype if p.dtype.is_floating_point else torch.float32)
    for b in model.buffers():
        if b.dtype.is_floating_point:
            return b.device, b.dtype
    return torch.device("cpu"), torch.float32


class _EvalMode:
    """Put every submodule in eval mode for the trace; restore each one's own flag afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self

    def __exit__(self, *exc):
        for m, flag in self.flags:
            m.training = flag
        return False


def _random_input(model: nn.Module, chw: tuple[int, int, int], n: int = 1, seed: int = 0,
                  meta: bool = False) -> torch.Tensor:
    device, dtype = _device_dtype(model)
    if meta or device.type == "meta":
        return torch.empty((n, *chw), device="meta", dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *chw), generator=g)
    return x.to(device=device, dtype=dtype)


def _run_trace(trace: Callable, module: nn.Module, model: nn.Module, chw, global_context: str,
               try_meta: bool):
    """Shapes only (meta tensors) first when ``try_meta``; with real tensors where the model needs values.

    Only the fx path tries meta: a GraphModule runs torch.nn leaf modules and graph ops, which leave
    the model untouched, whereas arbitrary forward code may cache tensors on the module (torchvision's
    AnchorGenerator does), which must not become meta tensors.
    """
    error: Exception | None = None
    on_meta = _device_dtype(model)[0].type == "meta"
    for meta in ((True,) if on_meta else (True, False) if try_meta else (False,)):
        prop = _Propagator(chw[1:], global_context)
        x = _random_input(model, chw, meta=meta)
        try:
            return trace(module, x, prop, meta), prop
        except ExplorerError:
            raise
        except Exception as exc:
            error = exc
    raise error  # type: ignore[misc]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def receptive_field_report(model: nn.Module, input_size, method: str = "auto",
                           global_context: str = "separate") -> dict[str, Any]:
    """Theoretical receptive field of every node/module, with how the graph was obtained.

    ``method``: "auto" (fx, falling back to hooks), "fx" or "hooks". Returns
    {"rows", "method", "fallback_reason", "input_hw", "errors"}.
    """
    if method not in ("auto", "fx", "hooks"):
        raise ExplorerError(f"method must be 'auto', 'fx' or 'hooks', got {method!r}")
    chw = _input_chw(input_size)
    reason = None
    with _EvalMode(model):
        if method in ("auto", "fx"):
            try:
                gm = torch.fx.symbolic_trace(model)
                rows, prop = _run_trace(_trace_fx, gm, model, chw, global_context, try_meta=True)
                return {"rows": rows, "method": "fx", "fallback_reason": None, "input_hw": list(chw[1:]),
                        "errors": prop.errors}
            except ExplorerError:
                raise
            except Exception as exc:
                if method == "fx":
                    raise ExplorerError(f"torch.fx could not trace {type(model).__name__}: {_first_line(exc)}")
                reason = _first_line(exc)
        try:
            rows, prop = _run_trace(_trace_hooks, model, model, chw, global_context, try_meta=False)
        except ExplorerError:
            raise
        except Exception as exc:
            raise ExplorerError(f"could not run {type(model).__name__} on {chw}: {_first_line(exc)}")
    return {"rows": rows, "method": "hooks", "fallback_reason": reason, "input_hw": list(chw[1:]),
            "errors": prop.errors}


def theoretical_rf(model: nn.Module, input_size, method: str = "auto",
                   global_context: str = "separate") -> list[dict[str, Any]]:
    """Rows {"name", "type", "op", "rf", "jump", "start", "output_hw", "global", "global_context",
    "approximate", "note"} in execution order (see the module docstring for the rules)."""
    return receptive_field_report(model, input_size, method, global_context)["rows"]


def find_row(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for r in rows:
        if r["name"] == name:
            return r
    raise ExplorerError(f"no layer named {name!r} in the receptive-field table")


def unit_box(row: dict[str, Any], unit_yx, input_hw) -> dict[str, Any]:
    """The input pixels seen by output unit (y, x) of ``row``, clipped to the image.

    ``y0:y1, x0:x1`` are slice bounds (end exclusive) in input pixels; ``unclipped`` gives the same
    box before clipping (it extends beyond the image where padding was used).
    """
    H, W = _pair(input_hw)
    y, x = _pair(unit_yx)
    if row.get("global"):
        return {"y0": 0, "y1": H, "x0": 0, "x1": W, "centre": [(H - 1) / 2, (W - 1) / 2],
                "unclipped": [0, H, 0, W], "clipped": False}
    bounds = []
    centre = []
    for i, (u, lim) in enumerate(((y, H), (x, W))):
        c = float(row["start"][i]) + u * float(row["jump"][i])
        half = (float(row["rf"][i]) - 1) / 2
        lo, hi = math.floor(c - half + 1e-9), math.ceil(c + half - 1e-9) + 1
        bounds.append((lo, hi, max(0, lo), min(lim, hi)))
        centre.append(_num(c))
    (ylo, yhi, y0, y1), (xlo, xhi, x0, x1) = bounds
    return {"y0": y0, "y1": y1, "x0": x0, "x1": x1, "centre": centre,
            "unclipped": [ylo, yhi, xlo, xhi], "clipped": (y0, y1, x0, x1) != (ylo, yhi, xlo, xhi)}


def _resolve_module(model: nn.Module, layer_name: str) -> tuple[nn.Module, int]:
    base, _, k = layer_name.partition("@")
    mods = dict(model.named_modules())
    if base not in mods or base == "":
        raise ExplorerError(f"{layer_name!r} is not a module of {type(model).__name__} "
                            "(the effective RF needs a module name from the table)")
    return mods[base], int(k) if k else 0


class _Stop(Exception):
    pass


def effective_rf(model: nn.Module, input_size, layer_name: str, n_inputs: int = 4, seed: int = 0) -> dict[str, Any]:
    """Luo et al. 2016: |d(centre unit of ``layer_name``, summed over channels) / d(input)|,
    summed over input channels and averaged over ``n_inputs`` N(0, 1) inputs; normalised to max 1.

    Returns {"map": H x W nested lists, "unit": [y, x], "output_hw", "box" (theoretical, clipped),
    "theoretical": the table row, "nonzero_box": the bounding box of the non-zero gradient, ...}.
    """
    if not 1 <= int(n_inputs) <= 64:
        raise ExplorerError(f"n_inputs must be 1..64, got {n_inputs}")
    chw = _input_chw(input_size)
    if _device_dtype(model)[0].type == "meta":
        raise ExplorerError("the effective receptive field needs a model with real weights (not on 'meta')")
    module, call_index = _resolve_module(model, layer_name)
    report = receptive_field_report(model, chw)
    row = find_row(report["rows"], layer_name)
    captured: list[torch.Tensor] = []
    calls = [0]

    me = threading.get_ident()

    def hook(m, inputs, output):
        if threading.get_ident() != me:  # a forward of the same model in another thread
            return
        if calls[0] == call_index:
            t = _flat_tensors(output)
            if t:
                captured.append(t[0])
                raise _Stop
        calls[0] += 1

    handle = module.register_forward_hook(hook)
    try:
        with _EvalMode(model), torch.enable_grad():
            x = _random_input(model, chw, int(n_inputs), seed).requires_grad_(True)
            try:
                model(x)
            except _Stop:
                pass
            if not captured:
                raise ExplorerError(f"{layer_name} did not run in the forward pass")
            out = captured[0]
            if out.dim() < 3:
                raise ExplorerError(f"{layer_name} has no spatial output (shape {tuple(out.shape)})")
            # The layout (NCHW or NHWC) of that output, from the traced table's state: H, W are the
            # axes whose sizes are the row's output_hw; NCHW unless that says otherwise.
            oh, ow = row["output_hw"]
            nd = out.dim()
            axes = (nd - 2, nd - 1)
            if (out.shape[-2], out.shape[-1]) != (oh, ow) and nd == 4 and (out.shape[1], out.shape[2]) == (oh, ow):
                axes = (1, 2)
            cy, cx = int(out.shape[axes[0]]) // 2, int(out.shape[axes[1]]) // 2
            index: list[Any] = [slice(None)] * nd
            index[axes[0]], index[axes[1]] = cy, cx
            target = out[tuple(index)].sum()
            (grad,) = torch.autograd.grad(target, x)
        g = grad.detach().abs().float().sum(dim=1).mean(dim=0).cpu()
        peak = float(g.max())
        norm = g / peak if peak > 0 else g
        nz = torch.nonzero(g > 0)
        nonzero_box = None
        if len(nz):
            nonzero_box = {"y0": int(nz[:, 0].min()), "y1": int(nz[:, 0].max()) + 1,
                           "x0": int(nz[:, 1].min()), "x1": int(nz[:, 1].max()) + 1}
        return {
            "layer": layer_name,
            "unit": [cy, cx],
            "output_hw": [int(out.shape[axes[0]]), int(out.shape[axes[1]])],
            "input_hw": list(chw[1:]),
            "map": norm.tolist(),
            "box": unit_box(row, (cy, cx), chw[1:]),
            "theoretical": row,
            "nonzero_box": nonzero_box,
            "n_inputs": int(n_inputs),
            "seed": int(seed),
        }
    finally:
        handle.remove()
