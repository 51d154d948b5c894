"""The interactive architecture graph: Cytoscape.js in a Streamlit component, everything in the browser.

The whole graph (every level of the module hierarchy, explorer.graph.build_graph) travels once as JSON inside
the component's HTML; collapsing and expanding groups, search, colouring by a measure, the node panel and the
SVG/PNG export run in the browser with no server round trip. The JavaScript is vendored under assets/vendor/
(Cytoscape.js and cytoscape-dagre, MIT) and inlined: the page fetches nothing from the internet.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

from explorer.spec import ModelSpec

VENDOR = Path(__file__).resolve().parents[1] / "assets" / "vendor"
SCRIPTS = (VENDOR / "cytoscape" / "cytoscape.min.js", VENDOR / "cytoscape-dagre" / "cytoscape-dagre.min.js")
NODE_FIELDS = ("id", "type", "parent", "depth", "group", "kind", "params", "macs", "memory_access_bytes", "activations",
               "output_shape", "calls", "changed", "delta", "new", "base_type", "order", "call", "module", "all_calls")


@functools.lru_cache(maxsize=1)
def vendored_scripts() -> str:
    """The vendored libraries, checked to be safe to inline in a <script> element."""
    parts = []
    for path in SCRIPTS:
        text = path.read_text(encoding="utf-8")
        if "</script" in text.lower() or "<!--" in text:
            raise RuntimeError(f"{path.name} cannot be inlined in a <script> element")
        parts.append(text)
    return "\n;\n".join(parts)


def embed_json(data: Any) -> str:
    """JSON that is safe inside a <script type="application/json"> element: no '<', '>' or '&' survives
    (a module name like '</script><script>…' stays text), nor the JavaScript line separators."""
    text = json.dumps(data, separators=(",", ":"), default=str)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def graph_payload(graph: dict[str, Any], open_depth: int = 1, measure: str = "macs",
                  reveal_changed: bool = False, overlays: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the drawing reads. `overlays` (all optional): "rf" {node id: one line of text}, "links" {node id:
    [{"label", "url"}]}, "times" {node id: ms}, "time_about" (how the times were taken), "changed_label" (what
    the red outline means)."""
    nodes = [{key: node[key] for key in NODE_FIELDS if key in node} for node in graph["nodes"]]
    overlays = overlays or {}
    return {"arch": graph["arch"], "input_shape": graph["input_shape"], "totals": graph["totals"],
            "base_totals": graph.get("base_totals"), "changed": graph.get("changed", []), "nodes": nodes,
            "edges": graph["edges"], "open_depth": int(open_depth), "measure": measure, "reveal_changed": reveal_changed,
            "uncounted": [u["op"] for u in graph.get("uncounted_ops", [])],
            "rf": overlays.get("rf") or {}, "links": overlays.get("links") or {}, "times": overlays.get("times") or {},
            "time_about": overlays.get("time_about", ""),
            "changed_label": overlays.get("changed_label", "changed by the swap")}


def graph_html(graph: dict[str, Any], open_depth: int = 1, measure: str = "macs", height: int = 720,
               reveal_changed: bool = False, overlays: dict[str, Any] | None = None) -> str:
    """A self-contained HTML document that draws `graph` (no network access); `reveal_changed` opens the groups
    that hold a swap's changed blocks."""
    return (_TEMPLATE.replace("__HEIGHT__", str(int(height)))
            .replace("__SCRIPTS__", vendored_scripts())
            .replace("__DATA__", embed_json(graph_payload(graph, open_depth, measure, reveal_changed, overlays))))


def show_graph(graph: dict[str, Any], open_depth: int = 1, measure: str = "macs", height: int = 720,
               reveal_changed: bool = False, overlays: dict[str, Any] | None = None):
    components.html(graph_html(graph, open_depth, measure, height, reveal_changed, overlays), height=height + 130,
                    scrolling=False)


@st.cache_data(max_entries=16, show_spinner=False)
def cached_graph(spec_key: str) -> dict[str, Any]:
    """The spec's whole graph from the backend, as the cost report comes (one trace gives the figures and the
    data flow); with swaps, marked against the model without them (its cost report cached)."""
    from explorer.backend import BACKEND
    from explorer.graph import mark_diff
    from ui.common import cached_swapped_modules, cost_of

    spec = ModelSpec.from_dict(json.loads(spec_key))
    graph = BACKEND.graph(spec.to_dict())
    if spec.swaps:
        mark_diff(graph, cost_of(spec.with_(swaps=())), cached_swapped_modules(spec.key()))
    return graph


