"""Fusion weights of detector necks (ASFF's per-pixel level weights, M2Det's SFAM attention) on an image."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explorer.spec import ModelSpec
from ui.common import plot_config
from ui.inside import image_and_weights, view_job


def fusion_view(spec: ModelSpec, key: str = "fusion"):
    from explorer.models import input_size_of

    loaded = image_and_weights(key)
    if loaded is None:
        return
    image, _, weights = loaded
    result = view_job("fusion", spec, weights, image, f"Fusion weights of {spec.arch}")
    if result is None:
        return
    report = result["report"]
    if report is None:
        st.info("Fusion weights belong to YOLOv3 + ASFF (asff) and M2Det (m2det320); pick one of them.")
        return
    size = input_size_of(spec)
    if report["kind"] == "asff":
        _asff(report, image, size)
    else:
        _sfam(report)


def _asff(report: dict, image, size):
    levels = report["input_levels"]
    output = st.radio("Output level", list(report["maps"]), horizontal=True, key="fusion_asff_level",
                      format_func=lambda name: name.replace("stride", "stride "))
    maps = report["maps"][output]
    st.image(image.resize((size[2], size[1])), caption="Input (resized to the model's input)", width=320)
    fig = make_subplots(rows=1, cols=3, subplot_titles=[f"weight of the {lv} level" for lv in levels])
    for i in range(3):
        fig.add_trace(go.Heatmap(z=maps[i], zmin=0, zmax=1, colorscale="Viridis", showscale=i == 2,
                                 colorbar=dict(title="weight (0–1)")), row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i + 1}", row=1, col=i + 1,
                         title="row (grid cells)" if i == 0 else None)
        fig.update_xaxes(title="column (grid cells)", row=1, col=i + 1)
    fig.update_layout(height=380, title=f"ASFF at the {output.replace('stride', 'stride ')} output: per-pixel "
                                        "softmax weights over the three input levels (they sum to 1 at each cell)")
    st.plotly_chart(fig, width="stretch", config=plot_config())
    means = report["mean_weights"][output]
    st.caption("Mean weight over the grid: " + ", ".join(f"{lv} {m:.2f}" for lv, m in zip(levels, means))
               + ". With random weights the maps hover near 1/3; a trained ASFF picks one level per region.")


def _sfam(report: dict):
    table = report["per_tum"]
    fig = go.Figure(go.Heatmap(z=table, x=[f"TUM {i + 1}" for i in range(table.shape[1])],
                               y=[f"scale {i + 1}" for i in range(table.shape[0])], colorscale="Viridis",
                               colorbar=dict(title="mean SE weight (0–1)")))
    fig.update_yaxes(autorange="reversed", title="scale (1 = largest grid)")
    fig.update_xaxes(title="TUM (1 = shallowest)")
    fig.update_layout(height=420, title="M2Det SFAM: mean channel-attention weight of each TUM's 256 channels, per scale")
    st.plotly_chart(fig, width="stretch", config=plot_config())
    st.caption(f"Each scale's SE block weighs {report['channels'][0]} concatenated channels (8 TUMs × 256). "
               "With random weights the table is flat near 0.5; a trained SFAM shows which depth each scale uses.")
