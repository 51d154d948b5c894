"""Live figures for tour steps, one renderer per figure kind (see explorer/tours.py).

Every chart goes through ui.presenter (show_chart, or a view's `layout=narrow(...)`) and every table through
presenter_table in presenter mode, so that a step reads on a projector and fits its 1280×720 screen."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer.compare import label_of, spec_from_item
from explorer.layers import rolled_up
from explorer.errors import ExplorerError
from explorer.spec import ModelSpec
from explorer.units import format_bytes, format_count
from ui.common import cached_compare_row, cached_fold, cached_sweep, cost_of
from ui.components import (COMPARE_COLUMNS, LAYER_COLUMNS, compare_table, layer_frame, layer_table, structural_depth,
                           totals)
from ui.figures import cost_treemap
from ui.presenter import (PRESENTER_CHART_HEIGHT, narrow, presenter_on, presenter_table,
                          presenter_table_height, show_chart)

# The columns a projector's figure column (~680 px at 18 px type) holds, under shorter names, the figures first:
# a wider table scrolls sideways, so the descriptive columns go last. The others derive from these (memory
# access in elements is the bytes over the element size) or stay on the normal view.
PRESENTER_LAYER_COLUMNS = {"layer": "Layer", "params": "Params", "MACs (M)": "MACs (M)",
                           "share of MACs (%)": "MACs share", "memory access (MB)": "Memory access (MB)",
                           "output shape": "Output", "type": "Type"}
PRESENTER_COMPARE_COLUMNS = {"label": "Model", "params_m": "Params (M)", "gmacs": "GMACs",
                             "memory_access_mb": "Memory access (MB)", "activations_m": "Activations (M)",
                             "published_top1": "Published", "input": "Input", "published_metric": "Metric"}
# Figures too dense for the column beside the prose: in presenter mode they take the screen's width below it,
# and such a step is taller than one screen.
FULL_WIDTH_IN_PRESENTER = {"connectivity"}
PRESENTER_FIGURE_HEIGHT = 550  # px: the figure column's share of a 720-pixel screen (controls and caption above)


def _presenter_columns(columns: dict, shown: dict) -> dict:
    """The column configurations `shown` names, each under its shorter name."""
    return {key: {**columns[key], "label": label} for key, label in shown.items()}


def _compare_columns_shown(rows: list[dict]) -> dict:
    """The presenter's comparison columns, narrower where the rows allow: an input or a published metric that
    every row shares moves into its column's header."""
    shown = dict(PRESENTER_COMPARE_COLUMNS)
    inputs = {r["input"] for r in rows}
    if len(inputs) == 1:
        del shown["input"]
        shown["label"] = f"Model (input {next(iter(inputs))})"
    headlines = {r["published_metric"] for r in rows if r["published_metric"]}
    if len(headlines) <= 1:
        del shown["published_metric"]
        shown["published_top1"] = " ".join(["Published", *headlines])
    return shown


def side_by_side(base: dict, swapped: dict, base_label: str, swapped_label: str):
    figures = [("Parameters", "params", format_count), ("MACs", "macs", format_count),
               ("Memory access cost", "memory_access_bytes", format_bytes)]
    cols = st.columns(len(figures))
    for col, (label, key, fmt) in zip(cols, figures):
        change = swapped[key] - base[key]
        col.metric(f"{label}: {base_label}", fmt(base[key]))
        col.metric(f"{label}: {swapped_label}", fmt(swapped[key]),
                   delta=f"{fmt(change)} ({change / base[key]:+.1%})" if base[key] else None, delta_color="inverse")


def _model_totals(fig):
    result = cost_of(ModelSpec(fig["arch"]))
    totals(result)
    show_chart(cost_treemap(result["layers"], "MACs", 2))


def _layer_table(fig):
    result = cost_of(ModelSpec(fig["arch"]))
    # a step may name its depth; otherwise the one that shows the structure (no row above half the MACs)
    depth = int(fig.get("depth") or structural_depth(result["layers"]))
    if presenter_on():
        presenter_table(layer_frame(rolled_up(result["layers"], depth)),
                        _presenter_columns(LAYER_COLUMNS, PRESENTER_LAYER_COLUMNS), most=PRESENTER_FIGURE_HEIGHT)
    else:
        layer_table(result["layers"], depth)