def swap_diff_graph(swapped: ModelSpec, height: int = 640):
    """The Swap page's drawing: the swapped model, changed blocks marked with their deltas against the base."""
    graph = cached_graph(swapped.key())
    changed = graph.get("changed", [])
    st.caption(f"{len(changed)} changed {'block' if len(changed) == 1 else 'blocks'} outlined in red (their groups "
               "opened); click one for its figures and the change against the base (Δ). Groups whose figures moved "
               "are outlined in orange; double-click a group to open or close it.")
    show_graph(graph, open_depth=1, height=height, reveal_changed=True)


def rf_overlay(spec: ModelSpec) -> dict[str, str]:
    """{node id: its receptive-field line}: the spec's receptive-field report, traced once per spec by the
    `receptive_field` job (torch.fx must not run in this process), joined onto the graph's nodes. The toggle
    asked for it: a short trace runs at once with its estimate in a caption; a long one shows its estimate and
    waits for its Run click (no lines meanwhile)."""
    from explorer.graph_overlays import receptive_field_by_node
    from ui.common import cached_rf

    report = cached_rf(spec.key(), "graph")
    if report is None:
        return {}
    return {node_id: entry["text"] for node_id, entry in receptive_field_by_node(cached_graph(spec.key()), report).items()}


def links_overlay(spec: ModelSpec) -> dict[str, list[dict[str, str]]]:
    """{node id: the Inside views that apply to it, as links}."""
    from explorer.catalog import resolve
    from explorer.graph_overlays import inside_links

    return inside_links(cached_graph(spec.key()), spec, resolve(spec.arch).input_kind)


LATENCY_SETTINGS = {"device": "auto", "batches": [1], "dtype": "fp32", "channels_last": False, "compile": False,
                    "per_layer": True, "min_runs": 5, "min_seconds": 0.3}


def latency_run_for(spec: ModelSpec) -> dict[str, Any] | None:
    """A per-layer latency run of this spec that this session has: the Graph page's own, else the Latency
    page's last run of the same model (any device and batch; the first batch size is the profiled one)."""
    from explorer.graph_overlays import latency_run_of

    own = st.session_state.get("graph_latency", {}).get(spec.with_(batch=1).key())
    candidates = ([own] if own else []) + list(st.session_state.get("latency_runs") or [])
    return next((run for run in (latency_run_of(result, spec) for result in candidates) if run), None)


def latency_job(spec: ModelSpec):
    """The per-layer latency job of the Graph page (batch 1, torch.profiler) and its estimate."""
    from ui.jobs import job_estimate

    payload = {"spec": spec.with_(batch=1).to_dict(), "settings": dict(LATENCY_SETTINGS)}
    return payload, job_estimate("bench", payload)


def run_latency(spec: ModelSpec) -> None:
    """Times every layer of the spec at batch 1 (a `bench` job with torch.profiler) and keeps the result for
    this session's Graph page."""
    from ui.jobs import run_job

    payload, expected = latency_job(spec)
    result = run_job("bench", payload, f"Timing every layer of {spec.arch}", expected=expected, asked=True)
    if result.get("error"):
        from explorer.errors import ExplorerError

        raise ExplorerError(result["error"])
    st.session_state.setdefault("graph_latency", {})[spec.with_(batch=1).key()] = result


def time_overlay(spec: ModelSpec, run: dict[str, Any]) -> dict[str, Any]:
    """The overlay entries for a latency run: times per node and one line on how they were taken."""
    from explorer.graph_overlays import time_by_node

    joined = time_by_node(cached_graph(spec.key()), run["layers"])
    about = (f"ms per forward at batch {run['batch']}, {run['dtype']}, {run['device']} (torch.profiler; a group: the "
             "sum of its layers; ops a block runs itself are not timed)")
    return {"times": joined["times"], "time_about": about}


