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
