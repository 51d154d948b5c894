"""Latency: real kernels on the GPU (CPU otherwise), batch sweeps, per-layer times, roofline."""
import pandas as pd
import streamlit as st

from explorer.catalog import load_catalog
from explorer.errors import ExplorerError
from explorer.estimates import combine
from explorer.jobs import job_key
from explorer.roofline import ridge_point
from explorer.spec import ModelSpec, format_size, parse_size
from explorer.text import escape_markdown
from ui.common import QUOTED_LINK_TEXT, drop_unused_link_params, guard, page_setup, plot_config, start_from_link
from ui.components import more_columns, parse_batch_list
from ui.figures import roofline_plot, sweep_plot
from ui.jobs import JobCancelled, confirm_estimate, job_estimate, job_service, run_job

page_setup("Latency", ":material/timer:")
st.title("Latency")
st.caption("Timed with the real kernels in a worker process: inference mode, warm-up until stable, then repeated runs "
           "(CUDA events on a GPU). Runs take the worker one at a time and sessions take turns; each result says how "
           "long it waited and whether anything else kept the machine busy while it was timed.")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
workers = job_service().workers()  # the devices are the workers' (a cluster's GPUs need none in this server)
kinds = {w["kind"] for w in workers} | {"cpu"}
devices = [k for k in ("cuda", "mps", "cpu") if k in kinds]
on_gpu = "cuda" in kinds
WIDE_SPREAD = 1.2  # p90 / p10 above this: the runs disagree too much for the median to be trusted alone
FEW_RUNS = 10  # fewer timed runs than this: p10 and p90 rest on a handful of samples

drop_unused_link_params(("arch", "batch", "input"))
default_batches = "1, 8, 64" if on_gpu else "1, 2"


def widgets_from_link() -> dict:
    """The models, batch sizes and input the URL names, as the form's values (each checked)."""
    wanted = [a for a in st.query_params.get("arch", "").split(",") if a]
    unknown = [a for a in wanted if a not in ids]
    if unknown:
        named = escape_markdown(", ".join(unknown), limit=QUOTED_LINK_TEXT)
        st.warning(f"The link names models this page does not list: {named}. Library models can be timed by name in "
                   "'Also time'.")
    offered, refused = [], []
    for part in [b.strip() for b in st.query_params.get("batch", "").split(",") if b.strip()][:64]:
        try:  # each size on its own: the good ones are kept, the rest named
            offered += parse_batch_list(part)
        except ExplorerError:
            refused.append(part)
    batches = ", ".join(map(str, sorted(set(offered)))) or default_batches
    if refused:
        named = escape_markdown(", ".join(refused), limit=QUOTED_LINK_TEXT)
        st.warning(f"The link's batch sizes {named} are not whole numbers from 1 to 1,024: ignored, timing {batches}.")
    return {"lat_models": [a for a in wanted if a in ids] or ["resnet18"], "lat_batch_text": batches,
            "lat_input": st.query_params.get("input", "")}  # the input is checked by Run, with a message if wrong


# A link may name the models, batch sizes and input: ?arch=resnet50,mobilenet_v2&batch=1,8&input=3,160,160
start_from_link("lat_models", widgets_from_link)
st.session_state.setdefault("lat_batch_text", default_batches)  # the widget takes its value from here

