"""Protocols checked with tiny score functions whose ranks can be worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe.eval.metrics import compute_metrics
from raypipe.eval.protocols import (
    EvalConfig,
    EvalSet,
    compute_ranks,
    evaluate,
    evaluate_groups,
    evaluate_popularity_groups,
    popularity_groups,
    sample_negatives,
)


def by_index(history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Score = item index: the highest index ranks first. Returns a read-only broadcast view for shared
    candidates, so evaluation must never write into the model's output."""
    scores = candidates.to(torch.float32)
    if candidates.ndim == 1:
        return scores.expand(history.shape[0], -1)
    return scores


def by_negative_index(history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Score = -item index: the lowest index ranks first."""
    return -by_index(history, candidates)


def constant(history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    n_cols = candidates.shape[-1]
    return torch.zeros(history.shape[0], n_cols)


def coarse_hash(history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """A fixed per-(user, item) score with many ties: depends on the last history item and the item."""
    last = history[:, -1:].to(torch.float64)
    cand = candidates.to(torch.float64)
    cand = cand.view(1, -1) if cand.ndim == 1 else cand
    return torch.round(3 * torch.sin(0.37 * last + 1.3 * cand))


def left_pad(rows: list[list[int]], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, length - len(r) :] = r
    return out


def random_set(n_users: int, n_items: int, length: int, seed: int) -> EvalSet:
    rng = np.random.default_rng(seed)
    history = rng.integers(1, n_items + 1, size=(n_users, length))
    history[:, : length // 3] = 0  # some padding
    target = rng.integers(1, n_items + 1, size=n_users)
    return EvalSet(history=history, target=target, catalogue=np.arange(1, n_items + 1))


# -------------------------------------------------------------------------------------------------
# full ranking
# -------------------------------------------------------------------------------------------------


def test_full_ranking_by_hand_with_and_without_seen_exclusion() -> None:
    catalogue = np.arange(1, 21)  # items 1..20, by_index ranks 20 first
    s = EvalSet(
        history=left_pad([[18, 3], [15, 19], [], [30, 17]], 4),
        target=np.array([15, 15, 20, 16]),
        catalogue=catalogue,
    )
    # user 0: 16..20 beat 15 -> rank 6; excluding seen 18 -> rank 5
    # user 1: target 15 is also in the history (repeat) and is never excluded; 19 excluded -> 5
    # user 2: target 20 -> rank 1 either way
    # user 3: item 30 is outside the catalogue (ignored); 17..20 beat 16 -> 5, excluding 17 -> 4
    _, r = evaluate(by_index, s, exclude_seen=False, return_ranks=True)
    np.testing.assert_array_equal(r, [6, 6, 1, 5])
    m, r = evaluate(by_index, s, ks=(5,), return_ranks=True)
    np.testing.assert_array_equal(r, [5, 5, 1, 4])
    assert m["n_users"] == 4
    assert m["hr@5"] == 1.0
    # mrr = (1/5 + 1/5 + 1 + 1/4) / 4
    assert m["mrr"] == pytest.approx((0.2 + 0.2 + 1 + 0.25) / 4)


def test_catalogue_subset_and_explicit_seen() -> None:
    # catalogue {2, 4, 6, 8, 10}: target 6 is beaten by 8 and 10 -> rank 3
    s = EvalSet(history=left_pad([[1, 2]], 3), target=np.array([6]), catalogue=np.array([10, 2, 8, 6, 4]))
    assert compute_ranks(by_index, s).tolist() == [3.0]
    # explicit seen {10, 3}: 10 excluded (3 is not in the catalogue) -> rank 2; history is not used
    s2 = EvalSet(s.history, s.target, s.catalogue, seen=(np.array([0, 2]), np.array([10, 3])))
    assert compute_ranks(by_index, s2).tolist() == [2.0]


def test_k_percent_metrics_through_evaluate() -> None:
    # 20 items, K% = 10% -> cutoff 2; ranks 1, 2, 6 -> recall@10% = 2/3
    s = EvalSet(history=np.zeros((3, 2), dtype=np.int64), target=np.array([20, 19, 15]), catalogue=np.arange(1, 21))
    m = evaluate(by_index, s, ks=(), k_percents=(10,), b=20.0)
    assert m["recall@10%"] == pytest.approx(2 / 3)
    # with b = N = 20, r-NDCG is NDCG: (1 + 1/log2(3) + 0) / 3
    assert m["r_ndcg@10%"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_batching_matches_unbatched_full() -> None:
    s = random_set(n_users=40, n_items=50, length=6, seed=1)
    for exclude in (True, False):
        _, one = evaluate(coarse_hash, s, exclude_seen=exclude, seed=3, return_ranks=True)
        # a budget of 3 * 50 scores forces 14 batches of at most 3 users
        _, many = evaluate(coarse_hash, s, exclude_seen=exclude, seed=3, max_scores_per_batch=150,
                           return_ranks=True)
        np.testing.assert_array_equal(one, many)
    # a budget smaller than one row still works (one user per batch)
    np.testing.assert_array_equal(compute_ranks(coarse_hash, s, EvalConfig(seed=3, max_scores_per_batch=7)),
                                  compute_ranks(coarse_hash, s, EvalConfig(seed=3)))


def test_constant_scores_give_random_ranks() -> None:
    n_users, n_items = 4000, 9
    s = EvalSet(history=np.zeros((n_users, 3), dtype=np.int64), target=np.full(n_users, 5),
                catalogue=np.arange(1, n_items + 1))
    r = compute_ranks(constant, s)
    # uniform on 1..9: mean (9 + 1) / 2 = 5, sd sqrt((81 - 1) / 12) = 2.58 -> standard error 0.04
    assert set(np.unique(r)) == set(range(1, 10))
    assert r.mean() == pytest.approx(5.0, abs=0.2)
    # two seen items excluded -> 7 candidates, uniform on 1..7, mean 4; excluded items never tie
    s2 = EvalSet(history=np.tile([0, 1, 2], (n_users, 1)), target=s.target, catalogue=s.catalogue)
    r2 = compute_ranks(constant, s2)
    assert r2.max() == 7 and r2.mean() == pytest.approx(4.0, abs=0.2)
    # a model scoring everything -inf is a constant model too: excluded items still do not count
    r3 = compute_ranks(lambda h, c: constant(h, c) - float("inf"), s2)
    assert r3.max() == 7 and r3.mean() == pytest.approx(4.0, abs=0.2)
    # ties are broken the same way for the same seed, differently for another seed
    np.testing.assert_array_equal(r, compute_ranks(constant, s))
    assert not np.array_equal(r, compute_ranks(constant, s, EvalConfig(seed=1)))


def test_large_catalogue_runs_in_small_batches() -> None:
    n_items, n_users = 100_000, 64
    rng = np.random.default_rng(0)
    history = rng.integers(1, n_items + 1, size=(n_users, 20))
    target = rng.integers(1, n_items + 1, size=n_users)
    s = EvalSet(history=history, target=target, catalogue=np.arange(1, n_items + 1))
    # budget 2**20 scores -> 10 users per batch, never a 64 x 100000 matrix
    _, r = evaluate(by_index, s, ks=(10,), k_percents=(0.04,), max_scores_per_batch=2**20, return_ranks=True)
    # by_index: rank = 1 + #items above the target, minus the seen ones above it
    for u in range(n_users):
        above = np.unique(history[u][history[u] > target[u]])
        assert r[u] == 1 + (n_items - target[u]) - above.size


def test_eval_mode_and_errors() -> None:
    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.modes: list[bool] = []

        def score(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
            self.modes.append(self.training)
            return by_index(history, candidates)

    model = Model().train()
    s = EvalSet(history=np.zeros((2, 2), dtype=np.int64), target=np.array([1, 2]), catalogue=np.arange(1, 4))
    evaluate(model.score, s)
    assert model.modes == [False] and model.training  # scored in eval mode, restored afterwards

    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda h, c: torch.zeros(h.shape[0], 2), s)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda h, c: torch.full((h.shape[0], c.shape[-1]), float("nan")), s)
    with pytest.raises(ValueError, match="not in the catalogue"):
        evaluate(by_index, EvalSet(s.history, np.array([1, 7]), s.catalogue))
    with pytest.raises(ValueError, match="rerank"):
        evaluate(by_index, s, protocol="rerank")
    with pytest.raises(ValueError, match="duplicate"):
        EvalSet(s.history, s.target, np.array([1, 1, 2]))


# -------------------------------------------------------------------------------------------------
# sampled candidates
# -------------------------------------------------------------------------------------------------


def test_sampled_negatives_avoid_touched_items_and_are_seeded() -> None:
    s = random_set(n_users=300, n_items=400, length=30, seed=2)
    neg = sample_negatives(s, n_neg=100, seed=7)
    assert neg.shape == (300, 100)
    indptr, seen = s.seen_csr()
    for u in range(s.n_users):
        touched = set(seen[indptr[u] : indptr[u + 1]].tolist()) | {int(s.target[u])}
        row = neg[u].tolist()
        assert len(set(row)) == 100  # without replacement
        assert not touched & set(row)
        assert set(row) <= set(range(1, 401))
    np.testing.assert_array_equal(neg, sample_negatives(s, n_neg=100, seed=7))
    assert not np.array_equal(neg, sample_negatives(s, n_neg=100, seed=8))


def test_sampled_negatives_exact_path_and_uniformity() -> None:
    # every user touched 80 of 150 items: fewer than half untouched -> exact sampling from the pool
    n_users = 2000
    history = np.tile(np.arange(1, 80), (n_users, 1))
    s = EvalSet(history=history, target=np.full(n_users, 80), catalogue=np.arange(1, 151))
    neg = sample_negatives(s, n_neg=10, seed=0)
    assert neg.min() >= 81 and all(len(set(r)) == 10 for r in neg.tolist())
    # 2000 users x 10 draws over the 70 untouched items: about 286 each
    counts = np.bincount(neg.ravel(), minlength=151)[81:]
    assert counts.min() > 200 and counts.max() < 380
    # a user with fewer untouched items than n_neg is an error, naming the user
    s_ids = EvalSet(history=history[:3], target=np.full(3, 80), catalogue=np.arange(1, 151),
                    user_ids=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="fewer than n_neg=100.*'a'"):
        sample_negatives(s_ids, n_neg=100)
    with pytest.raises(ValueError, match="fewer than n_neg"):
        evaluate(by_index, s_ids, protocol="sampled", n_neg=100)


def test_sampled_ranks_follow_the_sampled_negatives() -> None:
    s = random_set(n_users=200, n_items=500, length=10, seed=3)
    negatives = sample_negatives(s, n_neg=99, seed=5)
    _, r = evaluate(by_index, s, protocol="sampled", n_neg=99, seed=5, return_ranks=True)
    # by_index: rank = 1 + number of negatives with a larger index than the target
    np.testing.assert_array_equal(r, 1 + (negatives > s.target[:, None]).sum(axis=1))


def test_sampled_batching_and_constant_model() -> None:
    # 4500 users span two negative-sampling blocks; a budget of 101 * 64 scores gives 71 batches
    s = random_set(n_users=4500, n_items=300, length=8, seed=4)
    cfg = EvalConfig(protocol="sampled", n_neg=100, seed=9)
    one = compute_ranks(coarse_hash, s, cfg)
    many = compute_ranks(coarse_hash, s, EvalConfig(protocol="sampled", n_neg=100, seed=9,
                                                     max_scores_per_batch=101 * 64))
    np.testing.assert_array_equal(one, many)
    # constant scores over 101 candidates: mean rank (101 + 1) / 2 = 51, standard error 29.2 / sqrt(4500)
    r = compute_ranks(constant, s, cfg)
    assert r.min() >= 1 and r.max() <= 101
    assert r.mean() == pytest.approx(51.0, abs=2.0)


# -------------------------------------------------------------------------------------------------
# subsets, groups, reranking
# -------------------------------------------------------------------------------------------------


def test_unseen_item_subset() -> None:
    s = EvalSet(history=left_pad([[1], [2], [3], [4]], 2), target=np.array([15, 16, 20, 15]),
                catalogue=np.arange(1, 21), user_ids=np.array([10, 11, 12, 13]))
    m, r = evaluate(by_index, s, unseen_items=[15, 16], return_ranks=True)
    # users 0, 1, 3 have targets in {15, 16}: ranks 6, 5, 6; user 2 is not evaluated (NaN)
    assert m["n_users"] == 3
    np.testing.assert_array_equal(r[[0, 1, 3]], [6, 5, 6])
    assert np.isnan(r[2])
    direct = evaluate(by_index, s.subset(np.array([True, True, False, True])))
    assert m == direct
    assert s.subset(np.array([2])).user_ids.tolist() == [12]


def test_popularity_groups_partition_users() -> None:
    s = random_set(n_users=300, n_items=60, length=5, seed=6)
    counts = np.random.default_rng(0).integers(0, 30, size=61)
    edges = (0, 3, 10)
    group, labels = popularity_groups(s.target, counts, edges)
    assert labels == ["[0,3)", "[3,10)", "[10,inf)"]
    c = counts[s.target]
    np.testing.assert_array_equal(group, np.where(c < 3, 0, np.where(c < 10, 1, 2)))

    out = evaluate_popularity_groups(coarse_hash, s, counts, edges, ks=(10,))
    assert list(out) == labels
    assert sum(g["n_users"] for g in out.values()) == s.n_users
    _, ranks = evaluate(coarse_hash, s, ks=(10,), return_ranks=True)
    for g, label in enumerate(labels):
        expected = compute_metrics(ranks[group == g], 60, ks=(10,))
        assert out[label] == {**expected, "n_users": int((group == g).sum())}
    # a group nobody falls into reports 0 users; items past the end of the counts count 0
    empty = evaluate_popularity_groups(coarse_hash, s, np.zeros(5), (0, 1000), ks=(10,))
    assert empty["[1000,inf)"]["n_users"] == 0 and empty["[0,1000)"]["n_users"] == 300
    with pytest.raises(ValueError):
        popularity_groups(s.target, counts, (5, 10))  # counts below the first edge


def test_evaluate_groups_any_grouping() -> None:
    # e.g. "target has an image" vs "target misses its image": users 0, 2 vs user 1
    s = EvalSet(history=np.zeros((3, 1), dtype=np.int64), target=np.array([20, 18, 16]), catalogue=np.arange(1, 21))
    out = evaluate_groups(by_index, s, np.array([0, 1, 0]), ["with_image", "missing_image"], ks=(1,))
    # by_index ranks: 20 -> 1, 18 -> 3, 16 -> 5
    assert out["with_image"]["n_users"] == 2 and out["with_image"]["mrr"] == pytest.approx((1 + 1 / 5) / 2)
    assert out["missing_image"]["n_users"] == 1 and out["missing_image"]["mrr"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="group ids"):
        evaluate_groups(by_index, s, np.array([0, 2, 0]), ["a", "b"])


def test_rerank_over_first_stage_top_n() -> None:
    s = EvalSet(history=left_pad([[], [], [], [20]], 1), target=np.array([16, 20, 3, 15]),
                catalogue=np.arange(1, 21))
    # first stage by_index: top 5 = {16..20}; for user 3 item 20 is seen -> {15..19}
    # second stage by_negative_index ranks the lowest index first within the shortlist:
    # user 0: 16 -> 1; user 1: 20 -> 5; user 2: 3 is not in the top 5 -> inf; user 3: 15 -> 1
    m, r = evaluate(by_negative_index, s, protocol="rerank", first_stage=by_index, top_n=5, ks=(1, 5),
                    return_ranks=True)
    np.testing.assert_array_equal(r, [1, 5, np.inf, 1])
    assert m["hr@1"] == pytest.approx(2 / 4) and m["hr@5"] == pytest.approx(3 / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 5 + 0 + 1) / 4)
    # a shortlist longer than what is left after exclusion: catalogue 1..5, seen {4, 5}, top_n 10 ->
    # valid shortlist {1, 2, 3}; second stage by_index puts target 1 last among the 3 valid items
    s2 = EvalSet(history=left_pad([[5, 4]], 2), target=np.array([1]), catalogue=np.arange(1, 6))
    r2 = compute_ranks(by_index, s2, EvalConfig(protocol="rerank", top_n=10), first_stage=by_index)
    assert r2.tolist() == [3.0]
    # batching does not change reranking
    big = random_set(n_users=30, n_items=40, length=5, seed=8)
    cfg = EvalConfig(protocol="rerank", top_n=12)
    np.testing.assert_array_equal(
        compute_ranks(coarse_hash, big, cfg, first_stage=by_index),
        compute_ranks(coarse_hash, big, EvalConfig(protocol="rerank", top_n=12, max_scores_per_batch=80),
                      first_stage=by_index),
    )


def test_a_precomputed_shortlist_reranks_like_its_first_stage() -> None:
    from raypipe.eval.protocols import first_stage_shortlist

    s = EvalSet(history=left_pad([[], [], [], [20]], 1), target=np.array([16, 20, 3, 15]),
                catalogue=np.arange(1, 21))
    short = first_stage_shortlist(by_index, s, top_n=5)
    # best first; user 3 has seen item 20, so it is never in their shortlist
    np.testing.assert_array_equal(short[0], [20, 19, 18, 17, 16])
    np.testing.assert_array_equal(short[3], [19, 18, 17, 16, 15])
    r = compute_ranks(by_negative_index, s, EvalConfig(protocol="rerank"), shortlist=short)
    np.testing.assert_array_equal(r, [1, 5, np.inf, 1])  # the hand-computed ranks of the test above
    big = random_set(n_users=30, n_items=40, length=5, seed=8)
    np.testing.assert_array_equal(
        compute_ranks(coarse_hash, big, EvalConfig(protocol="rerank"), shortlist=first_stage_shortlist(by_index, big, 12)),
        compute_ranks(coarse_hash, big, EvalConfig(protocol="rerank", top_n=12), first_stage=by_index))


def test_a_shortlist_with_empty_slots_ranks_among_its_real_items_only() -> None:
    from raypipe.eval.protocols import first_stage_shortlist

    # catalogue 1..5, items 4 and 5 seen: only 3 rankable items for a shortlist of 10
    s = EvalSet(history=left_pad([[5, 4]], 2), target=np.array([1]), catalogue=np.arange(1, 6))
    short = first_stage_shortlist(by_index, s, top_n=10)
    assert short.tolist() == [[3, 2, 1, 0, 0]]  # capped at the catalogue size, 0 = empty slot
    assert compute_ranks(by_index, s, EvalConfig(protocol="rerank"), shortlist=short).tolist() == [3.0]
    with pytest.raises(ValueError, match="not both"):
        compute_ranks(by_index, s, EvalConfig(protocol="rerank", top_n=2), first_stage=by_index, shortlist=short)
    with pytest.raises(ValueError, match="n_users=1"):
        compute_ranks(by_index, s, EvalConfig(protocol="rerank"), shortlist=np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="only used by protocol 'rerank'"):
        compute_ranks(by_index, s, EvalConfig(protocol="full"), shortlist=short)


def test_auto_protocol_samples_only_where_every_user_has_enough_negatives() -> None:
    from raypipe.eval.protocols import auto_protocol

    history = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)
    es = EvalSet(history=history, target=np.array([6, 7]), catalogue=np.arange(1, 105, dtype=np.int64))
    # the user with 3 seen items has 104 - 3 - 1 = 100 untouched items: 100 negatives fit, 101 do not
    assert auto_protocol("sampled", es, 100) == "sampled"
    assert auto_protocol("sampled", es, 101) == "full"
    assert auto_protocol("full", es, 100) == "full"
    small = EvalSet(history=history, target=np.array([6, 7]), catalogue=np.arange(1, 41, dtype=np.int64))
    assert auto_protocol("sampled", small, 100) == "full"


def test_rerank_depths_score_once_and_rank_like_a_shortlist_cut_at_each_depth() -> None:
    from raypipe.eval.protocols import first_stage_shortlist, rerank_depths

    s = EvalSet(history=left_pad([[], [], [], [20]], 1), target=np.array([16, 20, 3, 15]),
                catalogue=np.arange(1, 21))
    short = first_stage_shortlist(by_index, s, top_n=5)  # user 0: [20, 19, 18, 17, 16]
    calls: list[tuple[int, ...]] = []

    def counted(history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(candidates.shape))
        return by_negative_index(history, candidates)

    r = rerank_depths(counted, s, short, depths=[2, 5])
    assert calls == [(4, 5)]  # one pass over the whole shortlist
    # depth 5: the hand-computed ranks above; depth 2: user 0's 16 and user 3's 15 fall outside the top 2,
    # user 1's 20 is the first of [20, 19] but the lowest index ranks first -> rank 2
    np.testing.assert_array_equal(r[5], [1, 5, np.inf, 1])
    np.testing.assert_array_equal(r[2], [np.inf, 2, np.inf, np.inf])
    # many ties and several batches: identical to re-ranking each cut shortlist on its own
    big = random_set(n_users=30, n_items=40, length=5, seed=8)
    long = first_stage_shortlist(by_index, big, 12)
    cfg = EvalConfig(max_scores_per_batch=50)
    got = rerank_depths(coarse_hash, big, long, depths=[3, 7, 12], config=cfg)
    for n in (3, 7, 12):
        np.testing.assert_array_equal(got[n], compute_ranks(coarse_hash, big, EvalConfig(protocol="rerank"),
                                                            shortlist=long[:, :n]))
    with pytest.raises(ValueError, match="depths must be 1..5"):
        rerank_depths(by_index, s, short, depths=[6])
    with pytest.raises(ValueError, match="n_users=4"):
        rerank_depths(by_index, s, short[:2], depths=[2])


def test_target_seen_marks_the_repeat_targets_from_history_or_an_explicit_seen_set() -> None:
    history = np.array([[1, 3, 5], [0, 0, 4], [2, 3, 2]])
    es = EvalSet(history=history, target=np.array([5, 6, 3]), catalogue=np.arange(1, 8))
    assert es.target_seen().tolist() == [True, False, True]
    seen = (np.array([0, 1, 1, 3]), np.array([6, 1, 2]))  # user 1 saw nothing; user 2 saw 1 and 2, not 3
    es2 = EvalSet(history=history, target=np.array([6, 6, 3]), catalogue=np.arange(1, 8), seen=seen)
    assert es2.target_seen().tolist() == [True, False, False]
    # a repeated target is ranked among the items the user has not taken (and itself): with a constant
    # score, uniformly over 7 - 2 = 5 places for user 0, 7 - 1 = 6 for the others
    ranks = np.stack([compute_ranks(lambda h, c: torch.zeros(h.shape[0], c.shape[-1]), es,
                                    EvalConfig(protocol="full", seed=s)) for s in range(300)])
    assert ranks.max(axis=0).tolist() == [5, 6, 6] and ranks.min(axis=0).tolist() == [1, 1, 1]
