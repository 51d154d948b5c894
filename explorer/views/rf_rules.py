"""Receptive-field rules: the (rf, jump, start) of an op's outputs from its inputs', one rule per op.

The formulas behind ``explorer.views.receptive_field`` (its module docstring states them), laid out as
fvcore lays out ``jit_handles.py``: a state per tensor (``RFState``), the geometric primitives every
rule is built from (``RFRules``: a window op, a merge, global pooling, reshapes, ...), and ``RULES``,
a table from a torch function's name (``op_name``: aliases folded, underscores stripped) to the rule
that computes its outputs' states. An op with no entry is treated as elementwise (``merge``): the
union of its inputs' regions when the spatial layout is unchanged, flagged unless it is a known
pointwise op. The driver that runs a model and feeds every op through these rules is
``explorer.views.rf_trace``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from explorer.errors import ExplorerError
from explorer.shapes import pair as _pair

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




def plain_number(x: float) -> int | float:
    if isinstance(x, float) and math.isfinite(x) and abs(x - round(x)) < 1e-9:
        return int(round(x))
    if isinstance(x, float):
        return round(x, 4)
    return x


def flat_tensors(obj: Any, out: list | None = None, depth: int = 0) -> list[torch.Tensor]:
    if out is None:
        out = []
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for o in obj:
            flat_tensors(o, out, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for o in obj.values():
            flat_tensors(o, out, depth + 1)
    return out


_ALIASES = {"iadd": "add", "radd": "add", "isub": "sub", "rsub": "sub", "imul": "mul", "rmul": "mul",
            "truediv": "div", "itruediv": "div", "rtruediv": "div", "true_divide": "div", "divide": "div",
            "multiply": "mul", "subtract": "sub", "concat": "cat", "concatenate": "cat",
            "max_pool2d_with_indices": "max_pool2d", "adaptive_max_pool2d_with_indices": "adaptive_max_pool2d",
            "swapaxes": "transpose", "swapdims": "transpose", "moveaxis": "movedim", "clip": "clamp",
            "upsample": "interpolate", "upsample_nearest": "interpolate", "upsample_bilinear": "interpolate"}
REDUCES = {"amax", "amin", "mean", "sum", "std", "var", "logsumexp", "prod", "nanmean", "nansum", "median",
           "norm", "all", "any", "argmax", "argmin", "std_mean", "var_mean"}


def op_name(f: Any) -> str:
    name = f if isinstance(f, str) else getattr(f, "__name__", None) or type(f).__name__
    name = name.strip("_") or name
    return _ALIASES.get(name, name)


def op_arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
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
# Geometric primitives
# ---------------------------------------------------------------------------------------------

class RFRules:
    """The primitives the per-op rules are made of, for one input size and one global-context policy."""

    def __init__(self, input_hw: tuple[int, int], global_context: str = "separate"):
        if global_context not in ("separate", "include"):
            raise ExplorerError(f"global_context must be 'separate' or 'include', got {global_context!r}")
        self.H, self.W = input_hw
        self.include_context = global_context == "include"

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

    def transfer(self, name: str, args: tuple, kwargs: dict, ins: list, outs: list):
        """(state or one state per output, note) of an op's outputs, by the op's rule in ``RULES``."""
        return RULES.get(name, _elementwise)(self, OpCall(name, args, kwargs, ins, outs))

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
# Per-op rules
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpCall:
    """One traced call: the op's name, its arguments, the (tensor, state) of every input that carries a
    state (at least one, in argument order) and its output tensors (at least one)."""
    name: str
    args: tuple
    kwargs: dict
    ins: list
    outs: list

    @property
    def out(self) -> torch.Tensor:
        return self.outs[0]

    @property
    def t0(self) -> torch.Tensor:
        return self.ins[0][0]

    @property
    def s0(self) -> RFState:
        return self.ins[0][1]

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        return op_arg(self.args, self.kwargs, i, name, default)


Rule = Callable[[RFRules, OpCall], tuple]


def _conv2d(r: RFRules, c: OpCall):
    w = c.arg(1, "weight")
    k = tuple(w.shape[-2:])
    d = _pair(c.arg(5, "dilation", 1))
    p = c.arg(4, "padding", 0)
    if isinstance(p, str):
        p = (0, 0) if p == "valid" else tuple((d[i] * (k[i] - 1)) // 2 for i in range(2))
    return r.window(c.s0, c.t0, c.out, k, _pair(c.arg(3, "stride", 1)), _pair(p), d), None


def _conv_transpose2d(r: RFRules, c: OpCall):
    w = c.arg(1, "weight")
    k = tuple(w.shape[-2:])
    return r.transposed(c.s0, c.t0, c.out, k, _pair(c.arg(3, "stride", 1)), _pair(c.arg(4, "padding", 0)),
                        _pair(c.arg(7, "dilation", 1)))


def _pool2d(r: RFRules, c: OpCall):
    if c.name == "lp_pool2d":
        k = _pair(c.arg(2, "kernel_size"))
        s = c.arg(3, "stride")
        p, d = (0, 0), (1, 1)
    else:
        k = _pair(c.arg(1, "kernel_size"))
        s = c.arg(2, "stride")
        p = _pair(c.arg(3, "padding", 0))
        d = _pair(c.arg(4, "dilation", 1)) if c.name == "max_pool2d" else (1, 1)
    s = k if s is None or (isinstance(s, (list, tuple)) and len(s) == 0) else _pair(s)
    st = r.window(c.s0, c.t0, c.out, k, s, p, d)
    return [st] * len(c.outs), None


def _adaptive_pool2d(r: RFRules, c: OpCall):
    return r.adaptive(c.s0, c.t0, c.out)


def _interpolate(r: RFRules, c: OpCall):
    return r.upsample(c.s0, c.t0, c.out, c.arg(3, "mode", "nearest"))


def _pixel_shuffle(r: RFRules, c: OpCall):
    f = int(c.arg(1, "upscale_factor"))
    return r.per_axis(c.s0, c.t0, c.out, lambda rf, j, st, i: (rf, j / f, st)), None


def _pixel_unshuffle(r: RFRules, c: OpCall):
    f = int(c.arg(1, "downscale_factor"))
    return r.window(c.s0, c.t0, c.out, (f, f), (f, f), (0, 0), (1, 1)), None


def _pad(r: RFRules, c: OpCall):
    return r.pad(c.s0, c.t0, c.out, c.arg(1, "pad"))


def _getitem(r: RFRules, c: OpCall):
    return r.getitem(c.s0, c.t0, c.out, c.args[1] if len(c.args) > 1 else c.kwargs.get("idx"))


def _cat_or_stack(r: RFRules, c: OpCall):
    return r.cat(c.name, c.ins, c.out, c.arg(1, "dim", 0))


def _max_or_min(r: RFRules, c: OpCall):
    other = c.arg(1, "other", c.kwargs.get("dim"))
    if isinstance(other, torch.Tensor):
        return r.merge(c.name, c.ins, c.out, quiet=True)
    if other is None:
        return r.global_state(c.out, [c.s0], pooled=True), "full reduction: global"
    return r.reduce(c.s0, c.t0, c.outs, other, c.arg(2, "keepdim", False))


def _reduction(r: RFRules, c: OpCall):
    return r.reduce(c.s0, c.t0, c.outs, c.arg(1, "dim"), c.arg(2, "keepdim", False))


def _reshape(r: RFRules, c: OpCall):
    return r.reshape(c.s0, c.t0, c.out), None


def _expand(r: RFRules, c: OpCall):
    return r.expand(c.s0, c.t0, c.out), None


def _permute(r: RFRules, c: OpCall):
    dims = list(c.args[1:]) if len(c.args) > 2 else c.arg(1, "dims")
    if isinstance(dims, int):
        dims = [dims]
    return r.permute(c.s0, c.t0, c.out, [int(d) % c.t0.dim() for d in dims]), None


def _transpose(r: RFRules, c: OpCall):
    nd = c.t0.dim()
    d0, d1 = int(c.arg(1, "dim0")) % nd, int(c.arg(2, "dim1")) % nd
    perm = list(range(nd))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return r.permute(c.s0, c.t0, c.out, perm), None


def _t(r: RFRules, c: OpCall):
    if c.t0.dim() == 2:
        return r.permute(c.s0, c.t0, c.out, [1, 0]), None
    return _elementwise(r, c)


def _split(r: RFRules, c: OpCall):
    dim = c.arg(1 if c.name == "unbind" else 2, "dim", 0)
    return r.split(c.name, c.s0, c.t0, c.outs, dim)


def _mixes_positions(r: RFRules, c: OpCall):
    return r.global_state(c.out, [s for _, s in c.ins]), f"{c.name} mixes positions: global"


def _linear_or_matmul(r: RFRules, c: OpCall):
    """A weight applied to one tensor's last axis: pointwise over positions unless that axis is spatial."""
    if len(c.ins) == 1 and c.ins[0][0] is c.args[0]:
        s0, t0 = c.s0, c.t0
        if s0.glob:
            return r.global_state(c.out, [s0]), None
        if s0.axes is None or t0.dim() - 1 in s0.axes:
            return r.global_state(c.out, [s0]), f"{c.name} across positions: global"
        return r.pointwise(s0, t0, c.out, c.name, quiet=True)
    return _mixes_positions(r, c)


