"""What the architecture graph shows on top of its cost rows: receptive fields, Inside links, measured time,
and a node-by-node diff of two specs.

Plain functions over explorer.graph.build_graph's graph and results the engine computed elsewhere:

- `receptive_field_by_node`: the receptive-field report (explorer.views.receptive_field.receptive_field_report,
  the `receptive_field` job) joined onto node ids, with one line of text per node;
- `inside_links`: the Inside views that apply to each node, as links the Inside page reads;
- `time_by_node`: a per-layer latency run (explorer.latency.layer_times, the rows of a `bench` job run with
  per_layer) joined onto node ids: every leaf module the run timed, and each group as the sum of its leaves;
- `diff_graph`: the second spec's graph marked against the first spec's cost report (changed, new, removed
  nodes and their deltas), for any two specs of one architecture; explorer.graph.mark_diff does the marking.

Nothing here runs a model: the reports come from jobs (real tensors) or from the meta-device cost trace.
"""
from __future__ import annotations

import copy
import urllib.parse
from typing import Any, Callable

from explorer.errors import ExplorerError
from explorer.spec import ModelSpec

# --- receptive fields ----------------------------------------------------------------------------------

RF_FIELDS = ("rf", "jump", "start", "output_hw", "global", "global_context", "approximate", "note")


def _rf_name_candidates(node: dict[str, Any]) -> list[str]:
    """The receptive-field table's names for a graph node. The table counts a module's later calls from 0
    ('relu@1' is the second call) where the graph counts from 1 ('relu@2'); an op a block runs itself is
    'block.add' there ('block.add@1' the second) and 'block.add_#1' here (aten's in-place name, counted from 1)."""
    node_id = node["id"]
    if node.get("kind") == "call":
        return [f"{node['module']}@{int(node['call']) - 1}"]
    if node.get("kind") == "op":
        op = str(node.get("op") or node_id.rsplit(".", 1)[-1].split("#", 1)[0])
        count = int(node_id.rsplit("#", 1)[-1]) if "#" in node_id else 1
        scope = f"{node['parent']}." if node.get("parent") else ""
        suffix = "" if count == 1 else f"@{count - 1}"
        names = []
        for name in dict.fromkeys((op, op.rstrip("_"), "i" + op.rstrip("_"))):
            names.append(f"{scope}{name}{suffix}")
        return names
    return [node_id]


def _pair_text(values) -> str:
    """'19' for a square value, '19×23' (height × width) otherwise; whole numbers without a decimal point."""
    shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in values]
    return shown[0] if len(set(shown)) == 1 else "×".join(shown)


def rf_text(entry: dict[str, Any]) -> str:
    """One line for a node's panel: the receptive field and the jump (the cumulative stride), in input pixels."""
    if entry.get("global"):
        return "receptive field: the whole input (global pooling or attention mixed every position)"
    text = (f"receptive field {_pair_text(entry['rf'])} px, jump (cumulative stride) {_pair_text(entry['jump'])} px"
            f" on a {_pair_text(entry['output_hw'])} map")
    if entry.get("global_context"):
        text += "; also a pooled summary of the whole input (a global gate)"
    if entry.get("approximate"):
        text += " (approximate: the largest window a unit can see)"
    return text


