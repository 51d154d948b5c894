"""Channel connectivity of a block: its sparse factors (group convs, permutations) and their dense product."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from explorer.spec import ModelSpec
from ui.common import plot_config
from ui.jobs import estimated_job, run_job

SHOWN = 128  # cells drawn per side at most (wider blocks are drawn at several channels a cell)
MAX_FACTORS = 6


def connectivity_job(spec_key: str, module: str | None, key: str | None = None) -> dict | None:
    """The job's report with its matrices shrunk to what is drawn, so a 1600-channel block stays small. With a
    widget `key`: the job's estimate first, and None while a long one waits for its Run click; without, the job
    at once (a caller that needs the blocks before the view draws them: ui.inside's link check)."""
    spec = json.loads(spec_key)
    payload = {"spec": spec, "module": module}
    label = f"Channel paths of {spec['arch']}" + (f" at {module}" if module else "")
    if key is None:
        found = run_job("connectivity", payload, label)
    else:
        found = estimated_job("connectivity", payload, label,
                              "the channel-path trace" if module else "the search for blocks",
                              f"{key}_{'paths' if module else 'blocks'}_estimate")
    if found is None:
        return None
    result = dict(found)
    report = result.get("report")
    if report:
        report = result["report"] = {**report, "factors": [dict(f) for f in report["factors"]]}  # the cached copy stays whole
    if report:
        report["paths"] = _shrink(report["paths"])
        for factor in report["factors"]:
            factor["matrix"] = _shrink(factor["matrix"])
            if "so_far" in factor:
                factor["so_far"] = _shrink(factor["so_far"])
    return result


def _placed(slot):
    """Inside `slot` (an st.empty) when given, else in the page's flow."""
    return slot.container() if slot is not None else contextlib.nullcontext()


def _shrink(matrix) -> dict:
    """At most SHOWN cells per side: each cell holds the largest value of its step×step channels, so every
    group stays visible (a cell is connected when any of its channels is)."""
    step = -(-max(matrix.shape) // SHOWN)
    if step == 1:
        return {"z": matrix, "step": 1}
    rows, cols = -(-matrix.shape[0] // step) * step, -(-matrix.shape[1] // step) * step
    padded = np.zeros((rows, cols), dtype=matrix.dtype)
    padded[:matrix.shape[0], :matrix.shape[1]] = matrix
    return {"z": padded.reshape(rows // step, step, cols // step, step).max(axis=(1, 3)), "step": step}


def _heatmap(drawn: dict, blank_zeros: bool = False, **kwargs) -> go.Heatmap:
    """A heatmap whose axes count channels, whatever the cell size; with `blank_zeros`, cells without a path
    stay empty, so one path does not look like none on a scale that reaches many."""
    z, step = drawn["z"], drawn["step"]
    if blank_zeros:
        z = np.where(z == 0, np.nan, z.astype(np.float64))
    return go.Heatmap(z=z, x=np.arange(z.shape[1]) * step, y=np.arange(z.shape[0]) * step, **kwargs)


def connectivity_view(spec: ModelSpec, key: str = "connectivity", block: str | None = None, layout=None,
                      compact: bool = False):
    """Pick a block (``block`` first if given, else the first most nested one) and draw its channel paths.
    `layout`, when given, restyles each chart before it is drawn (a tour's presenter mode: ui.presenter.for_screen).
    `compact`: the form that fits a presenter's figure column (see _compact_view), on ``block`` without a menu."""
    layout = layout or (lambda fig: fig)
    # compact: the jobs' estimates and progress go once the result is in, so the figure keeps the column's height
    slot = st.empty() if compact else None
    with _placed(slot), st.spinner("Finding the blocks of grouped convs…"):
        found = connectivity_job(spec.key(), None, key)
    if found is None:  # a long search waits for its Run click
        return
    candidates = found["candidates"]
    if not candidates:
        st.info("This model has no block built from grouped convs and permutations. Try igcv1, igcv3 or a "
                "ShuffleNet V1, or add the swap `conv:igcv2@layer1.0.conv1` (IGCV2) or `conv:igc@layer1.0.conv1` "
                "(IGCV1) to a ResNet.")
        return
    labels = {c["name"]: f"{c['name']} ({c['type']}, {c['convs']} convs, {c['in_channels']}→{c['out_channels']} "
                         "channels)" for c in candidates}
    names = list(labels)
    first = names.index(block) if block in names else max(range(len(names)), key=lambda i: (names[i].count("."), -i))
    if compact:  # the step names its block
        chosen = names[first]
    else:
        chosen = st.selectbox("Block", names, index=first, format_func=labels.get, key=f"{key}_block")
    with _placed(slot), st.spinner("Tracing the channel paths…"):
        found = connectivity_job(spec.key(), chosen, key)
    if found is None:
        return
    report = found["report"]
    if compact:
        slot.empty()
        _compact_view(report, layout)
        return
    uniform = report["min_paths"] == report["max_paths"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Paths per (output, input) channel pair",
              str(report["min_paths"]) if uniform else f"{report['min_paths']}–{report['max_paths']}")
    c2.metric("Input channels each output reaches", f"{report['reached_fraction']:.0%}")
    c3.metric("Factors (convs and permutations)", str(len(report["factors"])))
    if report["exactly_one_path"]:
        st.success("Every output channel reaches every input channel by exactly one path: the complementary "
                   "condition holds, so the sparse factors multiply to a dense kernel.")
    elif report["dense"]:
        count = (f"{report['min_paths']} paths each" if uniform
                 else f"{report['min_paths']} to {report['max_paths']} paths")
        st.info(f"Dense: every output channel reaches every input channel, by {count}.")
    else:
        st.warning(f"Not dense: each output channel reaches {report['reached_fraction']:.0%} of the input channels "
                   "on average; information stays inside groups.")
    _factor_figure(report["factors"], report["in_channels"], layout)
    _paths_figure(report, layout)
    st.caption("Structure only: each conv is drawn as its connectivity (a cell is 1 when the output channel, row, "
               "reads the input channel, column), whatever its weights; norms and activations pass channels "
               "through one to one. The product counts the paths through the whole block"
               + {True: "; here it equals the product of the factors in call order.",
                  False: "; a shortcut or a branch adds its own paths, so it is not the plain product of the factors.",
                  None: " (the paths factor by factor are traced for blocks of up to 512 input channels)."}[
                   report["product_of_factors"]])


def _verdict(report: dict) -> str:
    """The view's finding in one line (the compact view's only text)."""
    if report["exactly_one_path"]:
        return "Complementary: every output reaches every input by exactly one path."
    if report["dense"]:
        paths = (f"{report['min_paths']}" if report["min_paths"] == report["max_paths"]
                 else f"{report['min_paths']} to {report['max_paths']}")
        return f"Dense: every output reaches all {report['in_channels']} inputs, by {paths} paths."
    return f"Not dense: an output reaches {report['reached_fraction']:.0%} of the inputs; groups stay apart."


def _compact_view(report: dict, layout):
    """A presenter's figure column: the verdict in one line, then the factors and the paths as two tabs of
    the column's height; no metrics or captions (the step's prose tells them)."""
    icon = ":material/check_circle:" if report["dense"] else ":material/block:"
    (st.success if report["dense"] else st.warning)(_verdict(report), icon=icon)
    factors_tab, paths_tab = st.tabs(["Factor by factor", "All paths"])
    with factors_tab:
        fig = _factor_chart(report["factors"], report["in_channels"], compact=True)
        st.plotly_chart(layout(fig), width="stretch", config=plot_config())
    with paths_tab:
        st.plotly_chart(layout(_paths_chart(report)), width="stretch", config=plot_config())


def _factor_chart(factors: list[dict], inputs: int, compact: bool = False) -> go.Figure:
    """Each factor's 0/1 connectivity (top row) and, where traced, the paths from the block's input so far
    (bottom row). `compact`: short subplot titles, no channel numbers and no chart title, for narrow cells."""
    shown = factors[:MAX_FACTORS]
    chained = [f for f in shown if "so_far" in f]
    rows = 2 if chained else 1
    titles = [f["kind"] if compact else f"{f['name']}<br>{f['kind']}" for f in shown]
    if chained:
        reach = "{:.3g} of {} inputs" if compact else "an output reaches {:.3g} of {} inputs"
        titles += [reach.format(f["reached_so_far"] * inputs, inputs) if "so_far" in f else "" for f in shown]
    fig = make_subplots(rows=rows, cols=len(shown), subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=0.22 if compact else 0.16)
    top = max((int(f["so_far"]["z"].max()) for f in chained), default=1)
    for i, factor in enumerate(shown):
        fig.add_trace(_heatmap(factor["matrix"], zmin=0, zmax=1, colorscale="Greys", showscale=False,
                               hovertemplate="output %{y} ← input %{x}: %{z}<extra></extra>"), row=1, col=i + 1)
        if "so_far" in factor:
            fig.add_trace(_heatmap(factor["so_far"], blank_zeros=True, zmin=0, zmax=top, colorscale="Viridis",
                                   showscale=i == len(shown) - 1, colorbar=dict(title="paths (count)", len=0.45, y=0.2),
                                   hovertemplate="output %{y} ← block input %{x}: %{z} paths<extra></extra>"),
                          row=2, col=i + 1)
        for row in range(1, rows + 1):
            axis = (row - 1) * len(shown) + i + 1
            if compact:  # cells a tenth of the column wide: the rows are named, the channels are in the hover
                y_title = ("factor" if row == 1 else "paths so far") if i == 0 else None
                x_title = None
            else:
                y_title = ("output channel" if row == 1 else "channel so far") if i == 0 else None
                x_title = "input channel" if row == 1 else "block input channel"
            fig.update_yaxes(autorange="reversed", scaleanchor=f"x{axis}", constrain="domain", row=row, col=i + 1,
                             title=y_title, showticklabels=not compact)
            fig.update_xaxes(constrain="domain", row=row, col=i + 1, title=x_title, showticklabels=not compact)
    fig.update_annotations(font_size=10)
    if compact:
        fig.update_layout(height=330 * rows)
    else:
        fig.update_layout(height=330 * rows, margin=dict(t=90),
                          title="Top: each factor in call order (black = connected, 0/1). "
                                + ("Bottom: paths from the block's input so far (blank = no path)" if chained else ""))
    return fig


def _factor_figure(factors: list[dict], inputs: int, layout):
    shown = factors[:MAX_FACTORS]
    st.plotly_chart(layout(_factor_chart(factors, inputs)), width="stretch", config=plot_config())
    notes = []
    if len(factors) > MAX_FACTORS:
        notes.append(f"the first {MAX_FACTORS} of {len(factors)} factors are drawn")
    steps = sorted({f["matrix"]["step"] for f in shown} - {1})
    if steps:
        notes.append(f"wide matrices are drawn at {' or '.join(f'{s}×{s}' for s in steps)} channels a cell "
                     "(the largest value of the cell's channels)")
    if notes:
        st.caption("Drawn: " + "; ".join(notes) + ".")


def _paths_chart(report: dict) -> go.Figure:
    paths = report["paths"]
    fig = go.Figure(_heatmap(paths, blank_zeros=True, colorscale="Viridis", zmin=0, zmax=max(1, report["max_paths"]),
                             colorbar=dict(title="paths (count)"),
                             hovertemplate="output %{y} ← input %{x}: %{z} paths<extra></extra>"))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", title="output channel")
    fig.update_xaxes(title="input channel", constrain="domain")
    full = (report["out_channels"], report["in_channels"])
    step = paths["step"]
    fig.update_layout(height=460, title=f"Paths through {report['module']} ({full[0]}×{full[1]} channels"
                                        + (f", {step}×{step} channels a cell)" if step > 1 else ")"))
    return fig


def _paths_figure(report: dict, layout):
    st.plotly_chart(layout(_paths_chart(report)), width="stretch", config=plot_config())
