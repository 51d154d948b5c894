"""Model page: build one model and show its cost, per layer and in total."""
import json

import pandas as pd
import streamlit as st

from explorer.catalog import library_metadata, load_catalog, native_input_size, published_figures, resolve
from explorer.errors import ExplorerError
from explorer.jobs import job_key
from explorer.layers import max_depth, module_tree_text, rolled_up, subtree
from explorer.spec import MAX_BATCH, ModelSpec, parse_size
from explorer.text import escape_markdown
from explorer.units import format_bytes, format_count
from ui.common import (RANDOM_WEIGHTS_NOTE, cost_of, drop_unused_link_params, fvcore_of, guard, int_from_link, page_setup,
                       plot_config, start_from_link)
from ui.components import LAYER_COLUMNS, LAYER_COMPACT, depth_slider, layer_frame, more_columns, structural_depth, totals
from ui.figures import cost_treemap
from ui.jobs import confirm_estimate, job_estimate
from ui.memory import memory_section

page_setup("Model", ":material/biotech:")
st.title("Model")

catalog = load_catalog()
ids = [v.id for v in catalog.variants.values() if v.implemented]
params = st.query_params
drop_unused_link_params(("arch", "input", "batch", "options"))


def spec_from_widgets() -> ModelSpec:
    arch = st.session_state.model_arch_text.strip() or st.session_state.model_arch
    size_text = st.session_state.model_input.strip()
    options_text = st.session_state.model_options.strip()
    try:
        options = json.loads(options_text) if options_text else {}
    except json.JSONDecodeError as exc:
        raise ExplorerError(f"builder options must be a JSON object, e.g. {{\"num_classes\": 10}} ({exc.msg})") from None
    if not isinstance(options, dict):
        raise ExplorerError("builder options must be a JSON object, e.g. {\"num_classes\": 10}")
    return ModelSpec(
        arch=arch,
        input_size=parse_size(size_text) if size_text else None,
        batch=int(st.session_state.model_batch),
        options=tuple(options.items()),
    )


def widgets_from_link() -> dict:
    """The model the URL names, as the widgets' values (a library model's name goes in the text box)."""
    arch = params.get("arch", "resnet50")
    return {"model_arch": arch if arch in ids else st.session_state.get("model_arch", "resnet50"),
            "model_arch_text": "" if arch in ids else arch,
            "model_input": params.get("input", ""),
            "model_batch": int_from_link("batch", 1, 1, MAX_BATCH, "batch size"),
            "model_options": params.get("options", ""),
            "model_url_arch": params.get("arch")}  # read: later reruns are not a new link


# First visit: widgets start from the URL, so a shared link rebuilds the same model.
if not start_from_link("model_arch", widgets_from_link) and params.get("arch") and \
        params.get("arch") != st.session_state.get("model_url_arch"):
    # Arrived from a link (catalog, home) while the session already had a model open: the URL names a model
    # this page did not write there. (A change in the widgets is not a link: the URL still holds the old model.)
    st.session_state.update(widgets_from_link())

with st.container(border=True):
    c1, c2, c3, c4 = st.columns([3, 3, 2, 1])
    # Picking from the catalog replaces a library name typed before (the typed name wins while it is there).
    c1.selectbox("Architecture", ids, key="model_arch", help="Type to search the catalog",
                 on_change=lambda: st.session_state.update(model_arch_text=""))
    c2.text_input("…or any library model", key="model_arch_text", placeholder="timm:convnext_tiny, torchvision:regnet_y_400mf")
    c3.text_input("Input size (C,H,W)", key="model_input", placeholder="native", help="Per sample, without the batch; empty = the model's native size")
    c4.number_input("Batch", min_value=1, max_value=1024, step=1, key="model_batch")
    with st.expander("Builder options (JSON)"):
        st.text_input("Keyword arguments for the builder", key="model_options", placeholder='{"num_classes": 10}')

spec = None
with guard("Reading the model settings"):
    spec = spec_from_widgets()
    st.query_params.from_dict(spec.to_query())
    st.session_state.model_url_arch = spec.arch

