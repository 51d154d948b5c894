"""The contract every registered native model keeps, checked once per model of the registry.

- it is a catalog variant, and every catalog variant built by "native:NAME" is registered;
- the engine costs it at its catalog input (built on the meta device; a detector whose forward depends
  on data is traced on the CPU) with every op costed, except the ops its registration declares uncosted;
- its params and MACs equal explorer/data/measured_costs.json, the one place the measured figures are
  pinned (`python -m explorer measure-catalog --write` rewrites it after a deliberate change);
- a real CPU forward at its registered small input is finite.

What is particular to a paper (a published figure, a hand count, a structure) stays in the family's own
tests/native/ family file.
"""
import ast
import math
from pathlib import Path

import pytest
import torch

from explorer.catalog import load_catalog
from explorer.measured import load_measured
from explorer.native import NATIVE_BUILDERS, NATIVE_MODELS, register_model
from explorer.native.registry import models_in
from tests.native_support import cost_report, small_forward, tensors_in

NATIVE_DIR = Path(__file__).resolve().parents[2] / "explorer" / "native"
ARCHS = sorted(NATIVE_BUILDERS)


def _registering_files() -> set[str]:
    """Module names of the files in explorer/native that call register_model."""
    names = set()
    for path in NATIVE_DIR.glob("*.py"):
        if path.name == "registry.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # A use as a name (decorator or call); importing it is an alias, not a Name.
        if any(isinstance(node, ast.Name) and node.id == "register_model" for node in ast.walk(tree)):
            names.add(f"explorer.native.{path.stem}")
    return names


def test_every_registering_file_is_imported_and_registers_what_it_says():
    registered_from = {model.module for model in NATIVE_MODELS.values()}
    assert registered_from == _registering_files()  # a file not imported in __init__ would be missing here
    assert sum(len(models_in(module)) for module in registered_from) == len(NATIVE_BUILDERS) == 67
    assert all(NATIVE_BUILDERS[name] is model.builder for name, model in NATIVE_MODELS.items())


def test_the_registry_and_the_catalog_agree():
    native = {v.name: v for v in load_catalog().variants.values() if v.builder.startswith("native:")}
    assert set(NATIVE_BUILDERS) <= set(native)
    assert {name for name, v in native.items() if v.implemented} == set(NATIVE_BUILDERS)
    assert all(native[name].id == name for name in NATIVE_BUILDERS)  # measured_costs.json is keyed by id


def test_register_model_refuses_a_name_already_taken():
    before = dict(NATIVE_BUILDERS)
    with pytest.raises(ValueError, match="'lenet5' is already registered by explorer.native.lenet"):
        register_model("lenet5", lambda: torch.nn.Identity())
    with pytest.raises(ValueError, match="already registered"):
        @register_model
        def darknet19():  # noqa: F811 - the point of the test
            return torch.nn.Identity()
    with pytest.raises(ValueError, match="must be an identifier"):
        register_model("not a name", lambda: torch.nn.Identity())
    assert NATIVE_BUILDERS == before


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_costed_on_meta_and_equal_to_the_measured_table(arch):
    report = cost_report(arch)  # asserts: every op costed but the declared ones
    measured = load_measured()[arch]
    assert report["input_shape"] == measured["input_shape"]
    assert (report["params"], report["macs"]) == (measured["params"], measured["macs"])
    assert report["params"] > 0 and report["macs"] > 0
    declared = NATIVE_MODELS[arch].uncosted_ops
    assert report["traced_on"] == ("cpu" if declared else "meta")  # only data-dependent detectors leave meta


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_real_cpu_forward_at_the_small_input_is_finite(arch):
    model = NATIVE_MODELS[arch]
    if model.small_input is not None:  # a small input must be smaller than the catalog's, or why register it
        catalog_size = load_measured()[arch]["input_shape"][1:]
        assert math.prod(model.small_input) < math.prod(catalog_size)
    outputs = tensors_in(small_forward(arch))
    floats = [t for t in outputs if t.is_floating_point()]
    assert floats and all(torch.isfinite(t).all() for t in floats)
