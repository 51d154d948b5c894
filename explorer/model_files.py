"""Models someone exported: an ONNX file read as data (protobuf, never unpickled), drawn and costed per node.

The file is size-capped like a checkpoint (explorer.weights' limits) before it is parsed. Each ONNX node is
replayed as the equivalent torch call on meta tensors (shapes only; small integer constants such as reshape
targets are read as values), under a dispatch mode that costs every aten op with the cost engine's own
formulas (explorer.cost.cost_of_op): the same MACs, memory access cost and "not costed" list as a model built
here. ONNX ops with no torch equivalent below are listed as not costed, and so is everything downstream of them
whose shapes cannot be known.

A torch.export `.pt2` archive (torch.export.save: a zip) is read the same way from its JSON alone,
`<archive>/models/model.json`: the zip directory is bounded first (size, entry count, declared sizes, a
compression-ratio check), the weights stay unread raw bytes and `data/sample_inputs/model.pt`, the one pickle,
is never opened. Each node whose target is `torch.ops.aten.<name>.<overload>` is found by attribute lookup on
torch.ops.aten (never eval) and replayed on meta tensors of the recorded shapes (factory ops forced onto the
meta device) under the same costing mode; any other target, or an argument kind not read here, is listed as
not costed. Parameters come from the graph signature's parameter inputs; the exporter's nn_module_stack gives
the module groups, a leaf module's call as one node, as the graph of a model built here draws it.

What a file cannot give: swaps (no module to replace), latency with this project's kernels, Inside views;
ONNX Runtime times `.onnx` files only.
"""
from __future__ import annotations

import collections
import math
import re
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


def load_onnx(data: bytes, filename: str):
    """The file parsed as an ONNX ModelProto (protobuf, nothing unpickled), after its name and size are checked;
    or ExplorerError with the reason."""
    check_onnx(data, filename)
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ExplorerError(f"{str(filename)[:200]!r} is not a readable ONNX model: {str(exc)[:200]}") from None


def read_onnx(data: bytes, filename: str) -> dict[str, Any]:
    """The file's graph in explorer.graph's format (nodes grouped by the exporter's scope names, edges with
    shapes), every node costed; or ExplorerError with the reason."""
    import onnx

    model = load_onnx(data, filename)
    shown = repr(str(filename)[:200])
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


def _with_groups(filename, nodes, groups, edges, not_costed, inputs, values, source="onnx") -> dict[str, Any]:
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
        "arch": str(filename)[:200], "spec": None, "source": source,
        "input_shape": list(values[inputs[0].name].shape) if inputs and values.get(inputs[0].name) is not None else [],
        "traced_on": "meta", "totals": totals,
        "uncounted_ops": [{"op": op, "count": count} for op, count in sorted(not_costed.items())],
        "max_depth": max((n["depth"] for n in all_nodes), default=1),
        "nodes": all_nodes, "edges": [{"src": s, "dst": d, "shape": shape} for (s, d), shape in edges.items()],
    }


# --- torch.export .pt2 archives ---------------------------------------------------------------------------

MAX_PT2_JSON_BYTES = 64 * 2**20  # models/model.json; resnet50's is under 0.5 MB
MAX_PT2_NODES = MAX_ONNX_NODES
MAX_PT2_RANK = 16
MAX_PT2_DIM = 2**40  # a recorded size beyond this is no real tensor
MAX_PT2_STACK = 64  # module nesting read at most this deep (explorer.graph.MAX_DEPTH)
MAX_PT2_TEXT = 10_000  # one metadata string (nn_module_stack) read at most this long
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.((?!__)[A-Za-z_][A-Za-z0-9_]*)\.((?!__)[A-Za-z_][A-Za-z0-9_]*)")
# ops never replayed: side effects, or reading a file the archive names (from_file maps a path on this machine)
_SIDE_EFFECT_OPS = {"from_file", "_print", "_assert_async", "_assert_scalar", "_functional_assert_async", "_functional_assert_scalar",
                    "sym_constrain_range", "sym_constrain_range_for_size", "_make_dep_token", "record_stream"}
