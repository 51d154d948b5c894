"""Registry of further native CNNs (issue 7): name -> builder. Each model lives in its own module."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

BUILDERS: dict[str, Callable[..., nn.Module]] = {}

# Lightweight CNNs: PeleeNet, ESPNet / ESPNetv2, IGCV1 / IGCV3, CondenseNet.
from explorer.native import condensenet as _condensenet  # noqa: E402
from explorer.native import espnet as _espnet  # noqa: E402
from explorer.native import igcv as _igcv  # noqa: E402
from explorer.native import peleenet as _peleenet  # noqa: E402

BUILDERS.update({
    "peleenet": _peleenet.peleenet,
    "espnet": _espnet.espnet,
    "espnetv2": _espnet.espnetv2,
    "igcv1": _igcv.igcv1,
    "igcv3": _igcv.igcv3,
    "condensenet": _condensenet.condensenet,
})

# Lightweight CNNs with dynamic / channel-wise convs: WeightNet (ShuffleNetV2 1.0× backbone),
# ChannelNet-v1, MicroNet M0–M3.
from explorer.native import channelnets as _channelnets  # noqa: E402
from explorer.native import micronet as _micronet  # noqa: E402
from explorer.native import weightnet_net as _weightnet_net  # noqa: E402

BUILDERS.update({
    "weightnet": _weightnet_net.weightnet,
    "channelnets": _channelnets.channelnets,
    "micronet_m0": _micronet.micronet_m0,
    "micronet_m1": _micronet.micronet_m1,
    "micronet_m2": _micronet.micronet_m2,
    "micronet_m3": _micronet.micronet_m3,
})

# SpineNet-49S/49/96/143/190 (RetinaNet detectors), HRNet V1/V2/V2p necks on timm's HRNet-W18, IGCV2.
from explorer.native import hrnet_necks as _hrnet_necks  # noqa: E402
from explorer.native import igcv2 as _igcv2  # noqa: E402
from explorer.native import spinenet as _spinenet  # noqa: E402

BUILDERS.update({**_spinenet.BUILDERS, **_hrnet_necks.BUILDERS, **_igcv2.BUILDERS})
