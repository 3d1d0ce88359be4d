"""bench/idp_seeds.py: several IDP fine-tuning seeds side by side (hand-computed means and sds)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scripts import load_script

seeds = load_script("bench/idp_seeds.py")


def _run(root: Path, name: str, ndcg: dict[str, float], diff: float, p: float, epochs: dict[str, tuple[int, int, bool]]) -> Path:
    d = root / name
    d.mkdir()
    metrics = {k: 0.0 for k, _ in seeds.METRICS}
    results = {v: {"ml-100k": {**metrics, "full_ndcg@10": x}} for v, x in ndcg.items()}
    paired = {"idp vs sasrec_scratch": {"ml-100k": {"full_ndcg@10": {"diff": diff, "p_value": p}}}}
    training = {v: {"epochs": e, "best_epoch": b, "early_stopped": s} for v, (e, b, s) in epochs.items()}
    (d / "results.json").write_text(json.dumps({"results": results, "paired": paired, "training": training,
                                                "config": {"seed": 0}, "total_s": 1.0}))
    return d


def test_seeds_are_summarised_per_variant(tmp_path: Path) -> None:
    a = _run(tmp_path, "s0", {"sasrec_scratch": 0.06, "idp": 0.09}, 0.03, 0.001,
             {"sasrec_scratch": (120, 100, True), "idp": (150, 140, False)})
    b = _run(tmp_path, "s1", {"sasrec_scratch": 0.08, "idp": 0.07}, -0.01, 0.4, {"sasrec_scratch": (80, 60, True)})
    c = _run(tmp_path, "s2", {"sasrec_scratch": 0.07}, 0.0, 1.0, {})
    out = tmp_path / "out" / "seeds"
    assert seeds.main([str(a), str(b), str(c), "--out", str(out)]) == 0
    s = json.loads(out.with_suffix(".json").read_text())["summary"]
    scratch = s["sasrec_scratch"]["ml-100k"]["full_ndcg@10"]
    assert scratch["mean"] == pytest.approx(0.07) and scratch["sd"] == pytest.approx(0.01)  # sd of 6, 8, 7 (×0.01)
    idp = s["idp"]["ml-100k"]["full_ndcg@10"]
    assert idp["per_run"] == {"s0": 0.09, "s1": 0.07, "s2": None}  # absent in s2: left out, not imputed
    assert idp["mean"] == pytest.approx(0.08) and idp["sd"] == pytest.approx(0.0141421, rel=1e-4)
    md = out.with_suffix(".md").read_text()
    assert "| idp | ml-100k | 0.0900 | 0.0700 | – | 0.0800 ± 0.0141 |" in md
    assert "| idp vs sasrec_scratch | ml-100k | full_ndcg@10 | +0.0300 (0.001) | -0.0100 (0.400) | +0.0000 (1.000) |" in md
    assert "| idp | 150 / 140* | – | – |" in md and "| sasrec_scratch | 120 / 100 | 80 / 60 | – |" in md
    assert out.with_suffix(".png").stat().st_size > 0


def test_an_unfinished_run_is_named(tmp_path: Path) -> None:
    (tmp_path / "s0").mkdir()
    with pytest.raises(SystemExit, match="s0/results.json: no such file"):
        seeds.main([str(tmp_path / "s0"), "--out", str(tmp_path / "x")])