# torch._export.serde.schema's enums (ScalarType, Layout, MemoryFormat), by number
_PT2_DTYPES = {1: torch.uint8, 2: torch.int8, 3: torch.int16, 4: torch.int32, 5: torch.int64, 6: torch.float16,
               7: torch.float32, 8: torch.float64, 9: torch.complex32, 10: torch.complex64, 11: torch.complex128,
               12: torch.bool, 13: torch.bfloat16, 28: torch.uint16, 29: torch.float8_e4m3fn, 30: torch.float8_e5m2,
               31: torch.float8_e4m3fnuz, 32: torch.float8_e5m2fnuz, 34: torch.uint32, 35: torch.uint64}
_PT2_LAYOUTS = {7: torch.strided}
_PT2_MEMORY_FORMATS = {1: torch.contiguous_format, 2: torch.channels_last, 3: torch.channels_last_3d,
                       4: torch.preserve_format}


class _Unhandled(Exception):
    """A node argument this reader does not turn into a value: the node is listed as not costed."""


def _pt2_json(data: bytes, filename: str) -> dict[str, Any]:
    """models/model.json of a torch.export archive, after the zip directory is bounded; nothing else is read
    (the weights stay unread bytes, and the pickled sample inputs are never opened)."""
    import io
    import json
    import zipfile

    from explorer.units import format_bytes
    from explorer.weights import (MAX_COMPRESSION_RATIO, RATIO_FREE_BYTES, ZIP_DIRECTORY_BYTES_PER_ENTRY,
                                  zip_directory)

    shown = repr(str(filename)[:200])
    if not str(filename).lower().endswith(".pt2"):
        raise ExplorerError(f"{shown} is not a .pt2 file")
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise ExplorerError(f"{shown} is {format_bytes(len(data))}, over the limit of {format_bytes(MAX_CHECKPOINT_BYTES)}")
    directory = zip_directory(data) if data.startswith(b"PK\x03\x04") else None
    if directory is None:
        raise ExplorerError(f"{shown} is not a zip archive, so not a torch.export .pt2 file")
    count, directory_bytes = directory
    if count > MAX_ENTRIES or directory_bytes > MAX_ENTRIES * ZIP_DIRECTORY_BYTES_PER_ENTRY:
        raise ExplorerError(f"refused {shown}: its zip directory lists {count:,} entries; the limit is {MAX_ENTRIES:,}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ExplorerError(f"{shown} is not a readable zip archive: {str(exc)[:200]}") from None
    if len(infos) > MAX_ENTRIES:
        raise ExplorerError(f"refused {shown}: it has {len(infos):,} zip entries; the limit is {MAX_ENTRIES:,}")
    unpacked = packed = 0
    for info in infos:
        entry = repr(info.filename[:80])
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ExplorerError(f"refused {shown}: entry {entry} uses zip compression method {info.compress_type}")
        if info.file_size > RATIO_FREE_BYTES and info.file_size > MAX_COMPRESSION_RATIO * info.compress_size:
            raise ExplorerError(f"refused {shown}: entry {entry} unpacks {format_bytes(info.compress_size)} to "
                                f"{format_bytes(info.file_size)} (more than {MAX_COMPRESSION_RATIO}:1, a zip bomb)")
        unpacked += info.file_size
        packed += info.compress_size
    bomb_limit = MAX_COMPRESSION_RATIO * len(data) + RATIO_FREE_BYTES  # many small entries may not add up to a bomb
    if packed > len(data) or unpacked > MAX_CHECKPOINT_BYTES or unpacked > bomb_limit:
        raise ExplorerError(f"refused {shown}: its entries claim {format_bytes(unpacked)} unpacked "
                            f"({format_bytes(packed)} packed) from a {format_bytes(len(data))} file")
    models = [info for info in infos if info.filename.count("/") == 2 and info.filename.endswith("/models/model.json")]
    if len(models) != 1:
        raise ExplorerError(f"{shown} has {'no' if not models else 'more than one'} <archive>/models/model.json, so it is "
                            "not a torch.export archive this reads (torch.export.save of one model)")
    info = models[0]
    if info.file_size > MAX_PT2_JSON_BYTES:
        raise ExplorerError(f"refused {shown}: its model.json is {format_bytes(info.file_size)}, over the limit of "
                            f"{format_bytes(MAX_PT2_JSON_BYTES)}")
    try:
        with archive.open(info) as entry_file:
            text = entry_file.read(MAX_PT2_JSON_BYTES + 1)
        if len(text) > MAX_PT2_JSON_BYTES:
            raise ExplorerError(f"refused {shown}: its model.json unpacks past {format_bytes(MAX_PT2_JSON_BYTES)}")
        model = json.loads(text)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RecursionError) as exc:
        raise ExplorerError(f"{shown} has a model.json that is not readable JSON: {str(exc)[:200]}") from None
    if not isinstance(model, dict):
        raise ExplorerError(f"{shown} has a model.json that is not a JSON object")
    return model


