"""bench/repeat_targets.py: the share of test targets that repeat a history item, per domain."""
from __future__ import annotations

from pathlib import Path

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
