"""Declared types and ranges of options: the swap blocks' (``attn:se(reduction=8)``) and the model builders'.

Every option a person can set from a URL, a form or the CLI has a ``Rule`` here; a value outside it is refused
before any module is built (a NaN reduction, a window of 100 000 tokens or a million classes would otherwise
reach a constructor and take the machine's memory or report nonsense).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from explorer.spec import MAX_SIDE


@dataclass(frozen=True)
class Rule:
    """What one option takes: "int" (whole number in [low, high], odd only if ``odd``), "float" (finite number in
    [low, high]), "bool", "choice" (one of ``choices``, same type) or "text" (a short string the builder checks).
    ``optional``: null (None) is also accepted and means the builder's default."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    odd: bool = False
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind == "int":
            return (isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
                    and (not self.odd or value % 2 == 1))
        if self.kind == "float":
            return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and self.low <= value <= self.high)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return any(type(value) is type(c) and value == c for c in self.choices)
        if self.kind == "text":
            return isinstance(value, str) and 0 < len(value) <= MAX_TEXT
        raise ValueError(f"unknown rule kind {self.kind!r}")

    def requirement(self, name: str) -> str:
        """'a whole-number reduction from 1 to 1024', 'kind= one of dot, additive', ..."""
        if self.kind == "int":
            text = f"{'an odd' if self.odd else 'a'} whole-number {name} from {_num(self.low)} to {_num(self.high)}"
        elif self.kind == "float":
            text = f"a finite number {name} from {_num(self.low)} to {_num(self.high)}"
        elif self.kind == "bool":
            text = f"{name}=true or false"
        elif self.kind == "choice":
            text = f"{name}= one of {', '.join(str(c) if c != '' else EMPTY_TEXT for c in self.choices)}"
        else:
            text = f"{name} as text of 1 to {MAX_TEXT} characters"
        return text + (" (or null)" if self.optional else "")