def compare_diff_section(specs: list[ModelSpec], labels: list[str]) -> None:
    """The Compare page's graph diff: the second model drawn, its nodes marked against the first (matched by
    name, so the two must be one architecture)."""
    from explorer.graph_overlays import diff_graph, diff_summary, same_architecture
    from explorer.text import escape_markdown
    from explorer.units import format_bytes, format_count
    from ui.common import cost_of, guard

    if len(specs) < 2:
        st.info("A graph diff needs two models in the set.")
        return
    c1, c2 = st.columns(2)
    first = c1.selectbox("Against (the first)", range(len(specs)), format_func=lambda i: labels[i],
                         key="compare_diff_first")
    second = c2.selectbox("Draw (the second)", range(len(specs)), index=1, format_func=lambda i: labels[i],
                          key="compare_diff_second")
    with guard("The graph diff"):
        a, b = specs[first], specs[second]
        if not same_architecture(a, b):
            st.warning(f"A node-by-node diff needs the same architecture: {escape_markdown(a.arch)} and "
                       f"{escape_markdown(b.arch)} differ, and their layers do not correspond by name. Pick two "
                       "entries of one architecture (with different swaps, input sizes or options).")
            return
        with st.spinner("Tracing both models on the meta device…"):
            graph = diff_graph(a, cost_of(a), b, cached_graph(b.key()))
        summary = diff_summary(graph)
        delta = summary["delta_totals"]

        def signed(value, fmt):
            return ("+" if value > 0 else "−" if value < 0 else "±") + fmt(abs(value))

        st.caption(escape_markdown(
            f"{labels[second]} against {labels[first]}: {summary['changed']} changed modules (red), {summary['new']} new "
            f"(dotted), {summary['removed']} removed, {summary['moved']} whose figures moved (orange). "
            f"Δ params {signed(delta['params'], format_count)}, Δ MACs {signed(delta['macs'], format_count)}, "
            f"Δ memory access {signed(delta['memory_access_bytes'], format_bytes)}. Click a node for its Δ.",
            limit=2000))
        if graph["removed"]:
            shown = ", ".join(graph["removed"][:12]) + (f" and {len(graph['removed']) - 12} more"
                                                        if len(graph["removed"]) > 12 else "")
            st.caption(escape_markdown(f"Only in {labels[first]}: {shown}", limit=2000))
        show_graph(graph, open_depth=1, height=600, reveal_changed=True,
                   overlays={"changed_label": "changed against " + labels[first][:120]})


