"""bench/repeat_targets.py: the share of test targets that repeat a history item, per domain."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raypipe.config import load_config
from raypipe.train.run import judged_set, prepare_for

from ..scripts import load_script


def test_repeat_shares_count_the_judged_users_whose_target_is_in_their_history(tiny_dataset: Path,
                                                                               tmp_path: Path) -> None:
    bench = load_script("bench/repeat_targets.py")
    res = bench.repeat_shares(str(tiny_dataset))
    cfg = load_config(None, ["model.name=sasrec", f"data.dataset={tiny_dataset}"])
    prep = prepare_for(cfg.data)
    assert sorted(res) == sorted(prep.domains)
    es = judged_set(prep, "toys", cfg)
    hand = sum(int(t) in {int(x) for x in h if x > 0} for h, t in zip(es.history, es.target)) / es.n_users
    assert res["toys"]["users"] == es.n_users and res["toys"]["repeat_share"] == hand and 0 < hand < 1
    assert res["toys"]["items"] == len(prep.index.domain_items("toys"))
    assert bench.main(["--datasets", str(tiny_dataset), "--out", str(tmp_path / "r")]) == 0
    assert "| toys |" in (tmp_path / "r.md").read_text() and (tmp_path / "r.json").exists()


def test_a_results_file_is_split_by_repeated_targets_and_paired_with_its_reference(tiny_dataset: Path) -> None:
    from raypipe.train.run import repeated_targets

    bench = load_script("bench/repeat_targets.py")
    cfg = load_config(None, ["model.name=sasrec", f"data.dataset={tiny_dataset}", "data.max_len=10"])
    prep = prepare_for(cfg.data)
    flags = repeated_targets(prep, ["toys"], cfg, all_users=True)["toys"]
    rep = [u for u, f in flags.items() if f][:2]
    oth = [u for u, f in flags.items() if not f][:2]
    a = {"toys": {rep[0]: 1, rep[1]: 3, oth[0]: 2, oth[1]: None}}  # None: a miss
    b = {"toys": {rep[0]: 11, rep[1]: 11, oth[0]: 1, oth[1]: 1}}
    results = {"commands": ["..."], "quality": {"dataset": str(tiny_dataset), "max_len": 10, "seeds": {"0": {"runs": {
        "upsr": {"ranks": a, "run": "x"}, "sasrec": {"ranks": b}}}}}}
    res = bench.split_results(results, "sasrec", None)["quality"]
    g = res["runs"]["seeds/0/runs/upsr"]["toys"]
    assert g["repeat"]["n"] == 2 and abs(g["repeat"]["ndcg@10"] - 0.75) < 1e-12
    assert g["other"]["n"] == 2 and abs(g["other"]["ndcg@10"] - 1 / np.log2(3) / 2) < 1e-12
    pr = res["paired"]["seeds/0/runs/upsr"]["toys"]
    assert abs(pr["repeat"]["diff"] - 0.75) < 1e-12 and abs(pr["other"]["diff"] - (1 / np.log2(3) / 2 - 1)) < 1e-12
    assert "seeds/0/runs/sasrec" not in res["paired"]
    assert "| seeds/0/runs/upsr | toys | 0.7500 (2) |" in bench.split_markdown({"quality": res}, "sasrec")
    with pytest.raises(SystemExit, match="max_len"):
        bench.split_results({"q": {"dataset": str(tiny_dataset), "runs": {}}}, None, None)
