"""bench/bench_unimp.py's re-weighting x context-reconstruction interaction on hand-made ranks (no Ray)."""
from __future__ import annotations

import math

import pytest

from ..scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_unimp.py")


def _ranks(*per_user: float) -> dict[str, dict[str, float]]:
    return {"books": {f"u{i}": r for i, r in enumerate(per_user)}}


def test_gains_and_their_difference_over_the_users_every_run_judged(bench) -> None:
    ranks = {"unimp": _ranks(1, 2, 11, 1), "wo_reweight": _ranks(3, 2, 11, 3),
             "wo_context": _ranks(2, 2, 2, 2), "wo_context_reweight": _ranks(2, 2, 2, 7)}
    ranks["unimp"]["books"]["only_here"] = 1.0  # judged by one run only: left out of every comparison
    out = bench.reweight_interaction(ranks, seed=0)["books"]
    with_ctx = (0.5 + 0 + 0 + 0.5) / 4  # NDCG@10: rank 1 -> 1, rank 3 -> 0.5, rank 11 -> 0
    without_ctx = (1 / math.log2(3) - 1 / 3) / 4  # rank 2 -> 1/log2(3), rank 7 -> 1/log2(8)
    assert out["with_context"]["n_users"] == out["interaction"]["n_users"] == 4
    assert out["with_context"]["diff"] == pytest.approx(with_ctx)
    assert out["without_context"]["diff"] == pytest.approx(without_ctx)
    assert out["interaction"]["diff"] == pytest.approx(with_ctx - without_ctx)
    # context reconstruction without re-weighting: wo_reweight (0.5, 1/log2(3), 0, 0.5) - wo_context_reweight
    assert out["context_without_reweight"]["diff"] == pytest.approx((1 + 1 / math.log2(3) - 3 / math.log2(3) - 1 / 3) / 4)
    # two users gain, two tie: a resample is <= 0 only when it draws the two ties alone, (1/2)^4 of the
    # time, so p = 2 * 1/16 up to the bootstrap's noise
    assert out["with_context"]["p_value"] == pytest.approx(0.125, abs=0.02)


def test_a_missing_run_is_named(bench) -> None:
    with pytest.raises(ValueError, match="wo_context_reweight"):
        bench.reweight_interaction({"unimp": {}, "wo_reweight": {}, "wo_context": {}}, seed=0)
