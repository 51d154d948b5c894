"""Class activation maps (the `grad-cam` package) and Captum attributions, for CNNs and transformers.

For token models the reshape from tokens to a grid is derived from the model's own outputs (number
of prefix tokens, grid shape from the input's aspect ratio), not written per model. Every hook is
removed afterwards, whatever happens.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from explorer.errors import ExplorerError

CAM_METHODS = ("gradcam++", "gradcam", "scorecam", "eigencam", "layercam")
ATTRIBUTION_METHODS = ("integrated_gradients", "saliency", "occlusion")
# Score-CAM runs one forward per channel of the target layer (2048 for ResNet-50's layer4), in batches: small
# batches on a CPU keep memory low and let progress and Cancel come every few seconds.
SCORECAM_BATCH = {"cpu": 8, "cuda": 32}
MAX_SCORECAM_BATCH = 64
IG_STEPS, IG_BATCH = 24, 8
OCCLUSION_BATCH = 16
# Besides the method's own passes, a CAM job runs the model for its scores and for its list of layers.
JOB_OVERHEAD_FORWARDS = 3
BACKWARD_AS_FORWARDS = 2  # a backward pass costs about two forwards


def occlusion_window(input_hw: tuple[int, int]) -> tuple[int, int]:
    """(side, stride) of the occluding square: about 1/14 of the width, moved half a side at a time."""
    side = max(8, input_hw[1] // 14)
    return side, max(1, side // 2)


def method_passes(method: str, input_hw: tuple[int, int], channels: int | None = None) -> tuple[int, int]:
    """(image forwards, image backwards) `method` itself runs on one image. `channels`: of the target layer
    (Score-CAM runs one forward for each)."""
    if method in ("gradcam", "gradcam++", "layercam", "saliency"):
        return 1, 1
    if method == "eigencam":
        return 1, 0
    if method == "scorecam":
        return 1 + int(channels or 0), 0
    if method == "integrated_gradients":
        return IG_STEPS, IG_STEPS
    if method == "occlusion":
        side, stride = occlusion_window(input_hw)
        return 1 + ((input_hw[0] - side) // stride + 1) * ((input_hw[1] - side) // stride + 1), 0
    raise ExplorerError(f"method must be one of {', '.join(CAM_METHODS + ATTRIBUTION_METHODS)}, got {method!r}")


def forward_passes(method: str, input_hw: tuple[int, int], channels: int | None = None) -> int:
    """Image forwards (a backward counted as two) one CAM job runs for `method` on one image, its own
    bookkeeping included: the estimate a page shows before a long job starts."""
    forwards, backwards = method_passes(method, input_hw, channels)
    return JOB_OVERHEAD_FORWARDS + forwards + BACKWARD_AS_FORWARDS * backwards


class _ForwardCounter:
    """Reports every forward of the explained model (images so far, of the expected total) while it is attached."""

    def __init__(self, model: nn.Module, total: int, progress: Callable[[str], None] | None):
        self.images, self.total, self.progress = 0, total, progress
        self.handle = model.register_forward_pre_hook(self) if progress else None

    def __call__(self, module, args):
        if args and isinstance(args[0], torch.Tensor):
            self.images += int(args[0].shape[0])
            self.progress(f"{min(self.images, self.total):,} of about {self.total:,} image forwards")

    def remove(self):
        if self.handle is not None:
            self.handle.remove()


def _cam_class(method: str):
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM

    classes = {"gradcam++": GradCAMPlusPlus, "gradcam": GradCAM, "scorecam": ScoreCAM, "eigencam": EigenCAM,
               "layercam": LayerCAM}
    if method not in classes:
        raise ExplorerError(f"method must be one of {', '.join(CAM_METHODS)}, got {method!r}")
    return classes[method]


def _record_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, tuple[int, ...] | None]]:
    """(name, module, output shape or None) of every module, in the order their forwards finish."""
    order: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, args, out, name=name):
            order.append((name, mod, tuple(out.shape) if isinstance(out, torch.Tensor) else None))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def token_grid(length: int, input_hw: tuple[int, int]) -> tuple[int, int, int] | None:
    """(prefix tokens, grid h, grid w) such that length = prefix + h·w with h:w as the input's aspect."""
    height, width = input_hw
    for prefix in range(0, 9):
        n = length - prefix
        if n <= 1:
            break
        h = math.isqrt(round(n * height / width))
        for hh in (h, h + 1, h - 1):
            if hh > 0 and n % hh == 0 and abs((n // hh) / hh - width / height) < 0.15:
                return prefix, hh, n // hh
    return None


def layout_of(shape: tuple[int, ...], input_hw: tuple[int, int]) -> str | None:
    """'nchw', 'nhwc' or 'tokens' for an output that can be drawn over the image; None otherwise."""
    if len(shape) == 4:
        h_in, w_in = input_hw
        nchw = shape[2] > 1 and shape[3] > 1 and abs(h_in / shape[2] - w_in / shape[3]) < 1e-6
        nhwc = shape[1] > 1 and shape[2] > 1 and abs(h_in / shape[1] - w_in / shape[2]) < 1e-6
        if nchw and not nhwc:
            return "nchw"
        if nhwc and not nchw:
            return "nhwc"
        if nchw:
            return "nchw"
    if len(shape) == 3 and shape[1] > 1 and token_grid(shape[1], input_hw):
        return "tokens"
    return None


def cam_layers(model: nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Modules whose output can carry a CAM (spatial maps or token grids), in execution order."""
    input_hw = tuple(x.shape[-2:])
    rows = []
    for name, module, shape in _record_outputs(model, x):
        layout = layout_of(shape, input_hw) if shape else None
        if layout:
            rows.append({"name": name, "type": type(module).__name__, "shape": list(shape), "layout": layout})
    return rows


class _DenseOutput(nn.Module):
    """Segmentation models return {"out": map, ...}: the CAM libraries need the map itself."""

    def __init__(self, model: nn.Module, key: str):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.key]


class _ClassTotals(nn.Module):
    """A dense output summed over positions: (B, C, H, W) -> (B, C), for attribution targets."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).sum(dim=(2, 3))


class _DenseClassTarget:
    """A class's score in a dense output (C × H × W per sample): its map summed over all positions,
    the whole-image version of grad-cam's SemanticSegmentationTarget."""

    def __init__(self, category: int):
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.category].sum()


def _scores_of(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, str]:
    """(the module to explain, its output, 'logits' or 'dense'). Refuses outputs a CAM cannot target."""
    with torch.no_grad():
        out = model(x)
    if isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor):
        model, out = _DenseOutput(model, "out"), out["out"]
    if isinstance(out, torch.Tensor) and out.dim() == 2:
        return model, out, "logits"
    if isinstance(out, torch.Tensor) and out.dim() == 4:
        return model, out, "dense"
    kind = type(out).__name__ if not isinstance(out, torch.Tensor) else f"a {out.dim()}-D tensor"
    raise ExplorerError("CAMs need a classifier's logits (batch × classes) or a dense class map "
                        f"(batch × classes × H × W); this model returns {kind} (e.g. a detector's boxes)")


def default_target_layer(model: nn.Module, x: torch.Tensor, dense_classes: int | None = None) -> str:
    """CNNs: the last module with a spatial output; for a dense prediction of `dense_classes` maps,
    the last one before the class maps (a CAM of the class map itself only repeats it).
    Transformers: the norm that feeds the last attention (the class token alone reaches the head,
    so later token outputs carry no gradient)."""
    order = [row for row in _record_outputs(model, x)
             if dense_classes is None or not (row[2] and len(row[2]) == 4 and row[2][1] == dense_classes)]
    input_hw = tuple(x.shape[-2:])
    attention_at = [i for i, (_, m, _) in enumerate(order) if _is_attention(m)]
    if attention_at:
        last = attention_at[-1]
        # The attention module's own call finishes after its inner ops; look before its first inner op.
        name = order[last][0]
        first_inner = next((i for i, (n, _, _) in enumerate(order) if n == name or n.startswith(name + ".")), last)
        for n, m, shape in reversed(order[:first_inner]):
            if isinstance(m, nn.LayerNorm) and shape and layout_of(shape, input_hw):
                return n
    for n, _m, shape in reversed(order):
        if shape and layout_of(shape, input_hw):
            return n
    raise ExplorerError("this model has no layer with a spatial or token output to draw a CAM from")


def reshape_transform_for(shape: tuple[int, ...], input_hw: tuple[int, int]) -> Callable | None:
    layout = layout_of(shape, input_hw)
    if layout == "nchw":
        return None
    if layout == "nhwc":
        return lambda t: t.permute(0, 3, 1, 2)
    if layout == "tokens":
        prefix, h, w = token_grid(shape[1], input_hw)
        return lambda t: t[:, prefix:, :].reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)
    if len(shape) == 4 and shape[-2:] == (1, 1):
        raise ExplorerError(f"cannot draw a map at {input_hw[0]}×{input_hw[1]} pixels: the layer's output "
                            f"{list(shape)} is a single position; give the model a larger input (e.g. 3,224,224)")
    raise ExplorerError(f"cannot draw a map from an output of shape {list(shape)}")


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def compute_cam(model: nn.Module, x: torch.Tensor, method: str = "gradcam++", layer: str | None = None,
                class_index: int | None = None, progress: Callable[[str], None] | None = None,
                scorecam_batch: int | None = None) -> dict[str, Any]:
    """Heat map (H×W, 0..1) of `method` at `layer` for `class_index` (default: the top class); `progress`
    hears of every forward (Score-CAM's batches of `scorecam_batch` images, by default 8 on a CPU)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = _cam_class(method)
    model.eval()
    input_hw = tuple(x.shape[-2:])
    explained, scores, kind = _scores_of(model, x)
    order = {n: (m, s) for n, m, s in _record_outputs(model, x)}
    layer = layer or default_target_layer(model, x, dense_classes=scores.shape[1] if kind == "dense" else None)
    if layer not in order or order[layer][1] is None:
        raise ExplorerError(f"layer {layer!r} does not run in this model's forward pass, or has no tensor output")
    module, shape = order[layer]
    transform = reshape_transform_for(shape, input_hw)
    # Dense maps (segmentation classes, keypoint heat maps): a class's score is its map's mean.
    class_scores = scores[0] if kind == "logits" else scores[0].mean(dim=(1, 2))
    top = torch.topk(class_scores.softmax(-1), k=min(5, class_scores.shape[0]))
    target = int(top.indices[0]) if class_index is None else int(class_index)
    if not 0 <= target < class_scores.shape[0]:
        raise ExplorerError(f"class index must be between 0 and {class_scores.shape[0] - 1}")
    cam_target = ClassifierOutputTarget(target) if kind == "logits" else _DenseClassTarget(target)
    channels = _channels(shape, layout_of(shape, input_hw))
    counter = _ForwardCounter(explained, method_passes(method, input_hw, channels)[0], progress)
    try:
        with cam_class(model=explained, target_layers=[module], reshape_transform=transform) as cam:
            if method == "scorecam":
                default = SCORECAM_BATCH["cuda" if x.is_cuda else "cpu"]
                cam.batch_size = max(1, min(MAX_SCORECAM_BATCH, int(scorecam_batch or default)))
            heat = cam(input_tensor=x, targets=[cam_target])[0]
    finally:
        counter.remove()
    note = None
    if float(np.max(heat)) == 0.0 and method != "eigencam":
        note = ("every gradient-weighted activation is zero here, as with random weights and a zero-initialised "
                "classifier head (ViT's): load pretrained weights, or use the gradient-free EigenCAM")
    return {
        "note": note,
        "method": method,
        "layer": layer,
        "layer_layout": layout_of(shape, input_hw),
        "layer_channels": channels,
        "class_index": target,
        "classes": int(class_scores.shape[0]),
        "output": kind,
        "top5": [{"class": int(i), "probability": float(p)} for p, i in zip(top.values, top.indices)],
        "heat": np.asarray(heat, dtype=np.float32),
    }


def _channels(shape: tuple[int, ...] | None, layout: str | None) -> int | None:
    """Channels of a layer's output in its layout (NCHW: dim 1; NHWC and tokens: the last)."""
    if not shape or layout is None:
        return None
    return int(shape[1] if layout == "nchw" else shape[-1])


