"""The Model page's Memory section: what inference and one training step hold at their peaks, the live
activations along the forward, training-step MACs, activation checkpointing as a what-if, the largest batch
that fits a memory size, and (as a job, real tensors) a timed training step.

The meta-device traces are cheap and run in the server, cached like the cost trace (ui.common.cached_cost);
the timed step runs in the job service.
"""
from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from explorer.memory import CATEGORIES, GPU_PRESETS_GB, MEMORY_NOTES, OPTIMIZERS, largest_batch, memory_report, parse_memory_size
from explorer.spec import MAX_BATCH, ModelSpec
from explorer.text import escape_markdown
from explorer.units import format_bytes, format_count
from ui.common import guard, plot_config
from ui.components import change_text
from ui.jobs import job_estimate, run_job

# Legend names short enough for a half-width chart at 800 px (plotly does not wrap a legend); the hover says more.
CATEGORY_LABELS = {"weights": "Weights", "gradients": "Gradients", "optimizer": "Optimizer state",
                   "activations": "Activations", "temporaries": "Temporaries"}
CATEGORY_DETAILS = {"optimizer": "Optimizer state (and fp32 master weights)",
                    "temporaries": "Temporaries (backward, optimizer step)"}
OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "SGD with momentum", "adam": "Adam", "adamw": "AdamW"}
TYPED = "a size I type…"


@st.cache_data(max_entries=64, show_spinner=False)
def cached_memory(spec_key: str, dtype: str, train: bool, optimizer: str) -> dict:
    return memory_report(ModelSpec.from_dict(json.loads(spec_key)), dtype=dtype, train=train, optimizer=optimizer)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_largest_batch(spec_key: str, budget_bytes: int, dtype: str, train: bool, optimizer: str) -> dict:
    return largest_batch(ModelSpec.from_dict(json.loads(spec_key)), budget_bytes, dtype=dtype, train=train,
                         optimizer=optimizer)


def memory_bars(inference: dict, training: dict) -> go.Figure:
    """Stacked bars of what is live at each peak, inference beside training, in GB."""
    names = ["Inference", f"Training ({OPTIMIZER_LABELS[training['optimizer']]})"]
    fig = go.Figure()
    for category in CATEGORIES:
        values = [inference["peak_breakdown_bytes"][category] / 1e9, training["peak_breakdown_bytes"][category] / 1e9]
        fig.add_bar(name=CATEGORY_LABELS[category], x=names, y=values,
                    hovertemplate="%{x}<br>" + CATEGORY_DETAILS.get(category, CATEGORY_LABELS[category])
                    + ": %{y:.3f} GB<extra></extra>")
    fig.update_layout(barmode="stack", title="What is live at the peak", yaxis_title="memory at the peak (GB, 10⁹ bytes)",
                      height=380, margin=dict(t=50, b=10), legend=dict(orientation="h", y=-0.15))
    return fig


