"""Theoretical and effective receptive fields, computed from the model's graph.

Theoretical receptive field
---------------------------
Every tensor that depends on the input image carries, per spatial axis, three numbers:

* ``rf``    the size (in input pixels) of the region one unit sees;
* ``jump``  the distance (in input pixels) between two neighbouring units (the cumulative stride);
* ``start`` the centre (in input pixels) of the region seen by the first unit.

Coordinates are pixel indices: input pixel ``i`` has its centre at ``i``, so the input has
rf = 1, jump = 1, start = 0, and unit ``y`` of a layer sees the pixels
``start + y*jump - (rf-1)/2 .. start + y*jump + (rf-1)/2`` (see ``unit_box``).

The standard recursion for a window op (conv / pool) with kernel k, stride s, padding p, dilation d::

    k_eff     = d*(k-1) + 1
    jump_out  = jump_in * s
    rf_out    = rf_in + (k_eff - 1) * jump_in
    start_out = start_in + ((k_eff - 1)/2 - p) * jump_in

Other ops:

* elementwise / normalisation / activation / dropout: unchanged (normalisation statistics are
  ignored, as is conventional; BatchNorm in eval mode is exactly pointwise);
* merges (add, mul, cat along channels, ...): the union of the inputs' regions for the first unit.
  When the inputs share the jump and the centre (Inception branches, ResNet shortcut, DenseNet
  concatenation, HRNet fusion) this is exactly "the maximum rf among the inputs"; inputs with
  different jumps are unioned, keeping the jump nearest the map's average spacing, input size / map
  size (the row is flagged approximate);
* global pooling (adaptive pool to 1x1, mean over H and W, flatten of a spatial map, attention,
  matmul across positions): rf = the whole input (``global: True``);
* a merge of a local tensor with a globally pooled one (squeeze-and-excitation gates, ASPP image
  pooling): with ``global_context="separate"`` (default) the rf of the local inputs is reported and
  the row is flagged ``global_context: True`` (the unit also sees a pooled summary of the whole
  image); with ``global_context="include"`` the row becomes global;
* adaptive pools with uneven bins, interpolation, transposed convs, cyclic shifts and window
  attention are handled with the largest window a unit can see (``approximate: True``).

How the graph is obtained
-------------------------
1. ``torch.fx.symbolic_trace`` (method ``"fx"``): the graph's nodes are executed in order by an
   ``fx.Interpreter`` on one random input; every node's output gets the (rf, jump, start) computed
   from its argument nodes. torch.nn leaf modules (Conv2d, MaxPool2d, ...) are evaluated at the
   torch-function level (the F.conv2d / F.max_pool2d they call); ``fx.wrap``-ed Python functions are
   either special-cased (torchvision's ``shifted_window_attention``) or evaluated at the
   torch-function level too. The graph is first run on meta tensors (shapes only, nothing computed,
   the model untouched); where an op needs values it is run again on one real random input.
   Rows: one per graph node, plus one per container module (Sequential, Bottleneck, Inception, ...)
   placed after its last node; a container returning several tensors (HRNet stages) is described by
   the first of them.
2. When fx cannot trace the model (data-dependent Python control flow, iteration over tensors,
   ``list(images)``, ...), method ``"hooks"``: a forward-hook trace. Forward pre/post hooks on every
   module give the module rows and names; a ``TorchFunctionMode`` sees every torch function called
   outside torch.nn leaf modules (``torch.cat``, ``+``, ``F.interpolate``, ``x.flatten``, ...), and
   the dataflow is recovered from tensor identity. This follows the branch the input actually took.
   It runs the model on one real random input (never on meta: arbitrary forward code may cache
   tensors on the module). Hooks ignore forwards run by other threads on the same model meanwhile.

Limits: 2-D image inputs only. Attention and reshapes that mix positions (ViT, timm's Swin window
partition, MLP-Mixer token mixing) are reported as global from that point on; torchvision's Swin is
analysed with the window rule (rf grows by (M-1)*jump per block, centre position-dependent).

Effective receptive field
-------------------------
Luo et al., "Understanding the Effective Receptive Field in Deep CNNs" (NIPS 2016): the gradient of
the centre unit of a layer (summed over channels) w.r.t. the input, |.| summed over input channels,
averaged over random inputs.
"""
from __future__ import annotations

