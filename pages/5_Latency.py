"""Latency: real kernels on the GPU (CPU otherwise), batch sweeps, per-layer times, roofline."""
import pandas as pd
import streamlit as st

from explorer.catalog import load_catalog
from explorer.errors import ExplorerError
from explorer.roofline import ridge_point
from explorer.spec import ModelSpec, format_size, parse_size
from explorer.text import escape_markdown
from ui.common import QUOTED_LINK_TEXT, drop_unused_link_params, guard, page_setup, plot_config
from ui.figures import roofline_plot, sweep_plot
from ui.jobs import JobCancelled, job_service, run_job

page_setup("Latency", ":material/timer:")
st.title("Latency")
st.caption("Timed with the real kernels in a worker process: inference mode, warm-up until stable, then repeated runs "
           "(CUDA events on a GPU). Runs take the worker one at a time and sessions take turns; each result says how "
           "long it waited and whether anything else kept the machine busy while it was timed.")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
workers = job_service().workers()  # the devices are the workers' (a cluster's GPUs need none in this server)
kinds = {w["kind"] for w in workers} | {"cpu"}
devices = [k for k in ("cuda", "mps", "cpu") if k in kinds]
batch_choices = [1, 2, 4, 8, 16, 32, 64, 128, 256]
on_gpu = "cuda" in kinds

drop_unused_link_params(("arch", "batch", "input"))
default_batches = [1, 8, 64] if on_gpu else [1, 2]
# A link may name the models, batch sizes and input: ?arch=resnet50,mobilenet_v2&batch=1,8&input=3,160,160
if "lat_models" not in st.session_state:
    wanted = [a for a in st.query_params.get("arch", "").split(",") if a]
    unknown = [a for a in wanted if a not in ids]
    st.session_state.lat_models = [a for a in wanted if a in ids] or ["resnet18"]
    if unknown:
        named = escape_markdown(", ".join(unknown), limit=QUOTED_LINK_TEXT)
        st.warning(f"The link names models this page does not list: {named}. Library models can be timed by name in "
                   "'Also time'.")
    batch_text = st.query_params.get("batch", "")
    asked = [b.strip() for b in batch_text.split(",") if b.strip()]
    offered = [int(b) for b in asked if b.isdigit() and int(b) in batch_choices]
    st.session_state.lat_batches = sorted(set(offered)) or default_batches
    if len(offered) < len(asked):
        refused = [b for b in asked if not (b.isdigit() and int(b) in batch_choices)]
        named = escape_markdown(", ".join(refused), limit=QUOTED_LINK_TEXT)
        st.warning(f"The link's batch sizes {named} are not offered here (choose from "
                   f"{', '.join(map(str, batch_choices))}): ignored, timing "
                   f"{', '.join(map(str, st.session_state.lat_batches))}.")
    st.session_state.lat_input = st.query_params.get("input", "")  # checked by Run, with a message if it is wrong
st.session_state.setdefault("lat_batches", default_batches)  # the widget takes its value from here, not default=

with st.form("latency_form"):
    c1, c2, c3 = st.columns([3, 1, 1])
    models = c1.multiselect("Models", ids, key="lat_models")
    device = c2.selectbox("Device", devices, key="lat_device")
    dtype = c3.selectbox("dtype", ["fp32", "bf16", "fp16"], key="lat_dtype",
                         help="bf16/fp16 run under autocast")
    c4, c5, c6 = st.columns([3, 1, 1])
    batches = c4.multiselect("Batch sizes", batch_choices, key="lat_batches")
    size_text = c5.text_input("Input (C,H,W)", placeholder="native", key="lat_input")
    extra = c6.text_input("Also time (library name)", placeholder="timm:convnext_tiny", key="lat_extra")
    c7, c8, c9 = st.columns(3)
    channels_last = c7.checkbox("channels-last", key="lat_cl")
    compile_model = c8.checkbox("torch.compile", key="lat_compile", help="Compiles first; slow to start")
    per_layer = c9.checkbox("per-layer times (torch.profiler)", value=True, key="lat_per_layer")
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
        if not batches:
            raise ExplorerError("pick at least one batch size")
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

pending = st.session_state.get("latency_pending")
if pending:
    runs = []
    for item in pending:
        spec, worker = item["spec"], item["worker"]
        shown = escape_markdown(spec["arch"]) + (f" on {worker}" if worker else "")
        payload = {"spec": spec, "settings": item["settings"], **({"worker": worker} if worker else {})}
        try:
            result, job = run_job("bench", payload, f"Timing {shown}", with_job=True)
        except JobCancelled as exc:
            st.warning(escape_markdown(str(exc)) + "; the models after it were not timed either.")
            break
        except ExplorerError as exc:
            st.error(escape_markdown(f"{spec['arch']}: {exc}"))
            continue
        where = f"{result['settings']['device_name']} ({result['settings'].get('worker')})" if worker else None
        runs.append({**result, "label": result["arch"] + (f" · {where}" if where else ""),
                     "job": {"waited_s": round(job.waited_s, 1), "ran_s": round(job.ran_s, 1), "cached": job.cached}})
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
c1.plotly_chart(sweep_plot(rows, "median_ms", "Latency (median, ms)", "ms per batch"), width="stretch", config=plot_config())
c2.plotly_chart(sweep_plot(rows, "throughput_per_s", "Throughput (images/s)", "images per second"), width="stretch", config=plot_config())
st.dataframe(frame, hide_index=True, width="stretch", column_config={
    "median_ms": st.column_config.NumberColumn("median (ms)", format="%.3f"),
    "p10_ms": st.column_config.NumberColumn("p10 (ms)", format="%.3f"),
    "p90_ms": st.column_config.NumberColumn("p90 (ms)", format="%.3f"),
    "throughput_per_s": st.column_config.NumberColumn("throughput (img/s)", format="%.1f"),
    "achieved_tflops": st.column_config.NumberColumn("achieved TFLOP/s", format="%.4f"),
    "achieved_gb_per_s": st.column_config.NumberColumn("achieved GB/s", format="%.2f"),
})
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
            {"label": f"{l['name']} ({l['type']})", "intensity": l["arithmetic_intensity"], "tflops": l["achieved_tflops"],
             "share": l["share_time"]}
            for l in layer_rows if l["arithmetic_intensity"] and l["achieved_tflops"]
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
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "time_ms": st.column_config.NumberColumn("time (ms)", format="%.3f"),
            "share_time": st.column_config.ProgressColumn("share of time", format="%.2f", min_value=0, max_value=1),
            "arithmetic_intensity": st.column_config.NumberColumn("FLOPs/byte", format="%.2f"),
            "achieved_tflops": st.column_config.NumberColumn("TFLOP/s", format="%.4f"),
            "achieved_gb_per_s": st.column_config.NumberColumn("GB/s", format="%.2f"),
            "MACs (M)": st.column_config.NumberColumn(format="%.2f"),
            "memory access (MB)": st.column_config.NumberColumn(format="%.2f"),
        })
        st.download_button("Download per-layer times (CSV)", table.to_csv(index=False), f"{picked['arch']}_layers.csv", "text/csv")
