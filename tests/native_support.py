"""Helpers shared by the native-model tests.

Cost reports and small real forwards are computed once per test session, whichever file asks first:
tests/native/test_native_contract.py asks for every registered model, the family files for the ones they examine.
"""
import torch

from explorer.cost import analyse
from explorer.models import build_model, example_input
from explorer.native import NATIVE_MODELS
from explorer.spec import ModelSpec

_REPORTS: dict[str, dict] = {}
_SMALL_OUTPUTS: dict[str, object] = {}


def cost_report(arch: str) -> dict:
    """The engine's report (with per-layer rows) at the catalog input, once per session. Every op has a
    cost formula, except those the model's registration declares uncosted (a detector's NMS, top-k)."""
    if arch not in _REPORTS:
        report = analyse(ModelSpec(arch))
        declared = NATIVE_MODELS[arch].uncosted_ops if arch in NATIVE_MODELS else frozenset()
        assert {u["op"] for u in report["uncounted_ops"]} == set(declared), arch
        _REPORTS[arch] = report
    return _REPORTS[arch]


class CostReports:
    """Cost reports by catalog id (see cost_report); kept as a callable for the family files."""

    def __call__(self, arch: str) -> dict:
        return cost_report(arch)


def small_spec(arch: str) -> ModelSpec:
    """The registered model at its small input (the catalog input where it registers none)."""
    model = NATIVE_MODELS[arch]
    return ModelSpec(arch, input_size=model.small_input, options=model.small_options)


def tensors_in(value) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, or nested dicts / lists / tuples of them)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in tensors_in(item)]
    return []


def small_forward(arch: str):
    """The output of one real CPU forward at the small input (seeded weights and input), as the model
    returns it, once per session; only the output is kept, not the model."""
    if arch not in _SMALL_OUTPUTS:
        spec = small_spec(arch)
        torch.manual_seed(0)
        model = build_model(spec)
        x = example_input(spec)
        vocab = dict(spec.options).get("src_vocab", dict(spec.options).get("vocab_size"))
        if vocab and not x.is_floating_point():  # token ids for a vocabulary the small options shrank
            x = x % vocab
        with torch.no_grad():
            _SMALL_OUTPUTS[arch] = model(x)
    return _SMALL_OUTPUTS[arch]


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
