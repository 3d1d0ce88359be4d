"""bench/unim2rec_seeds.py: UniM2Rec benchmark results of several seeds side by side (hand-computed)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.scripts import load_script

seeds = load_script("bench/unim2rec_seeds.py")


def _result(path: Path, seed: int, ndcg: dict[str, float], tests: dict[str, tuple[float, float]]) -> Path:
    """A bench_unim2rec.py result of one seed on the target ``toys``: ``ndcg`` per variant, ``tests``
    per variant (diff against unim2rec, p)."""
    runs = {v: {"test": {"toys": {"ndcg@10": x, "hr@10": 0.5}}} for v, x in ndcg.items()}
    paired = {f"{v} vs unim2rec": {"toys": {"diff": d, "p_value": p, "n_users": 10}} for v, (d, p) in tests.items()}
    pretrain = {v: {"train_seconds": 100.0 + seed, "best_epoch": 2, "epochs_run": 6} for v in ndcg}
    path.write_text(json.dumps({"dataset": "builtin:small", "runs": {str(seed): runs},
                                "paired_by_seed": {str(seed): paired}, "pretrain": {str(seed): pretrain}}))
    return path


def test_seeds_and_files_are_merged_and_tallied(tmp_path: Path) -> None:
    files = [_result(tmp_path / "a.json", 0, {"unim2rec": 0.16, "wo_cp": 0.17}, {"wo_cp": (0.01, 0.001)}),
             # the reference reused by a second invocation of the same seed
             _result(tmp_path / "b.json", 0, {"unim2rec": 0.16, "wo_vp": 0.15}, {"wo_vp": (-0.01, 0.2)}),
             _result(tmp_path / "c.json", 1, {"unim2rec": 0.18, "wo_cp": 0.17}, {"wo_cp": (-0.01, 0.01)})]
    s = seeds.summarise(seeds.load(files), "unim2rec")
    assert list(s) == ["unim2rec", "wo_cp", "wo_vp"]
    ref = s["unim2rec"]["toys"]
    assert ref["by_seed"] == {"0": 0.16, "1": 0.18}
    assert ref["mean"] == pytest.approx(0.17)
    assert ref["sd"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))  # sample sd of 0.16, 0.18
    cp = s["wo_cp"]["toys"]
    assert cp["mean"] == pytest.approx(0.17) and cp["sd"] == pytest.approx(0.0)
    assert (cp["above"], cp["below"]) == (1, 1)  # +0.01 at p 0.001, -0.01 at p 0.01
    vp = s["wo_vp"]["toys"]
    assert vp["sd"] is None and (vp["above"], vp["below"]) == (0, 0)  # one seed, not significant
    md = seeds.markdown(s, "unim2rec", seeds.load(files))
    assert "| wo_cp | s0 +0.0100 (0.001) / s1 -0.0100 (0.010) | 1 / 1 / 2 |" in md
    assert "- seed 1: unim2rec 101 s, best 3 of 6; wo_cp 101 s, best 3 of 6" in md  # best_epoch is 0-based


def test_two_different_runs_under_one_name_are_refused(tmp_path: Path) -> None:
    files = [_result(tmp_path / "a.json", 0, {"unim2rec": 0.16}, {}),
             _result(tmp_path / "b.json", 0, {"unim2rec": 0.17}, {})]
    with pytest.raises(SystemExit, match="b.json: seed 0 unim2rec differs from the same run in .*a.json"):
        seeds.load(files)


def test_the_command_writes_its_files_and_names_a_missing_reference(tmp_path: Path) -> None:
    f = _result(tmp_path / "a.json", 0, {"unim2rec": 0.16, "wo_cp": 0.17}, {"wo_cp": (0.01, 0.001)})
    out = tmp_path / "out" / "sum"
    assert seeds.main([str(f), "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["summary"]["wo_cp"]["toys"]["above"] == 1
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit):
        seeds.main([str(f), "--reference", "sasrec", "--out", str(out)])
