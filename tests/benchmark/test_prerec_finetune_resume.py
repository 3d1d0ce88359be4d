"""bench/bench_prerec_finetune.py's --resume: the earlier runs it keeps, the settings it refuses to mix and
the seeds named in its table (hand-made results; no Ray)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ..scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_prerec_finetune.py")


def _args(out: Path, **over) -> argparse.Namespace:
    base = {"dataset": "markets:small", "epochs": 8, "patience": 2, "baseline_epochs": 60, "baseline_patience": 8,
            "baseline_lr": 1e-3, "hidden": 64, "n_neg": 256, "batch_size": 256, "max_len": 20, "out": str(out)}
    return argparse.Namespace(**{**base, **over})


def _entry(r: float) -> dict:
    sub = {"n_users": 1, "recall@1%": r, "r_ndcg@1%": r, "ndcg@10": r, "per_user_r_ndcg": [r]}
    return {"domains": {"ca": {"all": sub, "unseen": {**sub, "n_users": 0}}}}


def test_resume_keeps_the_earlier_runs(bench, tmp_path) -> None:
    out = tmp_path / "ft"
    earlier = {"prerec_ft@0.1": {"0": _entry(0.1)}, "sasrec@0.1": {"0": _entry(0.04)}}
    (tmp_path / "ft.json").write_text(json.dumps({"args": vars(_args(out)), "results": earlier}))
    assert bench.earlier_results(_args(out), argparse.ArgumentParser()) == earlier
    assert bench.earlier_results(_args(tmp_path / "none"), argparse.ArgumentParser()) == {}


def test_resume_refuses_other_settings_naming_the_option(bench, tmp_path, capsys) -> None:
    out = tmp_path / "ft"
    (tmp_path / "ft.json").write_text(json.dumps({"args": vars(_args(out)), "results": {}}))
    with pytest.raises(SystemExit):
        bench.earlier_results(_args(out, epochs=30, baseline_lr=3e-4), argparse.ArgumentParser())
    err = capsys.readouterr().err
    assert "--epochs is 30 here, 8 in" in err and "--baseline-lr is 0.0003 here, 0.001 in" in err
    assert "--patience" not in err
    (tmp_path / "ft.json").write_text("{}")
    with pytest.raises(SystemExit):
        bench.earlier_results(_args(out), argparse.ArgumentParser())
    assert "is not a benchmark result" in capsys.readouterr().err


def test_a_variant_with_fewer_seeds_is_named_with_them(bench) -> None:
    results = {"prerec_ft@0.1": {"0": _entry(0.1), "1": _entry(0.2)}, "unisrec_ft@0.1": {"0": _entry(0.05)}}
    assert bench.column("prerec_ft", results, [0.1], [0, 1]) == "prerec_ft"
    assert bench.column("unisrec_ft", results, [0.1], [0, 1]) == "unisrec_ft (seeds 0)"
    lines = bench.table(results, [0.1], [0, 1]).splitlines()
    assert "| prerec_ft | unisrec_ft (seeds 0) |" in lines[0]
    r_ndcg = next(line for line in lines if line.startswith("| 0.1 | all | r_ndcg@1%"))
    assert r_ndcg.endswith("| 0.1500 | 0.0500 |")  # prerec_ft: mean of seeds 0 and 1; unisrec_ft: seed 0
