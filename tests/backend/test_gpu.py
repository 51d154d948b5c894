"""Checks that need an NVIDIA GPU (marked `gpu`; skipped on a machine without CUDA, such as CI's).
`scripts/gpu_checks` runs them with the GPU benchmarks; their figures go into the issues.

- The predicted memory peak of a training step (explorer.memory, meta device) against what the caching allocator
  reports (torch.cuda.max_memory_allocated): the prediction counts storages as PyTorch asks for them; the allocator
  rounds each up and cuDNN adds a workspace, so the measured peak may run a little above, never far below.
- The latency bench on the GPU names the device it ran on and times with CUDA events.
"""
import pytest
import torch

from benchmarks.gpu_memory import measured_peak
from explorer.latency import BenchSettings, bench
from explorer.memory import memory_report
from explorer.spec import ModelSpec

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
def test_predicted_peak_memory_matches_the_allocator(arch, train):
    spec = ModelSpec(arch, batch=8)
    predicted = memory_report(spec, train=train, optimizer="adam", with_layers=False)["peak_bytes"]
    measured = measured_peak(spec, train)
    # below: something the prediction counts was never allocated; far above: something it misses
    assert 0.97 * predicted <= measured <= 1.15 * predicted, (predicted, measured)


def test_the_gpu_bench_names_its_device():
    result = bench(ModelSpec("resnet18"), BenchSettings(device="cuda", batches=[1, 8], dtype="fp32"))
    assert result["settings"]["device"] == "cuda"
    assert result["settings"]["device_name"] == torch.cuda.get_device_name(0)
    medians = [row["median_ms"] for row in result["results"]]
    assert len(medians) == 2 and all(m > 0 for m in medians)
