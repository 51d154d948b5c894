"""Live figures for tour steps, one renderer per figure kind (see explorer/tours.py).

Every chart goes through ui.presenter (show_chart, or a view's `layout=narrow(...)`) and every table through
presenter_table in presenter mode, so that a step reads on a projector and fits its 1280×720 screen."""
from __future__ import annotations

import math

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
from ui.figures import cost_treemap, decade_axis
from ui.presenter import (PRESENTER_CHART_HEIGHT, PRESENTER_FONT_PX, narrow, presenter_on, presenter_table,
                          presenter_table_height, show_chart)

# The columns a projector's figure column (~660 px at 18 px type) holds, under shorter names, the figures first
# and one descriptive column last, which wraps (ui.presenter.presenter_table) so that nothing scrolls sideways.
# The others derive from these (memory access in elements is the bytes over the element size) or stay on the
# normal view: a layer's type (its name tells it) and a model's activations (its memory access counts them).
PRESENTER_LAYER_COLUMNS = {"layer": "Layer", "params": "Params", "MACs (M)": "MACs (M)",
                           "share of MACs (%)": "MACs share", "memory access (MB)": "Memory access (MB)",
                           "output shape": "Output"}
PRESENTER_COMPARE_COLUMNS = {"label": "Model", "params_m": "Params (M)", "gmacs": "GMACs",
                             "memory_access_mb": "Memory access (MB)", "input": "Input", "published_top1": "Published"}
PUBLISHED_WITH_METRIC = "published with metric"  # "80.00 PASCAL VOC2007 test mAP (%)": rows of several metrics
PRESENTER_FIGURE_HEIGHT = 550  # px: the figure column's share of a 720-pixel screen (controls and caption above)
CONNECTIVITY_CHART_HEIGHT = PRESENTER_FIGURE_HEIGHT - 110  # px: under a one-line verdict and the tabs' labels


def _presenter_columns(columns: dict, shown: dict) -> dict:
    """The column configurations `shown` names, each under its shorter name (a column `columns` lacks: text)."""
    return {key: {**columns.get(key, {}), "label": label} for key, label in shown.items()}


def _compare_columns_shown(rows: list[dict]) -> dict:
    """The presenter's comparison columns, narrower where the rows allow: an input or a published metric that
    every row shares moves into its column's header. Rows of several metrics show each figure with its metric,
    in the last column (_compare_frame), which wraps."""
    shown = dict(PRESENTER_COMPARE_COLUMNS)
    inputs = {r["input"] for r in rows}
    if len(inputs) == 1:
        del shown["input"]
        shown["label"] = f"Model (input {next(iter(inputs))})"
    headlines = {r["published_metric"] for r in rows if r["published_metric"]}
    if len(headlines) <= 1:
        shown["published_top1"] = " ".join(["Published", *headlines])
    else:
        del shown["published_top1"]
        shown[PUBLISHED_WITH_METRIC] = "Published"
    return shown


def _compare_frame(rows: list[dict]) -> pd.DataFrame:
    """The comparison rows, with each published figure also written out with its metric (PUBLISHED_WITH_METRIC)."""
    frame = pd.DataFrame(rows)
    frame[PUBLISHED_WITH_METRIC] = [f"{r['published_top1']:.2f} {r['published_metric']}"
                                    if r["published_metric"] and r["published_top1"] is not None else ""
                                    for r in rows]
    return frame


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
    shown = _compare_columns_shown(rows)
    if presenter_on():
        presenter_table(_compare_frame(rows), _presenter_columns(COMPARE_COLUMNS, shown))
    else:
        compare_table(rows)
    # beside the prose in presenter mode, the chart takes what the table leaves of the figure column; a figure
    # written out with its metric wraps to about three lines
    row_lines = 3 if PUBLISHED_WITH_METRIC in shown else 1
    height = min(PRESENTER_CHART_HEIGHT,
                 max(250, PRESENTER_FIGURE_HEIGHT - presenter_table_height(len(rows), row_lines=row_lines)))
    # One accuracy metric per plot (ImageNet top-1 and COCO AP are not one scale): the most common one.
    metrics = [r["published_metric"] for r in rows if r["published_metric"]]
    metric = max(metrics, key=metrics.count) if metrics else None
    with_acc = [r for r in rows if metric and r["published_metric"] == metric]
    if len(with_acc) >= 2:  # one point is not a trade-off: the bars show the cost of every row instead
        show_chart(_trade_off(with_acc, x, names.get(x, x), metric, height if presenter_on() else 400), height=height)
    else:
        plot = go.Figure(go.Bar(x=[r["label"] for r in rows], y=[r[x] for r in rows]))
        plot.update_layout(yaxis_title=names.get(x, x), height=380)
        show_chart(plot, height=height)


def point_labels(labels: list[str]) -> list[str]:
    """Each label without the longest name prefix (up to a "_", "-" or ":") that a series shares, at least three
    labels or all of them, so that close points keep short labels: efficientnet_b0 … efficientnet_b7 read
    b0 … b7 (the table and the hover name them). Two of several (mobilenet_v2, mobilenet_v3_large) stay whole."""
    series = min(3, len(labels))
    short = []
    for label in labels:
        cuts = [i + 1 for i, mark in enumerate(label) if mark in "_-:"]
        shared = max((cut for cut in cuts if sum(other.startswith(label[:cut]) for other in labels) >= series),
                     default=0)
        short.append(label[shared:] or label)
    return short


