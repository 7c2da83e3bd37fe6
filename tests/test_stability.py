"""Neuron-set stability across support draws (lake_interp.interp.stability)."""

import numpy as np
import pytest

from lake_interp.data import MVTecAD
from lake_interp.interp.stability import neuron_stability, rbo, stability_figure, stability_from_sets


def test_rbo_and_overlaps_by_hand():
    assert rbo([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert rbo([1, 2, 3], [4, 5, 6]) == pytest.approx(0.0)
    # Webber's RBO_ext by hand for [1, 2] vs [2, 1], p = 0.5: X_1 = 0, X_2 = 2 -> 1 * 0.25 + 1 * (0 + 1 * 0.25)
    assert rbo([1, 2], [2, 1], p=0.5) == pytest.approx(0.5)
    s = stability_from_sets({"h": np.array([[1, 2, 3, 4], [3, 4, 5, 6]])}, [(1, 0), (1, 1)])
    assert s.summary["h"]["jaccard_mean"] == pytest.approx(2 / 6) and s.summary["h"]["overlap_mean"] == 0.5
    assert s.stable_units["h"] == [3, 4]


def test_identical_draws_give_overlap_one(tiny_model, magenta_root):
    """The variance criterion on the same support draw (seed 0) three times: every overlap is 1."""
    train = MVTecAD(magenta_root, "disc", "train")
    s = neuron_stability(tiny_model, train, shots=(2, 2), seeds=(0,), criterion="variance", k=8, class_name="disc")
    for h, v in s.summary.items():
        assert v["jaccard_mean"] == 1.0 and v["overlap_mean"] == 1.0 and v["rbo_mean"] == pytest.approx(1.0)
        assert len(s.stable_units[h]) == 8
    assert s.jaccard_matrix() == pytest.approx(np.ones((2, 2)))
    assert stability_figure(s).data


def test_independent_random_criteria_overlap_k_over_d(tiny_model, magenta_root):
    """Random criterion, 10 seeds (45 pairs) x 4 hooks of width 64, K = 16: the mean overlap |S n T| / K
    is K / d = 0.25; its standard error is at most the hypergeometric sd (sqrt(K * 0.25 * 0.75 * 48 / 63) / K
    ~ 0.095) / sqrt(45 independent-ish pairs x 4 hooks) ~ 0.007 (pairs share draws: tolerance 0.04)."""
    train = MVTecAD(magenta_root, "disc", "train")
    s = neuron_stability(tiny_model, train, shots=(1,), seeds=range(10), criterion="random", k=16, class_name="disc")
    mean = np.mean([v["overlap_mean"] for v in s.summary.values()])
    assert s.meta["expected_random_overlap"][s.hooks[0]] == 0.25
    assert abs(mean - 0.25) < 0.04, mean
    # and the variance criterion on different draws of one category is far more stable than random
    v = neuron_stability(tiny_model, train, shots=(2,), seeds=(0, 1, 2), criterion="variance", k=16, class_name="disc")
    assert np.mean([x["overlap_mean"] for x in v.summary.values()]) > mean + 0.3
