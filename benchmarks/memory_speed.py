"""Memory report time (explorer.memory, on the meta device): inference, a training step with Adam, and the
largest batch that fits 24 GB.

Target: the ResNet-50 training-step memory report (one meta trace of forward, backward and Adam's step, per-layer
rows included) under 1 s on the 2-core machine. Measured 2026-12-03 at batch 8 with six other jobs sharing the two
cores (load average 16): 0.65–0.93 s wall, 0.25 s of CPU; inference 0.14 s; largest training batch in 24 GB in
5–6 traces.
"""
import os
import time

import torch

from benchmarks.common import print_table, timed
from explorer.memory import largest_batch, memory_report
from explorer.spec import ModelSpec

MODELS = ["resnet50", "mobilenet_v2", "vit_b_16", "swin_t"]


def main():
    rows = []
    for name in MODELS:
        spec = ModelSpec(name, batch=8)
        _, inference = timed(lambda spec=spec: memory_report(spec), repeats=3)
        first, training = timed(lambda spec=spec: memory_report(spec, train=True, optimizer="adam"), repeats=3)
        report = memory_report(spec, train=True, optimizer="adam", with_layers=False)
        start = time.perf_counter()
        answer = largest_batch(spec, 24 * 10**9, train=True)
        fits = time.perf_counter() - start
        rows.append([name, f"{inference:.3f}", f"{first:.3f}", f"{training:.3f}", f"{fits:.2f}",
                     f"{answer['largest_batch']} ({answer['traces']} traces)", f"{report['peak_bytes'] / 1e9:.2f}"])
    print_table(
        f"Memory report, batch 8, fp32, {torch.get_num_threads()} threads, {os.cpu_count()} cores (seconds; "
        "model build cached after the first call)",
        ["model", "inference median", "training first", "training median", "fits 24 GB (training)",
         "largest training batch", "training peak GB"],
        rows,
    )


if __name__ == "__main__":
    main()
