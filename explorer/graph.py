"""The architecture as a graph: the module hierarchy as nested groups, the data flow as edges with tensor shapes.

Nodes are the cost report's per-layer rows (explorer.cost.analyse: params, MACs, memory access cost,
activations, output shape), so every figure on the drawing is the one the Model page shows; this module
adds only the data flow. The cost engine's own forward pass (explorer.cost.trace_costs, on the meta device)
carries a recorder that follows every tensor from the op that wrote it to the ops that read it, so one pass
gives both the figures and the edges:

- an op inside a leaf module (Conv2d, Linear, ...) belongs to that module: reading a tensor another
  node wrote is an edge, labelled with the tensor's shape;
- an op a container runs itself (a block's residual `out += identity`, a `torch.cat`, an attention
  matmul) becomes a node of its own, a child of the container, when it merges tensors from two or more
  nodes or has MACs (its figures from the cost engine's own formulas, explorer.cost.cost_of_op); any other
  container op (a reshape, a permute) passes its input's origin on.

So leaf nodes (leaf modules and these op nodes) hold every MAC of the model exactly once: their MACs add
up to the cost report's total. Groups (containers) carry their inclusive figures from the cost report.
`collapsed(graph, depth)` cuts the hierarchy at a depth and lifts the edges onto what is left.
"""
from __future__ import annotations

import collections
import html
import math
from typing import Any

import torch
import torch.nn as nn
from torch.utils.weak import WeakIdKeyDictionary

from explorer.cost import MAC_FORMULAS
from explorer.errors import ExplorerError
from explorer.layers import ROOT, parent_of
from explorer.spec import ModelSpec

INPUT_ID = "(input)"
OUTPUT_ID = "(output)"
MEASURES = {
    "macs": "MACs",
    "params": "parameters",
    "memory_access_bytes": "memory access (bytes)",
    "activations": "activations (elements)",
}
MAX_DEPTH = 64  # "--depth" beyond any real model's nesting


# --- the data-flow trace ------------------------------------------------------------------------------

def _tensors(tree) -> list[torch.Tensor]:
    """The distinct tensors in an op's arguments or outputs (nested tuples, lists and dicts), in order."""
    seen, out, todo = set(), [], [tree]
    while todo:
        item = todo.pop()
        if isinstance(item, torch.Tensor):
            if id(item) not in seen:
                seen.add(id(item))
                out.append(item)
        elif isinstance(item, (tuple, list)):
            todo.extend(reversed(item))
        elif isinstance(item, dict):
            todo.extend(reversed(list(item.values())))
    return out