_TEMPLATE = r"""<!DOCTYPE html>
<html><head><meta charset="utf-8">
<style>
  body { margin: 0; font: 13px "Source Sans Pro", Helvetica, Arial, sans-serif; color: #222; }
  #bar { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; padding: 4px 2px; }
  #bar input, #bar select, #bar button { font: inherit; padding: 3px 7px; border: 1px solid #bbb; border-radius: 5px; background: #fff; }
  #bar button { cursor: pointer; } #bar button:hover { background: #f0f2f6; }
  #main { display: flex; gap: 8px; height: __HEIGHT__px; }
  #cy { flex: 1 1 auto; min-width: 0; border: 1px solid #ddd; border-radius: 6px; }
  #panel { flex: 0 0 270px; overflow: auto; border: 1px solid #ddd; border-radius: 6px; padding: 8px; }
  #panel table { border-collapse: collapse; width: 100%; }
  #panel td { padding: 2px 4px; border-bottom: 1px solid #eee; vertical-align: top; word-break: break-word; }
  #panel td:first-child { color: #555; white-space: nowrap; }
  #panel h4 { margin: 0 0 6px 0; word-break: break-all; }
  #legend { display: flex; gap: 8px; align-items: center; padding: 4px 2px; font-size: 12px; flex-wrap: wrap; }
  #ramp { width: 160px; height: 12px; border: 1px solid #999;
          background: linear-gradient(to right, #fff7bc, #fec44f, #ec7014, #993404); }
  .key { display: inline-block; width: 14px; height: 10px; border: 2px solid #c0392b; vertical-align: middle; }
  @media (max-width: 700px) { #main { flex-direction: column; } #cy { min-height: 0; }
                              #panel { flex: 0 0 230px; } }
</style></head>
<body>
<div id="bar">
  <label>Colour &amp; size by <select id="measure">
    <option value="macs">MACs</option><option value="params">parameters</option>
    <option value="memory_access_bytes">memory access cost</option><option value="activations">activations</option>
  </select></label>
  <input id="search" type="search" placeholder="Search by name or type" aria-label="Search nodes">
  <button id="find">Find</button><span id="found"></span>
  <button id="fit">Fit</button><button id="collapse">Collapse all</button><button id="expand">Expand a level</button>
  <button id="svg">SVG</button><button id="png">PNG</button>
</div>
<div id="main"><div id="cy" role="img" aria-label="architecture graph"></div>
  <div id="panel"><b>Click a node</b> for its row of the per-layer table. Double-click a group (a box marked ⊞)
  to open it, or use the button in this panel.</div></div>
<div id="legend"></div>
<script type="application/json" id="graph-data">__DATA__</script>
<script>__SCRIPTS__</script>
<script>
"use strict";
const G = JSON.parse(document.getElementById("graph-data").textContent);
const byId = new Map(G.nodes.map(n => [n.id, n]));
const kids = new Map();
for (const n of G.nodes) if (n.parent !== null && n.parent !== undefined) {
  if (!kids.has(n.parent)) kids.set(n.parent, []);
  kids.get(n.parent).push(n.id);
}
const UNITS = { macs: "MACs", params: "parameters", memory_access_bytes: "bytes of memory access (read + written)",
                activations: "activation elements", time_ms: "measured time (ms)" };
const HAS_TIMES = Object.keys(G.times).length > 0;
if (HAS_TIMES) {
  const opt = document.createElement("option");
  opt.value = "time_ms"; opt.textContent = "measured time (ms)";
  document.getElementById("measure").append(opt);
}
// a node's figure for a measure: the cost row's, or the measured time joined onto it
function valueOf(n, measure) { return measure === "time_ms" ? (G.times[n.id] || 0) : (n[measure] || 0); }
const expanded = new Set(G.nodes.filter(n => n.group && n.depth < G.open_depth).map(n => n.id));
if (G.reveal_changed) for (const name of G.changed) { let p = byId.get(name) && byId.get(name).parent; while (p) { expanded.add(p); p = byId.get(p).parent; } }

function count(v) {
  const a = Math.abs(v);
  for (const [f, p] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) if (a >= f) return (v / f).toFixed(2) + " " + p;
  return String(Math.round(v));
}
function bytes(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + " GB";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + " MB";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + " kB";
  return Math.round(v) + " B";
}
function ms(v) { return v >= 100 ? v.toFixed(0) + " ms" : v >= 1 ? v.toFixed(2) + " ms" : v.toFixed(3) + " ms"; }
function fmt(measure, v) {
  if (measure === "time_ms") return ms(v);
  if (measure === "memory_access_bytes") return bytes(v);
  if (measure === "macs") return count(v) + " MACs";
  if (measure === "params") return count(v) + " params";
  return count(v) + " elements";
}
function shapeText(s) {
  if (!s || !s.length) return "—";
  if (Array.isArray(s[0])) return s.map(x => x.join("×")).join(", ");
  return s.join("×");
}
function shortName(n) {
  if (n.kind === "io") return n.id;
  const tail = n.id.slice(n.parent ? n.parent.length + 1 : 0);
  return tail || n.id;
}
function visible(id) {
  let p = byId.get(id).parent;
  while (p) { if (!expanded.has(p)) return false; p = byId.get(p).parent; }
  return true;
}
function shown(id) { while (!visible(id)) id = byId.get(id).parent; return id; }

const RAMP = [[255, 247, 188], [254, 196, 79], [236, 112, 20], [153, 52, 4]];
function ramp(t) {
  const pos = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1), i = Math.min(Math.floor(pos), RAMP.length - 2), f = pos - i;
  const c = RAMP[i].map((a, k) => Math.round(a + (RAMP[i + 1][k] - a) * f));
  return "rgb(" + c.join(",") + ")";
}

cytoscape.use(cytoscapeDagre);
const cy = cytoscape({
  container: document.getElementById("cy"), wheelSensitivity: 0.3, minZoom: 0.02, maxZoom: 4,
  style: [
    { selector: "node", style: { "shape": "round-rectangle", "label": "data(label)", "text-wrap": "wrap",
        "text-valign": "center", "text-halign": "center", "font-size": 10, "background-color": "data(colour)",
        "border-width": 1, "border-color": "#555", "width": "data(w)", "height": "data(h)", "color": "data(ink)" } },
    { selector: "node[?collapsedGroup]", style: { "border-width": 2, "border-style": "double", "border-color": "#333" } },
    { selector: "node[?open]", style: { "background-color": "#f6f7fa", "background-opacity": 0.6, "text-valign": "top",
        "text-halign": "center", "font-size": 11, "font-weight": "bold", "border-style": "dashed", "border-color": "#999",
        "padding": 12 } },
    { selector: "node[kind = 'op']", style: { "shape": "ellipse" } },
    { selector: "node[kind = 'io']", style: { "shape": "tag", "background-color": "#dfe8f5" } },
    { selector: "node[?moved]", style: { "border-color": "#e67e22", "border-width": 2 } },
    { selector: "node[?changed]", style: { "border-color": "#c0392b", "border-width": 4, "border-style": "solid" } },
    { selector: "node[?isnew]", style: { "border-color": "#c0392b", "border-width": 2, "border-style": "dotted" } },
    { selector: "node.match", style: { "overlay-color": "#1f77b4", "overlay-opacity": 0.25, "overlay-padding": 4 } },
    { selector: "node:selected", style: { "overlay-color": "#1f77b4", "overlay-opacity": 0.35, "overlay-padding": 6 } },
    { selector: "edge", style: { "width": 1.3, "line-color": "#888", "target-arrow-color": "#888",
        "target-arrow-shape": "triangle", "curve-style": "bezier", "label": "data(label)", "font-size": 8,
        "color": "#444", "text-background-color": "#fff", "text-background-opacity": 0.8, "text-background-padding": 1 } },
    { selector: "edge[?merge]", style: { "line-color": "#2c7fb8", "target-arrow-color": "#2c7fb8" } },
    { selector: "edge[?back]", style: { "line-style": "dashed" } },
  ],
});

function measureOf() { return document.getElementById("measure").value; }

function render(keepView) {
  const measure = measureOf();
  const vis = G.nodes.filter(n => visible(n.id));
  const leaves = vis.filter(n => !(n.group && expanded.has(n.id)));
  const values = leaves.map(n => valueOf(n, measure)).filter(v => v > 0);
  const lo = values.length ? Math.log10(Math.min(...values)) : 0, hi = values.length ? Math.log10(Math.max(...values)) : 1;
  const span = hi - lo || 1;
  const order = new Map(G.nodes.map((n, i) => [n.id, n.order === undefined ? i : n.order]));
  const els = [];
  for (const n of vis) {
    const open = n.group && expanded.has(n.id);
    const v = valueOf(n, measure), t = v > 0 ? (Math.log10(v) - lo) / span : -1;
    let label = (n.group && !open ? "⊞ " : "") + shortName(n) + (n.kind === "io" ? "" : "\n" + n.type);
    if (!open && v > 0) label += "\n" + fmt(measure, v);
    if (n.delta && n.delta.macs) label += "\nΔ " + (n.delta.macs > 0 ? "+" : "") + count(n.delta.macs) + " MACs";
    if (open) label = "⊟ " + shortName(n) + " (" + n.type + ")";
    const lines = label.split("\n");
    els.push({ group: "nodes", data: {
      id: n.id, label: label, kind: n.kind, parent: n.parent && visible(n.parent) ? n.parent : undefined, open: open,
      collapsedGroup: n.group && !open, changed: !!n.changed, isnew: !!n.new, moved: !!n.delta && !n.changed,
      colour: t < 0 ? "#eeeeee" : ramp(t), ink: !open && t > 0.6 ? "#ffffff" : "#111111",
      w: Math.max(70, 6.2 * Math.max(...lines.map(l => l.length))),
      h: (14 * lines.length + 10) * (t < 0 ? 1 : 1 + 0.6 * t) } });
  }
  const seen = new Map();
  for (const e of G.edges) {
    const s = shown(e.src), d = shown(e.dst);
    if (s === d || seen.has(s + "\u0000" + d)) continue;
    seen.set(s + "\u0000" + d, true);
    const dst = byId.get(d);
    els.push({ group: "edges", data: { id: "e" + seen.size, source: s, target: d, label: shapeText(e.shape),
      merge: dst.kind === "op", back: order.get(s) > order.get(d) } });
  }
  cy.elements().remove();
  cy.add(els);
  cy.edges().style("label", cy.edges().length > 160 ? "" : "data(label)");
  // edges that point back in execution order (a recurrence) are drawn but left out of the layering
  const layout = cy.elements().not("edge[?back]").layout({ name: "dagre", rankDir: "TB", nodeSep: 18, rankSep: 30, edgeSep: 8, animate: false,
                             fit: !keepView, padding: 16 });
  layout.run();
  if (!keepView) readable();
  legend(measure, lo, hi, values.length);
}

// A deep network fitted whole is too small to read: start at a readable zoom at the input (or the first changed
// block) instead; Fit shows it all.
function readable() {
  if (cy.zoom() >= 0.5) return;
  const z = 0.75, first = G.reveal_changed && G.changed.length ? cy.$id(G.changed[0]) : cy.collection();
  cy.zoom(z);
  if (first.length) { cy.center(first); return; }
  const bb = cy.elements().boundingBox({});
  cy.pan({ x: cy.width() / 2 - (bb.x1 + bb.x2) / 2 * z, y: 16 - bb.y1 * z });
}

function legend(measure, lo, hi, n) {
  const el = document.getElementById("legend");
  el.textContent = "";
  const label = document.createElement("span");
  label.textContent = "Colour and height: " + UNITS[measure] + " (log scale)" +
                      (measure === "time_ms" && G.time_about ? ", " + G.time_about : "");
  const low = document.createElement("span"), high = document.createElement("span"), bar = document.createElement("span");
  bar.id = "ramp";
  low.textContent = n ? fmt(measure, Math.pow(10, lo)) : "—";
  high.textContent = n ? fmt(measure, Math.pow(10, hi)) : "—";
  const grey = document.createElement("span");
  grey.textContent = "· grey: none · ⊞ a closed group, ⊟ an open one · ellipses: ops a block runs in its own forward (residual add, cat, attention product) · name@2: a module's second call · dashed edges point back (a recurrence)";
  el.append(label, low, bar, high, grey);
  if (G.changed.length) {
    const k = document.createElement("span");
    k.innerHTML = '<span class="key"></span>';
    k.append(" " + G.changed_label + " (" + G.changed.length + ")");
    el.append(k);
  }
  const tot = document.createElement("span");
  tot.textContent = "· model: " + count(G.totals.params) + " params, " + count(G.totals.macs) + " MACs, " +
                    bytes(G.totals.memory_access_bytes) + " memory access";
  el.append(tot);
}

function row(table, name, value) {
  const tr = document.createElement("tr"), a = document.createElement("td"), b = document.createElement("td");
  a.textContent = name; b.textContent = value; tr.append(a, b); table.append(tr);
}
function signed(measure, v) { return (v > 0 ? "+" : v < 0 ? "−" : "±") + fmt(measure, Math.abs(v)); }

function showPanel(id) {
  const n = byId.get(id), panel = document.getElementById("panel");
  panel.textContent = "";
  const h = document.createElement("h4"); h.textContent = n.id; panel.append(h);
  const table = document.createElement("table"); table.setAttribute("data-testid", "graph-node-row");
  row(table, "type", n.type + (n.base_type ? " (base: " + n.base_type + ")" : ""));
  row(table, "parameters", count(n.params) + " (" + n.params.toLocaleString("en-US") + ")");
  row(table, "MACs", count(n.macs) + " (" + n.macs.toLocaleString("en-US") + ")");
  row(table, "FLOPs (2 × MACs)", count(2 * n.macs));
  row(table, "memory access cost", bytes(n.memory_access_bytes) + " (not MACs)");
  row(table, "activations", count(n.activations || 0) + " elements");
  row(table, "output shape", shapeText(n.output_shape));
  if (n.all_calls) {
    row(table, "call", (n.call || 1) + " of " + n.all_calls.calls + " (figures above: this call)");
    row(table, "all calls", count(n.all_calls.macs) + " MACs, " + bytes(n.all_calls.memory_access_bytes) + ", " +
        count(n.all_calls.params) + " params (the module's row)");
  } else if (n.kind === "module") row(table, "calls", String(n.calls));
  if (G.totals.macs) row(table, "share of MACs", (100 * n.macs / G.totals.macs).toFixed(1) + " %");
  if (HAS_TIMES && n.kind !== "io") row(table, "measured time", n.id in G.times ? ms(G.times[n.id]) + " per forward" :
                     "not timed (runs outside every layer's profiler range)");
  if (n.changed) row(table, "swap", G.changed_label);
  if (n.new) row(table, "swap", "new: part of a swapped-in block");
  if (n.delta) {
    row(table, "Δ parameters", signed("params", n.delta.params));
    row(table, "Δ MACs", signed("macs", n.delta.macs));
    row(table, "Δ memory access", signed("memory_access_bytes", n.delta.memory_access_bytes));
  }
  panel.append(table);
  if (G.rf[n.id]) {
    const p = document.createElement("p"); p.setAttribute("data-testid", "graph-node-rf");
    p.textContent = G.rf[n.id]; panel.append(p);
  }
  const links = G.links[n.id] || [];
  if (links.length) {
    const p = document.createElement("p"); p.setAttribute("data-testid", "graph-node-links");
    p.append("Inside, at this layer where the view has one (opens in a new tab): ");
    links.forEach((l, i) => {
      if (!String(l.url).startsWith("/Inside?")) return;  // only the app's own page
      const a = document.createElement("a");
      a.href = l.url; a.target = "_blank"; a.rel = "noopener"; a.textContent = l.label;
      if (i) p.append(" · ");
      p.append(a);
    });
    panel.append(p);
  }
  if (n.kind === "op") {
    const p = document.createElement("p"); p.textContent = "An op the block runs in its own forward (" + n.type + "), not a module.";
    panel.append(p);
  }
  if (n.group) {
    const b = document.createElement("button");
    b.textContent = expanded.has(n.id) ? "Collapse this group" : "Expand this group (" + kids.get(n.id).length + " inside)";
    b.onclick = () => toggle(n.id);
    panel.append(b);
  }
}

function within(node, group) {  // is `node` the group or inside it?
  for (let p = node; p; p = byId.get(p).parent) if (p === group) return true;
  return false;
}

function toggle(id) {
  if (expanded.has(id)) { for (const k of [...expanded]) if (within(k, id)) expanded.delete(k); }
  else expanded.add(id);
  render(true);
  cy.$id(id).select();
  showPanel(id);
}

cy.on("tap", "node", ev => showPanel(ev.target.id()));
cy.on("dbltap", "node", ev => { const n = byId.get(ev.target.id()); if (n.group) toggle(n.id); });

let matches = [], current = -1;
function find() {
  const q = document.getElementById("search").value.trim().toLowerCase();
  cy.nodes().removeClass("match");
  if (!q) { document.getElementById("found").textContent = ""; return; }
  const again = matches.length && matches.query === q;
  if (!again) {
    matches = G.nodes.filter(n => n.id.toLowerCase().includes(q) || n.type.toLowerCase() === q).map(n => n.id);
    matches.query = q; current = -1;
  }
  document.getElementById("found").textContent = matches.length ? "" : "no match";
  if (!matches.length) return;
  current = (current + 1) % matches.length;
  const id = matches[current];
  let p = byId.get(id).parent;
  let opened = false;
  while (p) { if (!expanded.has(p)) { expanded.add(p); opened = true; } p = byId.get(p).parent; }
  if (opened) render(true);
  for (const m of matches) if (cy.$id(m).length) cy.$id(m).addClass("match");
  cy.nodes().unselect(); cy.$id(id).select();
  cy.animate({ center: { eles: cy.$id(id) }, zoom: Math.max(cy.zoom(), 0.8) }, { duration: 250 });
  showPanel(id);
  document.getElementById("found").textContent = (current + 1) + " of " + matches.length;
}
document.getElementById("find").onclick = find;
document.getElementById("search").addEventListener("keydown", ev => { if (ev.key === "Enter") find(); });
document.getElementById("measure").onchange = () => render(true);
document.getElementById("fit").onclick = () => cy.fit(undefined, 16);
document.getElementById("collapse").onclick = () => { expanded.clear(); render(false); };
document.getElementById("expand").onclick = () => {
  for (const n of G.nodes) if (n.group && visible(n.id)) expanded.add(n.id);
  render(false);
};

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name; document.body.append(a); a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}
const fileName = G.arch.replace(/[^A-Za-z0-9_.-]+/g, "_") + "-graph";
document.getElementById("png").onclick = () =>
  download(cy.png({ output: "blob", bg: "#ffffff", full: true, scale: 2 }), fileName + ".png");

function esc(s) { return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;"); }
function toSvg() {
  const bb = cy.elements().boundingBox({}), pad = 10;
  const out = ['<svg xmlns="http://www.w3.org/2000/svg" width="' + Math.ceil(bb.w + 2 * pad) + '" height="' +
    Math.ceil(bb.h + 2 * pad) + '" viewBox="' + (bb.x1 - pad) + ' ' + (bb.y1 - pad) + ' ' + (bb.w + 2 * pad) + ' ' +
    (bb.h + 2 * pad) + '" font-family="Helvetica, Arial, sans-serif">',
    '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto">' +
    '<path d="M0 0 L10 5 L0 10 z" fill="#888"/></marker></defs>',
    '<rect x="' + (bb.x1 - pad) + '" y="' + (bb.y1 - pad) + '" width="' + (bb.w + 2 * pad) + '" height="' + (bb.h + 2 * pad) + '" fill="#fff"/>'];
  const nodes = cy.nodes().toArray().sort((a, b) => byId.get(a.id()).depth - byId.get(b.id()).depth);
  for (const node of nodes) {
    const b = node.boundingBox({ includeLabels: false, includeOverlays: false }), d = node.data();
    const stroke = d.changed ? "#c0392b" : d.moved ? "#e67e22" : "#555", sw = d.changed ? 4 : d.moved ? 2 : 1;
    const fill = d.open ? "#f6f7fa" : node.style("background-color");
    out.push('<rect x="' + b.x1 + '" y="' + b.y1 + '" width="' + b.w + '" height="' + b.h + '" rx="6" fill="' + fill +
             '" stroke="' + stroke + '" stroke-width="' + sw + '"' + (d.open ? ' stroke-dasharray="5,3"' : "") + '/>');
    const lines = d.label.split("\n"), cx = (b.x1 + b.x2) / 2;
    const top = d.open ? b.y1 + 12 : (b.y1 + b.y2) / 2 - (lines.length - 1) * 6 + 3;
    lines.forEach((l, i) => out.push('<text x="' + cx + '" y="' + (top + 12 * i) + '" font-size="10" text-anchor="middle">' + esc(l) + '</text>'));
  }
  for (const edge of cy.edges().toArray()) {
    const s = edge.sourceEndpoint(), t = edge.targetEndpoint();
    out.push('<line x1="' + s.x + '" y1="' + s.y + '" x2="' + t.x + '" y2="' + t.y + '" stroke="#888" stroke-width="1.2" marker-end="url(#arrow)"/>');
    if (edge.data("label")) out.push('<text x="' + ((s.x + t.x) / 2 + 3) + '" y="' + ((s.y + t.y) / 2) + '" font-size="8" fill="#444">' + esc(edge.data("label")) + '</text>');
  }
  out.push("</svg>");
  return out.join("\n");
}
document.getElementById("svg").onclick = () => download(new Blob([toSvg()], { type: "image/svg+xml" }), fileName + ".svg");

document.getElementById("measure").value = G.measure;
render(false);
window.architectureGraph = { cy: cy, toSvg: toSvg, expanded: expanded, render: render };
</script>
</body></html>
"""


