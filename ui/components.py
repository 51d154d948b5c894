"""Page pieces shared by the model, swap and tour pages."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.layers import rolled_up, shape_text
from explorer.units import format_bytes, format_count


def depth_slider(label: str, deepest: int, default: int, key: str, container=st, **kwargs) -> int:
    """A depth slider from 1 to `deepest`; a flat model (deepest 1) needs no slider at all."""
    if deepest <= 1:
        return 1
    return container.slider(label, 1, deepest, min(default, deepest), key=key, **kwargs)


def totals(result: dict):
    """The six headline figures of a cost report, each with its unit."""
    top, bottom = st.columns(3), st.columns(3)
    top[0].metric("Parameters", format_count(result["params"]),
                  help=f"{result['params']:,} ({result['trainable_params']:,} trainable)")
    top[1].metric("MACs", format_count(result["macs"]), help=f"{result['macs']:,} multiply-accumulates")
    top[2].metric("FLOPs (2 × MACs)", format_count(result["flops"]), help=f"{result['flops']:,} floating-point operations")
    bottom[0].metric("Memory access cost", format_bytes(result["memory_access_bytes"]),
                     help=f"{result['memory_access_elements']:,} elements read + written by all ops, views excluded. Not MACs.")
    bottom[1].metric("Activations (elements)", format_count(result["activations"]),
                     help="Elements written by conv / linear / attention ops")
    bottom[2].metric("Elementwise ops", format_count(result["elementwise_ops"]),
                     help="Activation functions, normalisation, pooling, additions: one op per element, not counted in MACs")


def layer_frame(rows: list[dict], indent: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "layer": [("\u2003" * (r["depth"] - 1) if indent and r["depth"] > 0 else "") + r["name"] for r in rows],
            "type": [r["type"] for r in rows],
            "output shape": [shape_text(r["output_shape"]) for r in rows],
            "params": [r["params"] for r in rows],
            "MACs (M)": [r["macs"] / 1e6 for r in rows],
            "share of MACs (%)": [100 * r["share_macs"] for r in rows],
            "memory access (MB)": [r["memory_access_bytes"] / 1e6 for r in rows],
            "memory access (M elements)": [r["memory_access_elements"] / 1e6 for r in rows],
            "share of memory access (%)": [100 * r["share_memory_access"] for r in rows],
            "output (k elements)": [r["output_elements"] / 1e3 for r in rows],
        }
    )


LAYER_COLUMNS = {
    "params": st.column_config.NumberColumn(format="%d"),
    "MACs (M)": st.column_config.NumberColumn(format="%.2f"),
    "share of MACs (%)": st.column_config.ProgressColumn(format="%.1f%%", min_value=0, max_value=100),
    "memory access (MB)": st.column_config.NumberColumn(format="%.2f"),
    "memory access (M elements)": st.column_config.NumberColumn(format="%.3f"),
    "share of memory access (%)": st.column_config.NumberColumn(format="%.1f"),
    "output (k elements)": st.column_config.NumberColumn(format="%.1f"),
}


def layer_table(layers: list[dict], depth: int, indent: bool = False):
    st.dataframe(layer_frame(rolled_up(layers, depth), indent), hide_index=True, width="stretch", column_config=LAYER_COLUMNS)
