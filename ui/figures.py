"""Plotly figures for the pages (units in every title and hover).

Every log axis labels decades only (`label_decades`): plotly's own log ticks print "5 2 1 5 2 0.1 5", which a
student reads as a linear scale. Colours are left to the theme (light or dark, as the browser prefers), so no
trace is drawn in black or white.
"""
from __future__ import annotations

import math
import re

import plotly.graph_objects as go

from explorer.layers import ROOT, parent_of

SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_text(exponent: int) -> str:
    """10^exponent as a student reads it: 0.001 … 1,000 written out, beyond that 10⁴, 10⁻⁴."""
    if -3 <= exponent <= 3:
        return f"{10.0 ** exponent:,.{max(0, -exponent)}f}"
    return "10" + str(exponent).translate(SUPERSCRIPT)


def decade_texts(exponents) -> list[str]:
    """One axis' decade labels in one style: written out (0.01 … 1,000) when every tick fits that, else powers of
    ten throughout (10¹ 10² 10³ 10⁴, not 10 100 1,000 10⁴)."""
    if all(-3 <= e <= 3 for e in exponents):
        return [decade_text(e) for e in exponents]
    return ["10" + str(e).translate(SUPERSCRIPT) for e in exponents]


def _axis_values(fig: go.Figure, axis_name: str) -> list[float]:
    """The positive data values plotted against one axis (xaxis, yaxis2, …) by every trace."""
    letter, suffix = axis_name[0], axis_name[5:]
    values = []
    for trace in fig.data:
        if (getattr(trace, f"{letter}axis", None) or letter) != letter + suffix:
            continue
        data = getattr(trace, letter, None)
        if data is None:
            continue
        values.extend(float(v) for v in data if v is not None and not isinstance(v, str) and v > 0)
    return values


def label_decades(fig: go.Figure) -> go.Figure:
    """Every log axis of `fig`: a labelled tick at each power of ten, unlabelled minor grid lines at 2…9 times
    it, and a range of whole decades around the data (so at least two labelled ticks show)."""
    layout = fig.to_plotly_json()["layout"]
    for axis_name, axis in layout.items():
        if not re.fullmatch(r"[xy]axis\d*", axis_name) or axis.get("type") != "log":
            continue
        values = _axis_values(fig, axis_name)
        if not values:
            continue
        low = math.floor(math.log10(min(values)) + 1e-9)
        high = math.ceil(math.log10(max(values)) - 1e-9)
        fig.layout[axis_name].update(**decade_axis(low, high if high > low else low + 1))
    return fig


def decade_axis(low: float, high: float) -> dict:
    """A log axis over 10^low … 10^high (log10 units, as Plotly's range): a labelled tick at each power of ten
    inside it, in one style (decade_texts), and unlabelled minor grid lines at 2…9 times each."""
    exponents = range(math.ceil(low - 1e-9), math.floor(high + 1e-9) + 1)
    return dict(tickmode="array", tickvals=[10.0 ** e for e in exponents], ticktext=decade_texts(exponents),
                range=[low, high], minor=dict(tickmode="array", showgrid=True, ticks="",
                                              tickvals=[m * 10.0 ** e for e in range(math.floor(low), math.ceil(high))
                                                        for m in range(2, 10)]))


def label_sides(xs: list[float]) -> list[str]:
    """A textposition per point of a scatter: the names over the left quarter of the x range start at their point
    and run right, those over the right quarter end at it, the rest are centred; so that no name runs past the
    plot's edge, where a narrow window cut "densenet121" to "lensenet121"."""
    low, high = min(xs, default=0.0), max(xs, default=0.0)
    span = (high - low) or 1.0
    return ["top right" if (x - low) / span < 0.25 else "top left" if (x - low) / span > 0.75 else "top center"
            for x in xs]


_METRIC_FIELD = {
    "MACs": ("macs", "MACs", 1e6, "M MACs"),
    "Memory access cost": ("memory_access_bytes", "memory access", 1e6, "MB"),
    "Parameters": ("params", "parameters", 1e6, "M params"),
}