def _expect(value, kind: type | tuple[type, ...], shown: str, what: str):
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ExplorerError(f"{shown} is not a torch.export archive this reads: {what} is missing or malformed")
    return value


def _pt2_int(value) -> int:
    """A SymInt ({"as_int": n} or {"as_expr": {..., "hint": {"as_int": n}}}) as a plain int."""
    if isinstance(value, dict):
        if type(value.get("as_int")) is int:
            return value["as_int"]
        hint = value.get("as_expr", {}).get("hint") if isinstance(value.get("as_expr"), dict) else None
        if isinstance(hint, dict) and type(hint.get("as_int")) is int:
            return hint["as_int"]
        if "as_expr" in value:
            return SYMBOLIC_DIM
    raise ValueError("size")


def _pt2_tensor(meta, shown: str, name: str) -> torch.Tensor:
    """A meta tensor of a tensor_values entry's sizes, strides and dtype (never any data)."""
    what = f"tensor {name[:80]!r}"
    _expect(meta, dict, shown, what)
    try:
        sizes = [_pt2_int(s) for s in _expect(meta.get("sizes"), list, shown, what)]
        strides = [_pt2_int(s) for s in meta.get("strides", [])] if isinstance(meta.get("strides"), list) else []
    except ValueError:
        raise ExplorerError(f"{shown} is not a torch.export archive this reads: {what} has malformed sizes") from None
    if len(sizes) > MAX_PT2_RANK or any(not 0 <= s <= MAX_PT2_DIM for s in sizes + [abs(s) for s in strides]):
        raise ExplorerError(f"refused {shown}: {what} has sizes {sizes[:MAX_PT2_RANK]} out of range")
    dtype = _PT2_DTYPES.get(meta.get("dtype"))
    if dtype is None:
        raise ExplorerError(f"{shown} is not a torch.export archive this reads: {what} has an unknown dtype")
    try:
        if len(strides) != len(sizes):
            return torch.empty(sizes, dtype=dtype, device="meta")
        return torch.empty_strided(sizes, strides, dtype=dtype, device="meta")
    except (RuntimeError, ValueError, OverflowError):
        raise ExplorerError(f"refused {shown}: {what} has sizes {sizes} that no tensor can have") from None


def _pt2_argument(arg, env: dict[str, torch.Tensor], syms: dict[str, Any]):
    """One node argument from its JSON kind; tensors are the replay's meta tensors. _Unhandled otherwise."""
    if not isinstance(arg, dict) or len(arg) != 1:
        raise _Unhandled("argument")
    (kind, value), = arg.items()

    def tensor(ref):
        name = ref.get("name") if isinstance(ref, dict) else None
        if not isinstance(name, str) or name not in env:
            raise _Unhandled(kind)
        return env[name]

    def scalar(v, types):
        if type(v) not in types:
            raise _Unhandled(kind)
        return v

    def sym(v, plain):
        if isinstance(v, dict) and len(v) == 1:
            (key, inner), = v.items()
            if key == "as_name" and isinstance(inner, str) and inner in syms:
                return syms[inner]
            if key == plain:
                return scalar(inner, (int, float, bool))
        raise _Unhandled(kind)

    def many(v, one):
        if not isinstance(v, list) or len(v) > MAX_ENTRIES:
            raise _Unhandled(kind)
        return [one(item) for item in v]

    if kind == "as_none":
        return None
    if kind == "as_tensor":
        return tensor(value)
    if kind == "as_tensors":
        return many(value, tensor)
    if kind in ("as_optional_tensor", "as_optional_tensors"):
        def optional(v):
            return tensor(v["as_tensor"]) if isinstance(v, dict) and "as_tensor" in v else None
        return optional(value) if kind == "as_optional_tensor" else many(value, optional)
    if kind == "as_int":
        return scalar(value, (int,))
    if kind == "as_ints":
        return many(value, lambda v: scalar(v, (int,)))
    if kind == "as_float":
        return float(scalar(value, (int, float)))
    if kind == "as_floats":
        return many(value, lambda v: float(scalar(v, (int, float))))
    if kind == "as_bool":
        return scalar(value, (bool,))
    if kind == "as_bools":
        return many(value, lambda v: scalar(v, (bool,)))
    if kind == "as_string":
        return scalar(value, (str,))[:MAX_PT2_TEXT]
    if kind == "as_sym_int":
        return sym(value, "as_int")
    if kind == "as_sym_ints":
        return many(value, lambda v: sym(v, "as_int"))
    if kind == "as_sym_float":
        return sym(value, "as_float")
    if kind == "as_sym_bool":
        return sym(value, "as_bool")
    if kind == "as_scalar_type" and value in _PT2_DTYPES:
        return _PT2_DTYPES[value]
    if kind == "as_layout" and value in _PT2_LAYOUTS:
        return _PT2_LAYOUTS[value]
    if kind == "as_memory_format" and value in _PT2_MEMORY_FORMATS:
        return _PT2_MEMORY_FORMATS[value]
    if kind == "as_device":
        return torch.device("meta")  # never the recorded device: the replay allocates nothing
    raise _Unhandled(kind)