def depth_profile_plot(inference: dict, training: dict) -> go.Figure:
    """Live activations after each layer of the forward pass, in MB: inference frees as it goes, training keeps
    what the backward will need."""
    fig = go.Figure()
    for label, report in (("inference (no grad)", inference), ("training forward", training)):
        profile = report["depth_profile"]
        fig.add_scatter(x=list(range(1, len(profile) + 1)), y=[row["live_activation_bytes"] / 1e6 for row in profile],
                        mode="lines", name=label, customdata=[row["name"] for row in profile],
                        hovertemplate="%{customdata}<br>%{y:.1f} MB live<extra>" + label + "</extra>")
    fig.update_layout(title="Live activations per layer", xaxis_title="layers in the order they run",
                      yaxis_title="live activations (MB, 10⁶ bytes)", height=380, margin=dict(t=50, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def _memory_controls(spec: ModelSpec) -> tuple[int, str, str, str]:
    # widths that keep each control's value and label whole in a 470-pixel main column (an 800-pixel window)
    c1, c2, c3, c4 = st.columns([1.2, 1.5, 2.2, 2])
    batch = int(c1.number_input("Batch", min_value=1, max_value=MAX_BATCH, value=spec.batch, step=1, key="model_memory_batch"))
    dtype = c2.selectbox("dtype", ["fp32", "bf16", "fp16"], key="model_memory_dtype",
                         help="bf16/fp16: half-precision weights, gradients and activations, with fp32 master weights "
                              "and optimizer state (mixed-precision training)")
    optimizer = c3.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index("adam"), format_func=OPTIMIZER_LABELS.get,
                             key="model_memory_optimizer")
    presets = [f"{size} GB" for size in GPU_PRESETS_GB] + [TYPED]
    choice = c4.selectbox("Fits in", presets, index=1, key="model_memory_fits",
                          help="GPU memory sizes as sold (16, 24, 40, 80, 141 GB), or your own")
    size_text = choice
    if choice == TYPED:
        size_text = c4.text_input("Memory size", value="12GB", max_chars=20, key="model_memory_fits_typed",
                                  help="e.g. 12GB, 48 GiB, 512MB (GB = 10⁹ bytes, GiB = 2³⁰)")
    return batch, dtype, optimizer, size_text


def memory_section(spec: ModelSpec):
    """The Model page's Memory section for `spec` (its batch is the default of this section's own)."""
    st.subheader("Memory")
    st.caption("Views and in-place ops share their storage's bytes, and each storage is freed after its last use. "
               + MEMORY_NOTES)
    batch, dtype, optimizer, size_text = _memory_controls(spec)
    with guard("The memory trace"):
        sized = spec.with_(batch=batch)
        with st.spinner("Tracing inference and one training step on the meta device…"):
            inference = cached_memory(sized.key(), dtype, False, optimizer)
            training = cached_memory(sized.key(), dtype, True, optimizer)
        _figures(inference, training)
        _checkpointing(training)
        _fits(sized, size_text, dtype, optimizer)
        _train_bench(sized, optimizer)


def _figures(inference: dict, training: dict):
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Inference peak", format_bytes(inference["peak_bytes"]),
              help=f"weights {format_bytes(inference['weights_bytes'])} + activations at their peak")
    c2.metric("Training peak", format_bytes(training["peak_bytes"]),
              help=f"reached in the {training['peak_phase']} pass, at {training['peak_module']}")
    c3.metric("Saved for backward", format_bytes(training["saved_activations_bytes"]),
              help="what autograd keeps from the forward: unique storages, parameters excluded")
    ratio = training["backward_to_forward"]
    c4.metric("Training-step MACs", format_count(training["training_step_macs"], "MAC"),
              help=f"forward {format_count(training['forward_macs'], 'MAC')} + backward "
                   f"{format_count(training['backward_macs'], 'MAC')}" + (f" ({ratio:.2f}× the forward)" if ratio else ""))
    left, right = st.columns(2)
    left.plotly_chart(memory_bars(inference, training), width="stretch", config=plot_config())
    right.plotly_chart(depth_profile_plot(inference, training), width="stretch", config=plot_config())
    rows = [{"figure": label, "bytes": format_bytes(value)} for label, value in (
        ("Weights (parameters and buffers)", training["weights_bytes"]),
        ("Gradients", training["gradients_bytes"]),
        (f"{OPTIMIZER_LABELS[training['optimizer']]} state", training["optimizer_bytes"]),
        ("fp32 master weights", training["master_weights_bytes"]),
        ("Activations saved for backward", training["saved_activations_bytes"]),
        ("Optimizer step's temporaries", training["optimizer_step_temporaries_bytes"]),
    ) if value is not None]
    rows.append({"figure": "Backward MACs (counted op by op)", "bytes": format_count(training["backward_macs"], "MAC")})
    with st.expander("Training step, item by item"):
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption("Optimizer state as torch.optim allocates it: SGD none, momentum one fp32 buffer (4 B/param), "
                   "Adam/AdamW two (8 B/param). The first layer computes no input gradient, so the backward is less "
                   "than twice the forward there; attention's backward recomputes its scores.")


def _checkpointing(training: dict):
    ckpt = training.get("checkpointing") or {}
    if not ckpt.get("stages"):
        return
    with st.expander("What if: activation checkpointing per stage"):
        rows = [{"stage": row["stage"], "saved now": format_bytes(row["saved_activations_bytes"]),
                 "kept if checkpointed (its input)": format_bytes(row["input_bytes"]),
                 "saved for backward after": format_bytes(row["saved_if_checkpointed_bytes"]),
                 "peak after (estimate)": format_bytes(row["peak_if_checkpointed_bytes"]),
                 "extra forward MACs": format_count(row["recompute_macs"], "MAC")} for row in ckpt["stages"]]
        every = ckpt["all_stages"]
        rows.append({"stage": "every stage", "saved now": format_bytes(training["saved_activations_bytes"]),
                     "kept if checkpointed (its input)": "—",
                     "saved for backward after": format_bytes(every["saved_if_checkpointed_bytes"]),
                     "peak after (estimate)": format_bytes(every["peak_if_checkpointed_bytes"]),
                     "extra forward MACs": format_count(every["recompute_macs"], "MAC")})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption("A checkpointed stage keeps only its input and runs its forward again during the backward, so its "
                   "activations exist one stage at a time. Estimates from this trace, not a traced checkpointed run.")