def _along_dim(r: RFRules, c: OpCall):
    """softmax, cumsum, sort, ...: global when the dim is spatial, pointwise otherwise."""
    pos, default = DIM_OPS[c.name]
    s0, t0 = c.s0, c.t0
    dim = c.arg(pos, "dim", default)
    if dim is None:
        dim = 0 if t0.dim() in (0, 1, 3) else 1
    if s0.axes is not None and int(dim) % t0.dim() in s0.axes:
        return r.global_state(c.out, [s0]), f"{c.name} over a spatial axis: global"
    return [r.pointwise(s0, t0, o, c.name, quiet=True)[0] for o in c.outs], None


def _flip(r: RFRules, c: OpCall):
    s0, t0 = c.s0, c.t0
    dims = list(c.args[1:]) if len(c.args) > 2 else c.arg(1, "dims")
    dims = [int(d) % t0.dim() for d in ([dims] if isinstance(dims, int) else dims)]
    if s0.axes is not None and any(d in s0.axes for d in dims):
        return r.global_state(c.out, [s0]), "flip of a spatial axis: global"
    return r.pointwise(s0, t0, c.out, c.name, quiet=True)


def _roll(r: RFRules, c: OpCall):
    return r.roll(c.s0, c.t0, c.out, c.arg(1, "shifts"), c.arg(2, "dims"))


