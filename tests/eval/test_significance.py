from __future__ import annotations

import math

import numpy as np
import pytest

from raypipe.eval.metrics import ndcg
from raypipe.eval.significance import paired_bootstrap, paired_ndcg


def test_a_consistent_gain_is_significant_and_its_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(2000)
    a = b + 0.05 + rng.normal(0, 0.1, 2000)  # every user gains 0.05 on average
    r = paired_bootstrap(a, b, n_boot=4000)
    assert r.n_users == 2000 and r.diff == pytest.approx(float(np.mean(a - b)))
    assert r.ci_low < 0.05 < r.ci_high and r.ci_low > 0
    assert r.p_value < 0.001


def test_identical_models_and_pure_noise_are_not_significant() -> None:
    x = np.random.default_rng(2).random(500)
    same = paired_bootstrap(x, x, n_boot=1000)
    assert same.diff == 0 and same.ci_low == same.ci_high == 0 and same.p_value == 1.0
    rng = np.random.default_rng(3)
    noise = paired_bootstrap(rng.random(500), rng.random(500), n_boot=2000)
    assert noise.ci_low < 0 < noise.ci_high and noise.p_value > 0.05


def test_pairs_stay_together() -> None:
    # a large between-user spread but the same per-user gain: an unpaired test would drown it
    ranks = np.array([1.0, 2.0, 50.0, 3.0, 80.0, 4.0] * 50)
    better = np.maximum(ranks - 1, 1)
    r = paired_bootstrap(ndcg(better, 10), ndcg(ranks, 10), n_boot=2000)
    assert r.ci_low > 0 and r.p_value < 0.001


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap(np.array([0.1, np.nan]), np.zeros(2))
    with pytest.raises(ValueError, match="no users"):
        paired_bootstrap(np.zeros(0), np.zeros(0))


def test_paired_ndcg_pairs_the_users_both_runs_judged() -> None:
    a = {"u1": 1.0, "u2": 3.0, "u3": math.inf, "only_a": 1.0}
    b = {"u1": 2.0, "u2": 3.0, "u3": 1.0, "only_b": 5.0}
    r = paired_ndcg(a, b)
    # u1: 1 vs 1/log2(3); u2: equal (0.5 each); u3: a miss vs 1
    assert r.n_users == 3
    assert r.mean_a == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert r.mean_b == pytest.approx((1 / math.log2(3) + 0.5 + 1.0) / 3)
    sub = paired_ndcg(a, b, users=["u1", "only_a", "nobody"])
    assert sub.n_users == 1 and sub.diff == pytest.approx(1.0 - 1 / math.log2(3))
    assert paired_ndcg(a, b, k=1).mean_a == pytest.approx(1 / 3)  # NDCG@1 is a hit at rank 1
