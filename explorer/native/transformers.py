"""Registry of native transformers and MLPs (issue 8): name -> builder. Each model lives in its own module."""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

BUILDERS: dict[str, Callable[..., nn.Module]] = {}

# Import the modules, not their builder functions, so that the submodule names stay free.
from explorer.native import as_mlp as _as_mlp  # noqa: E402
from explorer.native import cyclemlp as _cyclemlp  # noqa: E402
from explorer.native import pvt_v1 as _pvt_v1  # noqa: E402
from explorer.native import repmlp as _repmlp  # noqa: E402

BUILDERS.update(_pvt_v1.BUILDERS)  # pvt_v1_tiny / small / medium / large
BUILDERS.update(_cyclemlp.BUILDERS)  # cyclemlp_b1 .. b5
BUILDERS.update(_as_mlp.BUILDERS)  # as_mlp_t / s / b
BUILDERS.update(_repmlp.BUILDERS)  # repmlp (RepMLP-Res50-light-224)

# Sequence and graph models: Transformer (base), BERT (base, large), Seq2Seq LSTM; GCN.
from explorer.native import gcn as _gcn, sequence as _sequence  # noqa: E402

BUILDERS.update(_sequence.BUILDERS)  # transformer_base, bert_base, bert_large, seq2seq_lstm
BUILDERS.update(_gcn.BUILDERS)  # gcn

# Detection and 3-D segmentation: DETR (R50), UNETR.
from explorer.native import detr as _detr, unetr as _unetr  # noqa: E402

BUILDERS.update({**_detr.BUILDERS, **_unetr.BUILDERS})  # detr_r50, unetr

# Detectors: RefineDet320, M2Det320 (VGG-16), Libra R-CNN, GA-RPN (ResNet-50-FPN), YOLOv3 + ASFF.
from explorer.native import asff as _asff, ga_rpn as _ga_rpn, libra_rcnn as _libra_rcnn  # noqa: E402
from explorer.native import m2det as _m2det, refinedet as _refinedet  # noqa: E402

BUILDERS.update({**_refinedet.BUILDERS, **_m2det.BUILDERS, **_libra_rcnn.BUILDERS, **_ga_rpn.BUILDERS,
                 **_asff.BUILDERS})
