"""Swap blocks live: the base model and the swapped one side by side, every figure recomputed."""
import pandas as pd
import streamlit as st

from explorer.devices import best_device
from explorer.catalog import load_catalog

from explorer.estimates import combine
from explorer.jobs import job_key
from explorer.spec import ModelSpec, parse_size
from explorer.swaps import PRESETS, expand_swaps, parse_swap
from explorer.units import format_bytes, format_count
from ui.jobs import confirm_estimate, job_estimate
from ui.memory import memory_deltas
from ui.components import before_after, change_text, changed_place, changed_places_text, depth_slider
from ui.common import (arch_from_link, cached_bench, cached_fold, cached_rfs, cached_swap_points,
                       cached_swapped_modules, cost_of, drop_unused_link_params, guard, page_setup, start_from_link)

page_setup("Swap blocks", ":material/swap_horiz:")
st.title("Swap blocks")
st.caption("Replace or add blocks in a real model and watch every figure change, next to the original (costs, latency, "
           "receptive field, Grad-CAM, channel connectivity, deformable offsets). "
           "The swapped model is a spec (base + swaps), so the URL rebuilds it.")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
params = st.query_params
drop_unused_link_params(("arch", "swaps", "input"))
start_from_link("swap_arch", lambda: {
    "swap_arch": arch_from_link(ids),
    "swap_text": "\n".join(s for s in params.get("swaps", "").split(";") if s) or "attn:se@all",
    "swap_input": params.get("input", "")})

c1, c2, c3 = st.columns([2, 1, 2])
c1.selectbox("Base model", ids, key="swap_arch")
c2.text_input("Input (C,H,W)", key="swap_input", placeholder="native")
preset = c3.selectbox("Paper preset", ["—"] + list(PRESETS), key="swap_preset",
                      format_func=lambda k: "choose a preset…" if k == "—" else f"{k}: {PRESETS[k]['title']}")
if preset != "—" and st.session_state.get("swap_preset_applied") != preset:
    st.session_state.swap_text = "\n".join(PRESETS[preset]["swaps"])
    st.session_state.swap_preset_applied = preset
    st.rerun()

with st.expander("Add a swap", expanded=False):
    from explorer import blocks

    from explorer.transformer_swaps import BLOCKS as TRANSFORMER_BLOCKS

    b1, b2, b3, b4, b5 = st.columns([1.2, 1, 1, 1.6, 0.6])
    actions = {"attn": "add/replace attention", "conv": "replace convs", "act": "replace activations",
               "norm": "replace BatchNorm", "tfm": "transformer setting"}
    action = b1.selectbox("Action", list(actions), key="swap_new_action", format_func=actions.get)
    registry = {"attn": blocks.ATTENTION, "conv": blocks.CONVS, "act": blocks.ACTIVATIONS, "norm": blocks.NORMS,
                "tfm": TRANSFORMER_BLOCKS}[action]
    block = b2.selectbox("Block", sorted(registry), key="swap_new_block",
                         format_func=lambda k: TRANSFORMER_BLOCKS.get(k, k) if action == "tfm" else k)
    # Transformer settings need a value; the others take optional options (e.g. reduction=8).
    example = {"window": "size=8", "shift": "size=0", "patch": "size=32", "score": "kind=additive"}
    options = b3.text_input("Options", value=example.get(block, "") if action == "tfm" else "",
                            key=f"swap_new_options_{action}_{block}", placeholder="name=value,…")
    where = b4.text_input("Where (glob over layer names, or all)", value="all", key="swap_new_where")
    if b5.button("Add", key="swap_add"):
        opts = f"({options.strip()})" if options.strip() else ""
        st.session_state.swap_text = (st.session_state.swap_text.rstrip() + f"\n{action}:{block}{opts}@{where}").strip()
        st.rerun()
    descriptions = blocks.describe()
    if block in descriptions:
        d = descriptions[block]
        st.caption(f"**{d.get('name', block)}** — {d.get('description', '')} "
                   f"[{d.get('paper', 'paper')}]({d.get('url', '')}) · options: {d.get('options', {})}")

st.text_area("Swaps, one per line (ACTION:BLOCK[(options)]@WHERE or preset:NAME)", key="swap_text", height=90)

base = swapped = None
with guard("Reading the swap"):
    size = parse_size(st.session_state.swap_input) if st.session_state.swap_input.strip() else None
    lines = [line.strip() for line in st.session_state.swap_text.splitlines() if line.strip()]
    for line in expand_swaps(lines):
        parse_swap(line)
    base = ModelSpec(st.session_state.swap_arch, input_size=size)
    swapped = base.with_(swaps=lines)
    st.query_params.from_dict(swapped.to_query())

if swapped is None:
    st.stop()

base_cost = swapped_cost = None
with guard("The analysis"):
    with st.spinner("Costing both models…"):
        base_cost = cost_of(base)
        swapped_cost = cost_of(swapped)
