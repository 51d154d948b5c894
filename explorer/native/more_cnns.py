"""Registry of further native CNNs (issue 7): name -> builder. Each model lives in its own module."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

BUILDERS: dict[str, Callable[..., nn.Module]] = {}
