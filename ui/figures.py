"""Plotly figures for the pages (units in every title and hover)."""
from __future__ import annotations

import plotly.graph_objects as go

from explorer.layers import ROOT, parent_of

_METRIC_FIELD = {
    "MACs": ("macs", "MACs", 1e6, "M MACs"),
    "Memory access cost": ("memory_access_bytes", "memory access", 1e6, "MB"),
    "Parameters": ("params", "parameters", 1e6, "M params"),
}


def cost_treemap(layers: list[dict], metric: str, depth: int) -> go.Figure:
    """Modules as nested rectangles sized by `metric`, down to `depth`."""
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
            customdata=custom,
            hovertemplate="<b>%{id}</b> (%{customdata[0]})<br>%{customdata[1]:.3f} " + unit
            + "<br>%{percentRoot:.1%} of the model<extra></extra>",
            maxdepth=depth + 1,
        )
    )
    fig.update_layout(title=f"{metric} by module ({unit})", margin=dict(t=40, l=0, r=0, b=0), height=460)
    return fig


def sweep_plot(rows: list[dict], y: str, title: str, y_label: str) -> go.Figure:
    """One line per model across batch sizes (log-2 x axis)."""
    fig = go.Figure()
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        fig.add_trace(go.Scatter(x=[r["batch"] for r in mine], y=[r[y] for r in mine], mode="lines+markers", name=model,
                                 hovertemplate=f"<b>{model}</b><br>batch %{{x}}<br>{y_label}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="batch size", yaxis_title=y_label, height=380, margin=dict(t=40, b=40))
    fig.update_xaxes(type="log", dtick=0.30103)  # one tick per power of two
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
    fig.add_trace(go.Scatter(x=xs, y=roof, mode="lines", name=f"roof ({dtype})", line=dict(color="black"),
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
    fig.update_layout(title=f"Roofline: peak {peaks['tflops']:.3g} TFLOP/s, {peaks['bandwidth_gb_s']:.4g} GB/s ({peaks['source']})",
                      height=480, margin=dict(t=50, b=40))
    return fig
