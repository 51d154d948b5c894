"""Compare models side by side: cost against published accuracy, Pareto fronts, resolution sweeps."""
import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer.catalog import load_catalog
from explorer.accuracy import (IMAGENET_TOP1, MAX_TYPED_FIGURES, OTHER_RANGE, check_typed_figure,
                               typed_figures_from_link, typed_figures_to_link)
from explorer.compare import (READY_MADE, TRAINING_SETTINGS, label_of, pareto_front, published_metrics, spec_from_item,
                              with_typed_figures)
from explorer.errors import ExplorerError
from explorer.estimates import combine
from explorer.jobs import job_key

from ui.common import (QUOTED_LINK_TEXT, cached_attention_formulas, cached_bench, cached_compare_row, cached_sweep,
                       cached_training_costs,
                       drop_unused_link_params, escape_markdown, guard, page_setup, plot_config, start_from_link)
from ui.components import COMPARE_COLUMNS, more_columns
from ui.figures import attention_formula_plot, label_sides
from ui.jobs import confirm_estimate, job_estimate
from ui.graph import compare_diff_section

page_setup("Compare", ":material/compare_arrows:")
st.title("Compare")
st.caption("Every figure is this app's own count at each model's input (fp32), except published accuracy, whose source is named. "
           "The comparison set lives in the URL: share it and the same table appears.")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]


MAX_LINKED_SET = 24  # models a link may ask for: each one is built and costed


def _json_kind(value) -> str:
    return {dict: "an object", str: "a string", bool: "true or false", type(None): "null"}.get(type(value), "a number")


def set_from_link() -> list[str] | None:
    """The comparison set the link carries: None when it carries none; when it cannot be read, an empty set and a
    warning that says why (a shared link must not quietly show another set)."""
    raw = st.query_params.get("set")
    if raw is None or not raw.strip():
        return None
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        reason = f"it is not valid JSON ({exc.msg}, at character {exc.pos})"
    except RecursionError:
        reason = "it is nested too deeply"
    else:
        if isinstance(items, list):
            if len(items) > MAX_LINKED_SET:
                st.warning(f"The link's comparison set lists {len(items)} models; a link may list at most "
                           f"{MAX_LINKED_SET}: showing the first {MAX_LINKED_SET}.")
                items = items[:MAX_LINKED_SET]
            return [i if isinstance(i, str) else json.dumps(i, sort_keys=True) for i in items]
        reason = f"it is {_json_kind(items)}, not a list"
    example = escape_markdown('["resnet18", "mobilenet_v2"]')
    st.warning(f"The comparison set in the link could not be read: {reason}. A set is a JSON list such as {example}. "
               "Starting from an empty set.")
    return []


def ready_from_link() -> str | None:
    """The ready-made comparison the link names, or None (with a warning when it names one this page lacks)."""
    wanted = st.query_params.get("ready")
    if not wanted or wanted in READY_MADE:
        return wanted or None
    named = escape_markdown(wanted, limit=QUOTED_LINK_TEXT)
    st.warning(f"The link asks for a ready-made comparison named '{named}', which this page does not have (it has "
               f"{escape_markdown(', '.join(READY_MADE))}): ignored.")
    return None


def _add_to_set():
    """Add the picked and typed models once they build (on the meta device), then empty the inputs."""
    from explorer.errors import ExplorerError

    new = list(st.session_state.compare_add) + (
        [st.session_state.compare_extra.strip()] if st.session_state.compare_extra.strip() else [])
    try:
        for item in new:
            # unknown names and swaps that fit nowhere stay out; the row is computed once, for the table too
            cached_compare_row(spec_from_item(item).key())
    except ExplorerError as exc:
        st.session_state.compare_add_error = f"Not added: {exc}"
        return
    st.session_state.compare_set = list(dict.fromkeys(st.session_state.compare_set + new))
    st.session_state.compare_add = []
    st.session_state.compare_extra = ""


def typed_from_link(items: list[str]) -> dict[str, dict[str, float]]:
    """The figures the link's ?typed= carries for models of the set; a warning names what was dropped and why."""
    raw = st.query_params.get("typed")
    if raw is None or not raw.strip():
        return {}
    figures, problems = typed_figures_from_link(raw, items)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        st.warning(escape_markdown(f"Some typed figures in the link were dropped: {shown}.", limit=1000))
    return figures


