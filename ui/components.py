"""Page pieces shared by the model, swap and tour pages."""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from explorer.layers import rolled_up, shape_text
from explorer.text import escape_markdown
from explorer.units import format_bytes, format_count


def change_text(new, old, fmt) -> str | None:
    """A metric's delta, "+2.53 M (+9.9%)", from base `old` to `new` (None when there is nothing to compare)."""
    if old in (None, 0) or new is None:
        return None
    return f"{fmt(new - old)} ({(new - old) / old:+.1%})"


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
    """The per-layer rows as a table: the name, the headline figures, what kind of layer it is, then the detail
    (LAYER_COMPACT names what a narrow window shows before "More columns")."""
    return pd.DataFrame(
        {
            "layer": [("\u2003" * (r["depth"] - 1) if indent and r["depth"] > 0 else "") + r["name"] for r in rows],
            "params": [r["params"] for r in rows],
            "MACs (M)": [r["macs"] / 1e6 for r in rows],
            "share of MACs (%)": [100 * r["share_macs"] for r in rows],
            "memory access (MB)": [r["memory_access_bytes"] / 1e6 for r in rows],
            "type": [r["type"] for r in rows],
            "output shape": [shape_text(r["output_shape"]) for r in rows],
            "memory access (M elements)": [r["memory_access_elements"] / 1e6 for r in rows],
            "share of memory access (%)": [100 * r["share_memory_access"] for r in rows],
            "output (k elements)": [r["output_elements"] / 1e3 for r in rows],
        }
    )


# Shown names, short and each with its unit (the help says the rest), so that the name (pinned: it stays in view
# when the table scrolls sideways) and the headline figures fit an 800-pixel-wide window; the frame keeps its
# keys (tests, CSV and the presenter's tables read them).
LAYER_COLUMNS = {
    "layer": st.column_config.TextColumn("Layer", pinned=True),
    "params": st.column_config.NumberColumn("Params", format="%,d", help="Parameters (weights and biases), a count"),
    "MACs (M)": st.column_config.NumberColumn("MACs (M)", format="%,.2f", help="Multiply-accumulates, in millions"),
    "share of MACs (%)": st.column_config.ProgressColumn("MACs share", format="%.1f%%", min_value=0, max_value=100,
                                                         width=100, help="This row's share of the model's MACs"),
    "memory access (MB)": st.column_config.NumberColumn(
        "Mem. access (MB)", format="%,.2f", help="Memory access cost: bytes read and written by the row's ops (not MACs)"),
    "type": st.column_config.TextColumn("Type"),
    "output shape": st.column_config.TextColumn("Output shape"),
    "memory access (M elements)": st.column_config.NumberColumn("Mem. access (M elements)", format="%,.3f"),
    "share of memory access (%)": st.column_config.NumberColumn("Mem. access share (%)", format="%.1f"),
    "output (k elements)": st.column_config.NumberColumn("Output (k elements)", format="%,.1f"),
}
# What an 800-pixel-wide window shows until "More columns": the rest are detail.
LAYER_COMPACT = ["layer", "params", "MACs (M)", "share of MACs (%)", "memory access (MB)", "type", "output shape"]


def more_columns(keys, compact: list[str], columns: dict, key: str, container=st) -> list[str]:
    """The column order of a table too wide for a narrow window: those of its column `keys` that `compact` names
    (the identifying column and the headline figures), until the person turns on "More columns", which adds
    every other key after them, in the order of `keys`. A column that `columns` maps to None stays hidden."""
    keys = list(keys)
    shown = [c for c in compact if c in keys]
    rest = [c for c in keys if c not in shown and columns.get(c, c) is not None]
    if not rest:
        return shown
    names = ", ".join(escape_markdown(_column_label(columns.get(c), c)) for c in rest)
    if container.toggle("More columns", key=key, help=f"Adds {names}"):
        return shown + rest
    return shown


def _column_label(config, key: str) -> str:
    if isinstance(config, str):
        return config
    return (config or {}).get("label") or key


