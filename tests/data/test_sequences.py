"""k-core, indexing, chronological sequences, splits and mixed flows, checked on hand-made data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raypipe.data.sequences import (
    ItemIndex, build_sequences, item_counts, kcore, leave_one_out, mixed_flows, mixed_leave_one_out, next_item_examples, pad_left,
    user_split,
)


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "domain", "timestamp"])


def test_kcore_is_iterated() -> None:
    # u3 has 1 interaction -> dropped; then item b has only 1 -> dropped; then u2 has 1 -> dropped.
    rows = [("u1", "d/a", "d", 1), ("u1", "d/c", "d", 2), ("u2", "d/a", "d", 1), ("u2", "d/b", "d", 2),
            ("u3", "d/b", "d", 1), ("u4", "d/a", "d", 1), ("u4", "d/c", "d", 2)]
    out = kcore(frame(rows), 2)
    assert sorted(out["user_id"].unique()) == ["u1", "u4"]
    assert set(out["item_id"]) == {"d/a", "d/c"}


def test_index_order_padding_and_lookup() -> None:
    idx = ItemIndex.build(pd.Series(["y/b", "x/z", "y/a"]), pd.Series(["y", "x", "y"]))
    assert list(idx.item_ids) == ["x/z", "y/a", "y/b"]
    assert list(idx.lookup(["y/b", "nope", "x/z"])) == [3, 0, 1]
    assert list(idx.domain_items("y")) == [2, 3]
    assert idx.num_embeddings == 4


def test_sequences_chronological_with_stable_ties_and_loo() -> None:
    rows = [("u1", "d/c", "d", 5), ("u1", "d/a", "d", 1), ("u1", "d/b", "d", 5), ("u1", "d/d", "d", 9),
            ("u1", "e/x", "e", 3)]
    df = frame(rows)
    idx = ItemIndex.build(df.item_id, df.domain)  # d/a=1 d/b=2 d/c=3 d/d=4 e/x=5
    seqs = build_sequences(df, idx)
    d = seqs[seqs.domain == "d"].iloc[0]
    assert list(d["items"]) == [1, 3, 2, 4]  # ties at t=5 keep file order: c before b
    train, valid, test = leave_one_out(seqs)
    assert list(train[train.domain == "d"].iloc[0]["items"]) == [1, 3]
    assert list(train[train.domain == "e"].iloc[0]["items"]) == [5]  # too short: train only
    assert list(valid.target) == [2] and list(valid.history[0]) == [1, 3]
    assert list(test.target) == [4] and list(test.history[0]) == [1, 3, 2]
    flows = mixed_flows(df, idx)
    assert list(flows.iloc[0]["items"]) == [1, 5, 3, 2, 4]
    assert list(flows.iloc[0]["domains"]) == ["d", "e", "d", "d", "d"]


def test_pad_left_and_examples() -> None:
    m = pad_left([np.array([1, 2, 3]), np.array([4])], 2)
    assert m.tolist() == [[2, 3], [0, 4]]
    h, t = next_item_examples([np.array([1, 2, 3])], 2)
    assert h.tolist() == [[0, 1], [1, 2]] and t.tolist() == [2, 3]
    assert item_counts([np.array([1, 1, 3])], 5).tolist() == [0, 2, 0, 1, 0]


def test_user_split_433_deterministic_and_disjoint() -> None:
    users = np.array([f"u{i}" for i in range(100)])
    a = user_split(users, seed=1)
    b = user_split(users, seed=1)
    c = user_split(users, seed=2)
    assert [len(x) for x in a] == [40, 30, 30]
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == c[0]).all()
    assert set().union(*map(set, a)) == set(users) and sum(map(len, a)) == 100


def test_unknown_item_in_sequence_raises() -> None:
    df = frame([("u1", "d/a", "d", 1)])
    idx = ItemIndex.build(pd.Series(["d/b"]), pd.Series(["d"]))
    with pytest.raises(KeyError, match="d/a"):
        build_sequences(df, idx)


def test_windows_cover_every_target_once() -> None:
    from raypipe.data.sequences import sequence_windows

    s = np.arange(1, 11)  # 10 items, width 4: targets 2..10 each once
    w = sequence_windows([s, np.array([7]), np.array([5, 6])], 4)
    assert [x.tolist() for x in w] == [[7, 8, 9, 10], [4, 5, 6, 7], [1, 2, 3, 4], [5, 6]]
    targets = sorted(t for x in w[:3] for t in x[1:].tolist())
    assert targets == list(range(2, 11))
    assert [x.tolist() for x in sequence_windows([np.arange(1, 5)], 4)] == [[1, 2, 3, 4]]
    with pytest.raises(ValueError):
        sequence_windows([s], 1)


def test_mixed_leave_one_out_holds_out_per_domain_with_cross_domain_histories() -> None:
    rows = [("u1", "d/a", "d", 1), ("u1", "e/x", "e", 2), ("u1", "d/b", "d", 3), ("u1", "e/y", "e", 4),
            ("u1", "d/c", "d", 5), ("u1", "e/z", "e", 6), ("u1", "f/p", "f", 7), ("u1", "d/e", "d", 8)]
    df = frame(rows)
    idx = ItemIndex.build(df.item_id, df.domain)  # d/a=1 d/b=2 d/c=3 d/e=4 e/x=5 e/y=6 e/z=7 f/p=8
    train, valid, test = mixed_leave_one_out(mixed_flows(df, idx))
    # d: valid d/c (t=5), test d/e (t=8); e: valid e/y (t=4), test e/z (t=6); f has one event: training only
    assert sorted(zip(test.domain, test.target)) == [("d", 4), ("e", 7)]
    assert sorted(zip(valid.domain, valid.target)) == [("d", 3), ("e", 6)]
    d_test = list(test.domain).index("d")
    assert list(test.history[d_test]) == [1, 5, 2, 6, 3, 7, 8]  # every earlier event, any domain
    assert list(test.history_domains[d_test]) == ["d", "e", "d", "e", "d", "e", "f"]
    e_valid = list(valid.domain).index("e")
    assert list(valid.history[e_valid]) == [1, 5, 2] and valid.target_time[e_valid] == 4
    # training keeps no held-out event; every per-event column filtered alike
    assert list(train.iloc[0]["items"]) == [1, 5, 2, 8]
    assert list(train.iloc[0]["domains"]) == ["d", "e", "d", "f"] and list(train.iloc[0]["timestamps"]) == [1, 2, 3, 7]


def test_mixed_flow_leave_one_out_truncates_every_column() -> None:
    rows = [("u1", "d/a", "d", 1), ("u1", "e/x", "e", 2), ("u1", "d/b", "d", 3), ("u1", "e/y", "e", 4)]
    df = frame(rows)
    idx = ItemIndex.build(df.item_id, df.domain)  # d/a=1 d/b=2 e/x=3 e/y=4
    train, valid, test = leave_one_out(mixed_flows(df, idx))
    assert list(train.iloc[0]["items"]) == [1, 3] and list(train.iloc[0]["domains"]) == ["d", "e"]
    assert len(train.iloc[0]["timestamps"]) == 2
    assert list(valid.domain) == ["d"] and list(valid.target) == [2]
    assert list(test.domain) == ["e"] and list(test.history[0]) == [1, 3, 2]
    assert list(test.history_domains[0]) == ["d", "e", "d"]
    indptr, flat = test.seen_csr()
    assert indptr.tolist() == [0, 3] and flat.tolist() == [1, 3, 2]


def test_user_holdout_433_never_trains_on_held_out_users() -> None:
    from raypipe.data.sequences import user_holdout

    rows = [(f"u{u}", f"d/{i}", "d", i) for u in range(20) for i in range(3)]
    seqs = build_sequences(frame(rows), ItemIndex.build(pd.Series([f"d/{i}" for i in range(3)]), pd.Series(["d"] * 3)))
    train, valid, test = user_holdout(seqs, seed=0)
    assert (len(train), len(valid), len(test)) == (8, 6, 6)
    assert not set(train["user_id"]) & (set(valid.user_id) | set(test.user_id))
    assert set(valid.user_id).isdisjoint(test.user_id)
    assert list(test.target) == [3] * 6 and all(list(h) == [1, 2] for h in test.history)