def _aten_op(target):
    """torch.ops.aten.<name>.<overload> as the op itself, found by attribute lookup on torch.ops.aten (never
    eval); None for any other target."""
    match = _ATEN_TARGET.fullmatch(target) if isinstance(target, str) else None
    if match is None or match.group(1) in _SIDE_EFFECT_OPS:
        return None
    name, overload = match.groups()
    try:
        packet = getattr(torch.ops.aten, name)
        if not isinstance(packet, torch._ops.OpOverloadPacket) or overload not in packet.overloads():
            return None
        op = getattr(packet, overload)
    except (AttributeError, RuntimeError):
        return None
    return op if isinstance(op, torch._ops.OpOverload) else None


def _module_stack(metadata) -> list[tuple[str, str, str]]:
    """nn_module_stack ("key,path,type;..." outermost first) as (call id, path, class name), the root left out.
    A later call of a module (key ending @n, counted from 0 after the first) is named path@n+1, as the torch
    graph names it; anything malformed reads as no stack (a flat graph)."""
    text = metadata.get("nn_module_stack") if isinstance(metadata, dict) else None
    if not isinstance(text, str) or len(text) > MAX_PT2_TEXT:
        return []
    stack = []
    for item in text.split(";"):
        key, sep, rest = item.partition(",")
        path, sep2, type_name = rest.rpartition(",")
        if not sep or not sep2:
            return []
        if not path:
            continue
        call = key.rpartition("@")[2] if "@" in key else ""
        shown = f"{path}@{int(call) + 1}" if call.isdigit() else path
        stack.append((shown[:200], path[:200], type_name.rpartition(".")[2][:80] or "module"))
    return stack if len(stack) <= MAX_PT2_STACK else []