with st.form("latency_form"):
    c1, c2, c3 = st.columns([3, 1, 1])
    models = c1.multiselect("Models", ids, key="lat_models")
    device = c2.selectbox("Device", devices, key="lat_device")
    dtype = c3.selectbox("dtype", ["fp32", "bf16", "fp16"], key="lat_dtype",
                         help="bf16/fp16 run under autocast")
    c4, c5, c6 = st.columns([3, 1, 1])
    batch_text = c4.text_input("Batch sizes", key="lat_batch_text", placeholder="1, 8, 64",
                               help="Whole numbers from 1 to 1,024, separated by commas or spaces; each is timed in "
                                    "turn, smallest first")
    size_text = c5.text_input("Input (C,H,W)", placeholder="native", key="lat_input")
    extra = c6.text_input("Also time (library name)", placeholder="timm:convnext_tiny", key="lat_extra")
    c7, c8, c9 = st.columns(3)
    channels_last = c7.checkbox("channels-last", key="lat_cl")
    compile_model = c8.checkbox("torch.compile", key="lat_compile", help="Compiles first; slow to start")
    # the profiler's name in the help: in the label it was cut at 800 px
    per_layer = c9.checkbox("per-layer times", value=True, key="lat_per_layer",
                            help="Each layer timed with torch.profiler: kernel time on a GPU, wall time on the CPU")
    everywhere = False
    if len(workers) > 1:
        everywhere = st.checkbox(
            f"Time on every worker ({len(workers)}: " + ", ".join(f"{w['name']}, {w['kind']}" for w in workers) + ")",
            key="lat_everywhere", help="The same models and settings on each worker, side by side, with each "
            "device's roofline (a worker without the chosen device times on its own)")
    run = st.form_submit_button("Run", type="primary")

if "latency_runs" not in st.session_state:
    st.session_state.latency_runs = []  # results of the last Run, kept across reruns

if run:
    with guard("The latency run"):
        names = list(models) + ([extra.strip()] if extra.strip() else [])
        if not names:
            raise ExplorerError("pick at least one model")
        batches = parse_batch_list(batch_text)
        size = parse_size(size_text) if size_text.strip() else None
        st.query_params.from_dict({"arch": ",".join(models), "batch": ",".join(map(str, sorted(batches))),
                                   **({"input": format_size(size)} if size is not None else {})})
        settings = {"device": device, "batches": sorted(batches), "dtype": dtype, "channels_last": channels_last,
                    "compile": compile_model, "per_layer": per_layer,
                    "min_runs": 10 if device == "cuda" else 5, "min_seconds": 0.5 if device == "cuda" else 0.3}
        targets = workers if everywhere else [None]
        # What to time is kept until every model is timed: a rerun (a click elsewhere) finds the same jobs again
        st.session_state.latency_pending = [
            {"spec": ModelSpec(name, input_size=size).to_dict(), "worker": w["name"] if w else None,
             "settings": {**settings, "device": device if w is None or device in (w["kind"], "cpu") else w["kind"]}}
            for name in names for w in targets]
        st.session_state.latency_runs = []



def time_batch_by_batch(item: dict, done: int, total: int, progress) -> dict | None:
    """Times one model one batch size at a time (a job each, so the page shows how far the sweep has got and a
    repeated batch comes from the cache); the per-layer profile runs with the first, smallest batch. Returns
    the model's result with every batch's row, or None when it was cancelled."""
    spec, worker, settings = item["spec"], item["worker"], item["settings"]
    shown = escape_markdown(spec["arch"]) + (f" on {worker}" if worker else "")
    merged, timing = None, {"waited_s": 0.0, "ran_s": 0.0, "cached": True}
    for index, batch in enumerate(settings["batches"]):
        step = done + index + 1
        payload = {"spec": spec, "settings": {**settings, "batches": [batch],
                                              "per_layer": settings["per_layer"] and index == 0},
                   **({"worker": worker} if worker else {})}
        result, job = run_job("bench", payload, f"Timing {shown} at batch {batch} ({step} of {total})",
                              with_job=True, asked=True)  # this run follows the person's Run click
        progress.progress(step / total, text=f"Timed {shown} at batch {batch} ({step} of {total})")
        timing = {"waited_s": timing["waited_s"] + job.waited_s, "ran_s": timing["ran_s"] + job.ran_s,
                  "cached": timing["cached"] and job.cached}
        if merged is None:
            merged = {**result, "results": [], "overlapping_jobs": []}
        merged["results"] += result["results"]
        merged["overlapping_jobs"] = sorted(set(merged["overlapping_jobs"]) | set(result.get("overlapping_jobs") or []))
        others = [c for c in (merged.get("contention", {}).get("other_processes_cpu_cores"),
                              (result.get("contention") or {}).get("other_processes_cpu_cores")) if c is not None]
        merged["contention"] = {**(result.get("contention") or {}), "other_processes_cpu_cores": max(others, default=None)}
        if result["error"]:  # out of memory at this batch: the larger ones would be too
            merged["error"] = result["error"]
            break
    merged["settings"] = {**merged["settings"], "batches": settings["batches"]}
    where = f"{merged['settings']['device_name']} ({merged['settings'].get('worker')})" if worker else None
    return {**merged, "label": merged["arch"] + (f" · {where}" if where else ""),
            "job": {key: round(value, 1) if isinstance(value, float) else value for key, value in timing.items()}}


