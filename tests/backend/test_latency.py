"""Latency on the CPU path (CI has no GPU): the sweep, the queue, failures, the cache."""
import threading
import time

import pytest
import torch

from explorer import latency
from explorer.cost import analyse
from explorer.device_queue import DeviceQueue
from explorer.errors import ExplorerError
from explorer.latency import BenchSettings, ModelCache, bench
from explorer.roofline import known_peaks, peaks_for, ridge_point
from explorer.spec import ModelSpec

QUICK = dict(device="cpu", min_runs=3, min_seconds=0.05, max_seconds=5)


@pytest.mark.slow
def test_sweep_reports_stats_and_achieved_rates():
    result = bench(ModelSpec("resnet18", input_size=(3, 64, 64)), BenchSettings(batches=(1, 2), **QUICK))
    assert result["error"] is None
    rows = result["results"]
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        assert r["runs"] >= 3
        seconds = r["median_ms"] / 1e3
        assert r["throughput_per_s"] == pytest.approx(r["batch"] / seconds)
        # Achieved TFLOP/s is the cost engine's FLOPs over the measured time.
        flops = 2 * result["macs_per_sample"] * r["batch"]
        assert r["achieved_tflops"] == pytest.approx(flops / seconds / 1e12)
    settings = result["settings"]
    assert settings["device"] == "cpu" and settings["threads"] == torch.get_num_threads()
    assert settings["inference_mode"] is True and settings["torch"] == torch.__version__


@pytest.mark.slow
def test_bf16_channels_last_path_runs_on_cpu():
    result = bench(ModelSpec("mobilenet_v3_small", input_size=(3, 64, 64)),
                   BenchSettings(batches=(2,), dtype="bf16", channels_last=True, **QUICK))
    assert result["error"] is None and result["settings"]["autocast"] is True


@pytest.mark.slow
def test_per_layer_times_cover_every_leaf_layer_with_its_cost():
    result = bench(ModelSpec("resnet18", input_size=(3, 96, 96)), BenchSettings(batches=(1,), per_layer=True, **QUICK))
    layers = result["layers"]
    conv1 = next(r for r in layers if r["name"] == "conv1")
    assert conv1["macs"] == 48 * 48 * 64 * 3 * 49
    assert conv1["arithmetic_intensity"] == pytest.approx(2 * conv1["macs"] / conv1["memory_access_bytes"])
    # every leaf module that runs is timed once (no wall-clock bound here: that is the benchmarks' business)
    import torchvision

    leaves = {name for name, m in torchvision.models.resnet18().named_modules() if name and not list(m.children())}
    assert {r["name"] for r in layers} == leaves and len(layers) == len(leaves)
    assert all(r["time_ms"] >= 0 for r in layers)
    assert sum(r["share_time"] for r in layers) == pytest.approx(1.0)


def test_bad_settings_are_messages():
    with pytest.raises(ExplorerError, match="CUDA"):
        if torch.cuda.is_available():
            raise ExplorerError("CUDA present: nothing to check")
        bench(ModelSpec("resnet18"), BenchSettings(device="cuda"))
    with pytest.raises(ExplorerError, match="batch sizes"):
        bench(ModelSpec("resnet18"), BenchSettings(device="cpu", batches=(0,)))
    with pytest.raises(ExplorerError, match="dtype"):
        bench(ModelSpec("resnet18"), BenchSettings(device="cpu", dtype="int4"))


@pytest.mark.slow
def test_out_of_memory_ends_the_job_frees_memory_and_the_next_job_runs(monkeypatch):
    freed = []
    monkeypatch.setattr(latency, "free_memory", lambda: freed.append(True))
    original = latency.time_forward
    calls = {"n": 0}

    def exploding(forward, device, settings):
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch size "runs out of memory"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(forward, device, settings)

    monkeypatch.setattr(latency, "time_forward", exploding)
    result = bench(ModelSpec("resnet18", input_size=(3, 32, 32)), BenchSettings(batches=(1, 64, 128), **QUICK))
    assert [r["batch"] for r in result["results"]] == [1]
    assert "ran out of memory at batch 64" in result["error"]
    assert freed, "memory was not released"
    # The queue was released and the cache entry dropped: the next job runs normally.
    monkeypatch.setattr(latency, "time_forward", original)
    again = bench(ModelSpec("resnet18", input_size=(3, 32, 32)), BenchSettings(batches=(1,), **QUICK))
    assert again["error"] is None


