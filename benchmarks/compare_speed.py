"""The ready-made comparisons, with latency taken on the CPU (batch 1), must load in under 10 s each:
cost rows for every model, plus a quick latency run per model, uncached."""
import time

from benchmarks.common import print_table
from explorer.compare import READY_MADE, compare_row, spec_from_item
from explorer.latency import bench, quick_settings

QUICK = quick_settings("cpu")  # what the Compare page uses on a CPU server


def main():
    rows = []
    for entry in READY_MADE.values():
        start = time.perf_counter()
        for item in entry["specs"]:
            spec = spec_from_item(item)
            compare_row(spec)
            bench(spec, QUICK)
        rows.append([entry["title"], len(entry["specs"]), f"{time.perf_counter() - start:.1f}", "10"])
    print_table("Ready-made comparisons with CPU latency (seconds)", ["comparison", "models", "seconds", "target"], rows)


if __name__ == "__main__":
    main()