pending = st.session_state.get("latency_pending")
if pending:
    # The whole run's estimate first (every model, every batch size); a long one waits for its Run button
    estimates = []
    for item in pending:
        try:
            estimates.append(job_estimate("bench", {"spec": item["spec"], "settings": item["settings"]}))
        except ExplorerError:
            pass  # a model that cannot be built: the run below says why
    if estimates and not confirm_estimate(combine(estimates, "bench", "models"), "the timing", "lat",
                                          job_key("bench", {"pending": pending})):
        st.stop()
if pending:
    runs = []
    total = sum(len(item["settings"]["batches"]) for item in pending)
    progress = st.progress(0.0, text=f"Timing {total} batch size{'s' if total != 1 else ''}…")
    done = 0
    for item in pending:
        try:
            runs.append(time_batch_by_batch(item, done, total, progress))
        except JobCancelled as exc:
            st.warning(escape_markdown(str(exc)) + "; the batches and models after it were not timed either.")
            break
        except ExplorerError as exc:
            st.error(escape_markdown(f"{item['spec']['arch']}: {exc}"))
        done += len(item["settings"]["batches"])
    progress.empty()
    st.session_state.latency_runs = runs
    st.session_state.latency_pending = None

runs = st.session_state.latency_runs
if not runs:
    st.info("Pick models and batch sizes, then Run.")
    st.stop()

for result in runs:
    if result["error"]:
        st.error(escape_markdown(f"{result['label']}: {result['error']}"))
    timing = result.get("job") or {}
    source = ("from the cache (the same model and settings were timed before)" if timing.get("cached") else
              f"waited {timing.get('waited_s', 0):.1f} s in the queue, ran {timing.get('ran_s', 0):.1f} s")
    st.caption(f"{escape_markdown(result['label'])}: {source}.")
    contention = result.get("contention") or {}
    others = contention.get("other_processes_cpu_cores")
    if result.get("overlapping_jobs") or (others is not None and others > 0.25):
        parts = []
        if others is not None and others > 0.25:
            parts.append(f"other processes kept {others:.2f} CPU cores busy")
        if result.get("overlapping_jobs"):
            parts.append("other jobs ran on another worker: " + ", ".join(result["overlapping_jobs"]))
        st.warning(f"{escape_markdown(result['label'])}: while it was timed, {'; '.join(parts)}. "
                   "Its timings may be slower and noisier than on a quiet machine.")
    noisy = [f"batch {row['batch']}: p90 is {row['p90_ms'] / row['p10_ms']:.2f}× p10" for row in result["results"]
             if row["p10_ms"] > 0 and row["p90_ms"] / row["p10_ms"] > WIDE_SPREAD]
    few = [f"batch {row['batch']}: {row['runs']} runs" for row in result["results"] if row["runs"] < FEW_RUNS]
    if noisy:
        st.warning(f"{escape_markdown(result['label'])}: the runs spread widely ({'; '.join(noisy)}; with p90 above "
                   f"{WIDE_SPREAD}× p10 the median is not a stable figure). Run again on a quieter machine, or "
                   "compare the p10 column, which interruptions affect least.", icon=":material/warning:")
    if few:
        st.warning(f"{escape_markdown(result['label'])}: few timed runs ({'; '.join(few)}; p10 and p90 rest on "
                   f"fewer than {FEW_RUNS} samples).", icon=":material/warning:")

rows = [
    {"model": r["label"], **row, "dtype": r["settings"]["dtype"], "device": r["settings"]["device_name"],
     "worker": r["settings"].get("worker"), "host": r["settings"].get("host")}
    for r in runs for row in r["results"]
]
if not rows:
    st.stop()