def test_queue_serves_in_arrival_order_and_reports_positions():
    queue = DeviceQueue("test")
    order, positions = [], []
    first_holds = threading.Event()
    release = threading.Event()

    def first():
        with queue.hold():
            first_holds.set()
            release.wait(5)
            order.append("first")

    def second():
        with queue.hold(on_wait=positions.append, poll_seconds=0.01):
            order.append("second")

    t1 = threading.Thread(target=first)
    t1.start()
    first_holds.wait(5)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.1)
    assert queue.length == 2
    release.set()
    t1.join(5)
    t2.join(5)
    assert order == ["first", "second"]
    assert positions and set(positions) == {1}
    assert queue.length == 0


def test_queue_is_released_when_the_job_fails():
    queue = DeviceQueue("test")
    with pytest.raises(RuntimeError):
        with queue.hold():
            raise RuntimeError("kernel error")
    assert queue.length == 0


def test_model_cache_is_bounded_by_count_and_memory():
    cache = ModelCache(max_models=2, max_bytes=10_000)
    small = lambda: torch.nn.Linear(10, 10)  # noqa: E731  (440 bytes)
    cache.get("a", small)
    cache.get("b", small)
    cache.get("c", small)
    assert len(cache) == 2
    cache.get("big", lambda: torch.nn.Linear(100, 100))  # 40,400 bytes: evicts the rest
    assert len(cache) == 1


def test_roofline_peaks():
    h100 = known_peaks("NVIDIA H100 80GB HBM3")
    assert h100["bandwidth_gb_s"] == 3350 and h100["bf16"] == 989.4
    assert known_peaks("NVIDIA H200")["bandwidth_gb_s"] == 4800
    assert ridge_point({"tflops": 989.4, "bandwidth_gb_s": 3350}) == pytest.approx(295.3, abs=0.1)
    cpu = peaks_for("cpu", "fp32")
    assert cpu["tflops"] > 0 and cpu["bandwidth_gb_s"] > 0 and "measured" in cpu["source"]


@pytest.mark.slow
def test_resolution_sweep_times_every_size_with_the_quick_settings():
    from explorer.compare import resolution_sweep

    rows = resolution_sweep(ModelSpec("resnet18"), [64, 96], latency_device="cpu")
    assert [r["side"] for r in rows] == [64, 96]
    assert all(r["error"] is None and r["latency_ms"] > 0 for r in rows)
    # cost and latency of each row describe the same sized model
    assert rows[1]["gmacs"] == analyse(ModelSpec("resnet18", input_size=(3, 96, 96)), with_layers=False)["macs"] / 1e9


def test_a_roof_below_an_achieved_rate_is_measured_again_once(monkeypatch):
    from explorer import roofline

    readings = iter([0.1, 0.6])  # the first measurement was taken on a busy machine; a third would raise
    monkeypatch.setattr(roofline, "_measure", lambda device, dtype: {dtype: next(readings), "bandwidth_gb_s": 50.0})
    monkeypatch.setattr(roofline, "_MEASURED", {})
    monkeypatch.setattr(roofline, "_MEASURED_AGAIN", set())
    assert roofline.peaks_for("cpu", "fp32")["tflops"] == 0.1  # nothing achieved yet: the first reading stands
    peaks = roofline.peaks_for("cpu", "fp32", achieved_tflops=0.25)
    assert peaks["tflops"] == 0.6 and "lower bound" not in peaks["source"]
    again = roofline.peaks_for("cpu", "fp32", achieved_tflops=0.9)  # above the new roof: no third measurement
    assert again["tflops"] == 0.6 and "lower bound" in again["source"]