def cost_treemap(layers: list[dict], metric: str, depth: int) -> go.Figure:
    """Modules as nested rectangles sized by `metric`, down to `depth`, in the network's own order (first
    layer top left), each labelled with its value and unit."""
    field, label, scale, unit = _METRIC_FIELD[metric]
    rows = [r for r in layers if r["depth"] <= depth and (r[field] > 0 or r["depth"] == 0)]
    ids = [r["name"] for r in rows]
    parents = ["" if r["depth"] == 0 else parent_of(r["name"]) for r in rows]
    values = [r[field] for r in rows]
    known = set(ids)
    parents = [p if (p in known or p == "") else ROOT for p in parents]
    labels = [r["name"].rsplit(".", 1)[-1] if r["depth"] else "model" for r in rows]
    custom = [[r["type"], r[field] / scale] for r in rows]
    fig = go.Figure(
        go.Treemap(
            ids=ids,
            labels=labels,
            parents=parents,
            values=values,
            branchvalues="total",
            sort=False,  # plotly sorts by size otherwise: the stages would lose their order
            customdata=custom,
            texttemplate="%{label}<br>%{customdata[1]:,.3g} " + unit + "<br>%{percentRoot:.1%}",
            hovertemplate="<b>%{id}</b> (%{customdata[0]})<br>%{customdata[1]:,.3f} " + unit
            + "<br>%{percentRoot:.1%} of the model<extra></extra>",
            maxdepth=depth + 1,
        )
    )
    fig.update_layout(title=f"{metric} by module ({unit})", margin=dict(t=40, l=0, r=0, b=0), height=460)
    return fig


# Plotly's default colours, given explicitly so that a line and its p10–p90 band share one.
PALETTE = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff",
           "#fecb52"]


def _translucent(colour: str, alpha: float = 0.2) -> str:
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def sweep_plot(rows: list[dict], y: str, title: str, y_label: str, band: tuple[str, str] | None = None) -> go.Figure:
    """One line per model across batch sizes (log-2 x axis, a tick at each batch timed); with `band`, the
    keys of each point's low and high values (p10 and p90), drawn as a shaded band around the line."""
    fig = go.Figure()
    for index, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        colour = PALETTE[index % len(PALETTE)]
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["batch"])
        batches = [r["batch"] for r in mine]
        if band:
            low, high = band
            fig.add_trace(go.Scatter(
                x=batches + batches[::-1], y=[r[high] for r in mine] + [r[low] for r in mine][::-1], fill="toself",
                mode="lines", line=dict(width=0), fillcolor=_translucent(colour), hoverinfo="skip", legendgroup=model,
                name=f"{model}: p10–p90"))
        fig.add_trace(go.Scatter(
            x=batches, y=[r[y] for r in mine], mode="lines+markers", name=model, legendgroup=model,
            line=dict(color=colour),
            customdata=[[r[band[0]], r[band[1]]] for r in mine] if band else None,
            hovertemplate=f"<b>{model}</b><br>batch %{{x}}<br>{y_label}: %{{y:,.3f}}"
            + ("<br>p10–p90: %{customdata[0]:,.3f} – %{customdata[1]:,.3f}" if band else "") + "<extra></extra>"))
    batches = sorted({r["batch"] for r in rows})
    fig.update_layout(title=title, xaxis_title="batch size", yaxis_title=y_label, height=380, margin=dict(t=40, b=40))
    # Batch sizes are the points timed: one labelled tick at each (powers of two, not decades)
    fig.update_xaxes(type="log", tickmode="array", tickvals=batches, ticktext=[f"{b:,}" for b in batches])
    return fig


