"""A spec is resolved against the catalog once where it enters the engine (explorer.models.resolve_spec), and the
resolved spec gives the same input, example input and model as the plain spec does."""
import pytest
import torch

import explorer.models as models
from explorer.cost import analyse
from explorer.models import ResolvedSpec, build_model, example_input, input_size_of, resolve_spec
from explorer.spec import ModelSpec


@pytest.mark.parametrize("arch", ["resnet18", "timm:resnet18"])
def test_a_cost_request_resolves_its_spec_once(monkeypatch, arch):
    calls = []
    real = models.resolve
    monkeypatch.setattr(models, "resolve", lambda name: calls.append(name) or real(name))
    report = analyse(ModelSpec(arch, input_size=(3, 40, 40)))  # with layers: never served from a cache
    assert report["traced_on"] == "meta" and report["input_shape"] == [1, 3, 40, 40]
    assert calls == [arch]  # input size, input check, builder options, build, example input: one resolution


@pytest.mark.parametrize("spec, shape", [
    (ModelSpec("resnet18"), (1, 3, 224, 224)),  # the variant's native size
    (ModelSpec("vit_b_16", input_size=(3, 64, 64), batch=2), (2, 3, 64, 64)),  # the spec's own
    (ModelSpec("bert_base", input_size=(8,)), (1, 8)),  # token ids
])
def test_the_resolved_spec_gives_what_the_plain_spec_does(spec, shape):
    resolved = resolve_spec(spec)
    assert resolved.input_shape == shape and resolved.input_size == input_size_of(spec) == input_size_of(resolved)
    assert resolve_spec(resolved) is resolved
    plain, once = example_input(spec), example_input(resolved)
    assert plain.dtype == once.dtype and torch.equal(plain, once)
    sizes = [sum(p.numel() for p in build_model(s, "meta").parameters()) for s in (spec, resolved)]
    assert sizes[0] == sizes[1] > 0
    assert resolved.with_batch(4).input_shape == (4, *shape[1:]) and resolved.with_batch(4).variant is resolved.variant


def test_resolved_specs_are_equal_and_hash_as_their_spec():
    a, b = resolve_spec(ModelSpec("resnet18")), resolve_spec(ModelSpec("resnet18"))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != resolve_spec(ModelSpec("resnet18", batch=2)) and a != ModelSpec("resnet18")
    assert isinstance(a, ResolvedSpec) and a.variant.id == "resnet18"