def _fits(spec: ModelSpec, size_text: str, dtype: str, optimizer: str):
    # a dozen meta traces for a large model: asked for, not run on every visit
    if not st.toggle(f"Find the largest batch that fits in {size_text}", key="model_memory_fits_on",
                     help="A few meta traces: a line through two batches, then traces at the answer and one above"):
        return
    budget = parse_memory_size(size_text)
    with st.spinner(f"Finding the largest batch for {escape_markdown(size_text)} (a few meta traces)…"):
        answers = {mode: cached_largest_batch(spec.with_(batch=1).key(), budget, dtype, mode == "training", optimizer)
                   for mode in ("inference", "training")}
    lines = []
    for mode, answer in answers.items():
        best = answer["largest_batch"]
        if best == 0:
            text = f"**{mode}**: not even batch 1 fits"
        else:
            text = f"**{mode}**: batch **{best}**" + (f" (the app's limit, {MAX_BATCH})" if answer["capped"] else "")
            text += f", peak {format_bytes(answer['peak_at_largest_bytes'])}"
        breaks = answer.get("breaks_at")
        if breaks and breaks.get("module"):
            text += (f"; batch {breaks['batch']} goes over in `{escape_markdown(breaks['module'])}` "
                     f"({breaks['phase']} pass)")
        lines.append(text)
    st.markdown(f"**Fits in {escape_markdown(size_text)}** ({format_bytes(budget)}, {dtype}"
                f"{', ' + OPTIMIZER_LABELS[optimizer] if optimizer else ''}):\n\n- " + "\n- ".join(lines))


def _train_bench(spec: ModelSpec, optimizer: str):
    with st.expander("Time a real training step (forward / backward / optimizer)"):
        st.caption("Runs on the compute worker's device with real tensors (fp32), after two warm-up steps; sessions "
                   "take turns. On a GPU it also measures the peak (torch.cuda.max_memory_allocated).")
        payload = {"spec": spec.to_dict(), "settings": {"optimizer": optimizer, "min_runs": 5, "max_seconds": 10.0}}
        expected = None
        with guard("The estimate"):
            expected = job_estimate("train_bench", payload)  # shown before the button that starts it
            (st.warning if expected.long else st.caption)(f"Estimate: {expected.text()}.")
        if not st.button("Time a training step", key="model_memory_train_bench"):
            return
        with guard("The training-step benchmark"):
            result = run_job("train_bench", payload, f"Timing a training step of {spec.arch}", expected=expected,
                             asked=True)
            if result.get("error"):
                st.error(escape_markdown(result["error"]))
                return
            rows = [{"phase": phase, "median (ms)": s["median_ms"], "p10 (ms)": s["p10_ms"], "p90 (ms)": s["p90_ms"]}
                    for phase, s in {**result["phases"], "whole step": result["step"]}.items() if s]
            st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
                c: st.column_config.NumberColumn(format="%.2f") for c in ("median (ms)", "p10 (ms)", "p90 (ms)")})
            measured = result.get("measured_peak_bytes")
            st.caption(f"{result['runs']} timed steps on {escape_markdown(result['device_name'])}, batch {result['batch']}: "
                       f"{result['samples_per_s']:.1f} samples/s, {result['achieved_tflops']:.3f} TFLOP/s achieved"
                       + (f"; peak measured {format_bytes(measured)} against {format_bytes(result['predicted_peak_bytes'])} "
                          "predicted" if measured else ""))


def memory_deltas(base: ModelSpec, swapped: ModelSpec, dtype: str = "fp32", optimizer: str = "adam"):
    """The Swap page's memory row: what the swap does to inference and training memory and to a training
    step's MACs (an SE block's extra saved activations, a DCN's offsets), base against swapped."""
    with guard("The memory trace"):
        with st.spinner("Tracing memory and a training step for both models on the meta device…"):
            pairs = [(cached_memory(spec.key(), dtype, False, optimizer), cached_memory(spec.key(), dtype, True, optimizer))
                     for spec in (base, swapped)]
        (base_inf, base_train), (new_inf, new_train) = pairs
        figures = [
            ("Inference peak", base_inf["peak_bytes"], new_inf["peak_bytes"], format_bytes),
            ("Saved for backward", base_train["saved_activations_bytes"], new_train["saved_activations_bytes"], format_bytes),
            (f"Training peak ({OPTIMIZER_LABELS[optimizer]})", base_train["peak_bytes"], new_train["peak_bytes"], format_bytes),
            ("Training-step MACs", base_train["training_step_macs"], new_train["training_step_macs"],
             lambda v: format_count(v, "MAC")),
        ]
        cols = st.columns(len(figures))
        for col, (label, old, new, fmt) in zip(cols, figures):
            col.metric(f"{label}, base", fmt(old))
            col.metric(f"{label}, swapped", fmt(new), delta=change_text(new, old, fmt), delta_color="inverse")
        st.caption(f"Batch {base.batch}, {dtype}; training = forward, backward and one {OPTIMIZER_LABELS[optimizer]} "
                   "step, traced on the meta device (the Model page's Memory section has the breakdown).")
