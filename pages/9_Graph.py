"""Graph page: the architecture drawn as a graph, module groups collapsible in the browser, cost on every node."""
import streamlit as st

from explorer.catalog import load_catalog, resolve
from explorer.spec import ModelSpec, parse_size
from explorer.swaps import expand_swaps, parse_swap
from explorer.text import escape_markdown
from explorer.units import format_bytes, format_count
from ui.common import arch_from_link, drop_unused_link_params, guard, int_from_link, page_setup
from ui.graph import (cached_graph, latency_job, latency_run_for, links_overlay, onnx_timing_section, rf_overlay,
                      run_latency, show_graph, time_overlay)

page_setup("Graph", ":material/account_tree:")
st.title("Graph")
st.caption("The architecture as a graph: the module hierarchy as nested groups that open and close in the browser "
           "(stage → block → layer), the data flow as edges labelled with tensor shapes, residual additions and "
           "concatenations as ellipses where the branches meet. Every node carries its row of the per-layer cost "
           "table (meta device, random weights). With swaps, the changed blocks are marked against the base model.")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
drop_unused_link_params(("arch", "input", "swaps", "depth", "rf"))
params = st.query_params
if "graph_arch" not in st.session_state:
    wanted = params.get("arch", "")
    library = wanted if ":" in wanted else ""
    st.session_state.graph_arch = arch_from_link(ids) if not library else "resnet50"
    st.session_state.graph_arch_text = library
    st.session_state.graph_input = params.get("input", "")
    st.session_state.graph_swaps = "\n".join(s for s in params.get("swaps", "").split(";") if s)
    st.session_state.graph_depth = int_from_link("depth", 1, 1, 8, "depth to open")
    st.session_state.graph_rf = params.get("rf") == "1"

c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
c1.selectbox("Model", ids, key="graph_arch")
c2.text_input("…or a library model by name", key="graph_arch_text", placeholder="timm:convnext_tiny, torchvision:regnet_y_400mf")
c3.text_input("Input (C,H,W)", key="graph_input", placeholder="native")
c4.number_input("Open to depth", 1, 8, key="graph_depth", help="1 shows the stages; open deeper groups in the drawing")
st.text_area("Swaps (optional, one per line: ACTION:BLOCK@WHERE or preset:NAME)", key="graph_swaps", height=68)

spec = None
with guard("Reading the model"):
    size_text = st.session_state.graph_input.strip()
    swaps = [line.strip() for line in st.session_state.graph_swaps.splitlines() if line.strip()]
    for line in expand_swaps(swaps):
        parse_swap(line)
    spec = ModelSpec(st.session_state.graph_arch_text.strip() or st.session_state.graph_arch,
                     input_size=parse_size(size_text) if size_text else None, swaps=tuple(swaps))
    query = spec.to_query()
    if st.session_state.graph_depth != 1:
        query["depth"] = str(st.session_state.graph_depth)
    if st.session_state.get("graph_rf"):
        query["rf"] = "1"
    st.query_params.from_dict(query)
if spec is None:
    st.stop()

with st.expander("Open an exported model file (ONNX or torch.export .pt2)"):
    st.caption("An `.onnx` file is read as data (protobuf, never unpickled), capped like a checkpoint, and each node "
               "is costed with the same formulas as a model built here. Swaps, latency with this project's (PyTorch's) "
               "kernels and the Inside views need a model built from its code, so they are not offered for a file; "
               "ONNX Runtime can time the file with its own kernels, as a job. A torch.export `.pt2` archive opens "
               "too: only its JSON graph is read (never its pickled sample inputs); ONNX Runtime timing is for "
               "`.onnx` files only.")
    upload = st.file_uploader("ONNX or .pt2 file", type=["onnx", "pt2"], key="graph_onnx")
    if upload is not None:
        with guard("Reading the file"):
            from explorer.model_files import read_onnx, read_pt2

            is_onnx = upload.name.lower().endswith(".onnx")
            file_graph = (read_onnx if is_onnx else read_pt2)(upload.getvalue(), upload.name)
            t = file_graph["totals"]
            st.markdown(f"**{escape_markdown(upload.name)}**: {format_count(t['params'])} parameters, "
                        f"{format_count(t['macs'])} MACs, {format_bytes(t['memory_access_bytes'])} memory access, "
                        f"{len(file_graph['nodes']) - 2} nodes")
            if file_graph["uncounted_ops"]:
                st.caption("Not costed: " + ", ".join(f"{escape_markdown(u['op'])} ×{u['count']}"
                                                      for u in file_graph["uncounted_ops"][:20]))
            show_graph(file_graph, open_depth=1, height=560)
            if is_onnx:
                onnx_timing_section(upload.name, upload.getvalue())
            else:
                st.caption("ONNX Runtime times `.onnx` files only; export the model with torch.onnx to time it.")

