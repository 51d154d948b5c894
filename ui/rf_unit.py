"""The receptive field of one chosen unit, drawn on the image the model sees."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from explorer.views.receptive_field import unit_box
from ui.common import plot_config


def unit_on_image(row: dict, input_hw: tuple[int, int], image, key: str):
    """Sliders pick the unit (y, x) of the layer's output grid; its theoretical box goes on the image."""
    out_h, out_w = row["output_hw"]
    c1, c2 = st.columns(2)
    # A slider needs min < max: a one-unit axis has nothing to choose.
    y = c1.slider("Unit row (output grid)", 0, out_h - 1, (out_h - 1) // 2, key=f"{key}_unit_y") if out_h > 1 else 0
    x = c2.slider("Unit column (output grid)", 0, out_w - 1, (out_w - 1) // 2, key=f"{key}_unit_x") if out_w > 1 else 0
    if out_h == 1 or out_w == 1:
        st.caption(f"This layer's output grid is {out_h}×{out_w}: " + ("one unit." if out_h == out_w == 1
                                                                       else "one unit along the other axis."))
    box = unit_box(row, (y, x), input_hw)
    height, width = input_hw
    pixels = np.asarray(image.convert("RGB").resize((width, height)))
    fig = go.Figure(go.Image(z=pixels))
    fig.add_shape(type="rect", x0=box["x0"] - 0.5, x1=box["x1"] - 0.5, y0=box["y0"] - 0.5, y1=box["y1"] - 0.5,
                  line=dict(color="cyan", width=3))
    # Neighbouring units sit one jump apart: their centres show the layer's sampling grid.
    jy, jx = row["jump"]
    sy, sx = row["start"]
    fig.add_trace(go.Scatter(x=[sx + j * jx for j in range(out_w) for _ in range(out_h)],
                             y=[sy + i * jy for _ in range(out_w) for i in range(out_h)], mode="markers",
                             marker=dict(size=3, color="rgba(255,255,255,0.6)"), name="unit centres", hoverinfo="skip"))
    cy, cx = box["centre"]
    fig.add_trace(go.Scatter(x=[cx], y=[cy], mode="markers", marker=dict(size=10, color="cyan", symbol="x"),
                             name=f"unit ({y}, {x})", hovertemplate="centre (%{y}, %{x}) px<extra></extra>"))
    fig.update_xaxes(title="x (pixels)", range=[-0.5, width - 0.5])
    fig.update_yaxes(title="y (pixels)", range=[height - 0.5, -0.5])
    fig.update_layout(height=520, showlegend=True,
                      title=f"{row['name']}: unit ({y}, {x}) sees input rows {box['y0']}–{box['y1'] - 1}, "
                            f"columns {box['x0']}–{box['x1'] - 1} (pixels)")
    st.plotly_chart(fig, width="stretch", config=plot_config())
    if box["clipped"]:
        y_lo, y_hi, x_lo, x_hi = box["unclipped"]
        st.caption(f"The box reaches past the image (rows {y_lo}…{y_hi - 1}, columns {x_lo}…{x_hi - 1}): "
                   "the padding fills that part.")
