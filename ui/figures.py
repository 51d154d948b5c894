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
