"""Models someone exported: an ONNX file read as data (protobuf, never unpickled), drawn and costed per node.

The file is size-capped like a checkpoint (explorer.weights' limits) before it is parsed. Each ONNX node is
replayed as the equivalent torch call on meta tensors (shapes only; small integer constants such as reshape
targets are read as values), under a dispatch mode that costs every aten op with the cost engine's own
formulas (explorer.cost.cost_of_op): the same MACs, memory access cost and "not costed" list as a model built
here. ONNX ops with no torch equivalent below are listed as not costed, and so is everything downstream of them
whose shapes cannot be known.

What a file cannot give: swaps (no module to replace), latency with this project's kernels, Inside views. A
torch.export `.pt2` archive is not read: its graph is stored as a pickle-free JSON, but its weights and
constants are pickled tensors, and nothing here unpickles an upload.
"""
from __future__ import annotations

import collections
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from explorer.errors import ExplorerError
from explorer.weights import MAX_CHECKPOINT_BYTES, MAX_ENTRIES

PROTOBUF_LIMIT = 2 * 2**30 - 1  # one serialised protobuf message cannot be larger
MAX_ONNX_BYTES = min(MAX_CHECKPOINT_BYTES, PROTOBUF_LIMIT)
MAX_ONNX_NODES = 100_000
SMALL_CONSTANT = 4096  # integer constants up to this many elements are read as values (shapes, axes, indices)
SYMBOLIC_DIM = 1  # a named dimension (batch, sequence) is taken as 1


class _Costing(TorchDispatchMode):
    """Costs every non-view aten op one ONNX node runs."""

    def __init__(self):
        super().__init__()
        self.macs = self.memory = self.activations = 0
        self.uncounted: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from explorer.cost import is_view, cost_of_op

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not is_view(func):
            cost = cost_of_op(func, args, kwargs, out)
            self.macs += cost.totals.macs
            self.memory += cost.totals.memory_access_bytes
            self.activations += cost.totals.activations
            if cost.category == "uncounted":
                self.uncounted[str(func)] += 1
        return out


# --- ONNX ops as torch calls ---------------------------------------------------------------------------

def _ints(value) -> list[int]:
    return [int(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value)]