def _type_figure():
    """Keep the figure typed for one model (checked: a metric name from a small alphabet, a bounded number)."""
    item, metric, value = (st.session_state.compare_typed_item, st.session_state.compare_typed_metric,
                           st.session_state.compare_typed_value)
    typed = {k: dict(v) for k, v in st.session_state.compare_typed.items()}
    try:
        if item not in st.session_state.compare_set:
            raise ExplorerError("pick a model of the comparison set")
        metric, value = check_typed_figure(metric, value)
        if sum(map(len, typed.values())) - len(typed.get(item, {}).keys() & {metric}) >= MAX_TYPED_FIGURES:
            raise ExplorerError(f"at most {MAX_TYPED_FIGURES} typed figures; remove some first")
    except ExplorerError as exc:
        st.session_state.compare_typed_error = f"Figure not kept: {exc}"
        return
    typed.setdefault(item, {})[metric] = value
    st.session_state.compare_typed = typed


def _remove_from_set():
    chosen = st.session_state.compare_remove
    st.session_state.compare_set = [i for i in st.session_state.compare_set if i != chosen]
    st.session_state.compare_remove = "—"


drop_unused_link_params(("set", "ready", "typed"))


def widgets_from_link() -> dict:
    """The link's comparison set, ready-made comparison (with its axes) and typed figures, as the widgets' values."""
    linked_set, linked_ready = set_from_link(), ready_from_link()
    values: dict = {}
    if linked_ready:
        values.update(compare_ready=linked_ready, compare_ready_applied=linked_ready)
        plot = READY_MADE[linked_ready].get("plot", {})
        if plot:
            values.update(compare_x=plot["x"], compare_y=plot["y"])
    default_set = READY_MADE[linked_ready or "resnet_family"]["specs"]
    values["compare_set"] = list(default_set if linked_set is None else linked_set)
    values["compare_typed"] = typed_from_link(values["compare_set"])
    return values


start_from_link("compare_set", widgets_from_link)  # first visit: the link's set and ready-made comparison, if any

with st.container(border=True):
    c1, c2 = st.columns([2, 2])
    ready = c1.selectbox("Ready-made comparison", ["—"] + list(READY_MADE), key="compare_ready",
                         format_func=lambda k: "choose…" if k == "—" else READY_MADE[k]["title"])
    if ready != "—" and st.session_state.get("compare_ready_applied") != ready:
        st.session_state.compare_set = list(READY_MADE[ready]["specs"])
        st.session_state.compare_ready_applied = ready
        # A comparison about bytes opens on bytes: its axes (the selectboxes below take them on this run).
        plot = READY_MADE[ready].get("plot", {})
        if plot:
            st.session_state.compare_x, st.session_state.compare_y = plot["x"], plot["y"]
    if ready != "—":
        c1.caption(READY_MADE[ready]["why"])
        st.query_params["ready"] = ready  # the link reopens it, with its axes and sweep
    elif "ready" in st.query_params:
        del st.query_params["ready"]
    c2.multiselect("Add catalog models", ids, key="compare_add")
    c2.text_input("…or a spec (library name, or JSON with swaps / input size)", key="compare_extra",
                  placeholder='{"arch": "resnet50", "swaps": ["preset:se"]}  or  timm:convnext_tiny')
    b1, b2, b3 = st.columns([1, 2, 3])
    b1.button("Add", key="compare_add_button", on_click=_add_to_set)
    b2.button("Clear the set", key="compare_clear", on_click=lambda: st.session_state.update(compare_set=[]))
    b3.selectbox("Remove one", ["—"] + st.session_state.compare_set, key="compare_remove", on_change=_remove_from_set,
                 format_func=lambda i: "choose a model to remove…" if i == "—" else i, label_visibility="collapsed")
if st.session_state.get("compare_add_error"):
    st.error(escape_markdown(st.session_state.pop("compare_add_error")))

items = st.session_state.compare_set
st.query_params["set"] = json.dumps(items, separators=(",", ":"))
# Typed figures follow the set: a model taken out takes its figures with it; the link keeps the rest.
typed = {item: figures for item, figures in st.session_state.get("compare_typed", {}).items() if item in items and figures}
st.session_state.compare_typed = typed
if typed:
    st.query_params["typed"] = typed_figures_to_link(typed)
elif "typed" in st.query_params:
    del st.query_params["typed"]
if not items:
    st.info("The comparison set is empty: add models above or pick a ready-made comparison.")
    st.stop()