def read_pt2(data: bytes, filename: str) -> dict[str, Any]:
    """A torch.export archive's graph in explorer.graph's format: every aten node replayed on meta tensors of
    its recorded shapes and costed with the cost engine's formulas, grouped by the module stack the exporter
    recorded; or ExplorerError with the reason. Only models/model.json is read."""
    import types

    model = _pt2_json(data, filename)
    shown = repr(str(filename)[:200])
    module = _expect(model.get("graph_module"), dict, shown, "graph_module")
    graph = _expect(module.get("graph"), dict, shown, "graph_module.graph")
    signature = _expect(module.get("signature"), dict, shown, "graph_module.signature")
    graph_nodes = _expect(graph.get("nodes"), list, shown, "graph.nodes")
    tensor_values = _expect(graph.get("tensor_values"), dict, shown, "graph.tensor_values")
    input_specs = _expect(signature.get("input_specs"), list, shown, "signature.input_specs")
    if len(graph_nodes) > MAX_PT2_NODES or len(tensor_values) > 10 * MAX_PT2_NODES or len(input_specs) > MAX_ENTRIES:
        raise ExplorerError(f"refused {shown}: {len(graph_nodes):,} nodes and {len(tensor_values):,} tensors; the limits "
                            f"are {MAX_PT2_NODES:,} and {10 * MAX_PT2_NODES:,}")

    def tensor_named(name):
        return _pt2_tensor(tensor_values.get(name), shown, str(name))

    parameters: dict[str, int] = {}  # graph input name -> elements, for the parameters (buffers hold no params)
    env: dict[str, torch.Tensor] = {}
    user_inputs: list[str] = []
    for spec in input_specs:
        _expect(spec, dict, shown, "an input spec")
        if len(spec) != 1:
            raise ExplorerError(f"{shown} is not a torch.export archive this reads: an input spec is malformed")
        (kind, body), = spec.items()
        arg = _expect(body, dict, shown, "an input spec").get("arg")
        ref = arg.get("as_tensor", arg) if isinstance(arg, dict) else None
        name = ref.get("name") if isinstance(ref, dict) else None
        if not isinstance(name, str):
            continue  # constant inputs, custom objects, tokens: no tensor
        if name in tensor_values:
            env[name] = tensor_named(name)
        if kind == "parameter" and name in env:
            parameters[name] = env[name].numel()
        elif kind == "user_input":
            user_inputs.append(name)
    syms: dict[str, Any] = {}
    sym_int_values = graph.get("sym_int_values")
    for name, value in sym_int_values.items() if isinstance(sym_int_values, dict) else ():
        try:
            syms[str(name)] = _pt2_int(value)
        except ValueError:
            pass

    # Nodes: one per call of a leaf module (all its ops summed, as the torch graph draws it), one per op a
    # container runs itself, and one per op outside any module.
    stacks = [_module_stack(node.get("metadata")) if isinstance(node, dict) else [] for node in graph_nodes]
    containers = {entry[0] for stack in stacks for entry in stack[:-1]}
    groups: dict[str, dict[str, Any]] = {}
    producer = {name: "(input)" for name in user_inputs}
    first_input = env.get(user_inputs[0]) if user_inputs else None
    nodes: dict[str, dict[str, Any]] = {"(input)": {
        "id": "(input)", "type": "input", "parent": None, "depth": 1, "params": 0, "macs": 0, "memory_access_bytes": 0,
        "activations": 0, "calls": 1, "kind": "io",
        "output_shape": list(first_input.shape) if first_input is not None else None}}
    edges: dict[tuple[str, str], list[int]] = {}
    not_costed: collections.Counter = collections.Counter()
    used_parameters: set[str] = set()
    op_counts: collections.Counter = collections.Counter()
    for index, (node, stack) in enumerate(zip(graph_nodes, stacks)):
        _expect(node, dict, shown, f"node {index}")
        target = node.get("target")
        inputs = _expect(node.get("inputs"), list, shown, f"node {index}'s inputs")
        outputs = _expect(node.get("outputs"), list, shown, f"node {index}'s outputs")
        fx_name = str(node.get("name") or f"node_{index}")[:200]
        leaf = stack[-1] if stack and stack[-1][0] not in containers else None
        parent = None
        for depth, (group_id, _, type_name) in enumerate(stack[:-1] if leaf else stack, start=1):
            if group_id not in groups:
                groups[group_id] = {"id": group_id, "type": type_name, "parent": parent, "depth": depth, "kind": "module"}
            parent = group_id
        if leaf:
            node_id = leaf[0]
        else:  # named as the torch graph names a container's own op: layer1.0.add_#1
            op_name = str(target).rpartition(".")[0].rpartition(".")[2][:80] or fx_name
            stem = f"{parent}.{op_name}" if parent else op_name
            op_counts[stem] += 1
            node_id = f"{stem}#{op_counts[stem]}"
        depth = (groups[parent]["depth"] + 1) if parent else 1
        if node_id not in nodes:
            if node_id in groups:
                node_id = f"{node_id}#{index}"
            nodes[node_id] = {
                "id": node_id, "type": leaf[2] if leaf else node_id.rpartition("#")[0].rpartition(".")[2] or "op",
                "parent": parent, "depth": depth, "params": 0, "macs": 0, "memory_access_bytes": 0, "activations": 0,
                "output_shape": None, "calls": 1, "kind": ("call" if "@" in node_id else "module") if leaf else "op",
                "costed": True}
        row = nodes[node_id]
        op = _aten_op(target)
        args, kwargs = [], {}
        names_in = [name for item in inputs if isinstance(item, dict) for name in _tensor_names(item.get("arg"))]
        costing, result = _Costing(), None
        try:
            if op is None:
                raise _Unhandled("target")
            for item in inputs:
                if not isinstance(item, dict) or not isinstance(item.get("arg"), dict):
                    raise _Unhandled("input")
                value = _pt2_argument(item["arg"], env, syms)
                if item.get("kind") == 2 and isinstance(item.get("name"), str):
                    kwargs[item["name"]] = value
                else:
                    args.append(value)
            schema_names = [a.name for a in op._schema.arguments]
            if "device" not in schema_names and not any(
                    isinstance(t, torch.Tensor) for t in tree_flatten((args, kwargs))[0]):
                raise _Unhandled("an op with neither tensors nor a device")
            if "device" in schema_names:  # factory ops make meta tensors whatever device the file names
                at = schema_names.index("device")
                if at < len(args):
                    args[at] = torch.device("meta")
                else:
                    kwargs["device"] = torch.device("meta")
            with costing:
                result = op(*args, **kwargs)
        except _Unhandled:
            not_costed[str(target)[:100]] += 1
            row["costed"] = False
        except (NotImplementedError, RuntimeError, TypeError, ValueError, IndexError, KeyError, AttributeError,
                OverflowError, AssertionError, ZeroDivisionError):
            not_costed[str(target)[:100]] += 1
            row["costed"] = False
        for name in names_in:
            if name in parameters and name not in used_parameters:
                used_parameters.add(name)
                row["params"] += parameters[name]
            if name in producer and producer[name] != node_id:
                edges.setdefault((producer[name], node_id), list(env[name].shape) if name in env else [])
        results = [result] if len(outputs) == 1 else list(result) if isinstance(result, (tuple, list)) else []
        first_shape = None
        for position, out in enumerate(outputs):
            value = results[position] if position < len(results) else None
            for name, tensor in _output_tensors(out, value, tensor_named, shown):
                env[name] = tensor
                producer[name] = node_id
                first_shape = first_shape or list(tensor.shape)
            if isinstance(out, dict) and isinstance(out.get("as_sym_int"), dict):
                sym_name = out["as_sym_int"].get("as_name")
                if isinstance(sym_name, str) and isinstance(value, int) and not isinstance(value, bool):
                    syms[sym_name] = value
        if first_shape is not None:
            row["output_shape"] = first_shape
        row["macs"] += costing.macs
        row["memory_access_bytes"] += costing.memory
        row["activations"] += costing.activations
        for uncounted_op, count in costing.uncounted.items():
            not_costed[uncounted_op] += count
    nodes["(output)"] = {"id": "(output)", "type": "output", "parent": None, "depth": 1, "params": 0, "macs": 0,
                         "memory_access_bytes": 0, "activations": 0, "calls": 1, "kind": "io", "output_shape": None}
    graph_outputs = graph.get("outputs") if isinstance(graph.get("outputs"), list) else []
    for out in graph_outputs:
        for name in _tensor_names(out):
            if name in producer:
                edges.setdefault((producer[name], "(output)"), list(env[name].shape) if name in env else [])
    first = [types.SimpleNamespace(name=user_inputs[0])] if user_inputs else []
    return _with_groups(filename, list(nodes.values()), groups, edges, not_costed, first, env, source="pt2")