def _compare(fig):
    rows = [cached_compare_row(spec_from_item(item).key()) for item in fig["specs"]]
    x = fig.get("x", "gmacs")
    names = {"gmacs": "GMACs", "params_m": "parameters (M)", "memory_access_mb": "memory access (MB)"}
    if presenter_on():
        presenter_table(pd.DataFrame(rows), _presenter_columns(COMPARE_COLUMNS, _compare_columns_shown(rows)))
    else:
        compare_table(rows)
    # beside the prose in presenter mode, the chart takes what the table leaves of the figure column
    height = min(PRESENTER_CHART_HEIGHT, max(250, PRESENTER_FIGURE_HEIGHT - presenter_table_height(len(rows))))
    # One accuracy metric per plot (ImageNet top-1 and COCO AP are not one scale): the most common one.
    metrics = [r["published_metric"] for r in rows if r["published_metric"]]
    metric = max(metrics, key=metrics.count) if metrics else None
    with_acc = [r for r in rows if metric and r["published_metric"] == metric]
    if len(with_acc) >= 2:  # one point is not a trade-off: the bars show the cost of every row instead
        plot = go.Figure(go.Scatter(x=[r[x] for r in with_acc], y=[r["published_top1"] for r in with_acc],
                                    mode="markers+text", text=[r["label"] for r in with_acc], textposition="top center"))
        plot.update_layout(xaxis_title=names.get(x, x), yaxis_title=f"published {metric}", height=400)
        show_chart(plot, height=height)
    else:
        plot = go.Figure(go.Bar(x=[r["label"] for r in rows], y=[r[x] for r in rows]))
        plot.update_layout(yaxis_title=names.get(x, x), height=380)
        show_chart(plot, height=height)


def _swap(fig):
    base = ModelSpec(fig["arch"])
    swapped = base.with_(swaps=list(fig["swaps"]))
    side_by_side(cost_of(base), cost_of(swapped), fig["arch"], label_of(swapped))


def _fold(fig):
    spec = ModelSpec(fig["arch"], swaps=tuple(fig["swaps"]))
    report = cached_fold(spec.key())
    c1, c2, c3 = st.columns(3)
    c1.metric("Parameters, train-time", format_count(report["train"]["params"]))
    c2.metric("Parameters, folded", format_count(report["folded_cost"]["params"]))
    c3.metric("Max |output difference|", f"{report['max_abs_diff']:.1e}")
    base = cost_of(ModelSpec(fig["arch"]))
    folded = report["folded_cost"]
    if folded["params"] == base["params"] and folded["macs"] == base["macs"]:
        st.caption(f"Folded, {fig['arch']} costs exactly what the base model does ({format_count(base['params'])} "
                   f"parameters, {format_count(base['macs'])} MACs): the training-time branches are free at inference.")
    else:
        st.caption(f"Folded: {format_count(folded['params'])} parameters and {format_count(folded['macs'])} MACs, "
                   f"against the base model's {format_count(base['params'])} and {format_count(base['macs'])}.")


def _resolution_sweep(fig):
    sides = tuple(sorted(fig.get("sides", [160, 224, 320])))
    plot = go.Figure()
    for item in fig["specs"]:
        spec = spec_from_item(item)
        rows = [r for r in cached_sweep(spec.key(), sides) if r["gmacs"] is not None]
        plot.add_trace(go.Scatter(x=[r["side"] for r in rows], y=[r["gmacs"] for r in rows], mode="lines+markers",
                                  name=label_of(spec)))
    plot.update_layout(xaxis_title="input side (pixels)", yaxis_title="GMACs", height=400)
    show_chart(plot)


def _swin_mask(fig):
    from ui.inside import swin_mask_view

    # two charts side by side in the figure column: half its width each, so titles wrap sooner
    stage, block = int(fig.get("stage", 1)), int(fig.get("block", 1))
    # a key per step: each step opens on its own most-masked window, not the one the last step chose
    swin_mask_view(ModelSpec(fig["arch"]), stage, block, key=f"tour_swin_{stage}_{block}",
                   layout=narrow(title_chars=24, height=430))


def _receptive_field(fig):
    from ui.inside import receptive_field_view

    # under the layer menu and the three figures: a shorter chart
    receptive_field_view(ModelSpec(fig["arch"]), fig.get("layer"), layout=narrow(height=320))


def _connectivity(fig):
    from ui.connectivity import connectivity_view

    # the screen's whole width under the prose (FULL_WIDTH_IN_PRESENTER), at the view's own heights: two rows of
    # up to six factors each, whose subplot titles wrap at 20 px
    connectivity_view(ModelSpec(fig["arch"], swaps=tuple(fig.get("swaps", ()))), key="tour_connectivity",
                      block=fig.get("block"), layout=narrow(height=660, title_chars=100, annotation_chars=34))


RENDERERS = {
    "model_totals": _model_totals, "layer_table": _layer_table, "compare": _compare, "swap": _swap, "fold": _fold,
    "resolution_sweep": _resolution_sweep, "swin_mask": _swin_mask, "receptive_field": _receptive_field,
    "connectivity": _connectivity, "text": lambda fig: None,
}


def render_figure(fig: dict):
    kind = fig.get("kind")
    if kind not in RENDERERS:
        raise ExplorerError(f"this step names an unknown figure kind {kind!r}")
    RENDERERS[kind](fig)
