"""raypipe.eval.repeats: metrics split by repeated targets, each group against its chance level."""
from __future__ import annotations

import numpy as np

from raypipe.eval.repeats import split_by_repeat


def test_the_groups_get_their_own_metrics_counts_and_chance_tests() -> None:
    # hand-made ranks: two repeat users at ranks 1 and 3, two others at 2 and 11
    repeats = {"toys": {"a": True, "b": True, "c": False, "d": False}}
    ranks = {"m": {"toys": {"a": 1.0, "b": 3.0, "c": 2.0, "d": 11.0}}}
    chance = {"toys": {"per_user": {"a": 0.2, "b": 0.2, "c": 0.1, "d": 0.3}}}
    out = split_by_repeat(ranks, repeats, chance)["m"]["toys"]
    assert out["repeat"]["n"] == 2 and out["repeat"]["ndcg@10"] == np.float64(1.0 + 0.5) / 2
    assert out["repeat"]["hr@1"] == 0.5 and out["other"]["hr@1"] == 0.0
    assert out["other"]["n"] == 2 and abs(out["other"]["ndcg@10"] - 1 / np.log2(3) / 2) < 1e-12
    assert abs(out["other"]["chance"] - 0.2) < 1e-12
    assert abs(out["other"]["minus_chance"]["diff"] - (1 / np.log2(3) / 2 - 0.2)) < 1e-12
    assert "chance" not in split_by_repeat(ranks, repeats)["m"]["toys"]["other"]
    # a user the repeat flags do not know is in neither group
    out2 = split_by_repeat({"m": {"toys": {**ranks["m"]["toys"], "e": 1.0}}}, repeats)["m"]["toys"]
    assert out2["repeat"]["n"] + out2["other"]["n"] == 4