def _tensor_names(arg) -> list[str]:
    """The tensor names an argument refers to (as_tensor, as_tensors, optional tensors)."""
    if not isinstance(arg, dict):
        return []
    names = []
    for kind in ("as_tensor", "as_optional_tensor"):
        ref = arg.get(kind)
        ref = ref.get("as_tensor", ref) if isinstance(ref, dict) else ref
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            names.append(ref["name"])
    for kind in ("as_tensors", "as_optional_tensors"):
        if isinstance(arg.get(kind), list):
            for ref in arg[kind][:MAX_ENTRIES]:
                ref = ref.get("as_tensor", ref) if isinstance(ref, dict) else ref
                if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                    names.append(ref["name"])
    return names


def _output_tensors(out, value, tensor_named, shown) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) for one node output: the replay's tensor when it ran, else the shape the file recorded."""
    names = _tensor_names(out)
    if isinstance(out, dict) and "as_tensor" in out:
        values = [value]
    elif isinstance(value, (tuple, list)):
        values = list(value)
    else:
        values = []
    pairs = []
    for position, name in enumerate(names):
        tensor = values[position] if position < len(values) else None
        if not isinstance(tensor, torch.Tensor) or tensor.device.type != "meta":
            tensor = tensor_named(name)
        pairs.append((name, tensor))
    return pairs