if spec is None:
    st.stop()

result = None
with guard("The cost analysis"):
    variant = resolve(spec.arch)
    family = catalog.family_of(variant)
    with st.spinner(f"Building {escape_markdown(spec.arch)} and costing one forward pass…"):
        result = cost_of(spec)

if result is None:
    st.stop()

# --- header -------------------------------------------------------------------------------------
if family:
    year = "" if str(family.year) in family.name else f" ({family.year})"  # some names carry it already
    st.subheader(f"{escape_markdown(variant.id)} · {family.name}{year}")
    st.markdown(f"[{family.paper['title']}]({family.paper['url']}) — {family.paper.get('authors', '')}, {family.paper.get('venue', '')}")
    st.markdown(family.description)
    if family.teach:
        st.caption(f"What to look at: {family.teach}")
else:
    st.subheader(escape_markdown(variant.id))
    st.caption(f"Opened by name from {variant.library}; not in the roster.")
st.info(RANDOM_WEIGHTS_NOTE, icon=":material/info:")

# --- totals -------------------------------------------------------------------------------------
AXES = {"image": "batch×channels×height×width", "tokens": "batch×tokens",
        "volume": "batch×channels×depth×height×width"}
st.markdown(f"**Input** {'×'.join(map(str, result['input_shape']))} ({AXES.get(variant.input_kind, 'batch×…')}), fp32 · "
            f"native input {'×'.join(map(str, native_input_size(variant)))}")
totals(result)

published = published_figures(variant)
if published:
    rows = []
    if published.get("params_m") is not None:
        rows.append({"figure": "Parameters (M)", "published": f"{published['params_m']:.3f}", "we measure": f"{result['params'] / 1e6:.3f}"})
    if published.get("gmacs") is not None:
        rows.append({"figure": "GMACs per sample", "published": f"{published['gmacs']:.3f}", "we measure": f"{result['macs'] / 1e9 / spec.batch:.3f}"})
    if published.get("top1") is not None:
        rows.append({"figure": published.get("metric") or "top-1 (%)", "published": f"{published['top1']:.3f}", "we measure": "— (random weights)"})
    if rows:
        st.markdown("**Published vs measured**")
        st.dataframe(pd.DataFrame(rows), hide_index=True)  # both columns as text, to 3 decimals: they line up
        st.caption(f"Published figures: {published.get('source', 'paper').rstrip('.')}. Measured per sample at this "
                   "page's input size.")

if result["uncounted_ops"]:
    names = ", ".join(f"`{u['op']}` ×{u['count']}" for u in result["uncounted_ops"])
    st.warning(f"Ops with no cost formula (their MACs are not included; their memory traffic is): {names}")
else:
    st.success("Every op in the forward pass was costed: none left uncounted.", icon=":material/check_circle:")
if result["traced_on"] == "cpu":
    st.caption("This model's forward depends on data (e.g. detection post-processing), so it was traced once on the CPU "
               "with random weights; data-dependent parts (proposal counts) follow those weights.")

# --- where the cost sits --------------------------------------------------------------------------
layers = result["layers"]
deepest = max_depth(layers)
st.subheader("Where the cost sits")
# The controls above the chart, so that the treemap has the page's whole width (at 800 px it had a third of it).
c1, c2 = st.columns(2)
metric = c1.radio("Size by", ["MACs", "Memory access cost", "Parameters"], key="model_treemap_metric", horizontal=True)
chart_depth = depth_slider("Chart depth", deepest, 3, "model_chart_depth", container=c2)
treemap = cost_treemap(layers, metric, chart_depth)
treemap.update_layout(uniformtext=dict(minsize=10, mode="hide"))  # a box too small to read its label shows none
st.plotly_chart(treemap, width="stretch", config=plot_config())

# --- per-layer table -------------------------------------------------------------------------------
st.subheader("Per layer")


# Each model opens at the depth that shows its structure (no row above half the MACs), not at depth 1.
if st.session_state.get("model_depth_for") != spec.key():
    st.session_state.pop("model_depth", None)
    st.session_state.model_depth_for = spec.key()
