import numpy as np
import pytest

from explorer.errors import ExplorerError
from explorer.losses import (balanced_l1, balanced_l1_b, balanced_l1_grad, class_weights, long_tail_counts,
                             sample_negatives, smooth_l1)


def test_balanced_l1_defaults_match_the_paper():
    # α = 0.5, γ = 1.5: b = e^3 − 1 = 19.0855; both branches meet at |x| = 1 (value 1.0786, gradient 1.5).
    assert balanced_l1_b(0.5, 1.5) == pytest.approx(19.0855, abs=1e-4)
    below, at = balanced_l1(np.array([1 - 1e-9, 1.0]))
    assert below == pytest.approx(at, abs=1e-6) and at == pytest.approx(1.0786, abs=1e-4)
    assert balanced_l1_grad(np.array([1 - 1e-9]))[0] == pytest.approx(1.5, abs=1e-6)
    # Beyond 1 the loss grows with slope γ.
    assert balanced_l1(np.array([3.0]))[0] - balanced_l1(np.array([2.0]))[0] == pytest.approx(1.5)


def test_balanced_l1_promotes_inlier_gradients_over_smooth_l1():
    x = np.array([0.1, 0.3, 0.5])
    assert (balanced_l1_grad(x) > x).all()  # smooth L1's gradient at |x| < 1 is |x|
    assert smooth_l1(np.array([0.5]))[0] == pytest.approx(0.125)


def test_long_tail_counts_and_class_weights():
    counts = long_tail_counts(10, 5000, 100)
    assert counts[0] == 5000 and counts[-1] == 50
    weights = class_weights(counts, beta=0.999)
    cost_sensitive = np.array(weights["cost-sensitive CE"])
    assert cost_sensitive[-1] / cost_sensitive[0] == pytest.approx(100)  # n_max / n_min
    cb = np.array(weights["class-balanced"])
    expected = (1 - 0.999) / (1 - 0.999 ** counts.astype(float))
    assert cb / cb.mean() == pytest.approx(expected / expected.mean())
    assert all(np.diff(cb) > 0)  # rarer classes weigh more
    eql = class_weights(long_tail_counts(1000, 5000, 1000), eql_threshold=1.76e-3)["EQL negatives kept"]
    assert 0 < sum(eql) < 1000  # the rarest classes have their negative gradients suppressed


def test_iou_balanced_sampling_draws_more_hard_negatives_than_random():
    result = sample_negatives(bins=3, samples=384)
    assert sum(result["random"]) == sum(result["iou_balanced"]) == 384
    assert result["balanced_share_above_0_05"] > result["random_share_above_0_05"] + 0.2
    with pytest.raises(ExplorerError):
        sample_negatives(bins=0)
