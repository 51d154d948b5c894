"""The Swap page's inside views: the swapped model's figures next to the original's."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from explorer.spec import ModelSpec
from explorer.text import escape_markdown
from explorer.views.registry import swap_views
from ui.common import cached_rfs, plot_config

NOTHING = "nothing"


def beside_the_original(base: ModelSpec, swapped: ModelSpec):
    """The registry's views that have a Swap page label (explorer.views.registry), one at a time."""
    ids = {v.swap_label: v.id for v in swap_views()}
    view = st.radio("Show", [NOTHING, *ids], horizontal=True, key="swap_inside_view",
                    help="Computed for the base and the swapped model; nothing is computed until you pick a view")
    if view != NOTHING:
        SWAP_RENDERERS[ids[view]](base, swapped)


def _connectivity(base: ModelSpec, swapped: ModelSpec):
    from ui.connectivity import connectivity_view

    st.caption("The swapped model's blocks of grouped convs. A plain conv it replaced is one dense factor: every "
               "output reads every input once.")
    connectivity_view(swapped, key="swap_connectivity")


def _offsets(base: ModelSpec, swapped: ModelSpec):
    from ui.inside import deformable_view

    deformable_view(swapped, key="swap_dcn")


def _swin_windows(base: ModelSpec, swapped: ModelSpec):
    """The same stage and block of both models, one above the other (window and shift swaps change them)."""
    from ui.inside import swin_mask_view

    if "swin" not in base.arch:
        st.info("Swin windows belong to Swin models (swin_t, swin_s, swin_b, timm's swin_*): pick one as the base, "
                "then swap e.g. `tfm:window(size=8)@all` with input 3,256,256.")
        return
    c1, c2 = st.columns(2)
    stage = c1.selectbox("Stage", [1, 2, 3, 4], key="swap_swin_stage")
    block = c2.number_input("Block in the stage (odd blocks are shifted)", 0, 17, 1, key="swap_swin_block")
    for spec, label in ((base, "base"), (swapped, "swapped")):
        st.markdown(f"**{label}**")
        swin_mask_view(spec, int(stage), int(block), key=f"swap_swin_{label}")


def _receptive_fields(base: ModelSpec, swapped: ModelSpec):
    reports = cached_rfs([base.key(), swapped.key()], "swap_rf")  # both traces behind one estimate
    if reports is None:  # long: they wait for the Run click
        return
    fig = go.Figure()
    for report, label, dash in zip(reports, ("base", "swapped"), ("dash", "solid")):
        rows = [r for r in report["rows"] if r["op"] != "container" and not r["global"]]
        fig.add_trace(go.Scatter(x=list(range(len(rows))), y=[r["rf"][0] for r in rows], mode="lines", name=label,
                                 line=dict(dash=dash), text=[r["name"] for r in rows],
                                 hovertemplate=f"{label}: %{{text}}<br>%{{y}} px<extra></extra>"))
    fig.update_layout(xaxis_title="layer (execution order)", yaxis_title="receptive field (pixels, height)",
                      height=380, title="Theoretical receptive field across depth, base and swapped")
    st.plotly_chart(fig, width="stretch", config=plot_config())


def _cams(base: ModelSpec, swapped: ModelSpec):
    from explorer.views.cam import CAM_METHODS
    from ui.inside import (choose_image, choose_weights, class_names, labels_meaningful, overlay_figure,
                           random_weights_notice, view_job)

    loaded = choose_image("swap_cam")
    weights = choose_weights("swap_cam", base)  # a base checkpoint or pretrained weights load into both models
    method = st.selectbox("Method", list(CAM_METHODS), key="swap_cam_method",
                          help="scorecam runs one forward per channel of the target layer: minutes on a CPU, twice")
    if loaded is None:
        return
    image, notes = loaded
    for note in notes:
        st.caption(f"Image: {escape_markdown(note)}.")
    if weights["kind"] == "random":
        random_weights_notice("cam")
    # Both models' maps first: when their weights cannot be used, one message and no map at all.
    base_result = view_job("cam", base, weights, image, f"{method} on the base model", "base", method=method)
    if base_result is None:
        return
    target = base_result["class_index"]  # the base model's top class, explained in both models so the maps compare
    swapped_result = view_job("cam", swapped, weights, image, f"{method} on the swapped model", "swapped",
                              method=method, class_index=target)
    if swapped_result is None:
        return
    names = class_names(base)
    columns = st.columns(2)
    for column, result, label in zip(columns, (base_result, swapped_result), ("base", "swapped")):
        with column:
            trained = labels_meaningful(weights, result.get("weights_report"))
            known = trained and names and len(names) == result["classes"]
            title = (escape_markdown(names[result["class_index"]]) if known else
                     f"class {result['class_index']}" + ("" if trained else " (random weights: meaningless)"))
            st.plotly_chart(overlay_figure(image, result["heat"], f"{label}: {method} for {title}<br>at {result['layer']}",
                                           height=420), width="stretch", config=plot_config())
            st.caption(f"{method} for {title} at {result['layer']}")
            if trained and result.get("top5"):
                top = result["top5"][0]
                st.caption(f"Top class: {escape_markdown(names[top['class']]) if known else top['class']} "
                           f"({top['probability']:.1%})")
    st.caption("Both maps explain the base model's top class. With pretrained weights the swapped model loads every "
               "layer the swap kept; the blocks it added or replaced start from their initialisation, as they would "
               "before fine-tuning.")


# the Swap page's renderer of each registry view with a Swap label, keyed by its id: (base, swapped) → None
SWAP_RENDERERS = {"cam": _cams, "offsets": _offsets, "rf": _receptive_fields, "swin": _swin_windows,
                  "connectivity": _connectivity}
