"""Cost analysis time (ours, on the meta device) against fvcore's FlopCountAnalysis, same models, same run.

Target: resnet50 at 224 under 0.5 s on the 2-core machine, and well ahead of fvcore.
"""
import os
import warnings

import torch

from benchmarks.common import print_table, timed
from explorer.cost import analyse
from explorer.models import build_model, example_input
from explorer.spec import ModelSpec

MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "swin_t", "densenet121"]


def fvcore_seconds(spec: ModelSpec) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

    def run():
        model = build_model(spec, "cpu")
        with torch.no_grad():
            analysis = FlopCountAnalysis(model, example_input(spec, "cpu"))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.total()

    return timed(run, repeats=3)


def main():
    rows = []
    for name in MODELS:
        spec = ModelSpec(name)
        first, ours = timed(lambda: analyse(spec), repeats=5)  # noqa: B023 - called at once, in this iteration
        _, theirs = fvcore_seconds(spec)
        rows.append([name, f"{first:.3f}", f"{ours:.3f}", f"{theirs:.3f}", f"{theirs / ours:.1f}×"])
    print_table(
        f"Cost analysis, 1×3×native input, {torch.get_num_threads()} threads, {os.cpu_count()} cores (seconds, build included)",
        ["model", "ours first call", "ours median", "fvcore median", "fvcore / ours"],
        rows,
    )


if __name__ == "__main__":
    main()