def _elementwise(r: RFRules, c: OpCall):
    """Every op without a rule: merge the inputs if the spatial layout is unchanged."""
    return r.merge(c.name, c.ins, c.out, quiet=c.name in POINTWISE)


def _rule_table(*entries: tuple[Any, Rule]) -> dict[str, Rule]:
    """Op name → rule; a name listed by two entries takes the first one's rule."""
    table: dict[str, Rule] = {}
    for names, rule in entries:
        for name in ([names] if isinstance(names, str) else sorted(names)):
            table.setdefault(name, rule)
    return table


RULES: dict[str, Rule] = _rule_table(
    ("conv2d", _conv2d),
    ("conv_transpose2d", _conv_transpose2d),
    (("max_pool2d", "avg_pool2d", "lp_pool2d"), _pool2d),
    (("adaptive_avg_pool2d", "adaptive_max_pool2d"), _adaptive_pool2d),
    ("interpolate", _interpolate),
    ("pixel_shuffle", _pixel_shuffle),
    ("pixel_unshuffle", _pixel_unshuffle),
    ("pad", _pad),
    ("getitem", _getitem),
    (("cat", "stack"), _cat_or_stack),
    (("max", "min"), _max_or_min),
    (REDUCES, _reduction),
    (RESHAPES, _reshape),
    (EXPANDS, _expand),
    ("permute", _permute),
    ("transpose", _transpose),
    ("t", _t),
    (SPLITS, _split),
    (("linear", "matmul"), _linear_or_matmul),
    (MIXERS, _mixes_positions),
    (DIM_OPS, _along_dim),
    ("flip", _flip),
    ("roll", _roll),
)
