"""Architectures no library provides, written from their papers.

NATIVE_BUILDERS maps a catalog builder name ("native:NAME" -> NAME) to a function
that takes the spec's options as keyword arguments and returns an nn.Module.
A catalog variant whose name is missing here is listed as "needs a native
implementation" and cannot be built yet.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch.nn as nn

# Import the modules, not their builder functions, so that `explorer.native.bn_inception` etc.
# stay the submodules (a function of the same name would shadow them).
from explorer.native import alexnet_original as _alexnet_original
from explorer.native import bn_inception as _bn_inception
from explorer.native import darknet as _darknet
from explorer.native import inception_resnet_v1 as _inception_resnet_v1
from explorer.native import lenet as _lenet
from explorer.native import shufflenet_v1 as _shufflenet_v1

NATIVE_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": _lenet.lenet5,
    "alexnet_original": _alexnet_original.alexnet_original,
    "darknet19": _darknet.darknet19,
    "bn_inception": _bn_inception.bn_inception,
    "inception_resnet_v1": _inception_resnet_v1.inception_resnet_v1,
}
for _name, (_groups, _width) in _shufflenet_v1.VARIANTS.items():
    NATIVE_BUILDERS[_name] = functools.partial(_shufflenet_v1.shufflenet_v1, groups=_groups, width=_width)

# More native models register themselves in these modules' BUILDERS (one file per group of work).
from explorer.native import more_cnns as _more_cnns  # noqa: E402
from explorer.native import transformers as _transformers  # noqa: E402

NATIVE_BUILDERS.update(_more_cnns.BUILDERS)
NATIVE_BUILDERS.update(_transformers.BUILDERS)