def structural_depth(layers: list[dict], largest_share: float = 0.5) -> int:
    """The shallowest roll-up depth at which no single row holds more than `largest_share` of the MACs: the
    depth whose table shows the network's structure (ConvNeXt's depth 1 is one row with 99.7 %)."""
    deepest = max((row["depth"] for row in layers), default=1)
    for depth in range(1, deepest + 1):
        if max((row["share_macs"] for row in rolled_up(layers, depth)), default=0.0) <= largest_share:
            return depth
    return max(deepest, 1)


def rf_frame(rows: list[dict]) -> pd.DataFrame:
    """The receptive-field rows as a table a student reads: pixel sizes as "11 × 11", grids as "56×56"."""
    def pair(values, sep=" × "):
        return sep.join(f"{v:.4g}" for v in values) if values else "—"

    return pd.DataFrame({
        "Layer": [r["name"] for r in rows],
        "Type": [r["type"] for r in rows],
        "Receptive field (px)": ["whole input" if r["global"] else pair(r["rf"]) for r in rows],
        "Jump (px)": [pair(r["jump"]) for r in rows],
        "First unit's centre (px)": [f"({pair(r['start'], ', ')})" for r in rows],
        "Output (H×W)": [pair(r.get("output_hw"), "×") for r in rows],
        "Approximate": ["yes" if r.get("approximate") else "" for r in rows],
    })


def layer_table(layers: list[dict], depth: int, indent: bool = False):
    """Every column, in layer_frame's order: the headline figures first, the name pinned."""
    st.dataframe(layer_frame(rolled_up(layers, depth), indent), hide_index=True, width="stretch", column_config=LAYER_COLUMNS)


MAX_BATCH_LIST_TEXT = 200  # characters of a typed batch list: more is not a list a person typed


def parse_batch_list(text: str) -> list[int]:
    """'1, 8, 64' → [1, 8, 64]: whole numbers from 1 to the largest batch, commas or spaces between, at most
    the sweep's number of sizes; anything else is an ExplorerError that quotes what was wrong."""
    from explorer.errors import ExplorerError
    from explorer.latency import MAX_BATCH_SIZES
    from explorer.spec import MAX_BATCH

    if len(text) > MAX_BATCH_LIST_TEXT:
        raise ExplorerError(f"the batch list is {len(text):,} characters long; type at most {MAX_BATCH_SIZES} "
                            "sizes, e.g. 1, 8, 64")
    parts = [part for part in re.split(r"[\s,;]+", text.strip()) if part]
    if not parts:
        raise ExplorerError("type at least one batch size, e.g. 1, 8, 64")
    wrong = [part for part in parts if not re.fullmatch(r"[0-9]{1,5}", part) or not 1 <= int(part) <= MAX_BATCH]
    if wrong:
        named = ", ".join(wrong[:5])[:80]  # raw: every message that shows it escapes it (ui.common.guard)
        raise ExplorerError(f"batch sizes are whole numbers from 1 to {MAX_BATCH:,}: not {named}")
    sizes = sorted({int(part) for part in parts})
    if len(sizes) > MAX_BATCH_SIZES:
        raise ExplorerError(f"at most {MAX_BATCH_SIZES} batch sizes in one sweep, got {len(sizes)}")
    return sizes