class _Flow:
    """Which node wrote each live tensor, and the edges and op nodes found so far: an observer of the cost
    engine's own pass (explorer.cost.trace_costs), so the data flow costs no forward pass of its own.

    Every leaf module's calls are kept apart (`call_nodes`, with each call's figures from the engine's per-op
    costs); the graph uses them for the leaves called more than once (a block's ReLU), one node per call."""

    def __init__(self):
        self.begin(None, None)

    def begin(self, model: nn.Module | None, inputs):
        """Start (or, when the engine retries on the CPU, start again) on `model` fed with `inputs`."""
        self.leaves = set() if model is None else {
            name for name, module in model.named_modules() if name and not any(True for _ in module.children())}
        self.calls: collections.Counter = collections.Counter()
        self.call_nodes: dict[str, dict[str, Any]] = {}
        self.stack: list[str] = []  # module names
        self.owners: list[str] = []  # the node each module on the stack stands for now (a call node for leaves)
        self.order: dict[str, int] = {}  # node id -> when the forward pass first wrote a tensor there
        self.origin = WeakIdKeyDictionary()  # tensor -> id of the node that wrote it
        self.edges: dict[tuple[str, str], list[int]] = {}  # (src, dst) -> shape, first seen
        self.op_nodes: dict[str, dict[str, Any]] = {}
        self._op_counts: collections.Counter = collections.Counter()
        if inputs is not None:
            self.origin[inputs] = INPUT_ID

    def end(self, output):
        for src, tensor in self.sources(_tensors(output)).items():
            self.edge(src, OUTPUT_ID, tensor)

    def edge(self, src: str, dst: str, tensor: torch.Tensor):
        if src != dst:
            self.edges.setdefault((src, dst), list(tensor.shape))

    def sources(self, tensors) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        for t in tensors:
            src = self.origin.get(t)
            if src is not None and src not in found:
                found[src] = t
        return found

    def op(self, func, args, kwargs, out, cost):
        """One aten op with its cost from the engine (None for a view: no figures of its own)."""
        owner = self.stack[-1] if self.stack else ""
        sources = self.sources(_tensors((args, kwargs)))
        outputs = _tensors(out)
        if owner in self.leaves:
            node = self.owners[-1]
            self._add_call_cost(node, cost, outputs)
            for src, tensor in sources.items():
                self.edge(src, node, tensor)
            for t in outputs:
                self.origin[t] = node
            self.order.setdefault(node, len(self.order))
            return
        if len(sources) >= 2 or func in MAC_FORMULAS:
            if cost is None:  # a view that merges tensors: costed as before, by the engine's formulas
                from explorer.cost import cost_of_op

                cost = cost_of_op(func, args, kwargs, out)
            node = self._op_node(owner, func, cost, outputs)
            for src, tensor in sources.items():
                self.edge(src, node, tensor)
            for t in outputs:
                self.origin[t] = node
            self.order.setdefault(node, len(self.order))
        elif sources:  # a reshape, permute, scaling...: the tensor keeps its origin
            src = next(iter(sources))
            for t in outputs:
                self.origin[t] = src

    def enter(self, name: str):
        self.stack.append(name)
        node = name
        if name in self.leaves:
            self.calls[name] += 1
            call = self.calls[name]
            node = name if call == 1 else f"{name}@{call}"
            self.call_nodes[node] = {"module": name, "call": call, "macs": 0, "memory_access_bytes": 0,
                                     "activations": 0, "output_shape": None}
        self.owners.append(node)

    def leave(self, name: str, output):
        node = self.owners[-1] if self.stack and self.stack[-1] == name else name
        if self.stack and self.stack[-1] == name:
            self.stack.pop()
            self.owners.pop()
        if name in self.leaves:
            # a leaf that ran no op (Identity, Dropout in eval) still sits on the path
            for t in _tensors(output):
                src = self.origin.get(t)
                if src is not None and src != node:
                    self.edge(src, node, t)
                    self.origin[t] = node
                    self.order.setdefault(node, len(self.order))

    def _add_call_cost(self, node: str, cost, outputs):
        entry = self.call_nodes[node]
        if cost is not None:
            entry["macs"] += cost.totals.macs
            entry["memory_access_bytes"] += cost.totals.memory_access_bytes
            entry["activations"] += cost.totals.activations
        if outputs:
            entry["output_shape"] = list(outputs[0].shape)

    def _op_node(self, owner: str, func, cost, outputs) -> str:
        op = func._schema.name.split("::", 1)[-1]
        self._op_counts[(owner, op)] += 1
        count = self._op_counts[(owner, op)]
        node_id = f"{owner}.{op}#{count}" if owner else f"{op}#{count}"
        shape = list(outputs[0].shape) if outputs else None
        self.op_nodes[node_id] = {
            "id": node_id, "type": f"aten.{op}", "parent": owner or None, "op": op,
            "macs": cost.totals.macs, "memory_access_bytes": cost.totals.memory_access_bytes,
            "activations": cost.totals.activations, "output_shape": shape,
        }
        return node_id


def trace_flow(spec: ModelSpec, with_layers: bool = True) -> tuple[dict[str, Any], _Flow]:
    """(the spec's cost report, its data flow), from one forward pass: the cost engine's own (on the meta device,
    or the CPU where the forward depends on data), with the data-flow recorder riding along. Op nodes and each
    leaf module's calls are costed op by op from the engine's per-op figures; the rest comes from the report.
    `with_layers=False` skips the report's per-layer rows (for a caller that holds them already)."""
    from explorer.cost import analyse

    flow = _Flow()
    cost = analyse(spec, with_layers=with_layers, observer=flow)
    return cost, flow


# --- the graph ------------------------------------------------------------------------------------------

_ROW_FIELDS = ("params", "macs", "memory_access_bytes", "activations", "calls")


