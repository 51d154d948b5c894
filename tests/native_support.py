"""Helpers shared by the native-model tests."""
import torch

from explorer.cost import analyse
from explorer.models import build_model, example_input
from explorer.spec import ModelSpec


class CostReports:
    """Cost reports computed once per test module; each asserts that every op has a cost formula."""

    def __init__(self):
        self._cache = {}

    def __call__(self, arch: str) -> dict:
        if arch not in self._cache:
            self._cache[arch] = analyse(ModelSpec(arch))
            assert self._cache[arch]["uncounted_ops"] == [], arch
        return self._cache[arch]


def run_forward(arch: str, **options) -> torch.Tensor:
    """A real CPU forward at the model's native input; the output must be finite."""
    spec = ModelSpec(arch, options=tuple(options.items()))
    model = build_model(spec)
    with torch.no_grad():
        out = model(example_input(spec))
    assert torch.isfinite(out).all()
    return out


def shapes(report) -> dict:
    return {row["name"]: row["output_shape"] for row in report["layers"]}