import math
import threading
from typing import Any

import torch
import torch.nn as nn

from explorer.errors import ExplorerError
from explorer.shapes import pair

# The rules and the driver live in rf_rules (formulas, one rule per op) and rf_trace (the fx / hook
# traces); their names are re-exported here so that older imports keep working.
from explorer.views.rf_rules import (  # noqa: F401
    DIM_OPS,
    EXPANDS,
    MIXERS,
    POINTWISE,
    REDUCES,
    RESHAPES,
    RULES,
    SPLITS,
    RFRules,
    RFState,
    flat_tensors,
    plain_number,
)
from explorer.views.rf_trace import (  # noqa: F401
    device_dtype,
    EvalMode,
    first_line,
    input_chw,
    random_input,
    run_trace,
    trace_fx,
    trace_hooks,
)

__all__ = ["theoretical_rf", "receptive_field_report", "unit_box", "effective_rf", "find_row"]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def receptive_field_report(model: nn.Module, input_size, method: str = "auto",
                           global_context: str = "separate") -> dict[str, Any]:
    """Theoretical receptive field of every node/module, with how the graph was obtained.

    ``method``: "auto" (fx, falling back to hooks), "fx" or "hooks". Returns
    {"rows", "method", "fallback_reason", "input_hw", "errors"}.
    """
    if method not in ("auto", "fx", "hooks"):
        raise ExplorerError(f"method must be 'auto', 'fx' or 'hooks', got {method!r}")
    chw = input_chw(input_size)
    reason = None
    with EvalMode(model):
        if method in ("auto", "fx"):
            try:
                gm = torch.fx.symbolic_trace(model)
                rows, prop = run_trace(trace_fx, gm, model, chw, global_context, try_meta=True)
                return {"rows": rows, "method": "fx", "fallback_reason": None, "input_hw": list(chw[1:]),
                        "errors": prop.errors}
            except ExplorerError:
                raise
            except Exception as exc:
                if method == "fx":
                    raise ExplorerError(f"torch.fx could not trace {type(model).__name__}: {first_line(exc)}") from None
                reason = first_line(exc)
        try:
            rows, prop = run_trace(trace_hooks, model, model, chw, global_context, try_meta=False)
        except ExplorerError:
            raise
        except Exception as exc:
            raise ExplorerError(f"could not run {type(model).__name__} on {chw}: {first_line(exc)}") from None
    return {"rows": rows, "method": "hooks", "fallback_reason": reason, "input_hw": list(chw[1:]),
            "errors": prop.errors}


def theoretical_rf(model: nn.Module, input_size, method: str = "auto",
                   global_context: str = "separate") -> list[dict[str, Any]]:
    """Rows {"name", "type", "op", "rf", "jump", "start", "output_hw", "global", "global_context",
    "approximate", "note"} in execution order (see the module docstring for the rules)."""
    return receptive_field_report(model, input_size, method, global_context)["rows"]