def build_graph(spec: ModelSpec, cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole graph, every level of the hierarchy: {"nodes", "edges", "totals", ...}.

    One forward pass gives both the cost report and the data flow; `cost` is the spec's cost report
    (explorer.cost.analyse with layers) when the caller holds it already (its rows are used, the pass then skips
    building them)."""
    traced, flow = trace_flow(spec, with_layers=cost is None)
    cost = traced if cost is None else cost
    repeated = {row["name"] for row in cost["layers"] if row["is_leaf"] and row["calls"] > 1 and row["name"] != ROOT}
    nodes: list[dict[str, Any]] = [{
        "id": INPUT_ID, "type": "input", "parent": None, "depth": 1, "params": 0, "macs": 0,
        "memory_access_bytes": 0, "activations": 0, "calls": 1, "output_shape": cost["input_shape"], "kind": "io",
    }]
    for row in cost["layers"]:
        if row["name"] == ROOT:
            continue
        parent = parent_of(row["name"])
        node = {"id": row["name"], "type": row["type"], "parent": None if parent == ROOT else parent,
                "depth": row["depth"], "output_shape": row["output_shape"], "kind": "module"}
        node.update({key: row[key] for key in _ROW_FIELDS})
        nodes.append(node)
        if row["name"] in repeated:  # one node per call, each with its own figures; the weights sit on the first
            node["all_calls"] = {key: row[key] for key in _ROW_FIELDS}
            for call in (c for c in flow.call_nodes.values() if c["module"] == row["name"]):
                figures = {key: call[key] for key in ("macs", "memory_access_bytes", "activations", "output_shape")}
                if call["call"] == 1:
                    node.update(figures, call=1)
                else:
                    nodes.append(dict(node, id=f"{row['name']}@{call['call']}", kind="call", module=row["name"], params=0, calls=1,
                                      call=call["call"], **figures))
    depth_of = {n["id"]: n["depth"] for n in nodes}
    for op_node in flow.op_nodes.values():
        node = dict(op_node, kind="op", params=0, calls=1)
        node["depth"] = depth_of.get(node["parent"], 0) + 1
        nodes.append(node)
    nodes.append({
        "id": OUTPUT_ID, "type": "output", "parent": None, "depth": 1, "params": 0, "macs": 0,
        "memory_access_bytes": 0, "activations": 0, "calls": 1, "output_shape": None, "kind": "io",
    })
    has_children = {n["parent"] for n in nodes if n["parent"] is not None}
    by_id = {n["id"]: n for n in nodes}
    flow.order.setdefault(OUTPUT_ID, len(flow.order))
    for node in nodes:
        node["group"] = node["id"] in has_children
        node["changed"] = False
    for node_id, order in [(INPUT_ID, -1), *flow.order.items()]:  # a group is as early as its earliest member
        while node_id is not None and node_id in by_id:
            node = by_id[node_id]
            if node.get("order", math.inf) <= order:
                break
            node["order"] = order
            node_id = node["parent"]
    edges = [{"src": src, "dst": dst, "shape": shape} for (src, dst), shape in flow.edges.items()]
    return {
        "arch": spec.arch,
        "spec": spec.to_dict(),
        "input_shape": cost["input_shape"],
        "traced_on": cost.get("traced_on", "meta"),
        "totals": {key: cost[key] for key in ("params", "macs", "memory_access_bytes", "activations")},
        "uncounted_ops": cost.get("uncounted_ops", []),
        "max_depth": max((n["depth"] for n in nodes), default=1),
        "nodes": nodes,
        "edges": edges,
    }


def mark_diff(graph: dict[str, Any], base_cost: dict[str, Any], changed: list[str]) -> dict[str, Any]:
    """Mark the swapped graph against the base model's cost report: `changed` (the modules the swaps replaced)
    get "changed": true; every module whose figures moved gets "delta" (params, MACs, memory access, swapped
    minus base); modules the base lacks (inside a new block) get "new": true."""
    base = {row["name"]: row for row in base_cost["layers"]}
    changed_set = set(changed)
    for node in graph["nodes"]:
        node["changed"] = node["id"] in changed_set
        if node["kind"] != "module":  # ops, inputs, and later calls of a module (compared on the module's node)
            continue
        row = base.get(node["id"])
        if row is None:
            node["new"] = True
            continue
        figures = node.get("all_calls", node)
        delta = {key: figures[key] - row[key] for key in ("params", "macs", "memory_access_bytes")}
        if any(delta.values()) or node["changed"]:
            node["delta"] = delta
            if node["type"] != row["type"]:
                node["base_type"] = row["type"]
    graph["changed"] = [name for name in changed if name in {n["id"] for n in graph["nodes"]}]
    graph["base_totals"] = {key: base_cost[key] for key in ("params", "macs", "memory_access_bytes", "activations")}
    return graph


def graph_of(spec: ModelSpec) -> dict[str, Any]:
    """The spec's graph; with swaps, marked against the model without them."""
    from explorer.cost import analyse

    graph = build_graph(spec)
    if spec.swaps:
        from explorer.models import swapped_modules

        mark_diff(graph, analyse(spec.with_(swaps=())), swapped_modules(spec))
    return graph


def parse_depth(text: str | int | None) -> int | None:
    """'all' (or None) -> None (everything); a whole number 1..MAX_DEPTH otherwise."""
    if text is None or str(text).strip().lower() == "all":
        return None
    try:
        depth = int(str(text).strip())
    except ValueError:
        raise ExplorerError(f"depth must be a whole number or 'all', got {str(text)[:40]!r}") from None
    if not 1 <= depth <= MAX_DEPTH:
        raise ExplorerError(f"depth must be between 1 and {MAX_DEPTH} (or 'all'), got {depth}")
    return depth


def collapsed(graph: dict[str, Any], depth: int | None) -> dict[str, Any]:
    """The graph cut at `depth` (None: everything): nodes deeper than it fold into their ancestor at that
    depth, and edges are lifted onto the nodes that remain (an edge inside one folded group disappears)."""
    if depth is None:
        return dict(graph)
    parent = {n["id"]: n["parent"] for n in graph["nodes"]}
    depth_of = {n["id"]: n["depth"] for n in graph["nodes"]}

    def shown(node_id: str) -> str:
        while depth_of[node_id] > depth:
            node_id = parent[node_id]
        return node_id

    nodes = []
    for node in graph["nodes"]:
        if node["depth"] <= depth:
            nodes.append(dict(node, collapsed=node["group"] and node["depth"] == depth))
    edges: dict[tuple[str, str], Any] = {}
    for edge in graph["edges"]:
        src, dst = shown(edge["src"]), shown(edge["dst"])
        if src != dst:
            edges.setdefault((src, dst), edge["shape"])
    return dict(graph, nodes=nodes, edges=[{"src": s, "dst": d, "shape": shape} for (s, d), shape in edges.items()],
                depth=depth)


JSON_NODE_FIELDS = ("id", "type", "parent", "params", "macs", "memory_access_bytes", "output_shape", "changed")


def as_json(graph: dict[str, Any]) -> dict[str, Any]:
    """The command line's JSON: the issue's node and edge fields, plus the extras each node has."""
    nodes = []
    for node in graph["nodes"]:
        row = {key: node.get(key) for key in JSON_NODE_FIELDS}
        row.update({key: node[key] for key in ("depth", "group", "kind", "order", "calls", "call", "module", "all_calls",
                                               "activations", "delta", "new", "base_type")
                    if key in node})
        nodes.append(row)
    return {"arch": graph["arch"], "spec": graph["spec"], "input_shape": graph["input_shape"],
            "depth": graph.get("depth"), "totals": graph["totals"], "changed": graph.get("changed", []),
            "nodes": nodes, "edges": graph["edges"]}


# --- DOT and SVG ------------------------------------------------------------------------------------------

def shape_label(shape) -> str:
    if not shape:
        return ""
    if isinstance(shape[0], list):
        return ", ".join("×".join(map(str, s)) for s in shape)
    return "×".join(map(str, shape))


def _node_label(node: dict[str, Any], full_name: bool = False) -> str:
    from explorer.units import format_count

    lines = [node["id"] if full_name else node["id"].rsplit(".", 1)[-1], node["type"]]
    if node["macs"]:
        lines.append(f"{format_count(node['macs'])} MACs")
    if node["params"]:
        lines.append(f"{format_count(node['params'])} params")
    return "\n".join(lines)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: dict[str, Any]) -> str:
    """Graphviz DOT of a (collapsed) graph: groups that are shown open as clusters; changed nodes in red."""
    ids = {n["id"] for n in graph["nodes"]}
    children = collections.defaultdict(list)
    for node in graph["nodes"]:
        children[node["parent"] if node["parent"] in ids else None].append(node)
    lines = ["digraph architecture {", "  rankdir=TB;", '  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", '
             'fontname="Helvetica", fontsize=10];', '  edge [fontname="Helvetica", fontsize=8];']
    counter = iter(range(1_000_000))

    def emit(parent_id, indent):
        for node in children[parent_id]:
            opened = node["group"] and node["id"] in children
            if opened:
                lines.append(f"{indent}subgraph cluster_{next(counter)} {{")
                lines.append(f"{indent}  label={_dot_quote(node['id'] + ' (' + node['type'] + ')')};")
                emit(node["id"], indent + "  ")
                lines.append(f"{indent}}}")
            else:
                color = ', color="#c0392b", penwidth=2.5' if node.get("changed") else ""
                lines.append(f"{indent}{_dot_quote(node['id'])} [label={_dot_quote(_node_label(node))}{color}];")

    emit(None, "  ")
    shown = {n["id"] for n in graph["nodes"] if not (n["group"] and n["id"] in children)}
    for edge in graph["edges"]:
        if edge["src"] in shown and edge["dst"] in shown:
            lines.append(f"  {_dot_quote(edge['src'])} -> {_dot_quote(edge['dst'])} [label={_dot_quote(shape_label(edge['shape']))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _layers(node_ids: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering in the order the forward pass met the nodes (edges that point back are ignored,
    so a module called twice does not loop)."""
    order = {node_id: i for i, node_id in enumerate(node_ids)}
    incoming = collections.defaultdict(list)
    for src, dst in edges:
        if order[src] < order[dst]:
            incoming[dst].append(src)
    layer: dict[str, int] = {}
    for node_id in node_ids:
        layer[node_id] = max((layer[s] + 1 for s in incoming[node_id]), default=0)
    return layer


def _colour(value: float, low: float, high: float) -> tuple[str, str]:
    """(fill, text colour): a light-yellow → dark-red ramp on a log scale, white text on the dark end."""
    if value <= 0 or high <= 0:
        return "#eeeeee", "#111111"
    span = math.log10(high) - math.log10(max(low, 1)) or 1.0
    t = min(max((math.log10(value) - math.log10(max(low, 1))) / span, 0.0), 1.0)
    stops = [(255, 247, 188), (254, 196, 79), (236, 112, 20), (153, 52, 4)]
    pos = t * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    f = pos - i
    rgb = [round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1])]
    return "#" + "".join(f"{c:02x}" for c in rgb), "#ffffff" if t > 0.6 else "#111111"


def to_svg(graph: dict[str, Any], measure: str = "macs") -> str:
    """A self-made SVG of a (collapsed) graph, top to bottom, nodes coloured by `measure` (no Graphviz needed)."""
    if measure not in MEASURES:
        raise ExplorerError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    ids = {n["id"] for n in graph["nodes"]}
    opened = {n["parent"] for n in graph["nodes"] if n["parent"] in ids}
    nodes = [n for n in graph["nodes"] if n["id"] not in opened]
    node_ids = [n["id"] for n in nodes]
    shown = set(node_ids)
    edges = [(e["src"], e["dst"], e["shape"]) for e in graph["edges"] if e["src"] in shown and e["dst"] in shown]
    layer = _layers(node_ids, [(s, d) for s, d, _ in edges])
    rows = collections.defaultdict(list)
    for node_id in node_ids:
        rows[layer[node_id]].append(node_id)
    width, height, gap_x, gap_y = 200, 58, 24, 46
    columns = max((len(r) for r in rows.values()), default=1)
    canvas_w = max(columns * (width + gap_x) + gap_x, 560)
    pos = {}
    for level, members in rows.items():
        offset = (canvas_w - len(members) * (width + gap_x) + gap_x) / 2
        for i, node_id in enumerate(members):
            pos[node_id] = (offset + i * (width + gap_x), gap_y + level * (height + gap_y))
    values = [n[measure] for n in nodes if n[measure] > 0]
    low, high = (min(values), max(values)) if values else (1, 1)
    canvas_h = (max(rows, default=0) + 1) * (height + gap_y) + gap_y
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{canvas_w:.0f}" height="{canvas_h:.0f}" '
           f'viewBox="0 0 {canvas_w:.0f} {canvas_h:.0f}" font-family="Helvetica, Arial, sans-serif">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="8" y="18" font-size="12">{html.escape(graph["arch"])}: colour = {html.escape(MEASURES[measure])}, '
           'log scale, light → dark</text>']
    for src, dst, shape in edges:
        (x1, y1), (x2, y2) = pos[src], pos[dst]
        x1, y1, x2, y2 = x1 + width / 2, y1 + height, x2 + width / 2, y2
        out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#777" stroke-width="1.2" '
                   'marker-end="url(#arrow)"/>')
        out.append(f'<text x="{(x1 + x2) / 2 + 4:.1f}" y="{(y1 + y2) / 2:.1f}" font-size="9" fill="#555">'
                   f'{html.escape(shape_label(shape))}</text>')
    by_id = {n["id"]: n for n in nodes}
    for node_id, (x, y) in pos.items():
        node = by_id[node_id]
        stroke = ('#c0392b" stroke-width="3' if node.get("changed") else '#444" stroke-width="1')
        dash = ' stroke-dasharray="5,3"' if node.get("group") else ""
        fill, ink = _colour(node[measure], low, high)
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width}" height="{height}" rx="6" '
                   f'fill="{fill}" stroke="{stroke}"{dash}/>')
        for i, line in enumerate(_node_label(node, full_name=True).split("\n")[:4]):
            shown = line if len(line) <= 34 else "…" + line[-33:]
            out.append(f'<text x="{x + 6:.1f}" y="{y + 13 + i * 12:.1f}" font-size="{11 if i == 0 else 9}" '
                       f'fill="{ink}">{html.escape(shown)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