rows, specs = [], []
for item in items:
    with guard(f"{item}"):
        spec = spec_from_item(item)
        with st.spinner(f"Costing {escape_markdown(label_of(spec), limit=200)}…"):
            rows.append(with_typed_figures(cached_compare_row(spec.key()), typed.get(item, {})))
        specs.append(spec)
if not rows:
    st.stop()

measure = st.toggle("Measure latency (batch 1, fp32, channels-last, this machine's device)", key="compare_latency")
if measure:
    with guard("Timing"):
        # every model's timing estimate first; a long one (large models on a CPU) waits for its Run button
        expected = combine([job_estimate("quick_bench", {"spec": spec.to_dict()}) for spec in specs],
                           "quick_bench", "models")
        if confirm_estimate(expected, "the timing", "compare_latency_estimate",
                            job_key("quick_bench", {"specs": [spec.key() for spec in specs]})):
            for row, spec in zip(rows, specs):
                with st.spinner(f"Timing {escape_markdown(row['label'], limit=200)}…"):
                    result = cached_bench(spec.key())
                row["latency_ms"] = result["results"][0]["median_ms"] if result["results"] else None
                row["latency_device"] = result["settings"]["device_name"]
training = st.toggle(f"Training cost (one step: {TRAINING_SETTINGS}, traced on the meta device)", key="compare_training")
if training:
    with guard("The training trace"):
        for row, spec in zip(rows, specs):
            with st.spinner(f"Tracing a training step of {escape_markdown(row['label'], limit=200)}…"):
                row.update(cached_training_costs(spec.key()))

with st.expander("Type a published figure (for a model the libraries have no figure for, or another metric)"):
    st.caption("The figure joins the table and the trade-off plot as “typed in”, and the link keeps it. A metric "
               "named with % takes 0 to 100; write the metric as the others are written, e.g. ImageNet top-1 (%), "
               "so that models share one axis.")
    t1, t2, t3, t4 = st.columns([3, 3, 2, 1], vertical_alignment="bottom")
    t1.selectbox("Model", items, key="compare_typed_item")
    t2.text_input("Metric", value=IMAGENET_TOP1, key="compare_typed_metric", max_chars=60)
    t3.number_input("Figure", min_value=OTHER_RANGE[0], max_value=OTHER_RANGE[1], value=None, step=0.1,
                    format="%.3f", key="compare_typed_value", placeholder="e.g. 80.1")
    t4.button("Keep", key="compare_typed_keep", on_click=_type_figure)
    if typed:
        st.button("Remove the typed figures", key="compare_typed_clear",
                  on_click=lambda: st.session_state.update(compare_typed={}))
if st.session_state.get("compare_typed_error"):
    st.error(escape_markdown(st.session_state.pop("compare_typed_error")))

frame = pd.DataFrame(rows).drop(columns=["spec", "published", "published_sources"])
# a model without a published figure says so, rather than "None" in two columns
frame["published_metric"] = frame["published_metric"].fillna("none published")
frame["published_source"] = frame["published_source"].fillna("—")
frame.insert(frame.columns.get_loc("published_source") + 1, "other published figures", [
    "; ".join(f"{m} {v:.2f}" for m, v in r["published"].items() if m != r["published_metric"]) for r in rows])
# The table's own columns after the comparison's (ui.components.COMPARE_COLUMNS, which the tours share)
TABLE_COLUMNS = {
    **COMPARE_COLUMNS,
    "latency_ms": st.column_config.NumberColumn("Latency (ms)", format="%,.2f", help="Median, batch 1, fp32, channels-last"),
    "training_memory_gb": st.column_config.NumberColumn("Train peak (GB)", format="%,.3f",
                                                        help=f"Peak memory of one training step: {TRAINING_SETTINGS}"),
    "training_step_gmacs": st.column_config.NumberColumn("Train-step GMACs", format="%,.3f",
                                                         help="MACs of one training step (forward + backward), billions"),
    "other published figures": st.column_config.TextColumn("Other published figures"),
    "latency_device": st.column_config.TextColumn("Timed on"),
}
# What an 800-pixel window shows: the model (pinned), its headline figures and whatever this session measured; the
# input too when the models differ in it; the rest behind "More columns".
compact = ["label", "params_m", "gmacs", "memory_access_mb", "published_top1", "published_metric", "latency_ms",
           "training_memory_gb", "training_step_gmacs"] + (["input"] if frame["input"].nunique() > 1 else [])