def changed_place(name: str, base_rows: dict[str, dict], swapped_rows: dict[str, dict]) -> dict:
    """How a swap changed the module `name`, in words: an attention block added after a layer is named as
    that block ("SE added after layer1.0.bn3"), not as the Sequential that holds the pair. Returns the label,
    the type before and after, and the base row its figures compare with (None for a module that is new)."""
    after = swapped_rows.get(name)
    parent = name.rsplit(".", 1)[0] if "." in name else None
    if after is None:
        return {"label": name, "before": base_rows.get(name), "type": base_rows.get(name, {}).get("type", "—")}
    if _is_addition(name, base_rows, swapped_rows):
        added = swapped_rows[f"{name}.1"]["type"]
        return {"label": f"{added} added after {name}", "before": base_rows[name], "kind": f"{added} added after",
                "type": f"{base_rows[name]['type']} → {base_rows[name]['type']} + {added}"}
    if parent and _is_addition(parent, base_rows, swapped_rows):
        if name == f"{parent}.0":  # the original layer, now the pair's first half
            return {"label": f"{name} (the original {parent})", "before": base_rows[parent], "type": after["type"]}
        if name.startswith(f"{parent}.1"):
            return {"label": f"{name} (added)", "before": None, "type": f"— → {after['type']}"}
    before = base_rows.get(name)
    if before is None:
        return {"label": f"{name} (added)", "before": None, "type": f"— → {after['type']}"}
    same = before["type"] == after["type"]
    return {"label": name, "before": before, "kind": None if same else "replaced",
            "type": after["type"] if same else f"{before['type']} → {after['type']}"}


def _is_addition(name: str, base_rows: dict[str, dict], swapped_rows: dict[str, dict]) -> bool:
    """A layer the swap wrapped as Sequential(layer, block): attention added after it (explorer.swaps)."""
    before, after = base_rows.get(name), swapped_rows.get(name)
    return (before is not None and after is not None and after["type"] == "Sequential" and before["type"] != "Sequential"
            and f"{name}.0" in swapped_rows and f"{name}.1" in swapped_rows)


def before_after(before: float | None, after: float, fmt) -> str:
    """'512 → 8,976' (or '— → 8,464' for a new module); one figure when it did not change."""
    if before is None:
        return f"— → {fmt(after)}"
    return fmt(after) if before == after else f"{fmt(before)} → {fmt(after)}"


def changed_places_text(names: list[str], base_rows: dict[str, dict], swapped_rows: dict[str, dict],
                        shown: int = 20) -> str:
    """'SE added after `layer1.0.bn3`, `layer1.1.bn3`; replaced: `layer4.0.conv2`' for the places a swap changed."""
    groups: dict[str, list[str]] = {}
    for name in names[:shown]:
        kind = changed_place(name, base_rows, swapped_rows).get("kind") or "changed"
        groups.setdefault(kind, []).append(f"`{name}`")
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return "; ".join(f"{kind}: {', '.join(places)}" if not kind.endswith("after") else f"{kind} {', '.join(places)}"
                     for kind, places in groups.items()) + more


# The comparison rows (explorer.compare.compare_row) as a table, in this order: the model (pinned), the headline
# figures, then the rest; shown names short, each with its unit.
COMPARE_COLUMNS = {
    "label": st.column_config.TextColumn("Model", pinned=True),
    "params_m": st.column_config.NumberColumn("Params (M)", format="%,.2f", help="Parameters, in millions"),
    "gmacs": st.column_config.NumberColumn("GMACs", format="%,.3f", help="Multiply-accumulates, in billions"),
    "memory_access_mb": st.column_config.NumberColumn(
        "Mem. access (MB)", format="%,.1f", help="Memory access cost: bytes read and written by all ops (not MACs)"),
    "published_top1": st.column_config.NumberColumn("Published", format="%.2f",
                                                    help="The published accuracy, in the metric of the next column"),
    "published_metric": st.column_config.TextColumn("Metric"),
    "activations_m": st.column_config.NumberColumn("Activations (M)", format="%,.2f",
                                                   help="Elements written by conv / linear / attention ops, millions"),
    "intensity_flops_per_byte": st.column_config.NumberColumn("FLOPs/byte", format="%,.1f",
                                                              help="Arithmetic intensity: 2 × MACs per byte of memory access"),
    "input": st.column_config.TextColumn("Input (C×H×W)"),
    "published_source": st.column_config.TextColumn("Published source"),
}


def compare_table(rows: list[dict]):
    """The comparison rows with the columns COMPARE_COLUMNS names, in its order (nested fields left out)."""
    frame = pd.DataFrame(rows)
    st.dataframe(frame[[c for c in COMPARE_COLUMNS if c in frame]], hide_index=True, width="stretch",
                 column_config=COMPARE_COLUMNS)