depth = depth_slider("Roll up to depth", deepest, structural_depth(layers), "model_depth",
                  help="1 = stages/top-level blocks; deeper levels split each block into its layers. Each row's figures include its children.")
layer_rows = layer_frame(rolled_up(layers, depth), indent=False)
# the name and the headline figures fit an 800-pixel window; the detail columns behind "More columns" (which
# every expander's table below follows too)
layer_order = more_columns(layer_rows.columns, LAYER_COMPACT, LAYER_COLUMNS, "model_more_columns")
st.dataframe(layer_rows, hide_index=True, width="stretch", column_config=LAYER_COLUMNS, column_order=layer_order)
st.caption("Each row includes everything its module runs. Rows at one depth add up to the model's total; "
           "ops run directly by a parent (e.g. a residual addition) count toward the parent only.")

st.markdown("**Expand a stage**")
for row in rolled_up(layers, 1):
    if row["is_leaf"]:
        continue
    with st.expander(f"{row['name']} ({row['type']}) · {format_count(row['macs'], 'MAC')} · {format_bytes(row['memory_access_bytes'])}"):
        st.dataframe(layer_frame(subtree(layers, row["name"]), indent=True), hide_index=True, width="stretch",
                     column_config=LAYER_COLUMNS, column_order=layer_order)

with st.expander("Module tree with output shapes"):
    tree_depth = depth_slider("Tree depth", deepest, 2, "model_tree_depth")
    st.code(module_tree_text(layers, tree_depth), language=None)

with st.expander("Cost by operator (aten level)"):
    ops = pd.DataFrame(result["ops"])
    ops["MACs (M)"] = ops.pop("macs") / 1e6
    ops["memory access (MB)"] = ops.pop("memory_access_bytes") / 1e6
    # the operator pinned, its figures next to it, the category last
    st.dataframe(ops, hide_index=True, width="stretch", column_order=[
        "op", "MACs (M)", "memory access (MB)", "count", "elementwise_ops", "category"], column_config={
        "op": st.column_config.TextColumn("Operator", pinned=True), "category": st.column_config.TextColumn("Category"),
        "count": st.column_config.NumberColumn("Calls", format="%,d"),
        "elementwise_ops": st.column_config.NumberColumn("Elementwise ops", format="%,d"),
        "MACs (M)": st.column_config.NumberColumn("MACs (M)", format="%,.2f", help="Multiply-accumulates, in millions"),
        "memory access (MB)": st.column_config.NumberColumn("Mem. access (MB)", format="%,.2f",
                                                            help="Memory access cost (not MACs)")})
    st.caption("category: mac = counted in MACs; elementwise = counted as elementwise ops; data = moves data, no arithmetic; "
               "uncounted = no formula.")

# --- memory ------------------------------------------------------------------------------------------
memory_section(spec)

# --- second opinion ---------------------------------------------------------------------------------
st.subheader("Second opinion: fvcore")
fvcore_payload = {"spec": spec.to_dict()}  # fvcore traces the model on real CPU tensors: a job, estimated first
if not confirm_estimate(job_estimate("fvcore", fvcore_payload), "fvcore", "model_fvcore",
                        job_key("fvcore", fvcore_payload)):
    st.caption("fvcore traces the model on real CPU tensors; press the button to run it.")
else:
    with guard("fvcore"):
        from explorer.second_opinion import explain_difference

        with st.spinner("Tracing with fvcore on the CPU…"):
            fv = fvcore_of(spec)
        c1, c2, c3 = st.columns(3)
        c1.metric("Our MACs", format_count(result["macs"], "MAC"))
        c2.metric("fvcore total", format_count(fv["total"], "MAC"), help="fvcore counts one 'flop' per multiply-accumulate")
        c3.metric("fvcore, MAC ops only", format_count(fv["mac_ops_total"], "MAC"))
        for reason in explain_difference(result["macs"], fv):
            st.markdown(f"- {reason}")

with st.expander("Library metadata"):
    st.json(library_metadata(variant))
with st.expander("This model as a spec (what the URL carries)"):
    st.code(spec.key(), language="json")
