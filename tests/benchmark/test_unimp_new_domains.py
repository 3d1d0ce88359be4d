"""bench/bench_unimp.py's new-domain evaluation (Table 4b analogue) on tiny, with an untrained SASRec
(no Ray): only the domains the run never trained on are judged, on the run's own protocol, and their
per-user ranks are written for the paired tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from raypipe.config import load_config
from raypipe.models.registry import build_model
from raypipe.rundir import load_ranks
from raypipe.train.run import evaluate_domains, item_catalogue, prepare_for

from ..scripts import load_script


def test_new_domains_are_the_untrained_ones_judged_as_the_run_judges(tiny_dataset: Path, tmp_path: Path) -> None:
    bench = load_script("bench/bench_unimp.py")
    cfg = load_config(None, ["model.name=sasrec", f"data.dataset={tiny_dataset}", "model.hidden=16"])
    prep = prepare_for(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, item_catalogue(cfg, prep)).eval()
    sources = ["books", "movies", "electronics"]
    out = bench.new_domains(model, prep, cfg, sources, tmp_path)
    assert sorted(out) == ["kitchen", "sports", "toys"]
    with torch.no_grad():
        same = evaluate_domains(model, prep, ["toys"], cfg)["toys"]
    assert out["toys"]["ndcg@10"] == same["ndcg@10"]
    ranks = load_ranks(tmp_path, bench.NEW_DOMAIN_RANKS)
    assert sorted(ranks) == sorted(out)
    for d, per in ranks.items():
        r = np.array(list(per.values()))
        assert len(per) == out[d]["n_users"] and (r >= 1).all()
        hits = float((r <= 10).mean())
        assert hits == np.float64(out[d]["hr@10"])  # the written ranks are the ranks the metrics came from
    raw = json.loads((tmp_path / bench.NEW_DOMAIN_RANKS).read_text())
    assert set(raw["toys"]) == {"users", "ranks"}


def test_paired_on_new_domains_skips_runs_judged_before_it_existed(tmp_path: Path) -> None:
    import argparse

    bench = load_script("bench/bench_unimp.py")
    for name, ranks in (("unimp", [1, 1, 3, 11]), ("sasrec", [3, 11, 3, 11])):
        (tmp_path / f"s0-{name}").mkdir()
        (tmp_path / f"s0-{name}" / bench.NEW_DOMAIN_RANKS).write_text(json.dumps(
            {"toys": {"users": ["a", "b", "c", "d"], "ranks": ranks}}))
    (tmp_path / "s0-wo_vision").mkdir()  # an older run: no new-domain ranks
    args = argparse.Namespace(runs=str(tmp_path), seed=0)
    out = bench.paired(args, {"runs": {"unimp": {}, "sasrec": {}, "wo_vision": {}}}, new_domains=True)
    assert list(out) == ["sasrec"]
    assert out["sasrec"]["toys"]["diff"] == np.float64(0.5 + 1.0) / 4  # NDCG@10: rank 1 -> 1, 3 -> 0.5, 11 -> 0