if swapped_cost is None:
    st.stop()

measure = st.toggle("Measure latency on every change", value=best_device() == "cuda", key="swap_latency",
                    help=f"Batch 1, fp32, channels-last on {best_device()}; on a CPU this takes a few seconds per model")
latency = {}
if measure:
    with guard("Timing"):
        # both timings' estimate first; a long one (a large model on a CPU) waits for its Run button
        expected = combine([job_estimate("quick_bench", {"spec": spec.to_dict()}) for spec in (base, swapped)],
                           "quick_bench", "models")
        if confirm_estimate(expected, "the timing", "swap_latency_estimate",
                            job_key("quick_bench", {"specs": [base.key(), swapped.key()]})):
            with st.spinner(f"Timing both models on {best_device()}…"):
                for name, spec in (("base", base), ("swapped", swapped)):
                    result = cached_bench(spec.key())
                    latency[name] = result["results"][0]["median_ms"] if result["results"] else None


def last_spatial_rf(report: dict) -> int | None:
    """Theoretical receptive field (pixels, height) of the deepest layer that still has a spatial map."""
    rows = report["rows"]
    local = [r for r in rows if not r["global"] and r["op"] != "container"]
    return local[-1]["rf"][0] if local else None


st.subheader("Side by side")
figures = [
    ("Parameters", "params", format_count),
    ("MACs", "macs", format_count),
    ("Memory access cost", "memory_access_bytes", format_bytes),
    ("Activations (elements)", "activations", format_count),
]
cols = st.columns(len(figures) + (1 if latency else 0))
for col, (label, key, fmt) in zip(cols, figures):
    col.metric(f"{label}, base", fmt(base_cost[key]))
    col.metric(f"{label}, swapped", fmt(swapped_cost[key]), delta=change_text(swapped_cost[key], base_cost[key], fmt),
               delta_color="inverse")
with guard("The receptive field"):
    reports = cached_rfs([base.key(), swapped.key()], "swap_side")  # both traces behind one estimate
    rf_base, rf_swapped = (last_spatial_rf(report) for report in reports) if reports else (None, None)
    if rf_base and rf_swapped:
        px = lambda v: f"{v} px"  # noqa: E731
        st.caption("Theoretical receptive field of the deepest spatial layer: "
                   f"base {px(rf_base)}, swapped {px(rf_swapped)}"
                   + (f" ({rf_swapped - rf_base:+d} px)" if rf_swapped != rf_base else " (unchanged)")
                   + (". Deformable convs keep the theoretical field; their learned offsets change the effective one."
                      if any(s.startswith("conv:dcn") for s in expand_swaps(swapped.swaps)) else "."))
if latency:
    ms = lambda v: f"{v:.2f} ms"  # noqa: E731
    cols[-1].metric("Latency, base (batch 1)", ms(latency["base"]) if latency["base"] else "—")
    cols[-1].metric("Latency, swapped", ms(latency["swapped"]) if latency["swapped"] else "—",
                    delta=change_text(latency["swapped"], latency["base"], ms), delta_color="inverse")

if swapped.swaps:
    st.markdown("**Memory and a training step**")
    memory_deltas(base, swapped)

changed_tops = cached_swapped_modules(swapped.key()) if swapped.swaps else []
changed_rows = [row for row in swapped_cost["layers"]
                if any(row["name"] == n or row["name"].startswith(n + ".") for n in changed_tops)]
base_rows = {r["name"]: r for r in base_cost["layers"]}
swapped_rows = {r["name"]: r for r in swapped_cost["layers"]}
st.markdown(f"**{len(changed_tops)} {'place' if len(changed_tops) == 1 else 'places'} changed**"
            + (": " + changed_places_text(changed_tops, base_rows, swapped_rows) if changed_tops else ""))

st.subheader("Per layer: before → after (changed layers highlighted)")
places = [changed_place(r["name"], base_rows, swapped_rows) for r in swapped_cost["layers"]]
frame = pd.DataFrame(
    {
        "layer": [r["name"] for r in swapped_cost["layers"]],
        "shown as": [place["label"] for place in places],
        "type": [place["type"] for place in places],
        "params": [before_after(place["before"] and place["before"]["params"], r["params"], lambda v: f"{v:,}")
                   for r, place in zip(swapped_cost["layers"], places)],
        "MACs": [before_after(place["before"] and place["before"]["macs"], r["macs"], format_count)
                 for r, place in zip(swapped_cost["layers"], places)],
        "memory access": [before_after(place["before"] and place["before"]["memory_access_bytes"],
                                       r["memory_access_bytes"], format_bytes)
                          for r, place in zip(swapped_cost["layers"], places)],
        "MACs (M)": [r["macs"] / 1e6 for r in swapped_cost["layers"]],
        "depth": [r["depth"] for r in swapped_cost["layers"]],
    }
)
changed_set = {r["name"] for r in changed_rows}
f1, f2 = st.columns(2)  # half the width for the toggle: at [3, 1] its label was cut at 800 px
depth = depth_slider("Down to depth", int(frame["depth"].max()), 3, "swap_depth", container=f1)
only_changed = f2.toggle("Only the changed layers", value=True, key="swap_only_changed")
shown = frame[(frame["depth"] <= depth) & (frame["depth"] > 0)]
if only_changed:
    shown = shown[shown["layer"].isin(changed_set) | shown["layer"].apply(lambda n: any(c.startswith(n + ".") for c in changed_tops))]