MAX_TEXT = 64
EMPTY_TEXT = '""'


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def show_value(value: Any) -> str:
    """A value as it may appear in a one-line message: JSON-like, escaped, at most 40 characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, int):
        digits = len(str(abs(value))) if abs(value) < 10 ** 40 else None
        text = str(value) if digits is not None else f"{'-' if value < 0 else ''}a number of over 40 digits"
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = ascii(str(value))
    return text if len(text) <= 40 else text[:39] + "…"


def _int(low: int, high: int, **kw) -> Rule:
    return Rule("int", low, high, **kw)


def _float(low: float, high: float, **kw) -> Rule:
    return Rule("float", float(low), float(high), **kw)


BOOL = Rule("bool")
TEXT = Rule("text")
PROBABILITY = _float(0, 1)
REDUCTION = _int(1, 1024)  # a channel divisor: beyond the widest layer every hidden width is 1 anyway
GROUPS = _int(1, 1024)
NORM_NAME = Rule("choice", choices=("bn", "gn", "ln", "none"), optional=True)
ACT_NAME = Rule("choice", choices=("relu", "relu6", "hswish", "gelu", "silu", "none"), optional=True)
EPS = _float(1e-12, 1)

# --- swap blocks: (action, block) -> {option: rule} -------------------------------------------------------
# Options that take a tuple (sk's dilations, psconv's pattern) cannot be written in a swap (its values are
# JSON scalars), so they keep their defaults and are not listed. Options with capitals (doconv's D_mul,
# weightnet's M and G) cannot be written either (swap option names are lower case); they are listed with
# their ranges so that a block built from Python is held to the same limits.
SWAP_OPTIONS: dict[tuple[str, str], dict[str, Rule]] = {
    ("attn", "none"): {},
    ("attn", "se"): {"reduction": REDUCTION},
    ("attn", "eca"): {"gamma": _float(0.25, 16), "b": _float(-16, 16), "kernel_size": _int(1, 63, odd=True, optional=True)},
    ("attn", "cbam"): {"reduction": REDUCTION, "spatial_kernel": _int(1, 31, odd=True), "spatial_bn": BOOL},
    ("attn", "sk"): {"groups": GROUPS, "reduction": REDUCTION, "min_dim": _int(1, 4096)},
    ("attn", "gc"): {"ratio": _float(1 / 64, 4), "fusion": Rule("choice", choices=("add", "mul"))},
    ("attn", "sse"): {},
    ("attn", "scse"): {"reduction": REDUCTION, "mode": Rule("choice", choices=("add", "max"))},
    ("attn", "ulsam"): {"subspaces": GROUPS, "norm_act": BOOL},
    ("conv", "conv"): {"padding_mode": Rule("choice", choices=("zeros",))},
    ("conv", "dwsep"): {"depth_multiplier": _int(1, 16), "norm": NORM_NAME, "act": ACT_NAME},
    ("conv", "shuffle"): {"groups": GROUPS},
    ("conv", "igc"): {"secondary": GROUPS},
    ("conv", "igcv2"): {"chain": _int(2, 8)},  # the width search grows with the chain (see InterleavedSparseConv)
    ("conv", "ghost"): {"ratio": _int(2, 16), "dw_size": _int(1, 15, odd=True), "norm": NORM_NAME, "act": ACT_NAME},
    ("conv", "dcn"): {"offset_groups": GROUPS},
    ("conv", "dcnv2"): {"offset_groups": GROUPS, "mask_scale": _float(0, 16)},
    ("conv", "doconv"): {"D_mul": _int(1, 1024, optional=True)},
    ("conv", "psconv"): {},
    ("conv", "condconv"): {"num_experts": _int(1, 64), "dropout": PROBABILITY},
    ("conv", "weightnet"): {"M": _int(1, 64), "G": _int(1, 64), "reduction": REDUCTION, "min_reduced": _int(1, 4096)},
    ("conv", "sk"): {"sk_groups": GROUPS, "reduction": REDUCTION, "min_dim": _int(1, 4096)},
    ("conv", "repvgg"): {"use_1x1": BOOL, "use_identity": BOOL},
    ("conv", "dbb"): {"internal_channels": _int(1, 4096, optional=True)},
    ("act", "relu"): {"inplace": BOOL},
    ("act", "relu6"): {"inplace": BOOL},
    ("act", "hswish"): {"inplace": BOOL},
    ("act", "silu"): {"inplace": BOOL},
    ("act", "gelu"): {"approximate": Rule("choice", choices=("none", "tanh"))},
    ("norm", "bn"): {"eps": EPS, "momentum": PROBABILITY},
    ("norm", "gn"): {"max_groups": GROUPS, "eps": EPS},
    ("norm", "ln"): {"eps": EPS},
    ("front", "stn"): {"hidden": _int(1, 1024), "fc_hidden": _int(1, 4096),
                       "mode": Rule("choice", choices=("bilinear", "nearest", "bicubic")),
                       "padding_mode": Rule("choice", choices=("zeros", "border", "reflection")),
                       "align_corners": BOOL},
    # Transformer settings. A window or patch is also held to the model's token map / input when it is applied.
    ("tfm", "window"): {"size": _int(1, 1024)},  # 4096-pixel sides / 4-pixel patches = 1024 tokens at most
    ("tfm", "shift"): {"size": _int(0, 1023)},
    ("tfm", "patch"): {"size": _int(1, 4096)},
    ("tfm", "score"): {"kind": Rule("choice", choices=("dot", "scaled_dot", "general", "additive"))},
}

# --- builder options: option name -> rule ------------------------------------------------------------
# ImageNet-21k heads have 21843 outputs (timm's in21k models), the largest label set a published model uses;
# a million classes would add ~2 GB of weights to a ResNet-50.
MAX_CLASSES = 21843

BUILDER_OPTIONS: dict[str, Rule] = {
    "num_classes": _int(1, MAX_CLASSES),
    # training-only rates: no effect on the costs, accepted because papers' configurations name them
    "dropout": PROBABILITY, "attention_dropout": PROBABILITY, "stochastic_depth_prob": PROBABILITY,
    "drop_rate": PROBABILITY, "drop_path_rate": PROBABILITY, "drop_block_rate": PROBABILITY,
    "proj_drop_rate": PROBABILITY, "attn_drop_rate": PROBABILITY, "pos_drop_rate": PROBABILITY,
    "image_size": _int(1, MAX_SIDE), "img_size": _int(1, MAX_SIDE),
    "in_chans": _int(1, 64), "in_channels": _int(1, 64),
    "global_pool": Rule("choice", choices=("", "avg", "max", "avgmax", "catavgmax", "fast", "token", "map")),
    "output_stride": Rule("choice", choices=(8, 16, 32)),
    "width_mult": _float(0.1, 4),
    "aux_logits": BOOL, "transform_input": BOOL, "aux_loss": BOOL,
    # detection: the resize inside the detector and the number of proposals / detections it keeps
    "min_size": _int(32, MAX_SIDE), "max_size": _int(32, MAX_SIDE),
    "box_detections_per_img": _int(1, 1000), "detections_per_img": _int(1, 1000),
    "rpn_pre_nms_top_n_test": _int(1, 10000), "rpn_post_nms_top_n_test": _int(1, 10000),
    "topk_candidates": _int(1, 10000), "num_keypoints": _int(1, 1000),
    # native (roster) models' own options
    "scale_a": PROBABILITY, "scale_b": PROBABILITY, "scale_c": PROBABILITY,  # Inception-ResNet residual scales
    "feature_size": _int(1, 256),  # UNETR
    "endpoint_filters": _int(1, 4096, optional=True),  # SpineNet
    "out_channels": _int(1, 4096),
    "width": Rule("choice", choices=(18, 30, 32, 40, 44, 48, 64)),  # HRNet: timm's hrnet_w{width} bodies
    "num_queries": _int(1, 10000),  # DETR
    "primary": _int(1, 4096), "secondary": _int(1, 4096),  # IGCV1
    "alpha2": _int(1, 64), "alpha3": _int(1, 64),  # ESPNet
    "scale": _float(0.1, 4),  # ESPNetv2
    "shift_size": _int(1, 63, odd=True),  # AS-MLP
    "deploy": BOOL,  # RepMLP
    "activation": TEXT,  # SpineNet (checked by its builder)
    # sequence models (Transformer, BERT, Seq2Seq)
    "vocab_size": _int(1, 262144), "src_vocab": _int(1, 262144), "tgt_vocab": _int(1, 262144),
    "d_model": _int(1, 8192), "hidden": _int(1, 8192), "embed_dim": _int(1, 8192),
    "num_heads": _int(1, 256), "d_ff": _int(1, 65536), "intermediate": _int(1, 65536, optional=True),
    "num_layers": _int(1, 128), "max_positions": _int(1, 65536), "type_vocab_size": _int(1, 1024),
    "init_range": PROBABILITY,
    # GCN: Pubmed has 19,717 nodes and 44,338 edges; the synthetic graph is drawn edge by edge in Python
    "num_nodes": _int(1, 20000), "in_features": _int(1, 65536), "num_edges": _int(0, 200000),
    "seed": _int(0, 2 ** 31 - 1), "bias": BOOL,
}