def onnx_timing_section(name: str, data: bytes):
    """The Graph page's ONNX Runtime timing of an uploaded `.onnx` file: batch and runs, a button, then the
    `onnx_bench` job behind its estimate (a long one waits for its Run click) and its figures in ms."""
    import hashlib

    from explorer.onnx_timing import MAX_RUNS
    from explorer.spec import MAX_BATCH
    from explorer.text import escape_markdown
    from ui.jobs import estimated_job

    file_key = hashlib.sha256(data).hexdigest()
    o1, o2, o3 = st.columns([1, 1, 2], vertical_alignment="bottom")
    batch = o1.number_input("Batch", 1, MAX_BATCH, 1, key="graph_onnx_batch",
                            help="fills the file's named batch axis; a fixed batch must match it")
    runs = o2.number_input("Timed runs", 1, MAX_RUNS, 20, key="graph_onnx_runs")
    if o3.button("Time with ONNX Runtime", key="graph_onnx_time"):
        st.session_state.graph_onnx_timed = (file_key, int(batch), int(runs))
    asked = st.session_state.get("graph_onnx_timed")
    if not asked or asked[0] != file_key:  # not asked for this file
        return
    timing = estimated_job("onnx_bench", {"name": name, "data": data, "settings": {
        "batch": asked[1], "runs": asked[2], "device": "auto"}}, "Timing with ONNX Runtime",
                           "the ONNX Runtime timing", "graph_onnx_estimate")
    if timing is None:  # a long one waiting for its Run click
        return
    row, settings = timing["results"][0], timing["settings"]
    st.markdown(f"ONNX Runtime {escape_markdown(settings['onnxruntime'])}, batch {row['batch']}: median "
                f"**{row['median_ms']:.3f} ms**, p10 {row['p10_ms']:.3f} ms, p90 {row['p90_ms']:.3f} ms "
                f"({row['runs']} runs after {row['warmup_runs']} warm-up; {row['throughput_per_s']:,.1f} "
                f"samples/s), on {escape_markdown(settings['device_name'])} with "
                f"{escape_markdown(', '.join(settings['providers']))}, {settings['threads']} threads.")
    st.caption(escape_markdown(timing["note"]))
