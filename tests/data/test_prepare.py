"""prepare(): the seen items of evaluation are the whole history; splits, flows and filters as options."""
from __future__ import annotations

import numpy as np
import pytest

from raypipe.data.prepare import prepare


def test_eval_seen_is_the_whole_history_not_the_window(tiny_dataset) -> None:
    prep = prepare(tiny_dataset)
    d = prep.domains[0]
    es = prep.eval_set("test", d, max_len=3)
    sub = prep.test.subset(prep.test.domain == d)
    long = int(np.argmax([len(h) for h in sub.history]))
    assert len(sub.history[long]) > 3  # a user with more history than the window
    indptr, flat = es.seen_csr()
    assert sorted(flat[indptr[long]:indptr[long + 1]].tolist()) == sorted(sub.history[long].tolist())
    assert (es.history[long] > 0).sum() == 3


def test_mixed_flows_are_evaluated_per_target_domain(tiny_dataset) -> None:
    prep = prepare(tiny_dataset, flow="mixed")
    assert set(prep.sequences["domain"]) == {"*"}
    assert len(prep.domains) == 6
    for d in prep.domains:
        es = prep.eval_set("test", d, max_len=50)
        assert np.isin(es.target, es.catalogue).all()  # each user's target is in that domain
    # a mixed history mixes domains
    assert any(len(set(h)) > 1 for h in prep.test.history_domains)
    # the same target events as the per-domain split, so both flows are compared on one test set
    per_domain = prepare(tiny_dataset)
    for split in ("valid", "test"):
        a, b = getattr(prep, split), getattr(per_domain, split)
        assert sorted(zip(a.user_id, a.domain, a.target)) == sorted(zip(b.user_id, b.domain, b.target))
        assert all(len(h) >= 2 for h in a.history)


def test_user_filter_and_k_core_roles(tiny_dataset) -> None:
    full = prepare(tiny_dataset, k=5)
    filtered = prepare(tiny_dataset, k=1, min_user_interactions=6)
    lengths = filtered.sequences["items"].map(len)
    assert lengths.min() >= 6
    src_only = prepare(tiny_dataset, k=5, k_core_roles=("source",))
    tgt = src_only.info.target_domains
    n_tgt_full = sum(len(s) for s, d in zip(full.sequences["items"], full.sequences["domain"]) if d in tgt)
    n_tgt_src = sum(len(s) for s, d in zip(src_only.sequences["items"], src_only.sequences["domain"]) if d in tgt)
    assert n_tgt_src > n_tgt_full  # target domains kept whole
    assert prepare(tiny_dataset, split="user_433").train["user_id"].nunique() < full.train["user_id"].nunique()


def test_train_fraction_keeps_a_nested_seeded_share_of_each_domains_training_users(tiny_dataset) -> None:
    full = prepare(tiny_dataset, split="user_433", seed=3)
    tenth = prepare(tiny_dataset, split="user_433", seed=3, train_fraction=0.1)
    third = prepare(tiny_dataset, split="user_433", seed=3, train_fraction=0.3)

    def users(p, part: str) -> dict[str, set]:
        if part == "train":
            return {d: set(g["user_id"]) for d, g in p.train.groupby("domain")}
        s = getattr(p, part)
        return {d: set(s.user_id[s.domain == d]) for d in set(s.domain)}

    for d, u in users(full, "train").items():
        assert len(users(tenth, "train")[d]) == -(-len(u) // 10)  # ceil(0.1 n)
        assert users(tenth, "train")[d] <= users(third, "train")[d] <= u  # nested
    # held-out users are untouched; the dropped users' events are gone from the data (popularity too)
    assert users(tenth, "test") == users(full, "test") and users(tenth, "valid") == users(full, "valid")
    dropped = {(u, d) for d, us in users(full, "train").items() for u in us - users(tenth, "train")[d]}
    assert not dropped & set(zip(tenth.sequences["user_id"], tenth.sequences["domain"]))
    assert len(tenth.sequences) == len(full.sequences) - len(dropped)
    assert tenth.counts.sum() < full.counts.sum()
    with pytest.raises(ValueError, match="user_433"):
        prepare(tiny_dataset, train_fraction=0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        prepare(tiny_dataset, split="user_433", train_fraction=0.0)


def test_event_attrs_travel_with_the_items_through_every_split(tiny_dataset) -> None:
    import pandas as pd

    from raypipe.data.dataset import CanonicalDataset

    events = CanonicalDataset.open(tiny_dataset).interactions().to_pandas()
    key = {(u, i, int(t)): (r, v) for u, i, t, r, v in
           zip(events.user_id, events.item_id, events.timestamp, events.rating, events.review)}
    plain = prepare(tiny_dataset)
    assert "ratings" not in plain.train.columns and plain.test.target_attrs == {}
    for split, flow in (("leave_one_out", "domain"), ("leave_one_out", "mixed"), ("user_433", "domain")):
        p = prepare(tiny_dataset, split=split, flow=flow, event_attrs=("ratings", "reviews"))
        ids = p.index.item_ids
        for _, row in p.train.head(30).iterrows():
            assert len(row["ratings"]) == len(row["reviews"]) == len(row["items"])
            for it, t, r, v in zip(row["items"], row["timestamps"], row["ratings"], row["reviews"]):
                want_r, want_v = key[(row["user_id"], ids[it - 1], int(t))]
                assert r == want_r and (v == want_v if isinstance(want_v, str) else v is None)
        if flow == "domain":
            t = p.test
            for k in range(20):
                want_r, want_v = key[(t.user_id[k], ids[t.target[k] - 1], int(t.target_time[k]))]
                assert t.target_attrs["ratings"][k] == want_r
                assert t.target_attrs["reviews"][k] == (want_v if isinstance(want_v, str) else None)
            sub = t.subset(np.arange(len(t)) < 5)
            assert np.array_equal(sub.target_attrs["ratings"], t.target_attrs["ratings"][:5])
    assert pd.isna(events.review).any()  # the fixture has events without a review
    with pytest.raises(ValueError, match="data.event_attrs"):
        prepare(tiny_dataset, event_attrs=("likes",))
