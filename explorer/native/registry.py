"""The registry of native models: every builder registers itself, in its own family's file.

    @register_model
    def lenet5(num_classes: int = 10, in_channels: int = 1) -> LeNet5: ...

    register_model("spinenet49", functools.partial(spinenet, "49"), small_input=(3, 128, 128))

As timm's `register_model` (timm/models/_registry.py) a decorator puts a builder in one mapping under its
name; as torchvision's (torchvision/models/_api.py) it refuses a name that is already taken, so two files
cannot silently fight over one model. `NATIVE_BUILDERS` is the mapping the engine reads (a catalog builder
"native:NAME" is NATIVE_BUILDERS[NAME]); `NATIVE_MODELS` keeps the facts a builder registers beside it.
explorer/native/__init__.py imports every family's file once, which fills both.

This module imports nothing from the engine: family files import it, and it must stay below all of them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

Builder = Callable[..., nn.Module]

NATIVE_BUILDERS: dict[str, Builder] = {}


@dataclass(frozen=True)
class NativeModel:
    """A registered builder and the facts its file states about it.

    small_input: an input size (without the batch) the model takes that is much cheaper than its catalog
        input, for quick real forwards (tests, smoke checks); None where only the catalog input works.
    small_options: builder options that go with small_input: a model built for one resolution, or, where
        the full build alone takes many seconds (BERT-large, Seq2Seq), fewer repeats of the same layer or
        smaller vocabularies, so that the same code still runs.
    uncosted_ops: aten / torchvision ops the engine deliberately has no formula for in this model (a
        detector's data-dependent post-processing: top-k, NMS); every other op must be costed.
    """

    name: str
    builder: Builder
    module: str
    small_input: tuple[int, ...] | None = None
    small_options: tuple[tuple[str, Any], ...] = ()
    uncosted_ops: frozenset[str] = frozenset()


NATIVE_MODELS: dict[str, NativeModel] = {}


def _module_of(builder: Builder) -> str:
    if isinstance(builder, functools.partial):
        return _module_of(builder.func)
    return getattr(builder, "__module__", "") or ""


def _register(name: str, builder: Builder, small_input, small_options, uncosted_ops) -> Builder:
    if not name or not name.isidentifier():
        raise ValueError(f"a native model's name must be an identifier, got {name!r}")
    if name in NATIVE_BUILDERS:
        raise ValueError(f"native model {name!r} is already registered by {NATIVE_MODELS[name].module}")
    NATIVE_BUILDERS[name] = builder
    NATIVE_MODELS[name] = NativeModel(
        name=name, builder=builder, module=_module_of(builder),
        small_input=tuple(small_input) if small_input is not None else None,
        small_options=tuple(dict(small_options or {}).items()), uncosted_ops=frozenset(uncosted_ops))
    return builder


def register_model(name: str | Builder | None = None, builder: Builder | None = None, *,
                   small_input: tuple[int, ...] | None = None, small_options: dict[str, Any] | None = None,
                   uncosted_ops=()):
    """Register a native builder under `name` (the function's own name by default).

    Three forms: `@register_model` and `@register_model("name", small_input=...)` on a builder function;
    `register_model("name", builder, ...)` for a variant made with functools.partial. Returns the builder
    (or a decorator that does), unchanged. A name that is already registered is refused (ValueError).
    """
    if callable(name):  # bare @register_model
        return _register(name.__name__, name, small_input, small_options, uncosted_ops)
    if builder is not None:
        return _register(name, builder, small_input, small_options, uncosted_ops)

    def decorator(function: Builder) -> Builder:
        return _register(name or function.__name__, function, small_input, small_options, uncosted_ops)

    return decorator


def models_in(module_name: str) -> dict[str, Builder]:
    """The builders a family's file registered (its module's __name__), by name."""
    return {name: model.builder for name, model in NATIVE_MODELS.items() if model.module == module_name}
