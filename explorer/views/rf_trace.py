"""Receptive-field driver: runs a model once and feeds every op through the rules of ``rf_rules``.

As fvcore's ``jit_analysis.py`` drives the per-op handles of ``jit_handles.py``: ``Propagator``
keeps the (rf, jump, start) state of every tensor by identity and applies ``RFRules.transfer`` to each
torch function call; the two front ends obtain the calls and name the rows. ``trace_fx`` runs a
``torch.fx`` graph node by node (meta tensors first, real ones where the model needs values);
``trace_hooks`` runs the model itself under forward hooks and a ``TorchFunctionMode`` when fx cannot
trace it. The module docstring of ``explorer.views.receptive_field`` (the public face) describes both.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from explorer.errors import ExplorerError
from explorer.views.rf_rules import RFRules, RFState, op_arg, flat_tensors, op_name, plain_number

# ---------------------------------------------------------------------------------------------
# Propagation
# ---------------------------------------------------------------------------------------------

class Propagator(RFRules):
    """(rf, jump, start) per tensor, keyed by tensor identity (tensors are kept alive meanwhile)."""

    def __init__(self, input_hw: tuple[int, int], global_context: str = "separate"):
        super().__init__(input_hw, global_context)
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

    # -- entry point --
    def handle(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        outs = flat_tensors(result)
        if not outs:
            return
        ins = [(t, self.get(t)) for t in flat_tensors((args, kwargs))]
        ins = [(t, s) for t, s in ins if s is not None]
        if not ins:
            return
        name = op_name(func)
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


# ---------------------------------------------------------------------------------------------
# Tracing front ends
# ---------------------------------------------------------------------------------------------

class _Recorder(TorchFunctionMode):
    def __init__(self, prop: Propagator, on_op: Callable | None = None):
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


def _row(prop: Propagator, name: str, type_: str, op: str, t: torch.Tensor | None, st: RFState,
         note: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "op": op,
        "rf": [plain_number(float(v)) for v in st.rf],
        "jump": [plain_number(float(v)) for v in st.jump],
        "start": [plain_number(float(v)) for v in st.start],
        "output_hw": list(st.size),
        "global": st.glob,
        "global_context": st.context,
        "approximate": st.approx or note is not None and ("approx" in note or "assumed" in note),
        "note": note,
    }


def _state_of(prop: Propagator, value: Any) -> tuple[torch.Tensor | None, RFState | None]:
    for t in flat_tensors(value):
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


def trace_fx(gm: torch.fx.GraphModule, x: torch.Tensor, prop: Propagator, meta: bool) -> list[dict[str, Any]]:
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
            target_name = op_name(n.target)
            if n.op == "call_function" and target_name == "shifted_window_attention":
                result = super().run_node(n)
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                st = prop.get(args[0])
                if st is not None:
                    out_st, note = prop.window_attention(st, args[0], result, op_arg(args, kwargs, 4, "window_size"))
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


def trace_hooks(model: nn.Module, x: torch.Tensor, prop: Propagator, meta: bool) -> list[dict[str, Any]]:
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
        fname = op_name(func)
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
# Inputs, eval mode and the meta-then-real run
# ---------------------------------------------------------------------------------------------

def input_chw(input_size) -> tuple[int, int, int]:
    size = tuple(int(s) for s in input_size)
    if len(size) == 2:
        return 3, size[0], size[1]
    if len(size) == 3:
        return size
    if len(size) == 4 and size[0] == 1:
        return size[1], size[2], size[3]
    raise ExplorerError(f"receptive fields need an image input (C, H, W), got {input_size}")


def device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, (p.dtype if p.dtype.is_floating_point else torch.float32)
    for b in model.buffers():
        if b.dtype.is_floating_point:
            return b.device, b.dtype
    return torch.device("cpu"), torch.float32


class EvalMode:
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


def random_input(model: nn.Module, chw: tuple[int, int, int], n: int = 1, seed: int = 0,
                  meta: bool = False) -> torch.Tensor:
    device, dtype = device_dtype(model)
    if meta or device.type == "meta":
        return torch.empty((n, *chw), device="meta", dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *chw), generator=g)
    return x.to(device=device, dtype=dtype)


def run_trace(trace: Callable, module: nn.Module, model: nn.Module, chw, global_context: str,
               try_meta: bool):
    """Shapes only (meta tensors) first when ``try_meta``; with real tensors where the model needs values.

    Only the fx path tries meta: a GraphModule runs torch.nn leaf modules and graph ops, which leave
    the model untouched, whereas arbitrary forward code may cache tensors on the module (torchvision's
    AnchorGenerator does), which must not become meta tensors.
    """
    error: Exception | None = None
    on_meta = device_dtype(model)[0].type == "meta"
    for meta in ((True,) if on_meta else (True, False) if try_meta else (False,)):
        prop = Propagator(chw[1:], global_context)
        x = random_input(model, chw, meta=meta)
        try:
            return trace(module, x, prop, meta), prop
        except ExplorerError:
            raise
        except Exception as exc:
            error = exc
    raise error  # type: ignore[misc]


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