frame = pd.DataFrame(rows)
first = runs[0]["settings"]
st.markdown(f"**Device** {first['device_name']} · **dtype** {first['dtype']} · threads {first['threads']} · "
            f"channels-last {first['channels_last']} · compile {first['compile']} · torch {first['torch']}"
            + (f" · cudnn.benchmark {first.get('cudnn_benchmark')} · TF32 matmul {first.get('tf32_matmul')}" if first["device"] == "cuda" else ""))
c1, c2 = st.columns(2)
# Throughput's band: the batch over the p90 time (slow runs) up to the batch over the p10 time (fast ones)
chart_rows = [{**row, "throughput_low": row["batch"] / row["p90_ms"] * 1e3,
               "throughput_high": row["batch"] / row["p10_ms"] * 1e3} for row in rows]
c1.plotly_chart(sweep_plot(chart_rows, "median_ms", "Latency (median, ms)", "ms per batch",
                           band=("p10_ms", "p90_ms")), width="stretch", config=plot_config())
c2.plotly_chart(sweep_plot(chart_rows, "throughput_per_s", "Throughput (images/s)", "images per second",
                           band=("throughput_low", "throughput_high")), width="stretch", config=plot_config())
SWEEP_COLUMNS = {
    "model": st.column_config.TextColumn("Model", pinned=True),
    "batch": st.column_config.NumberColumn("Batch", format="%,d"),
    "median_ms": st.column_config.NumberColumn("Median (ms)", format="%,.3f"),
    "throughput_per_s": st.column_config.NumberColumn("Images/s", format="%,.1f", help="Throughput: batch ÷ median time"),
    "p10_ms": st.column_config.NumberColumn("p10 (ms)", format="%,.3f"),
    "p90_ms": st.column_config.NumberColumn("p90 (ms)", format="%,.3f"),
    "achieved_tflops": st.column_config.NumberColumn("TFLOP/s", format="%.4f", help="Achieved: 2 × MACs ÷ median time"),
    "achieved_gb_per_s": st.column_config.NumberColumn("GB/s", format="%,.2f",
                                                       help="Achieved: memory access cost (bytes) ÷ median time"),
    "device": st.column_config.TextColumn("Device"),
    "runs": st.column_config.NumberColumn("Timed runs", format="%,d"),
    "warmup_runs": st.column_config.NumberColumn("Warm-up runs", format="%,d"),
    "dtype": st.column_config.TextColumn("dtype"),
    "worker": st.column_config.TextColumn("Worker"),
    "host": st.column_config.TextColumn("Host"),
}
# the model pinned and the timings first (what an 800-pixel window shows); the device too when the runs used
# several (a lab's GPUs side by side); the run counts and where each ran behind "More columns"
sweep_compact = [key for key in SWEEP_COLUMNS if key not in ("device", "runs", "warmup_runs", "dtype", "worker", "host")]
if frame["device"].nunique() > 1 or frame["worker"].nunique() > 1:
    sweep_compact += ["device", "worker"]
st.dataframe(frame, hide_index=True, width="stretch", column_config=SWEEP_COLUMNS,
             column_order=more_columns(frame.columns, sweep_compact, SWEEP_COLUMNS, "lat_more_columns"))
st.download_button("Download the sweep (CSV)", frame.to_csv(index=False), "latency_sweep.csv", "text/csv")

