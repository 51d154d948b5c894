"""Architectures no library provides, written from their papers.

NATIVE_BUILDERS maps a catalog builder name ("native:NAME" -> NAME) to a function
that takes the spec's options as keyword arguments and returns an nn.Module.
A catalog variant whose name is missing here is listed as "needs a native
implementation" and cannot be built yet.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

NATIVE_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
