"""GPU latency targets (run on an NVIDIA GPU; prints why it cannot otherwise):

1. ResNet-50, bf16, channels-last, batch 256: our `bench` throughput within 5 % of an independent
   reference harness written here (a plain CUDA-event loop), and run-to-run spread under 3 %.
2. A full batch sweep 1…256 for ResNet-50 in under 20 s wall time, warm-up included.
"""
import statistics
import time

import torch

from benchmarks.common import print_table
from explorer.latency import MODEL_CACHE, BenchSettings, bench
from explorer.spec import ModelSpec


def reference_throughput(batch: int = 256, iters: int = 50) -> float:
    """Images/s from a plain loop: torchvision ResNet-50, bf16 autocast, channels-last, CUDA events."""
    import torchvision

    model = torchvision.models.resnet50().cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(20):
            model(x)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            model(x)
        end.record()
        end.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / iters
    del model, x
    torch.cuda.empty_cache()
    return batch / seconds


def main():
    if not torch.cuda.is_available():
        print("\nGPU latency: no CUDA device on this machine; run this benchmark on an NVIDIA GPU.")
        return
    spec = ModelSpec("resnet50")
    settings = BenchSettings(device="cuda", batches=(256,), dtype="bf16", channels_last=True)
    ours = [bench(spec, settings)["results"][0]["throughput_per_s"] for _ in range(3)]
    reference = reference_throughput()
    spread = (max(ours) - min(ours)) / statistics.median(ours)
    gap = statistics.median(ours) / reference - 1
    MODEL_CACHE.drop()
    start = time.perf_counter()
    sweep = bench(spec, BenchSettings(device="cuda", batches=(1, 2, 4, 8, 16, 32, 64, 128, 256), dtype="bf16",
                                      channels_last=True))
    sweep_seconds = time.perf_counter() - start
    print_table(
        f"ResNet-50 on {torch.cuda.get_device_name(0)}, bf16 autocast, channels-last",
        ["check", "value", "target"],
        [
            ["our throughput, batch 256 (img/s, 3 runs)", ", ".join(f"{t:.0f}" for t in ours), ""],
            ["reference harness (img/s)", f"{reference:.0f}", ""],
            ["ours vs reference", f"{gap:+.2%}", "within ±5 %"],
            ["run-to-run spread", f"{spread:.2%}", "< 3 %"],
            ["full sweep 1…256 wall time (s)", f"{sweep_seconds:.1f}", "< 20"],
        ],
    )
    print_table("Sweep", ["batch", "median ms", "p10", "p90", "img/s", "TFLOP/s", "GB/s"],
                [[r["batch"], f"{r['median_ms']:.3f}", f"{r['p10_ms']:.3f}", f"{r['p90_ms']:.3f}",
                  f"{r['throughput_per_s']:.0f}", f"{r['achieved_tflops']:.1f}", f"{r['achieved_gb_per_s']:.0f}"]
                 for r in sweep["results"]])


if __name__ == "__main__":
    main()
