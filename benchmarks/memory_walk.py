"""Walk through 30 catalog models as a person would (cost analysis, then a short latency run) and
print the process's resident memory and GPU memory after each: both must stay flat, because the
model cache is bounded (count and bytes)."""
import resource

import torch

from benchmarks.common import print_table
from explorer.devices import best_device
from explorer.catalog import load_catalog
from explorer.cost import analyse
from explorer.latency import MODEL_CACHE, BenchSettings, bench
from explorer.measured import load_measured
from explorer.spec import ModelSpec


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(count: int = 30):
    device = best_device()
    measured = load_measured()
    # The 30 cheapest buildable models at their native input (so the CPU walk stays short).
    ids = sorted((v.id for v in load_catalog().variants.values() if v.implemented and "macs" in measured.get(v.id, {})),
                 key=lambda i: measured[i]["macs"])[:count]
    settings = BenchSettings(device=device, batches=(1,), min_runs=3, min_seconds=0.05, max_seconds=3)
    rows = []
    for step, model_id in enumerate(ids, 1):
        spec = ModelSpec(model_id)
        analyse(spec)
        result = bench(spec, settings)
        gpu = torch.cuda.memory_allocated() / 2**20 if device == "cuda" else 0.0
        ms = f"{result['results'][0]['median_ms']:.2f}" if result["results"] else result["error"]
        rows.append([step, model_id, ms, f"{rss_mb():.0f}", f"{gpu:.0f}", len(MODEL_CACHE)])
    print_table(f"Memory along a walk through {len(ids)} models on {device} (cache holds at most {MODEL_CACHE.max_models})",
                ["step", "model", "latency ms (batch 1)", "RSS MB", "GPU allocated MB", "models cached"], rows)


if __name__ == "__main__":
    main()