shown = shown.drop(columns="depth")
highlight = "background-color: rgba(255, 193, 7, 0.28)"  # amber, translucent: readable on light and dark
st.dataframe(
    shown.style.apply(lambda row: [highlight if row["layer"] in changed_set else "" for _ in row], axis=1)
    .format({"MACs (M)": "{:,.2f}"}),
    # the layer pinned and the figures first, so that an 800-pixel window shows what changed without scrolling
    # sideways; the module name itself ("layer") is in "shown as", with what the swap made of it
    hide_index=True, width="stretch", column_order=["shown as", "params", "MACs", "memory access", "type", "MACs (M)"],
    column_config={
        "shown as": st.column_config.TextColumn("Layer", pinned=True),
        "params": st.column_config.TextColumn("Params", help="Parameters, before → after (one figure: unchanged)"),
        "MACs": st.column_config.TextColumn("MACs", help="Multiply-accumulates, before → after (one figure: unchanged)"),
        "memory access": st.column_config.TextColumn(
            "Mem. access", help="Memory access cost in bytes, before → after (one figure: unchanged); not MACs"),
        "type": st.column_config.TextColumn("Type", help="Before → after"),
        "MACs (M)": st.column_config.NumberColumn("MACs after (M)", help="The swapped model's MACs, in millions: "
                                                  "sort by it"),
    },
)

st.subheader("Inside, beside the original")
with guard("The inside view"):
    from ui.swap_inside import beside_the_original

    beside_the_original(base, swapped)

# --- re-parameterisation -----------------------------------------------------------------------------
if any(line.split(":", 1)[1].startswith(("doconv", "repvgg", "dbb")) for line in expand_swaps(swapped.swaps) if ":" in line):
    st.subheader("Fold (re-parameterisation)")
    st.caption("DO-Conv, RepVGG and DBB train with extra structure and fold into plain convs for inference. "
               "Folding is run on the CPU in fp32 with random weights and non-trivial BatchNorm statistics.")
    with guard("The estimate"):
        st.caption(f"Estimate: {job_estimate('fold', {'spec': swapped.to_dict()}).text()}.")
    if st.button("Fold and compare outputs", key="swap_fold"):
        with guard("Folding"):
            report = cached_fold(swapped.key())
            f1, f2, f3 = st.columns(3)
            f1.metric("Parameters, train-time → folded", f"{format_count(report['train']['params'])} → "
                      f"{format_count(report['folded_cost']['params'])}")
            f2.metric("MACs, train-time → folded", f"{format_count(report['train']['macs'])} → "
                      f"{format_count(report['folded_cost']['macs'])}")
            f3.metric("Max |output difference|", f"{report['max_abs_diff']:.2e}",
                      help=f"Outputs reach {report['output_scale']:.3g} in absolute value")
            same = (report["folded_cost"]["params"] == base_cost["params"]
                    and report["folded_cost"]["macs"] == base_cost["macs"])
            st.caption(f"{report['folded']} blocks folded. " + (
                "The folded model's cost equals the base model's cost: the extra training-time structure is free at "
                "inference." if same else
                f"The folded model costs {format_count(report['folded_cost']['params'])} parameters and "
                f"{format_count(report['folded_cost']['macs'])} MACs against the base model's "
                f"{format_count(base_cost['params'])} and {format_count(base_cost['macs'])}."))

with st.expander("Where blocks can go in the base model"):
    with guard("Listing swap points"):
        points = cached_swap_points(base.key())
        kinds = [k for k, rows in points.items() if rows] or list(points)
        kind = st.radio("Kind", kinds, horizontal=True, key="swap_points_kind")
        rows = points[kind]
        if rows:
            # sizes as "3×3" text, not list chips; column names as a person reads them
            table = pd.DataFrame([{k: "×".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()}
                                  for row in rows])
            st.dataframe(table, hide_index=True, width="stretch", column_config={
                "name": st.column_config.TextColumn("Layer", pinned=True), "stage": "Stage", "type": "Type", "channels": "Channels",
                "in_channels": "Input channels", "out_channels": "Output channels", "kernel": "Kernel (px)",
                "stride": "Stride (px)", "groups": "Groups"})
        else:
            st.caption(f"This model has no {kind.replace('_', ' ')} places.")

if swapped.swaps:
    st.subheader("The graph, changed blocks marked")
    with guard("The graph"):
        from ui.graph import swap_diff_graph

        swap_diff_graph(swapped)