def find_row(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for r in rows:
        if r["name"] == name:
            return r
    raise ExplorerError(f"no layer named {name!r} in the receptive-field table")


def unit_box(row: dict[str, Any], unit_yx, input_hw) -> dict[str, Any]:
    """The input pixels seen by output unit (y, x) of ``row``, clipped to the image.

    ``y0:y1, x0:x1`` are slice bounds (end exclusive) in input pixels; ``unclipped`` gives the same
    box before clipping (it extends beyond the image where padding was used).
    """
    H, W = pair(input_hw)
    y, x = pair(unit_yx)
    if row.get("global"):
        return {"y0": 0, "y1": H, "x0": 0, "x1": W, "centre": [(H - 1) / 2, (W - 1) / 2],
                "unclipped": [0, H, 0, W], "clipped": False}
    bounds = []
    centre = []
    for i, (u, lim) in enumerate(((y, H), (x, W))):
        c = float(row["start"][i]) + u * float(row["jump"][i])
        half = (float(row["rf"][i]) - 1) / 2
        lo, hi = math.floor(c - half + 1e-9), math.ceil(c + half - 1e-9) + 1
        bounds.append((lo, hi, max(0, lo), min(lim, hi)))
        centre.append(plain_number(c))
    (ylo, yhi, y0, y1), (xlo, xhi, x0, x1) = bounds
    return {"y0": y0, "y1": y1, "x0": x0, "x1": x1, "centre": centre,
            "unclipped": [ylo, yhi, xlo, xhi], "clipped": (y0, y1, x0, x1) != (ylo, yhi, xlo, xhi)}


def _resolve_module(model: nn.Module, layer_name: str) -> tuple[nn.Module, int]:
    base, _, k = layer_name.partition("@")
    mods = dict(model.named_modules())
    if base not in mods or base == "":
        raise ExplorerError(f"{layer_name!r} is not a module of {type(model).__name__} "
                            "(the effective RF needs a module name from the table)")
    return mods[base], int(k) if k else 0


class _Stop(Exception):
    pass


def effective_rf(model: nn.Module, input_size, layer_name: str, n_inputs: int = 4, seed: int = 0) -> dict[str, Any]:
    """Luo et al. 2016: |d(centre unit of ``layer_name``, summed over channels) / d(input)|,
    summed over input channels and averaged over ``n_inputs`` N(0, 1) inputs; normalised to max 1.

    Returns {"map": H x W nested lists, "unit": [y, x], "output_hw", "box" (theoretical, clipped),
    "theoretical": the table row, "nonzero_box": the bounding box of the non-zero gradient, ...}.
    """
    if not 1 <= int(n_inputs) <= 64:
        raise ExplorerError(f"n_inputs must be 1..64, got {n_inputs}")
    chw = input_chw(input_size)
    if device_dtype(model)[0].type == "meta":
        raise ExplorerError("the effective receptive field needs a model with real weights (not on 'meta')")
    module, call_index = _resolve_module(model, layer_name)
    report = receptive_field_report(model, chw)
    row = find_row(report["rows"], layer_name)
    captured: list[torch.Tensor] = []
    calls = [0]

    me = threading.get_ident()

    def hook(m, inputs, output):
        if threading.get_ident() != me:  # a forward of the same model in another thread
            return
        if calls[0] == call_index:
            t = flat_tensors(output)
            if t:
                captured.append(t[0])
                raise _Stop
        calls[0] += 1

    handle = module.register_forward_hook(hook)
    try:
        with EvalMode(model), torch.enable_grad():
            x = random_input(model, chw, int(n_inputs), seed).requires_grad_(True)
            try:
                model(x)
            except _Stop:
                pass
            if not captured:
                raise ExplorerError(f"{layer_name} did not run in the forward pass")
            out = captured[0]
            if out.dim() < 3:
                raise ExplorerError(f"{layer_name} has no spatial output (shape {tuple(out.shape)})")
            # The layout (NCHW or NHWC) of that output, from the traced table's state: H, W are the
            # axes whose sizes are the row's output_hw; NCHW unless that says otherwise.
            oh, ow = row["output_hw"]
            nd = out.dim()
            axes = (nd - 2, nd - 1)
            if (out.shape[-2], out.shape[-1]) != (oh, ow) and nd == 4 and (out.shape[1], out.shape[2]) == (oh, ow):
                axes = (1, 2)
            cy, cx = int(out.shape[axes[0]]) // 2, int(out.shape[axes[1]]) // 2
            index: list[Any] = [slice(None)] * nd
            index[axes[0]], index[axes[1]] = cy, cx
            target = out[tuple(index)].sum()
            (grad,) = torch.autograd.grad(target, x)
        g = grad.detach().abs().float().sum(dim=1).mean(dim=0).cpu()
        peak = float(g.max())
        norm = g / peak if peak > 0 else g
        nz = torch.nonzero(g > 0)
        nonzero_box = None
        if len(nz):
            nonzero_box = {"y0": int(nz[:, 0].min()), "y1": int(nz[:, 0].max()) + 1,
                           "x0": int(nz[:, 1].min()), "x1": int(nz[:, 1].max()) + 1}
        return {
            "layer": layer_name,
            "unit": [cy, cx],
            "output_hw": [int(out.shape[axes[0]]), int(out.shape[axes[1]])],
            "input_hw": list(chw[1:]),
            "map": norm.tolist(),
            "box": unit_box(row, (cy, cx), chw[1:]),
            "theoretical": row,
            "nonzero_box": nonzero_box,
            "n_inputs": int(n_inputs),
            "seed": int(seed),
        }
    finally:
        handle.remove()