# Where Plotly may put a point's label, in the order tried, as (horizontal, vertical) offsets of the label's box
# in its own width / height from the marker: centred above, below, then to the sides.
LABEL_PLACES = {"top center": (-0.5, -1), "bottom center": (-0.5, 0), "top right": (0, -1), "top left": (-1, -1),
                "bottom right": (0, 0), "bottom left": (-1, 0), "middle right": (0, -0.5), "middle left": (-1, -0.5)}
MARKER_PX = 5  # a marker's radius and the gap to its label


def label_box(point: tuple[float, float], label: str, place: str, font_px: float) -> tuple[float, ...]:
    """The box (left, top, right, bottom, in px, y down) of `label` at textposition `place` beside a marker at
    `point`, estimated at 0.58 em a character and one line of 1.25 em."""
    (x, y), (across, down) = point, LABEL_PLACES[place]
    w, h = 0.58 * font_px * len(label), 1.25 * font_px
    left = x + across * w + {0: MARKER_PX, -1: -MARKER_PX}.get(across, 0)
    top = y + down * h + {0: MARKER_PX, -1: -MARKER_PX}.get(down, 0)
    return left, top, left + w, top + h


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(points: list[tuple[float, float]], labels: list[str], width: float, height: float,
                 font_px: float) -> list[str]:
    """A Plotly textposition per point (pixel coordinates, y down, in a plot area of width × height px) such that
    no label covers another label, a marker or the plot area's edge; '' where none fits (that point is named by
    its hover and the table)."""
    taken = [(x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX) for x, y in points]  # the markers
    places = []
    for point, label in zip(points, labels):
        for place in LABEL_PLACES:
            box = label_box(point, label, place, font_px)
            if box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height and not any(
                    _overlap(box, other) for other in taken):
                taken.append(box)
                places.append(place)
                break
        else:
            places.append("")
    return places


def _trade_off(rows: list[dict], x: str, x_name: str, metric: str, height: int = 400) -> go.Figure:
    """Published accuracy against a cost, a labelled point per model, `height` px tall. Costs an order of magnitude
    or more apart go on a log axis (on a linear one the small models crowd at zero). The axes' ranges are set
    here, so that place_labels can put each label where it covers nothing, within the plot area."""
    rows = sorted(rows, key=lambda r: r[x])
    costs, accuracies = [r[x] for r in rows], [r["published_top1"] for r in rows]
    log = min(costs) > 0 and max(costs) >= 10 * min(costs)
    presenting = presenter_on()
    font_px = PRESENTER_FONT_PX if presenting else 14
    # the plot area: the figure column (or a narrow window) less the y axis, the chart less its titles and ticks
    width, tall = (530, height - 110) if presenting else (650, height - 150)
    along = [math.log10(c) for c in costs] if log else costs
    x_pad = 0.06 * ((max(along) - min(along)) or 1)
    x_range = [min(along) - x_pad, max(along) + x_pad]
    if log and math.floor(x_range[1]) - math.ceil(x_range[0]) < 1:  # under two decades in view: widen to whole ones
        x_range = [math.floor(x_range[0]), math.ceil(x_range[1])]
    room = 1.25 * font_px + 2 * MARKER_PX  # a label's line above the best point and below the worst
    y_span = (max(accuracies) - min(accuracies)) or 1
    y_pad = y_span * room / max(tall - 2 * room, 40)
    y_range = [min(accuracies) - y_pad, max(accuracies) + y_pad]
    pixels = [((a - x_range[0]) / (x_range[1] - x_range[0]) * width, (y_range[1] - b) / (y_range[1] - y_range[0]) * tall)
              for a, b in zip(along, accuracies)]
    names = point_labels([r["label"] for r in rows])
    places = place_labels(pixels, names, width, tall, font_px)
    plot = go.Figure(go.Scatter(
        x=costs, y=accuracies, mode="markers+text", marker_size=2 * MARKER_PX - 2,
        text=[name if place else "" for name, place in zip(names, places)],
        textposition=[place or "top center" for place in places], hovertext=[r["label"] for r in rows],
        hovertemplate=f"%{{hovertext}}: %{{x:,.3g}} {x_name}, %{{y:.2f}}<extra></extra>"))
    # a projector's short chart: the metric's name on two lines, so that the axis holds it
    published = f"published<br>{metric}" if presenting else f"published {metric}"
    plot.update_layout(xaxis_title=x_name + (" (log scale)" if log else ""), yaxis_title=published, height=height)
    # decades labelled, as on every log axis, over the range the labels were placed in
    plot.update_xaxes(**(dict(type="log", **decade_axis(*x_range)) if log else dict(range=x_range)))
    plot.update_yaxes(range=y_range)
    return plot


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

    # in presenter mode its compact form: the verdict over two tabs of the figure column's height, whose charts
    # hold up to six factors a row, their subplot titles wrapped to a cell's width at 20 px
    connectivity_view(ModelSpec(fig["arch"], swaps=tuple(fig.get("swaps", ()))), key="tour_connectivity",
                      block=fig.get("block"), compact=presenter_on(),
                      layout=narrow(height=CONNECTIVITY_CHART_HEIGHT, annotation_chars=12))


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