def compute_attribution(model: nn.Module, x: torch.Tensor, method: str = "integrated_gradients",
                        class_index: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Captum attributions w.r.t. the input pixels, |·| summed over channels, scaled to 0..1."""
    from captum.attr import IntegratedGradients, Occlusion, Saliency

    model.eval()
    explained, scores, kind = _scores_of(model, x)
    if kind == "dense":  # Captum's target picks an output column: make each class one number per image
        model = _ClassTotals(explained)
        scores = model(x).detach()
    target = int(scores[0].argmax()) if class_index is None else int(class_index)
    if not 0 <= target < scores.shape[1]:
        raise ExplorerError(f"class index must be between 0 and {scores.shape[1] - 1}")
    x = x.clone().requires_grad_(True)
    if method not in ATTRIBUTION_METHODS:
        raise ExplorerError(f"attribution must be one of {', '.join(ATTRIBUTION_METHODS)}, got {method!r}")
    input_hw = tuple(x.shape[-2:])
    counter = _ForwardCounter(model, method_passes(method, input_hw)[0], progress)
    try:
        if method == "integrated_gradients":
            attribution = IntegratedGradients(model).attribute(x, target=target, n_steps=IG_STEPS,
                                                               internal_batch_size=IG_BATCH)
        elif method == "saliency":
            attribution = Saliency(model).attribute(x, target=target)
        else:
            side, stride = occlusion_window(input_hw)
            attribution = Occlusion(model).attribute(x, target=target, sliding_window_shapes=(x.shape[1], side, side),
                                                     strides=(x.shape[1], stride, stride),
                                                     perturbations_per_eval=OCCLUSION_BATCH)
    finally:
        counter.remove()
    heat = attribution.detach().abs().sum(1)[0].numpy()
    heat = heat / heat.max() if heat.max() > 0 else heat
    return {"method": method, "class_index": target, "classes": int(scores.shape[1]), "output": kind,
            "heat": heat.astype(np.float32)}