every_column = [key for key in dict.fromkeys([*TABLE_COLUMNS, *frame.columns]) if key in frame]
st.dataframe(frame, hide_index=True, width="stretch", column_config=TABLE_COLUMNS,
             column_order=more_columns(every_column, compact, TABLE_COLUMNS, "compare_more_columns"))
st.download_button("Download (CSV)", frame.to_csv(index=False), "comparison.csv", "text/csv")

# --- trade-off plot ---------------------------------------------------------------------------------
st.subheader("Trade-offs")
axes = {"GMACs": "gmacs", "parameters (M)": "params_m", "memory access (MB)": "memory_access_mb"}
if any(row.get("latency_ms") is not None for row in rows):  # timed (not while the timing waits for its Run)
    axes["latency (ms, batch 1)"] = "latency_ms"
if training:
    axes["training peak (GB)"] = "training_memory_gb"
    axes["training-step GMACs"] = "training_step_gmacs"
# two by two: in four columns at 800 px the metric names were cut to "publishec"
p1, p2 = st.columns(2)
p3, p4 = st.columns(2)
x_label = p1.selectbox("Cost axis", list(axes), key="compare_x")
# Accuracies are only comparable within one metric (ImageNet top-1, COCO box AP, ...): one choice each.
# The metric most of the set has comes first.
metrics = published_metrics(rows) or [IMAGENET_TOP1]
y_label = p2.selectbox("Against", [f"published {m}" for m in metrics] + [a for a in axes if a != x_label],
                       key="compare_y")
size_label = p3.selectbox("Bubble size", ["none"] + list(axes), key="compare_size")
# FLOPs per byte first: colour by the cost axis would only repeat the x position
colour_label = p4.selectbox("Colour", ["FLOPs per byte"] + list(axes), key="compare_colour")
colour_key = axes.get(colour_label, "intensity_flops_per_byte")
x_key = axes[x_label]
y_metric = y_label.removeprefix("published ") if y_label.startswith("published ") else None


def y_of(row):
    return (row.get("published") or {}).get(y_metric) if y_metric else row.get(axes[y_label])


def has_y(row) -> bool:
    return y_of(row) is not None


plotted = [r for r in rows if r.get(x_key) is not None and has_y(r)]
missing = [r["label"] for r in rows if not has_y(r)]
fig = go.Figure()
sizes = None
if size_label != "none":
    largest = max((r.get(axes[size_label]) or 0) for r in plotted) or 1
    sizes = [10 + 40 * (r.get(axes[size_label]) or 0) / largest for r in plotted]
fig.add_trace(go.Scatter(
    x=[r[x_key] for r in plotted], y=[y_of(r) for r in plotted], mode="markers+text",
    text=[r["label"] for r in plotted], textposition=label_sides([r[x_key] for r in plotted]),
    cliponaxis=False, name="models",
    marker=dict(size=sizes or 12, color=[r.get(colour_key) or 0 for r in plotted], colorscale="Viridis", opacity=0.8,
                showscale=True, colorbar=dict(title=colour_label)),
    customdata=[[r["input"], r["published_sources"].get(y_metric) or "" if y_metric else ""] for r in plotted],
    hovertemplate="<b>%{text}</b><br>input %{customdata[0]}<br>" + x_label + ": %{x:.3f}<br>" + y_label
    + ": %{y:.3f}<br>%{customdata[1]}<extra></extra>",
))
if y_metric:
    front = pareto_front(plotted, x_key, y_metric)
    front_rows = [next(r for r in rows if r["label"] == label) for label in front]
    fig.add_trace(go.Scatter(x=[r[x_key] for r in front_rows], y=[y_of(r) for r in front_rows], mode="lines",
                             name="Pareto front", line=dict(dash="dash")))
fig.update_layout(xaxis_title=x_label, yaxis_title=y_label, height=480, title=f"{y_label} against {x_label}",
                  legend=dict(orientation="h", y=-0.18))  # below the plot, clear of the colour bar
if plotted:  # room either side for the names over the first and last points (they were cut at the plot's edge)
    low, high = min(r[x_key] for r in plotted), max(r[x_key] for r in plotted)
    pad = 0.12 * ((high - low) or abs(high) or 1.0)
    fig.update_xaxes(range=[low - pad, high + pad])
