"""Losses and training techniques from the source documents, as curves a person can move.

- Balanced L1 (Libra R-CNN) against smooth L1 and L1: loss and gradient over |x|.
- Class weighting under a long tail: cost-sensitive CE, class-balanced (effective number), focal,
  Equalization Loss (EQL), Balanced Softmax (BALMS), as functions of class frequency.
- IoU-balanced vs random sampling of negatives on synthetic proposals (Libra R-CNN).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from explorer.errors import ExplorerError


# --- balanced L1 ----------------------------------------------------------------------------------

def balanced_l1_b(alpha: float, gamma: float) -> float:
    """b from the continuity of the gradient at |x| = 1: α·ln(b + 1) = γ."""
    return math.exp(gamma / alpha) - 1


def balanced_l1(x: np.ndarray, alpha: float = 0.5, gamma: float = 1.5) -> np.ndarray:
    """L_b(x) = α/b·(b|x|+1)·ln(b|x|+1) − α|x| for |x| < 1, else γ|x| + C (C makes it continuous)."""
    if alpha <= 0 or gamma <= 0:
        raise ExplorerError("α and γ must be positive")
    b = balanced_l1_b(alpha, gamma)
    a = np.abs(x)
    inner = alpha / b * (b * a + 1) * np.log(b * a + 1) - alpha * a
    c = alpha / b * (b + 1) * math.log(b + 1) - alpha - gamma  # value of the inner branch at 1, minus γ
    return np.where(a < 1, inner, gamma * a + c)


def balanced_l1_grad(x: np.ndarray, alpha: float = 0.5, gamma: float = 1.5) -> np.ndarray:
    b = balanced_l1_b(alpha, gamma)
    a = np.abs(x)
    return np.where(a < 1, alpha * np.log(b * a + 1), gamma)


def smooth_l1(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    a = np.abs(x)
    return np.where(a < beta, 0.5 * a**2 / beta, a - 0.5 * beta)


def smooth_l1_grad(x: np.ndarray, beta: float = 1.0) -> np.ndarray:
    a = np.abs(x)
    return np.where(a < beta, a / beta, 1.0)


def regression_curves(alpha: float = 0.5, gamma: float = 1.5, beta: float = 1.0, limit: float = 3.0, points: int = 301):
    if not beta > 0:
        raise ExplorerError(f"smooth-L1 β must be positive (it is where the loss turns from quadratic to linear), got {beta}")
    if alpha <= 0 or gamma <= 0:
        raise ExplorerError("α and γ must be positive")
    x = np.linspace(0, limit, points)
    return {
        "x": x.tolist(),
        "b": balanced_l1_b(alpha, gamma),
        "loss": {"L1": x.tolist(), "smooth L1": smooth_l1(x, beta).tolist(),
                 "balanced L1": balanced_l1(x, alpha, gamma).tolist()},
        "gradient": {"L1": np.ones_like(x).tolist(), "smooth L1": smooth_l1_grad(x, beta).tolist(),
                     "balanced L1": balanced_l1_grad(x, alpha, gamma).tolist()},
    }


# --- class weights under a long tail ----------------------------------------------------------------

def long_tail_counts(classes: int = 10, largest: int = 5000, imbalance: float = 100.0) -> np.ndarray:
    """Exponentially decaying class sizes, largest / smallest = imbalance (long-tailed CIFAR's recipe)."""
    if classes < 2 or imbalance < 1 or largest < 1:
        raise ExplorerError("need at least 2 classes, an imbalance factor ≥ 1 and a largest class ≥ 1")
    steps = np.arange(classes) / (classes - 1)
    return np.maximum(1, np.round(largest * imbalance ** (-steps))).astype(int)


def class_weights(counts: np.ndarray, beta: float = 0.999, eql_threshold: float = 1.76e-3) -> dict[str, list[float]]:
    """Per-class loss weights, each normalised so the weights average 1 over classes.

    - cost-sensitive CE: n_min / n_c (the inverse frequency; the document's n_c / n_min would
      up-weight frequent classes, which the notes flag as a slip);
    - class-balanced (Cui et al.): (1 − β) / (1 − β^{n_c});
    - EQL (Tan et al.): the share of negative gradients a class still receives, 1 − T_λ(f_c) with
      T_λ(f) = 1 when the class frequency f is below λ (its suppressed negatives);
    - Balanced Softmax (BALMS): adds log n_c to the logits, i.e. multiplies the class's softmax term by n_c
      (shown as n_c / mean n).
    """
    if not 0 < beta < 1:
        raise ExplorerError(f"the class-balanced β must lie strictly between 0 and 1 (e.g. 0.999), got {beta}")
    counts = np.asarray(counts, dtype=float)
    frequency = counts / counts.sum()

    def normalised(w):
        return (w / w.mean()).tolist()

    return {
        "cross-entropy": normalised(np.ones_like(counts)),
        "cost-sensitive CE": normalised(counts.min() / counts),
        "class-balanced": normalised((1 - beta) / (1 - np.power(beta, counts))),
        "EQL negatives kept": (1 - (frequency < eql_threshold).astype(float)).tolist(),
        "Balanced Softmax prior": normalised(counts),
    }


def focal_weight(p: np.ndarray, gamma: float = 2.0) -> np.ndarray:
    """Focal loss's modulating factor (1 − p_t)^γ against the probability of the true class."""
    return (1 - p) ** gamma


# --- IoU-balanced sampling ---------------------------------------------------------------------------

def _iou(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of each box (N×4, x1 y1 x2 y2) with its best ground-truth box (M×4)."""
    x1 = np.maximum(boxes[:, None, 0], gt[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], gt[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], gt[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], gt[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(boxes)[:, None] + area(gt)[None, :] - inter
    return (inter / union).max(axis=1)


def synthetic_proposals(count: int = 20000, gt_boxes: int = 4, image: int = 800, seed: int = 0):
    """Proposals scattered over an image and jittered around ground-truth boxes, as an RPN gives."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(150, image - 150, size=(gt_boxes, 2))
    sizes = rng.uniform(60, 200, size=(gt_boxes, 2))
    gt = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    near = count * 3 // 10  # most proposals land on background, as in an RPN
    which = rng.integers(0, gt_boxes, near)
    jitter_c = centres[which] + rng.normal(0, 0.5, (near, 2)) * sizes[which]
    jitter_s = sizes[which] * np.exp(rng.normal(0, 0.4, (near, 2)))
    far_c = rng.uniform(0, image, (count - near, 2))
    far_s = rng.uniform(20, 250, (count - near, 2))
    c = np.concatenate([jitter_c, far_c])
    s = np.concatenate([jitter_s, far_s])
    boxes = np.clip(np.concatenate([c - s / 2, c + s / 2], axis=1), 0, image)
    boxes = boxes[(boxes[:, 2] - boxes[:, 0] > 4) & (boxes[:, 3] - boxes[:, 1] > 4)]
    return boxes, gt


def sample_negatives(bins: int = 3, samples: int = 384, negative_below: float = 0.5, seed: int = 0,
                     histogram_bins: int = 10) -> dict[str, Any]:
    """Random vs IoU-balanced sampling of negatives (IoU < 0.5): histograms over IoU, and the share
    of samples with IoU above 0.05 (the Libra R-CNN paper's argument: hard negatives live there)."""
    if not 1 <= bins <= 20:
        raise ExplorerError("the number of IoU bins must be between 1 and 20")
    if samples < 1:
        raise ExplorerError(f"the number of negatives sampled must be at least 1, got {samples}")
    rng = np.random.default_rng(seed)
    boxes, gt = synthetic_proposals(seed=seed)
    iou = _iou(boxes, gt)
    negatives = iou[iou < negative_below]
    if len(negatives) < samples:
        raise ExplorerError("too few synthetic negatives for this many samples")
    random_pick = rng.choice(negatives, samples, replace=False)
    # IoU-balanced: split [0, negative_below) into `bins` bins and take samples / bins from each
    # (the remainder, and any bin that runs short, filled at random from what is left).
    edges = np.linspace(0, negative_below, bins + 1)
    chosen = []
    for k in range(bins):
        in_bin = np.flatnonzero((negatives >= edges[k]) & (negatives < edges[k + 1]))
        take = min(len(in_bin), samples // bins)
        chosen.extend(rng.choice(in_bin, take, replace=False).tolist())
    rest = np.setdiff1d(np.arange(len(negatives)), chosen)
    chosen.extend(rng.choice(rest, samples - len(chosen), replace=False).tolist())
    balanced_pick = negatives[np.array(chosen)]
    hist_edges = np.linspace(0, negative_below, histogram_bins + 1)
    return {
        "candidates": int(len(negatives)),
        "samples": samples,
        "bins": bins,
        "edges": hist_edges.tolist(),
        "random": np.histogram(random_pick, hist_edges)[0].tolist(),
        "iou_balanced": np.histogram(balanced_pick, hist_edges)[0].tolist(),
        "candidates_share_above_0_05": float((negatives > 0.05).mean()),
        "random_share_above_0_05": float((random_pick > 0.05).mean()),
        "balanced_share_above_0_05": float((balanced_pick > 0.05).mean()),
    }
