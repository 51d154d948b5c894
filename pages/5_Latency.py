"""Latency: real kernels on the GPU (CPU otherwise), batch sweeps, per-layer times, roofline."""
import pandas as pd
import streamlit as st

from explorer.backend import BACKEND, best_device
from explorer.catalog import load_catalog
from explorer.errors import ExplorerError
from explorer.roofline import ridge_point
from explorer.spec import ModelSpec, parse_size
from ui.common import guard, page_setup, plot_config
from ui.figures import roofline_plot, sweep_plot

page_setup("Latency", ":material/timer:")
st.title("Latency")
st.caption("Timed with the real kernels in this process: inference mode, warm-up until stable, then repeated runs "
           "(CUDA events on a GPU). Runs queue for the device one at a time, so sessions never disturb each other's timings.")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
devices = ["cuda", "cpu"] if best_device() == "cuda" else [best_device()] if best_device() != "cpu" else ["cpu"]
batch_choices = [1, 2, 4, 8, 16, 32, 64, 128, 256]
on_gpu = best_device() == "cuda"

if "lat_models" not in st.session_state:  # a link may name the models: ?arch=resnet50,mobilenet_v2
    wanted = [a for a in st.query_params.get("arch", "").split(",") if a]
    unknown = [a for a in wanted if a not in ids]
    st.session_state.lat_models = [a for a in wanted if a in ids] or ["resnet18"]
    if unknown:
        st.warning(f"The link names models this page does not list: {', '.join(unknown)}. Library models can be "
                   "timed by name in 'Also time'.")

with st.form("latency_form"):
    c1, c2, c3 = st.columns([3, 1, 1])
    models = c1.multiselect("Models", ids, key="lat_models")
    device = c2.selectbox("Device", devices, key="lat_device")
    dtype = c3.selectbox("dtype", ["fp32", "bf16", "fp16"], key="lat_dtype",
                         help="bf16/fp16 run under autocast")
    c4, c5, c6 = st.columns([3, 1, 1])
    batches = c4.multiselect("Batch sizes", batch_choices, default=[1, 8, 64] if on_gpu else [1, 2], key="lat_batches")
    size_text = c5.text_input("Input (C,H,W)", placeholder="native", key="lat_input")
    extra = c6.text_input("Also time (library name)", placeholder="timm:convnext_tiny", key="lat_extra")
    c7, c8, c9 = st.columns(3)
    channels_last = c7.checkbox("channels-last", key="lat_cl")
    compile_model = c8.checkbox("torch.compile", key="lat_compile", help="Compiles first; slow to start")
    per_layer = c9.checkbox("per-layer times (torch.profiler)", value=True, key="lat_per_layer")
    run = st.form_submit_button("Run", type="primary")

if "latency_runs" not in st.session_state:
    st.session_state.latency_runs = []  # results of the last Run, kept across reruns

if run:
    runs = []
    with guard("The latency run"):
        names = list(models) + ([extra.strip()] if extra.strip() else [])
        if not names:
            raise ExplorerError("pick at least one model")
        if not batches:
            raise ExplorerError("pick at least one batch size")
        size = parse_size(size_text) if size_text.strip() else None
        st.query_params["arch"] = ",".join(models)
        settings = {"device": device, "batches": sorted(batches), "dtype": dtype, "channels_last": channels_last,
                    "compile": compile_model, "per_layer": per_layer,
                    "min_runs": 10 if device == "cuda" else 5, "min_seconds": 0.5 if device == "cuda" else 0.3}
        for name in names:
            spec = ModelSpec(name, input_size=size)
            status = st.empty()
            status.info(f"{name}: building and timing on {device}…")

            def on_wait(position, name=name, status=status):
                status.warning(f"{name}: waiting for the {'GPU' if device == 'cuda' else device}, position {position} in the queue")

            try:
                result = BACKEND.bench(spec.to_dict(), settings, on_wait=on_wait)
            except ExplorerError as exc:
                status.error(f"{name}: {exc}")
                continue
            status.empty()
            runs.append(result)
    st.session_state.latency_runs = runs

runs = st.session_state.latency_runs
if not runs:
    st.info("Pick models and batch sizes, then Run.")
    st.stop()

for result in runs:
    if result["error"]:
        st.error(f"{result['arch']}: {result['error']}")

rows = [
    {"model": r["arch"], **row, "dtype": r["settings"]["dtype"], "device": r["settings"]["device_name"]}
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
    best = max((row["achieved_tflops"] or 0 for r in runs for row in r["results"]), default=0.0)
    peaks = BACKEND.peaks(first["device"], first["dtype"], best)
    ridge = ridge_point(peaks)
    chosen = st.selectbox("Layers of", [r["arch"] for r in runs if r.get("layers")] or [runs[0]["arch"]], key="lat_roof_model")
    picked = next(r for r in runs if r["arch"] == chosen)
    model_points = [
        {"label": f"{r['arch']} batch {row['batch']}", "tflops": row["achieved_tflops"],
         "intensity": row["achieved_tflops"] * 1e3 / row["achieved_gb_per_s"] if row["achieved_gb_per_s"] else None}
        for r in runs for row in r["results"]
    ]
    layer_rows = picked.get("layers") or []
    layer_points = [
        {"label": f"{l['name']} ({l['type']})", "intensity": l["arithmetic_intensity"], "tflops": l["achieved_tflops"],
         "share": l["share_time"]}
        for l in layer_rows if l["arithmetic_intensity"] and l["achieved_tflops"]
    ]
    st.plotly_chart(roofline_plot(peaks, model_points, layer_points, first["dtype"]), width="stretch", config=plot_config())
    st.caption(f"Ridge point {ridge:.1f} FLOPs/byte: layers left of it are limited by memory bandwidth, right of it by "
               "compute. Intensity = 2 × MACs / memory access cost (bytes), both from the cost engine.")
    if layer_rows:
        st.markdown(f"**Per-layer time, {chosen}** (torch.profiler, batch {picked['results'][0]['batch']}; "
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
        st.download_button("Download per-layer times (CSV)", table.to_csv(index=False), f"{chosen}_layers.csv", "text/csv")