def roofline_plot(peaks: dict, model_points: list[dict], layer_points: list[dict], dtype: str) -> go.Figure:
    """Roofline: achieved TFLOP/s against arithmetic intensity (FLOPs per byte), log-log."""
    import math

    intensities = [p["intensity"] for p in model_points + layer_points if p.get("intensity")]
    lo = min(intensities + [0.1]) / 2
    hi = max(intensities + [peaks["tflops"] * 1e3 / peaks["bandwidth_gb_s"] * 4])
    xs = [lo * (hi / lo) ** (i / 60) for i in range(61)]
    roof = [min(peaks["tflops"], peaks["bandwidth_gb_s"] * x / 1e3) for x in xs]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=roof, mode="lines", name=f"roof ({dtype})", line=dict(color="#888888", width=3),
                             hovertemplate="intensity %{x:.2f} FLOP/B<br>roof %{y:.3f} TFLOP/s<extra></extra>"))
    if layer_points:
        sizes = [max(4.0, 30 * math.sqrt(p.get("share", 0))) for p in layer_points]
        fig.add_trace(go.Scatter(
            x=[p["intensity"] for p in layer_points], y=[p["tflops"] for p in layer_points], mode="markers",
            name="layers", marker=dict(size=sizes, opacity=0.6), text=[p["label"] for p in layer_points],
            hovertemplate="<b>%{text}</b><br>%{x:.2f} FLOP/B<br>%{y:.4f} TFLOP/s<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[p["intensity"] for p in model_points], y=[p["tflops"] for p in model_points], mode="markers",
        name="whole model", marker=dict(size=12, symbol="diamond"), text=[p["label"] for p in model_points],
        hovertemplate="<b>%{text}</b><br>%{x:.2f} FLOP/B<br>%{y:.4f} TFLOP/s<extra></extra>"))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOPs per byte moved)")
    fig.update_yaxes(type="log", title="achieved TFLOP/s")
    fig.update_layout(title=dict(text="Roofline", subtitle=dict(
        text=f"peak {peaks['tflops']:.3g} TFLOP/s, {peaks['bandwidth_gb_s']:.4g} GB/s ({peaks['source']})")),
        height=480, margin=dict(t=70, b=40))
    return label_decades(fig)


def class_weight_plot(counts: list[int], weights: dict[str, list[float]], kept: list[float]) -> go.Figure:
    """Each long-tail method's weight of a class against the class's size (log-log), with EQL's suppressed
    classes as a grey band."""
    fig = go.Figure([go.Scatter(x=list(counts), y=w, mode="lines+markers", name=name) for name, w in weights.items()])
    suppressed = [int(n) for n, k in zip(counts, kept) if k == 0]
    if suppressed:  # a filled trace, in data coordinates on both log axes
        low = min(min(w) for w in weights.values())
        high = max(max(w) for w in weights.values())
        lo, hi = min(suppressed) / 1.05, max(suppressed) * 1.05  # some width even when all sizes are equal
        fig.add_trace(go.Scatter(x=[lo, hi, hi, lo, lo], y=[low, low, high, high, low], fill="toself", mode="lines",
                                 line=dict(width=0), fillcolor="rgba(128,128,128,0.2)", hoverinfo="skip",
                                 name=f"EQL: negatives suppressed ({len(suppressed)} classes)"))
    fig.update_xaxes(type="log", title="class size n_c (training images, log scale)")
    fig.update_yaxes(type="log", title="relative weight (mean over classes = 1, log scale)")
    fig.update_layout(title="How each method weighs a class, by its size", height=430)
    return label_decades(fig)


def attention_formula_plot(rows: list[dict]) -> go.Figure:
    """One attention layer's GMACs against the input side: the Swin paper's formulas as lines, this app's
    count of the layer as points (log y: global attention grows far faster)."""
    fig = go.Figure()
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        fig.add_trace(go.Scatter(x=[r["side"] for r in mine], y=[r["formula_macs"] / 1e9 for r in mine], mode="lines",
                                 name=f"{model}: {mine[0]['formula']}"))
        measured = [r for r in mine if r["measured_macs"] is not None]
        if measured:
            fig.add_trace(go.Scatter(x=[r["side"] for r in measured], y=[r["measured_macs"] / 1e9 for r in measured],
                                     mode="markers", marker=dict(size=11, symbol="x"), name=f"{model}: measured"))
    fig.update_layout(xaxis_title="input side (pixels)", yaxis_title="GMACs of one attention layer (log scale)",
                      yaxis_type="log", height=440, legend=dict(orientation="h", y=-0.25))
    return label_decades(fig)