def receptive_field_by_node(graph: dict[str, Any], report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{node id: {"rf", "jump", "start", "output_hw", "global", ..., "text"}} for every node the report has a
    row for (modules, their later calls, the ops a block runs itself, and groups); nodes without a spatial
    input (a token model, the classifier after flatten when the report has no row) are left out."""
    rows = {row["name"]: row for row in report.get("rows", [])}
    joined: dict[str, dict[str, Any]] = {}
    for node in graph["nodes"]:
        if node.get("kind") == "io":
            continue
        row = next((rows[name] for name in _rf_name_candidates(node) if name in rows), None)
        if row is None:
            continue
        entry = {key: row.get(key) for key in RF_FIELDS}
        entry["text"] = rf_text(entry)
        joined[node["id"]] = entry
    return joined


# --- links to the Inside views -------------------------------------------------------------------------

def _spatial(node: dict[str, Any]) -> bool:
    shape = node.get("output_shape")
    return bool(shape) and not isinstance(shape[0], list) and len(shape) == 4 and min(shape[2:]) > 1


_SWIN_TYPES = {"ShiftedWindowAttention", "ShiftedWindowAttentionV2", "SwinTransformerBlock", "SwinTransformerBlockV2",
               "WindowAttention", "SwinTransformerStage", "SwinTransformerV2Stage"}
_SWIN_BLOCK_TYPES = {"SwinTransformerBlock", "SwinTransformerBlockV2"}
_SWIN_ATTENTION_TYPES = {"ShiftedWindowAttention", "ShiftedWindowAttentionV2", "WindowAttention"}
_DEFORMABLE_TYPES = {"DeformConv", "ModulatedDeformConv", "DeformConv2d"}
_GROUPED_BLOCK_TYPES = {"InterleavedGroupConv", "InterleavedSparseConv", "GroupShuffleConv"}

# view id (explorer.views.registry) -> does it apply to this node of an image model? Views that need the whole
# model and an image (Grad-CAM++ at a layer, receptive fields) apply to nodes with a spatial map; the others to
# the modules they read.
INSIDE_VIEW_RULES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "rf": lambda node: _spatial(node) and node.get("kind") in ("module", "call"),
    "cam": lambda node: _spatial(node) and node.get("kind") == "module",
    "attention": lambda node: node["type"] == "MultiheadAttention" or "Attention" in node["type"],
    "offsets": lambda node: node["type"] in _DEFORMABLE_TYPES,
    "swin": lambda node: node["type"] in _SWIN_TYPES,
    "connectivity": lambda node: node["type"] in _GROUPED_BLOCK_TYPES,
    "stn": lambda node: node["type"] == "STN",
    "fusion": lambda node: "ASFF" in node["type"] or "SFAM" in node["type"],
}


def inside_link(spec: ModelSpec, view_label: str, layer: str | None = None) -> str:
    """The Inside page's link for a view of the spec's model: it reads arch, view (the radio label), swaps,
    input and layer (pages/3_Inside.py; the view checks the layer against its own list)."""
    query = {"arch": spec.arch, "view": view_label}
    if spec.swaps:
        query["swaps"] = ";".join(spec.swaps)
    if spec.input_size is not None:
        query["input"] = ",".join(map(str, spec.input_size))
    if layer:
        query["layer"] = layer
    return "/Inside?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def inside_layer_name(view_id: str, node: dict[str, Any]) -> str | None:
    """The name a node has in an Inside view's layer picker (ui/inside.py), or None where the view picks no
    layer for it (a group in the receptive-field table, the spatial transformer, the fusion levels). A graph node's
    id is its module's name, and the graph counts a module's calls from 1 ('relu@2' is the second); the
    receptive-field table counts the later calls from 0 ('relu@1') and the attention view names them 'name#1'."""
    calls_before = int(node["call"]) - 1 if node.get("kind") == "call" else 0
    module = node.get("module") or node["id"] if node.get("kind") == "call" else node["id"]
    if view_id == "rf":  # its picker lists layers, not the groups (stages, blocks) around them
        return None if node.get("group") else _rf_name_candidates(node)[0]
    if view_id == "attention":
        return f"{module}#{calls_before}" if calls_before else module
    if view_id in ("cam", "offsets", "connectivity"):  # one entry per module, whichever call
        return module
    if view_id == "swin":  # its pickers take a block (by stage and number): a block's attention names its block
        if node["type"] in _SWIN_BLOCK_TYPES:
            return module
        return node.get("parent") if node["type"] in _SWIN_ATTENTION_TYPES else None
    return None


def inside_links(graph: dict[str, Any], spec: ModelSpec, input_kind: str = "image") -> dict[str, list[dict[str, str]]]:
    """{node id: [{"view", "label", "url"}, ...]}: the Inside views that apply to each node. Only image models
    (token models get the attention view alone), and only specs the Inside page can open (it takes no builder
    options or batch); the Inside page opens the view with the node chosen in its layer picker."""
    from explorer.views.registry import view_by_id

    if spec.options or spec.batch != 1 or input_kind not in ("image", "tokens"):
        return {}
    links: dict[str, list[dict[str, str]]] = {}
    for node in graph["nodes"]:
        if node.get("kind") == "io":
            continue
        for view_id, applies in INSIDE_VIEW_RULES.items():
            view = view_by_id(view_id)
            if view.label is None or (input_kind == "tokens" and not view.tokens) or not applies(node):
                continue
            links.setdefault(node["id"], []).append({"view": view_id, "label": view.label,
                                                     "url": inside_link(spec, view.label,
                                                                        inside_layer_name(view_id, node))})
    return links


# --- measured time per node ----------------------------------------------------------------------------

def time_by_node(graph: dict[str, Any], layer_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A per-layer latency run joined onto the graph: {"times": {node id: ms per forward}, "untimed": [leaf
    node ids with no row], "calls_together": [module ids whose time covers all their calls]}.

    The profiler times each leaf module's calls together (one range name per module), so a module called
    several times carries the sum on its first node and its later calls have no time of their own; an op a
    block runs itself (a residual addition) runs outside every leaf's range and is untimed. A group's time is
    the sum of the leaf times inside it (what ran outside the leaves is not in it)."""
    rows = {row["name"]: float(row["time_ms"]) for row in layer_rows}
    times: dict[str, float] = {}
    untimed: list[str] = []
    together: list[str] = []
    parents = {node["id"]: node["parent"] for node in graph["nodes"]}
    for node in graph["nodes"]:
        if node["group"] or node.get("kind") == "io":
            continue
        if node.get("kind") == "module" and node["id"] in rows:
            times[node["id"]] = rows[node["id"]]
            if node.get("all_calls"):
                together.append(node["id"])
        elif node.get("kind") != "call" or node.get("module") not in rows:
            untimed.append(node["id"])
    for node_id, ms in list(times.items()):
        parent = parents.get(node_id)
        while parent is not None:
            times[parent] = times.get(parent, 0.0) + ms
            parent = parents.get(parent)
    return {"times": times, "untimed": untimed, "calls_together": together}


def latency_run_of(result: dict[str, Any], spec: ModelSpec) -> dict[str, Any] | None:
    """A bench result's per-layer rows and how they were taken, if the result is for `spec` (any batch) and has
    per-layer times; else None."""
    if not result or not result.get("layers") or result.get("error"):
        return None
    if ModelSpec.from_dict(result["spec"]).with_(batch=1).key() != spec.with_(batch=1).key():
        return None
    settings = result.get("settings") or {}
    batches = settings.get("batches") or [1]
    return {"layers": result["layers"], "device": settings.get("device_name") or settings.get("device"),
            "dtype": settings.get("dtype"), "batch": batches[0]}


# --- the diff of two specs -----------------------------------------------------------------------------

def same_architecture(first: ModelSpec, second: ModelSpec) -> bool:
    """Whether two specs build the same architecture (one catalog or library id), so their nodes match by name."""
    from explorer.catalog import resolve

    return resolve(first.arch).id == resolve(second.arch).id


_MARKS = ("changed", "delta", "new", "base_type")


def diff_graph(first: ModelSpec, first_cost: dict[str, Any], second: ModelSpec, second_graph: dict[str, Any]) -> dict[str, Any]:
    """`second_graph` (left untouched) copied and marked against `first`: nodes are matched by id; a module
    whose type differs from the first's is "changed", every module whose params, MACs or memory access moved
    carries "delta" (second minus first), modules the first lacks are "new", and "removed" lists the first's
    modules the second lacks. Two different architectures are refused: their names do not correspond."""
    from explorer.graph import mark_diff
    from explorer.layers import ROOT

    if not same_architecture(first, second):
        raise ExplorerError(f"a node-by-node diff needs the same architecture: {first.arch} and {second.arch} differ "
                            "(their layers do not correspond by name)")
    graph = copy.deepcopy(second_graph)
    for node in graph["nodes"]:
        for key in _MARKS:
            node.pop(key, None)
    base = {row["name"]: row for row in first_cost["layers"] if row["name"] != ROOT}
    ids = {node["id"] for node in graph["nodes"]}
    changed = [node["id"] for node in graph["nodes"]
               if node.get("kind") == "module" and node["id"] in base and base[node["id"]]["type"] != node["type"]]
    mark_diff(graph, first_cost, changed)
    graph["removed"] = [name for name in base if name not in ids]
    graph["diff_against"] = first.to_dict()
    return graph


def diff_summary(graph: dict[str, Any]) -> dict[str, Any]:
    """Counts and totals of a diffed graph, for a caption or the command line."""
    first, second = graph["base_totals"], graph["totals"]
    return {
        "changed": len(graph.get("changed", [])),
        "new": sum(1 for node in graph["nodes"] if node.get("new")),
        "removed": len(graph.get("removed", [])),
        "moved": sum(1 for node in graph["nodes"] if node.get("delta")),
        "delta_totals": {key: second[key] - first[key] for key in ("params", "macs", "memory_access_bytes")},
    }