def _pads(attrs, spatial: int) -> tuple[list[int], list[int] | None]:
    """ONNX pads (begins then ends) as torch's symmetric padding, or an explicit F.pad list when they differ."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise NotImplementedError("auto_pad SAME_*")
    pads = list(attrs.get("pads", [0] * 2 * spatial))
    begin, end = pads[:spatial], pads[spatial:]
    if begin == end:
        return begin, None
    explicit = []
    for b, e in reversed(list(zip(begin, end))):
        explicit += [b, e]
    return [0] * spatial, explicit


def _conv(x, w, b=None, **attrs):
    spatial = w.dim() - 2
    padding, explicit = _pads(attrs, spatial)
    if explicit:
        x = F.pad(x, explicit)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    return conv(x, w, b, stride=list(attrs.get("strides", [1] * spatial)), padding=padding,
                dilation=list(attrs.get("dilations", [1] * spatial)), groups=int(attrs.get("group", 1)))


def _gemm(a, b, c=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = a.t() if transA else a
    b = b.t() if transB else b
    if c is not None and beta:
        return torch.addmm(c, a, b, beta=beta, alpha=alpha)
    out = torch.mm(a, b)
    return out if alpha == 1.0 else out * alpha


def _pool(kind: str):
    def pool(x, **attrs):
        spatial = x.dim() - 2
        kernel = list(attrs["kernel_shape"])
        padding, explicit = _pads(attrs, spatial)
        if explicit:
            x = F.pad(x, explicit)
        stride = list(attrs.get("strides", [1] * spatial))
        ceil = bool(attrs.get("ceil_mode", 0))
        if kind == "max":
            return {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial](
                x, kernel, stride, padding, list(attrs.get("dilations", [1] * spatial)), ceil)
        return {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial](
            x, kernel, stride, padding, ceil, bool(attrs.get("count_include_pad", 0)))

    return pool


def _axes(attrs, axes_input, rank):
    axes = _ints(axes_input) if axes_input is not None else list(attrs.get("axes", []))
    return [a % rank for a in axes] if axes else list(range(rank))


def _reduce(fn):
    def reduce(x, axes=None, keepdims=1, noop_with_empty_axes=0, **attrs):
        dims = _axes(attrs, axes, x.dim())
        return fn(x, dim=dims, keepdim=bool(keepdims))

    return reduce


def _reshape(x, shape, allowzero=0):
    target = _ints(shape)
    if not allowzero:
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(target)


def _flatten(x, axis=1):
    axis %= max(x.dim(), 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _squeeze(x, axes=None, **attrs):
    dims = _axes(attrs, axes, x.dim()) if (axes is not None or attrs.get("axes")) else [i for i, s in enumerate(x.shape) if s == 1]
    for d in sorted(dims, reverse=True):
        x = x.squeeze(d)
    return x


def _unsqueeze(x, axes=None, **attrs):
    dims = _ints(axes) if axes is not None else list(attrs["axes"])
    rank = x.dim() + len(dims)
    for d in sorted(a % rank for a in dims):
        x = x.unsqueeze(d)
    return x


def _gather(x, index, axis=0):
    axis %= x.dim()
    index = index.to(x.device).long()
    out = x.index_select(axis, index.reshape(-1))
    return out.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1:])


def _slice(x, starts, ends, axes=None, steps=None):
    starts, ends = _ints(starts), _ints(ends)
    axes = _ints(axes) if axes is not None else list(range(len(starts)))
    steps = _ints(steps) if steps is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a % x.dim()] = slice(s, min(e, x.shape[a % x.dim()]), st)
    return x[tuple(index)]


def _clip(x, low=None, high=None, **attrs):
    low = low if low is not None else attrs.get("min")
    high = high if high is not None else attrs.get("max")
    return torch.clamp(x, None if low is None else float(low), None if high is None else float(high))


def _batch_norm(x, scale, bias, mean, var, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


def _layer_norm(x, scale, bias=None, axis=-1, epsilon=1e-5, **_):
    axis %= x.dim()
    return F.layer_norm(x, x.shape[axis:], scale, bias, eps=epsilon)


OPS: dict[str, Callable] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": torch.matmul,
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf, "Sqrt": torch.sqrt,
    "Exp": torch.exp, "Log": torch.log, "Neg": torch.neg, "Abs": torch.abs, "Reciprocal": torch.reciprocal,
    "Gelu": lambda x, approximate="none": F.gelu(x, approximate=approximate if isinstance(approximate, str) else approximate.decode()),
    "LeakyRelu": lambda x, alpha=0.01: F.leaky_relu(x, alpha), "HardSwish": F.hardswish,
    "HardSigmoid": lambda x, alpha=0.2, beta=0.5: torch.clamp(x * alpha + beta, 0, 1),
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow,
    "Clip": _clip, "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "GlobalAveragePool": lambda x: x.mean(dim=list(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x: x.amax(dim=list(range(2, x.dim())), keepdim=True),
    "ReduceMean": _reduce(torch.mean), "ReduceSum": _reduce(torch.sum), "ReduceMax": _reduce(torch.amax),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": lambda x, perm=None: x.permute(perm or list(range(x.dim()))[::-1]),
    "Concat": lambda *xs, axis: torch.cat(xs, axis), "Softmax": lambda x, axis=-1: torch.softmax(x, axis),
    "Identity": lambda x: x, "Dropout": lambda x, *rest, **_: x, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Shape": lambda x, **_: torch.tensor(list(x.shape), dtype=torch.long), "Gather": _gather, "Slice": _slice,
}


# --- reading the file ------------------------------------------------------------------------------------

def _attributes(node) -> dict[str, Any]:
    import onnx

    out = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, (list, tuple)):
            value = list(value)
        out[attr.name] = value
    return out


def _tensor(proto) -> torch.Tensor:
    """An initializer or constant: real values for small integer ones, shape and dtype only for the rest."""
    import onnx
    from onnx import numpy_helper

    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(proto.data_type)
    dtype = torch.from_numpy(__import__("numpy").zeros(0, dtype=np_dtype)).dtype
    shape = list(proto.dims)
    if not dtype.is_floating_point and math.prod(shape) <= SMALL_CONSTANT:
        return torch.from_numpy(numpy_helper.to_array(proto).copy())
    return torch.empty(shape, dtype=dtype, device="meta")


def check_onnx(data: bytes, filename: str) -> None:
    shown = repr(str(filename)[:200])
    if not str(filename).lower().endswith(".onnx"):
        raise ExplorerError(f"{shown} is not an .onnx file")
    if len(data) > MAX_ONNX_BYTES:
        from explorer.units import format_bytes

        raise ExplorerError(f"{shown} is {format_bytes(len(data))}, over the limit of {format_bytes(MAX_ONNX_BYTES)}")


def read_onnx(data: bytes, filename: str) -> dict[str, Any]:
    """The file's graph in explorer.graph's format (nodes grouped by the exporter's scope names, edges with
    shapes), every node costed; or ExplorerError with the reason."""
    check_onnx(data, filename)
    import onnx
    from google.protobuf.message import DecodeError

    shown = repr(str(filename)[:200])
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ExplorerError(f"{shown} is not a readable ONNX model: {str(exc)[:200]}") from None
    graph = model.graph
    if len(graph.node) > MAX_ONNX_NODES or len(graph.initializer) > MAX_ENTRIES:
        raise ExplorerError(f"{shown} has {len(graph.node):,} nodes and {len(graph.initializer):,} initializers; "
                            f"the limits are {MAX_ONNX_NODES:,} and {MAX_ENTRIES:,}")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise ExplorerError(f"{shown} keeps its weights in separate files, which one upload cannot carry")
    if any(n.domain not in ("", "ai.onnx") for n in graph.node) or any(n.op_type in ("If", "Loop", "Scan") for n in graph.node):
        raise ExplorerError(f"{shown} uses custom domains or control flow (If/Loop/Scan), which are not read here")

    values: dict[str, torch.Tensor | None] = {}
    weights = {t.name for t in graph.initializer}
    for init in graph.initializer:
        values[init.name] = _tensor(init)
    inputs = [i for i in graph.input if i.name not in weights]
    for inp in inputs:
        dims = [d.dim_value if d.HasField("dim_value") else SYMBOLIC_DIM for d in inp.type.tensor_type.shape.dim]
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        dtype = torch.from_numpy(__import__("numpy").zeros(0, dtype=np_dtype)).dtype
        values[inp.name] = torch.empty(dims, dtype=dtype, device="meta")

    producer = {i.name: "(input)" for i in inputs}
    nodes: list[dict[str, Any]] = [{
        "id": "(input)", "type": "input", "parent": None, "depth": 1, "params": 0, "macs": 0, "memory_access_bytes": 0,
        "activations": 0, "calls": 1, "kind": "io",
        "output_shape": list(values[inputs[0].name].shape) if inputs else None}]
    edges: dict[tuple[str, str], list[int]] = {}
    groups: dict[str, dict[str, Any]] = {}
    not_costed: collections.Counter = collections.Counter()
    used_weights: set[str] = set()
    seen_ids: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            attrs = _attributes(node)
            for out in node.output:
                values[out] = _tensor(attrs["value"]) if "value" in attrs else None
            continue
        node_id = node.name.strip("/") or f"{node.op_type}_{index}"
        if node_id in seen_ids:
            node_id = f"{node_id}#{index}"
        seen_ids.add(node_id)
        scope = [part for part in node_id.split("/")[:-1] if part]  # the exporter's module path, /stem/stem.0/Conv
        parent = None
        for depth in range(1, len(scope) + 1):
            group_id = "/".join(scope[:depth])
            if group_id not in groups:
                groups[group_id] = {"id": group_id, "type": "scope", "parent": parent, "depth": depth, "kind": "module"}
            parent = group_id
        params = 0
        for name in node.input:
            if name in weights and name not in used_weights and values[name].is_floating_point():
                used_weights.add(name)
                params += values[name].numel()
        args = [values.get(name) if name else None for name in node.input]
        costing = _Costing()
        outputs: list[torch.Tensor] = []
        handler = OPS.get(node.op_type)
        if handler is None or any(a is None and name for a, name in zip(args, node.input)):
            not_costed[node.op_type] += 1
        else:
            while args and args[-1] is None:  # optional inputs left out at the end
                args.pop()
            if any(isinstance(a, torch.Tensor) and a.device.type == "meta" for a in args):
                args = [a.to("meta") if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
            try:
                with costing:
                    result = handler(*args, **_attributes(node))
                outputs = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
            except (NotImplementedError, RuntimeError, TypeError, ValueError, IndexError, KeyError):
                not_costed[node.op_type] += 1
        for name, tensor in zip(node.output, outputs):
            values[name] = tensor
        for name in node.output[len(outputs):]:
            values[name] = None
        for name in node.input:
            if name in producer and values.get(name) is not None:
                edges.setdefault((producer[name], node_id), list(values[name].shape))
        for name in node.output:
            producer[name] = node_id
        nodes.append({
            "id": node_id, "type": node.op_type, "parent": parent, "depth": len(scope) + 1, "params": params,
            "macs": costing.macs, "memory_access_bytes": costing.memory, "activations": costing.activations,
            "output_shape": list(outputs[0].shape) if outputs else None, "calls": 1, "kind": "onnx",
            "costed": bool(outputs)})
        for op, count in costing.uncounted.items():
            not_costed[op] += count
    nodes.append({"id": "(output)", "type": "output", "parent": None, "depth": 1, "params": 0, "macs": 0,
                  "memory_access_bytes": 0, "activations": 0, "calls": 1, "kind": "io", "output_shape": None})
    for out in graph.output:
        if out.name in producer and values.get(out.name) is not None:
            edges.setdefault((producer[out.name], "(output)"), list(values[out.name].shape))
    return _with_groups(filename, nodes, groups, edges, not_costed, inputs, values)


def _with_groups(filename, nodes, groups, edges, not_costed, inputs, values) -> dict[str, Any]:
    """Groups carry the sums of their members (inclusive figures, as the cost report's containers do)."""
    sums = {gid: collections.Counter() for gid in groups}
    for node in nodes:
        parent = node["parent"]
        while parent is not None:
            for key in ("params", "macs", "memory_access_bytes", "activations"):
                sums[parent][key] += node[key]
            parent = groups[parent]["parent"]
    group_nodes = []
    for gid, group in groups.items():
        group_nodes.append(dict(group, calls=1, output_shape=None,
                                **{key: sums[gid][key] for key in ("params", "macs", "memory_access_bytes", "activations")}))
    all_nodes = nodes[:1] + group_nodes + nodes[1:]
    parents = {n["parent"] for n in all_nodes if n["parent"]}
    order = {n["id"]: i for i, n in enumerate(all_nodes)}
    for node in all_nodes:
        node["group"] = node["id"] in parents
        node["changed"] = False
        node["order"] = order[node["id"]]
    leaves = [n for n in all_nodes if not n["group"]]
    totals = {key: sum(n[key] for n in leaves) for key in ("params", "macs", "memory_access_bytes", "activations")}
    return {
        "arch": str(filename)[:200], "spec": None, "source": "onnx",
        "input_shape": list(values[inputs[0].name].shape) if inputs and values.get(inputs[0].name) is not None else [],
        "traced_on": "meta", "totals": totals,
        "uncounted_ops": [{"op": op, "count": count} for op, count in sorted(not_costed.items())],
        "max_depth": max((n["depth"] for n in all_nodes), default=1),
        "nodes": all_nodes, "edges": [{"src": s, "dst": d, "shape": shape} for (s, d), shape in edges.items()],
    }
