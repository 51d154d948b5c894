"""Architectures no library provides, written from their papers.

NATIVE_BUILDERS maps a catalog builder name ("native:NAME" -> NAME) to a function that takes the spec's
options as keyword arguments and returns an nn.Module. Each builder registers itself in its family's own
file with `explorer.native.registry.register_model`; importing this package imports every family's file
once (below), which fills the registry. A catalog variant whose name is missing here is listed as "needs a
native implementation" and cannot be built yet.

To add a model: write its file here, decorate its builder with @register_model, import the file below,
and run `python -m explorer measure-catalog --write`; tests/native/test_native_contract.py then checks it.
"""
from __future__ import annotations

from explorer.native.registry import NATIVE_BUILDERS, NATIVE_MODELS, NativeModel, register_model

# Every family's file, once: each registers its own builders. (Modules, not functions, are imported, so
# `explorer.native.bn_inception` etc. stay the submodules.)
from explorer.native import (  # noqa: E402, F401  (imported for their registrations)
    alexnet_original,
    as_mlp,
    asff,
    bn_inception,
    channelnets,
    condensenet,
    cyclemlp,
    darknet,
    detr,
    espnet,
    ga_rpn,
    gcn,
    hrnet_necks,
    igcv,
    igcv2,
    inception_resnet_v1,
    lenet,
    libra_rcnn,
    m2det,
    micronet,
    peleenet,
    pvt_v1,
    refinedet,
    repmlp,
    sequence,
    shufflenet_v1,
    spinenet,
    unetr,
    weightnet_net,
)

__all__ = ["NATIVE_BUILDERS", "NATIVE_MODELS", "NativeModel", "register_model"]