# --- roofline and per-layer times -------------------------------------------------------------------
st.subheader("Roofline")
with guard("The roofline"):
    # one roofline per device the runs used (a lab's GPUs side by side), each measured on its own worker
    groups: dict[tuple, list] = {}
    for r in runs:
        groups.setdefault((r["settings"].get("worker"), r["settings"]["device"]), []).append(r)
    chosen = st.selectbox("Layers of", [r["label"] for r in runs if r.get("layers")] or [runs[0]["label"]],
                          key="lat_roof_model")
    picked = next(r for r in runs if r["label"] == chosen)
    layer_rows = picked.get("layers") or []
    ridge = None
    columns = st.columns(len(groups)) if len(groups) > 1 else [st.container()]
    for column, ((worker, dev), group) in zip(columns, groups.items()):
        best = max((row["achieved_tflops"] or 0 for r in group for row in r["results"]), default=0.0)
        payload = {"device": dev, "dtype": first["dtype"], "achieved_tflops": best,
                   **({"worker": worker} if len(groups) > 1 and worker else {})}
        with column:
            peaks = run_job("peaks", payload, f"Measuring the {dev} roofline" + (f" on {worker}" if len(groups) > 1 else ""))
        model_points = [
            {"label": f"{r['arch']} batch {row['batch']}", "tflops": row["achieved_tflops"],
             "intensity": row["achieved_tflops"] * 1e3 / row["achieved_gb_per_s"] if row["achieved_gb_per_s"] else None}
            for r in group for row in r["results"]
        ]
        layer_points = [
            {"label": f"{layer['name']} ({layer['type']})", "intensity": layer["arithmetic_intensity"],
             "tflops": layer["achieved_tflops"], "share": layer["share_time"]}
            for layer in layer_rows if layer["arithmetic_intensity"] and layer["achieved_tflops"]
        ] if picked in group else []
        if picked in group:
            ridge = ridge_point(peaks)
        figure = roofline_plot(peaks, model_points, layer_points, first["dtype"])
        if len(groups) > 1:
            figure.update_layout(title=f"{group[0]['settings']['device_name']} ({worker}, {group[0]['settings'].get('host')})")
        column.plotly_chart(figure, width="stretch", config=plot_config())
    st.caption(f"Ridge point {ridge:.1f} FLOPs/byte ({escape_markdown(chosen)}'s device): layers left of it are "
               "limited by memory bandwidth, right of it by compute. Intensity = 2 × MACs / memory access cost "
               "(bytes), both from the cost engine.")
    if layer_rows:
        st.markdown(f"**Per-layer time, {escape_markdown(chosen)}** (torch.profiler, batch {picked['results'][0]['batch']}; "
                    "kernel time on a GPU, wall time per layer on the CPU, profiler overhead included)")
        table = pd.DataFrame(layer_rows)
        table["bound"] = ["compute" if (i or 0) > ridge else "memory" for i in table["arithmetic_intensity"]]
        table["MACs (M)"] = table.pop("macs") / 1e6
        table["memory access (MB)"] = table.pop("memory_access_bytes") / 1e6
        table = table.sort_values("time_ms", ascending=False)
        # the layer pinned, its time and what bounds it first, its type last
        st.dataframe(table, hide_index=True, width="stretch", column_order=[
            "name", "time_ms", "share_time", "bound", "arithmetic_intensity", "achieved_tflops", "achieved_gb_per_s",
            "MACs (M)", "memory access (MB)", "type"], column_config={
            "name": st.column_config.TextColumn("Layer", pinned=True),
            "type": st.column_config.TextColumn("Type"),
            "bound": st.column_config.TextColumn("Bound by", help="Left of the ridge point: memory; right: compute"),
            "time_ms": st.column_config.NumberColumn("Time (ms)", format="%,.3f"),
            "share_time": st.column_config.ProgressColumn("Time share", format="percent", min_value=0, max_value=1),
            "arithmetic_intensity": st.column_config.NumberColumn("FLOPs/byte", format="%,.2f",
                                                                  help="Arithmetic intensity: 2 × MACs per byte"),
            "achieved_tflops": st.column_config.NumberColumn("TFLOP/s", format="%.4f", help="Achieved"),
            "achieved_gb_per_s": st.column_config.NumberColumn("GB/s", format="%,.2f", help="Achieved"),
            "MACs (M)": st.column_config.NumberColumn("MACs (M)", format="%,.2f"),
            "memory access (MB)": st.column_config.NumberColumn("Mem. access (MB)", format="%,.2f",
                                                                help="Memory access cost (not MACs)"),
        })
        st.download_button("Download per-layer times (CSV)", table.to_csv(index=False), f"{picked['arch']}_layers.csv", "text/csv")