graph = None
with guard("Drawing the graph"):
    with st.spinner("Tracing the model on the meta device…"):
        graph = cached_graph(spec.key())
if graph is None:
    st.stop()

totals = graph["totals"]
modules = sum(1 for n in graph["nodes"] if n["kind"] == "module")
st.markdown(f"**{escape_markdown(spec.arch)}**, input {'×'.join(map(str, graph['input_shape']))}: "
            f"{format_count(totals['params'])} parameters, {format_count(totals['macs'])} MACs, "
            f"{format_bytes(totals['memory_access_bytes'])} memory access; {modules} modules, "
            f"{len(graph['edges'])} data-flow edges" + (f", traced on {graph['traced_on']}" if graph["traced_on"] != "meta" else ""))
if graph.get("changed"):
    base = graph["base_totals"]
    st.caption(f"Swapped: {len(graph['changed'])} changed blocks (red); MACs {format_count(base['macs'])} → "
               f"{format_count(totals['macs'])}, parameters {format_count(base['params'])} → {format_count(totals['params'])}.")
# What a click shows besides the node's cost row: links to the Inside views that apply, its receptive field (a job,
# once per model), and its measured time when this session has a per-layer latency run of the model.
overlays: dict = {}
with guard("Linking the Inside views"):
    overlays["links"] = links_overlay(spec)
drawing = st.container()  # the drawing first on the screen; its overlay controls below it, read before it is drawn
o1, o2 = st.columns(2)
if resolve(spec.arch).input_kind == "image":
    o1.toggle("Receptive fields", key="graph_rf",
              help="Of every node, traced in a worker process once per model (torch.fx), then shown in the node panel: the region of "
                   "the input one unit sees, and the jump (cumulative stride) between neighbouring units, in pixels")
    if st.session_state.graph_rf:
        with guard("The receptive fields"):
            overlays["rf"] = rf_overlay(spec)
run = latency_run_for(spec)
if run is None:
    o2.caption("No per-layer latency run of this model in this session yet (the Latency page's, with per-layer "
               "times, counts): time one to colour and size the nodes by measured time (ms).")
    _, expected = latency_job(spec)
    if expected is not None:
        o2.caption(f"Estimate: {expected.text()}.")
    # a button's label does not wrap: the details go in its help, so the label fits a half-width column at 800 px
    if o2.button("Time every layer", key="graph_time_layers",
                 help="A job in a worker process: batch 1, fp32, each layer timed with torch.profiler"):
        with guard("Timing every layer"):
            run_latency(spec)
            run = latency_run_for(spec)
if run is not None:
    overlays.update(time_overlay(spec, run))
    o2.caption("**Measured time (ms)** is a measure in the drawing's menu: " + escape_markdown(overlays["time_about"]))
with drawing:
    show_graph(graph, open_depth=int(st.session_state.graph_depth), overlays=overlays)
if graph["uncounted_ops"]:
    st.caption("Ops with no cost formula (memory traffic still counted): "
               + ", ".join(f"{escape_markdown(u['op'])} ×{u['count']}" for u in graph["uncounted_ops"][:20]))
st.caption("Double-click a group to open or close it, or use the button in the side panel. Drag to pan, scroll to zoom, "
           "**Fit** to see everything; **SVG** and **PNG** save the drawing as it is shown, for slides. "
           "A click shows the node's row, its receptive field (when turned on below the drawing), its measured time (with a "
           "per-layer run) and links to the Inside views that apply to it. The command line prints the same graph: "
           "`python -m explorer graph ARCH --depth 2 --json`; `--diff OTHER_SPEC` marks it against another spec of the "
           "same architecture, as the Compare page's graph diff does.")