st.plotly_chart(fig, width="stretch", config=plot_config())
if missing:
    st.caption(f"No {escape_markdown(y_label)} for: {escape_markdown(', '.join(missing))} (pick another axis, or type "
               "a published figure above, to see them).")
if y_metric and plotted:
    sources = "; ".join(f"{r['label']}: {r['published_sources'].get(y_metric)}" for r in plotted)
    st.caption(escape_markdown(f"Sources of the {y_metric} figures — {sources}", limit=3000))

# --- graph diff ----------------------------------------------------------------------------------------
st.subheader("Graph diff")
if st.toggle("Draw one model's graph with its nodes marked against another's (same architecture: different swaps, "
             "input size or options)", key="compare_graph_diff"):
    compare_diff_section(specs, [label_of(spec) for spec in specs])

# --- resolution sweep ----------------------------------------------------------------------------------
st.subheader("Resolution sweep")
default_sides = READY_MADE.get(st.session_state.get("compare_ready_applied", ""), {}).get("sweep", [160, 224, 320])
sides = st.multiselect("Input sides (square)", [96, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512],
                       default=default_sides, key="compare_sides")
sweep_request = ([spec.key() for spec in specs], sorted(sides), measure)
if sides and st.button("Sweep", key="compare_sweep"):
    st.session_state.compare_sweep_asked = sweep_request  # kept until it runs: a timed one may wait for its Run
if st.session_state.get("compare_sweep_asked") == sweep_request:
    with guard("The sweep"):
        start = True
        if measure:  # a timed sweep is a job per model: its estimate first, and a Run click when it is long
            expected = combine([job_estimate("latency_sweep", {"spec": spec.to_dict(), "sides": sorted(sides)})
                                for spec in specs], "latency_sweep", "models")
            start = confirm_estimate(expected, "the timed sweep", "compare_sweep_estimate",
                                     job_key("latency_sweep", {"request": sweep_request}))
        if start:
            sweep_rows = []
            try:
                for spec in specs:
                    with st.spinner(f"Sweeping {escape_markdown(label_of(spec), limit=200)}…"):
                        sweep_rows.extend(cached_sweep(spec.key(), tuple(sorted(sides)), measure))
            except ExplorerError:  # failed or cancelled: not asked again until the next click
                st.session_state.compare_sweep_asked = None
                raise
            st.session_state.compare_sweep_rows = sweep_rows
            st.session_state.compare_sweep_asked = None
sweep_rows = st.session_state.get("compare_sweep_rows")
if sweep_rows:
    measured = [("gmacs", "GMACs", "MACs against input side: CNNs grow with side², global attention with side⁴")]
    if any(r.get("latency_ms") is not None for r in sweep_rows):
        device_name = next((r["latency_device"] for r in rows if r.get("latency_device")), "this device")
        measured.append(("latency_ms", f"latency (ms, batch 1, {device_name})",
                         "Measured latency against input side (batch 1, fp32, channels-last)"))
    else:
        st.caption("Turn on “Measure latency” above and sweep again to time every size too.")
    for key, axis, title in measured:
        sweep = go.Figure()
        for label in dict.fromkeys(r["label"] for r in sweep_rows):
            mine = [r for r in sweep_rows if r["label"] == label and r.get(key) is not None]
            sweep.add_trace(go.Scatter(x=[r["side"] for r in mine], y=[r[key] for r in mine], mode="lines+markers",
                                       name=label))
        sweep.update_layout(xaxis_title="input side (pixels)", yaxis_title=axis, height=420, title=title)
        st.plotly_chart(sweep, width="stretch", config=plot_config())
    refused = [r for r in sweep_rows if r["error"]]
    for r in refused:
        st.caption(escape_markdown(f"{r['label']} at {r['side']}: {r['error']}"))

st.subheader("One attention layer: measured against the Swin paper's formulas")
st.caption("Ω(MSA) = 4NC² + 2N²C grows with the square of the token count; Ω(W-MSA) = 4hwC² + 2M²hwC grows linearly. "
           "Points: this app's count of the layer; lines: the formulas (multiply-adds).")
with guard("The formula sweep"):
    formula_rows = cached_attention_formulas((224, 448, 672, 896))
    fig = attention_formula_plot(formula_rows)
    fig.update_layout(margin=dict(t=30))  # no title (the heading above is one): no empty band above the plot
    st.plotly_chart(fig, width="stretch", config=plot_config())
