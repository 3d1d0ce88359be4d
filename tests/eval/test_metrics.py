"""Metric values checked against arithmetic done by hand (written out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raypipe.eval.metrics import (
    compute_metrics,
    hit_rate,
    k_percent_cutoff,
    metric_names,
    ndcg,
    r_ndcg_at_k_percent,
    recall,
    recall_at_k_percent,
    reciprocal_rank,
)


def test_hr_ndcg_mrr_by_hand() -> None:
    ranks = [1, 3, 11]
    m = compute_metrics(ranks, n_items=100, ks=(10,), mrr_ks=(10,))
    # hr@10: ranks 1 and 3 are within 10, 11 is not -> 2/3
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["recall@10"] == m["hr@10"]
    # ndcg@10: (1/log2(2) + 1/log2(4) + 0) / 3 = (1 + 0.5) / 3 = 0.5
    assert m["ndcg@10"] == pytest.approx(0.5)
    # mrr: (1 + 1/3 + 1/11) / 3 = (33 + 11 + 3) / 33 / 3 = 47/99
    assert m["mrr"] == pytest.approx(47 / 99)
    # mrr@10: (1 + 1/3 + 0) / 3 = 4/9
    assert m["mrr@10"] == pytest.approx(4 / 9)


def test_per_user_values() -> None:
    # rank 7 -> 1/log2(8) = 1/3; rank 1 -> 1; rank 8 beyond K=7 -> 0
    np.testing.assert_allclose(ndcg([7, 1, 8], 7), [1 / 3, 1.0, 0.0])
    np.testing.assert_array_equal(hit_rate([7, 1, 8], 7), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(recall([7, 1, 8], 7), hit_rate([7, 1, 8], 7))
    # 1/rank, and 0 beyond K for mrr@K
    np.testing.assert_allclose(reciprocal_rank([4, 2, 5]), [0.25, 0.5, 0.2])
    np.testing.assert_allclose(reciprocal_rank([4, 2, 5], k=4), [0.25, 0.5, 0.0])


def test_infinite_rank_is_a_miss_everywhere() -> None:
    m = compute_metrics([np.inf, np.inf], n_items=50, ks=(1, 50), k_percents=(100,), mrr_ks=(5,))
    assert all(v == 0.0 for v in m.values())


@pytest.mark.parametrize(
    ("n", "k", "cutoff"),
    [
        (25000, 0.04, 10),  # 25000 * 0.04 / 100 = 10 exactly (float arithmetic gives 10.000000000000002)
        (10000, 0.07, 7),  # 7 exactly; float arithmetic gives 7.000000000000001, ceil would say 8
        (1000, 0.5, 5),  # 1000 * 0.5% = 5
        (1001, 0.5, 6),  # 5.005 -> ceil 6
        (100, 0.5, 1),  # 0.5 -> ceil 1
        (10, 0.04, 1),  # 0.004 -> ceil 1 (and at least 1 anyway)
        (20, 100, 20),  # the whole catalogue
    ],
)
def test_k_percent_cutoff(n: int, k: float, cutoff: int) -> None:
    assert k_percent_cutoff(n, k) == cutoff


def test_recall_and_r_ndcg_at_k_percent_by_hand() -> None:
    # N = 1000, K% = 0.5% -> cutoff 5; a = 2, b = 15000 -> b / N = 15
    ranks = [1, 2, 5, 6, np.inf]
    np.testing.assert_array_equal(recall_at_k_percent(ranks, 1000, 0.5), [1, 1, 1, 0, 0])
    expected = [
        1.0,  # eq. 9 at rank 1: log 2 / log(2 + 0) = 1
        math.log(2) / math.log(2 + 15 * 1),  # rank 2: log 2 / log 17
        math.log(2) / math.log(2 + 15 * 4),  # rank 5: log 2 / log 62
        0.0,  # rank 6 is beyond the cutoff
        0.0,
    ]
    np.testing.assert_allclose(r_ndcg_at_k_percent(ranks, 1000, 0.5), expected)
    m = compute_metrics(ranks, 1000, ks=(), k_percents=(0.5,))
    assert m["recall@0.5%"] == pytest.approx(3 / 5)
    assert m["r_ndcg@0.5%"] == pytest.approx(sum(expected) / 5)


def test_r_ndcg_with_b_equal_n_is_ndcg_at_the_cutoff() -> None:
    # paper: "r-NDCG becomes the commonly used NDCG if a = 2 and b = N"
    ranks = np.arange(1, 31, dtype=float)
    n = 1000  # K% = 1% -> cutoff 10
    np.testing.assert_allclose(r_ndcg_at_k_percent(ranks, n, 1.0, a=2.0, b=n), ndcg(ranks, 10))
    np.testing.assert_array_equal(recall_at_k_percent(ranks, n, 1.0), hit_rate(ranks, 10))


def test_per_user_catalogue_sizes() -> None:
    # users of two domains pooled: N = 1000 (cutoff 5 at 0.5%) and N = 200 (cutoff 1)
    ranks = [3, 2]
    np.testing.assert_array_equal(recall_at_k_percent(ranks, np.array([1000, 200]), 0.5), [1, 0])
    # user 1: log 2 / log(2 + 15000 * 2 / 1000) = log 2 / log 32 = 1/5
    np.testing.assert_allclose(r_ndcg_at_k_percent(ranks, np.array([1000, 200]), 0.5), [0.2, 0.0])


def test_names_and_empty() -> None:
    names = metric_names(ks=(5,), k_percents=(0.5, 0.04), mrr_ks=(10,))
    assert names == ["hr@5", "recall@5", "ndcg@5", "mrr", "mrr@10", "recall@0.5%", "r_ndcg@0.5%",
                     "recall@0.04%", "r_ndcg@0.04%"]
    m = compute_metrics([], 10, ks=(5,), k_percents=(0.5, 0.04), mrr_ks=(10,))
    assert list(m) == names and all(math.isnan(v) for v in m.values())


@pytest.mark.parametrize("bad", [[0, 1], [1, float("nan")], [[1, 2]]])
def test_rejects_bad_ranks(bad: list) -> None:
    with pytest.raises(ValueError):
        compute_metrics(bad, 10)


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        r_ndcg_at_k_percent([1], 10, 1.0, a=1.0)
    with pytest.raises(ValueError):
        k_percent_cutoff(10, 0)
    with pytest.raises(ValueError):
        hit_rate([1], 0)
    with pytest.raises(ValueError):
        recall_at_k_percent([1, 2], np.array([10, 10, 10]), 1.0)


def test_set_precision_recall_f1_by_hand() -> None:
    from raypipe.eval.metrics import set_prf

    # user 1: chose {1, 2}, true {2, 3}: P 1/2, R 1/2, F1 1/2; user 2: chose nothing of {4}: 0, 0, 0;
    # user 3: chose {5, 6, 7} of true {5}: P 1/3, R 1, F1 2·(1/3)/(4/3) = 1/2
    m = set_prf([[1, 2], [], [5, 6, 7]], [[2, 3], [4], [5]])
    assert m["precision"] == pytest.approx((0.5 + 0 + 1 / 3) / 3)
    assert m["recall"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert m["f1"] == pytest.approx((0.5 + 0 + 0.5) / 3) and m["n"] == 3
    assert m["mean_chosen"] == pytest.approx(5 / 3) and m["empty_share"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one positive"):
        set_prf([[1]], [[]])
