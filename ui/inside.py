"""Views inside a model: receptive fields and Swin's shifted-window masks (used by the Inside and Tours pages)."""
from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer.backend import BACKEND
from explorer.spec import ModelSpec


@st.cache_data(max_entries=32, show_spinner=False)
def _rf(spec_key: str) -> dict:
    return BACKEND.receptive_field(json.loads(spec_key))


@st.cache_data(max_entries=32, show_spinner=False)
def _erf(spec_key: str, layer: str) -> dict:
    return BACKEND.effective_receptive_field(json.loads(spec_key), layer)


@st.cache_data(max_entries=64, show_spinner=False)
def _swin(spec_key: str, stage: int, block: int, window: int | None) -> dict:
    return BACKEND.swin_masks(json.loads(spec_key), stage, block, window)


def receptive_field_view(spec: ModelSpec, layer: str | None = None, key: str = "rf", with_erf: bool = False):
    """Theoretical receptive field of every layer across depth; the chosen layer highlighted."""
    with st.spinner("Tracing the graph for receptive fields…"):
        report = _rf(spec.key())
    rows = [r for r in report["rows"] if r["op"] != "container"]
    names = [r["name"] for r in rows]
    default = names.index(layer) if layer in names else max(0, len(names) - 1 - next(
        (i for i, r in enumerate(reversed(rows)) if not r["global"]), 0))
    chosen = st.selectbox("Layer", names, index=default, key=f"{key}_layer")
    row = rows[names.index(chosen)]
    c1, c2, c3 = st.columns(3)
    c1.metric("Receptive field (pixels)", "whole input" if row["global"] else f"{row['rf'][0]} × {row['rf'][1]}")
    c2.metric("Jump / stride (pixels)", f"{row['jump'][0]} × {row['jump'][1]}")
    c3.metric("First unit's centre (pixel)", f"({row['start'][0]}, {row['start'][1]})")
    fig = go.Figure()
    local = [(i, r) for i, r in enumerate(rows) if not r["global"]]
    fig.add_trace(go.Scatter(x=[i for i, _ in local], y=[r["rf"][0] for _, r in local], mode="lines+markers",
                             name="receptive field (pixels)", text=[r["name"] for _, r in local],
                             hovertemplate="%{text}<br>rf %{y} px<extra></extra>"))
    fig.add_trace(go.Scatter(x=[i for i, _ in local], y=[r["jump"][0] for _, r in local], mode="lines",
                             name="jump (pixels)", text=[r["name"] for _, r in local], hovertemplate="%{text}<br>jump %{y} px<extra></extra>"))
    fig.add_vline(x=names.index(chosen), line_dash="dash")
    fig.update_layout(xaxis_title="layer (execution order)", yaxis_title="pixels (height)", height=380,
                      title=f"Theoretical receptive field across depth ({report.get('method', 'fx')} trace)")
    st.plotly_chart(fig, width="stretch")
    if row.get("note"):
        st.caption(f"{chosen}: {row['note']}")
    if row.get("approximate"):
        st.caption("This row is approximate (window attention, interpolation or uneven adaptive pooling).")
    if with_erf and not row["global"]:
        if st.button("Effective receptive field of this layer's centre unit (Luo et al. 2016)", key=f"{key}_erf"):
            with st.spinner("Back-propagating from the centre unit on 4 random inputs…"):
                erf = _erf(spec.key(), chosen)
            box = erf["box"]
            heat = go.Figure(go.Heatmap(z=erf["map"], colorscale="Inferno", colorbar=dict(title="|∂y/∂x|, max 1")))
            heat.add_shape(type="rect", x0=box["x0"] - 0.5, x1=box["x1"] - 0.5, y0=box["y0"] - 0.5, y1=box["y1"] - 0.5,
                           line=dict(color="cyan", width=2))
            heat.update_yaxes(autorange="reversed", scaleanchor="x", title="y (pixels)")
            heat.update_xaxes(title="x (pixels)")
            heat.update_layout(height=520, title="Effective receptive field (heat) inside the theoretical box (cyan)")
            st.plotly_chart(heat, width="stretch")
            st.caption("Random weights: the effective field of a trained network is typically smaller and Gaussian-like.")
    with st.expander("All layers"):
        st.dataframe(pd.DataFrame(rows)[["name", "type", "rf", "jump", "start", "output_hw", "global", "approximate"]],
                     hide_index=True, width="stretch")


def swin_mask_view(spec: ModelSpec, stage: int = 1, block: int = 1, key: str = "swin", controls: bool = False):
    """Window grid, cyclic shift, region labels and the attention mask of one window."""
    window = None
    if controls:
        c1, c2, c3 = st.columns(3)
        stage = c1.selectbox("Stage", [1, 2, 3, 4], index=stage - 1, key=f"{key}_stage")
        block = c2.number_input("Block in the stage (0 = first; odd blocks are shifted)", 0, 17, block, key=f"{key}_block")
        window = c3.number_input("Window size (0 = the model's own)", 0, 32, 0, key=f"{key}_window") or None
    with st.spinner("Reading the model's windows…"):
        data = _swin(spec.key(), int(stage), int(block), window)
    res = data["resolution_hw"]
    st.markdown(f"Stage {data['stage']}, block {data['block']}: feature map {res[0]}×{res[1]} tokens, window "
                f"{data['window'][0]}×{data['window'][1]}, shift {data['shift'][0]} "
                f"({'shifted' if data['shifted'] else 'not shifted'}). **{data['masked_windows']} of {data['total_windows']} "
                f"windows carry a mask**; {data['regions']} regions after the cyclic shift.")
    c1, c2 = st.columns(2)
    labels = go.Figure(go.Heatmap(z=data["labels"], colorscale="Turbo", showscale=False,
                                  hovertemplate="token (%{y}, %{x})<br>region %{z}<extra></extra>"))
    w = data["window"][0]
    for i in range(1, data["window_grid"][0]):
        labels.add_hline(y=i * w - 0.5, line_color="white", line_width=2)
    for j in range(1, data["window_grid"][1]):
        labels.add_vline(x=j * w - 0.5, line_color="white", line_width=2)
    labels.update_yaxes(autorange="reversed", scaleanchor="x")
    labels.update_layout(title="Region labels after the cyclic shift, window grid in white", height=460)
    c1.plotly_chart(labels, width="stretch")
    masked = [i for i, m in enumerate(data["masked_pairs"]) if m] or [0]
    index = c2.selectbox("Window", list(range(data["total_windows"])), index=masked[-1], key=f"{key}_window_index",
                         help="Windows in row-major order; the last one mixes the most regions")
    mask = go.Figure(go.Heatmap(z=data["masks"][index], colorscale=[[0, "#b2182b"], [1, "#f7f7f7"]], zmin=-100, zmax=0,
                                colorbar=dict(title="added to the attention logit"),
                                hovertemplate="query %{y}, key %{x}: %{z}<extra></extra>"))
    mask.update_yaxes(autorange="reversed", scaleanchor="x", title="query token in the window")
    mask.update_xaxes(title="key token in the window")
    mask.update_layout(title=f"Attention mask of window {index} (−100 = blocked)", height=460)
    c2.plotly_chart(mask, width="stretch")
