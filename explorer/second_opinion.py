"""fvcore's FlopCountAnalysis as an independent second opinion on our MAC count.

fvcore traces the model with torch.jit on real CPU tensors and counts one "flop" per
multiply-accumulate. It also counts normalisation, pooling and upsampling as flops, and
skips ops it has no handle for (scaled-dot-product attention, deformable conv, ...).
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import torch

from explorer.models import build_model, example_input, forward_errors, input_size_of
from explorer.spec import ModelSpec

# fvcore op names that count things our MACs deliberately leave to "elementwise ops".
_NON_MAC_OPS = {"batch_norm", "group_norm", "layer_norm", "instance_norm", "upsample_nearest2d",
                "upsample_bilinear2d", "adaptive_avg_pool2d"}


def fvcore_count(spec: ModelSpec) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import touches deprecated torch.jit APIs
        from fvcore.nn import FlopCountAnalysis

    size = input_size_of(spec)
    with forward_errors(spec, size):
        model = build_model(spec, device="cpu")
        inputs = example_input(spec, "cpu")
        start = time.perf_counter()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            logging.getLogger("fvcore").setLevel(logging.ERROR)
            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            total = analysis.total()
            by_operator = dict(analysis.by_operator())
            unsupported = dict(analysis.unsupported_ops())
        seconds = time.perf_counter() - start
    non_mac = sum(v for k, v in by_operator.items() if k in _NON_MAC_OPS)
    return {
        "total": int(total),
        "mac_ops_total": int(total - non_mac),
        "non_mac_total": int(non_mac),
        "by_operator": {k: int(v) for k, v in by_operator.items()},
        "unsupported_ops": {k: int(v) for k, v in unsupported.items()},
        "seconds": seconds,
    }


def explain_difference(our_macs: int, fv: dict[str, Any]) -> list[str]:
    """Why fvcore's total differs from ours, in sentences a person can check."""
    reasons = []
    if fv["non_mac_total"]:
        counted = ", ".join(sorted(k for k in fv["by_operator"] if k in _NON_MAC_OPS))
        reasons.append(
            f"fvcore adds {fv['non_mac_total']:,} operations (counted as if MACs) for {counted}; "
            "we report those as elementwise ops, not MACs."
        )
    skipped = {k: v for k, v in fv["unsupported_ops"].items()}
    missed = [k for k in skipped if any(w in k for w in ("scaled_dot_product", "deform", "attention", "roi_align", "grid_sampler"))]
    if missed:
        reasons.append(f"fvcore has no formula for {', '.join(sorted(missed))}, so it counts them as zero; we cost them.")
    gap = our_macs - fv["mac_ops_total"]
    if not reasons and gap == 0:
        reasons.append("Both count the same multiply-accumulates.")
    elif abs(gap) > 0.001 * max(our_macs, 1) and not missed:
        reasons.append(f"A remaining gap of {gap:,} MACs: fvcore's per-op formulas (e.g. einsum, matmul broadcasting) differ from ours.")
    return reasons
