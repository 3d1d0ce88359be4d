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


def test_domain_plot_bars_are_trained_then_new_domains_per_judged_run(tmp_path: Path) -> None:
    bench = load_script("bench/bench_unimp.py")
    q = {"dataset": "builtin:tiny", "seed": 0, "runs": {
        "sasrec": {"rec": {"books": {"ndcg@10": 0.5}, "movies": {"ndcg@10": 0.25}},
                   "new_domains": {"toys": {"ndcg@10": 0.1}}},
        "unimp": {"rec": {"movies": {"ndcg@10": 0.2}, "books": {"ndcg@10": 0.3}},
                  "new_domains": {"toys": {"ndcg@10": 0.05}, "sports": {"ndcg@10": 0.02}}},
        "wo_vision": {"rec": {"books": {"ndcg@10": 0.9}}}}}  # judged before the new-domain split: no bars
    labels, n_trained, vals = bench.domain_bars(q)
    assert labels == ["books", "movies", "sports", "toys"] and n_trained == 2
    assert vals["unimp"] == [0.3, 0.2, 0.02, 0.05]
    assert vals["sasrec"][:2] == [0.5, 0.25] and np.isnan(vals["sasrec"][2]) and vals["sasrec"][3] == 0.1
    assert list(vals) == ["sasrec", "unimp"]
    assert bench.plot_domains(q, tmp_path / "d.png") and (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    assert not bench.plot_domains({"runs": {"wo_vision": q["runs"]["wo_vision"]}}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_chance_level_is_the_expected_ndcg_of_a_uniformly_random_ranking(tiny_dataset: Path) -> None:
    from raypipe.eval.metrics import ndcg
    from raypipe.train.run import judged_set

    bench = load_script("bench/bench_unimp.py")
    cfg = load_config(None, ["model.name=sasrec", f"data.dataset={tiny_dataset}", "eval.protocol=full"])
    prep = prepare_for(cfg.data)
    out = bench.chance_level(prep, cfg, ["sports"], draws=300)["sports"]
    es = judged_set(prep, "sports", cfg)
    # hand count: each user ranks the domain's items less the ones in their history (the target stays)
    items = set(prep.index.domain_items("sports").tolist())
    n = np.array([len(items - (set(h[h > 0].tolist()) - {int(t)})) for h, t in zip(es.history, es.target)])
    expected = np.mean([ndcg(np.arange(1, c + 1, dtype=np.float64), 10).mean() for c in n])
    assert out["n_users"] == es.n_users and out["protocol"] == "full"
    assert abs(out["ndcg@10"] - expected) < 0.02
    assert abs(out["hr@10"] - np.mean(np.minimum(10, n) / n)) < 0.02
    per_user = np.array([out["per_user"][str(u)] for u in es.user_ids])
    exact = np.array([ndcg(np.arange(1, c + 1, dtype=np.float64), 10).mean() for c in n])
    assert np.abs(per_user - exact).max() < 0.08 and per_user.mean() == np.float64(out["ndcg@10"])


def test_runs_are_paired_against_each_users_chance_level(tmp_path: Path) -> None:
    import argparse

    bench = load_script("bench/bench_unimp.py")
    (tmp_path / "s0-unimp").mkdir()
    (tmp_path / "s0-unimp" / bench.NEW_DOMAIN_RANKS).write_text(json.dumps(
        {"toys": {"users": ["a", "b", "c"], "ranks": [1, 3, 11]}}))
    (tmp_path / "s0-wo_vision").mkdir()  # no new-domain ranks: left out
    q = {"runs": {"unimp": {}, "wo_vision": {}},
         "chance_new_domains": {"toys": {"per_user": {"a": 0.25, "b": 0.25, "c": 0.25, "z": 0.9}}}}
    ranks = bench.rank_sets(argparse.Namespace(runs=str(tmp_path), seed=0), q["runs"], bench.NEW_DOMAIN_RANKS)
    out = bench.paired_chance(ranks, q["chance_new_domains"])
    assert list(ranks) == ["unimp"] and list(out) == ["unimp"]
    assert out["unimp"]["toys"]["diff"] == np.float64((1.0 + 0.5 + 0.0) / 3 - 0.25)  # user z: not judged by the run
