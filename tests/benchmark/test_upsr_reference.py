"""bench/bench_upsr.py: rows kept from an earlier invocation (--reference), and the extra paired tests (no Ray)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ..scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_upsr.py")


def _row(**per_user: float) -> dict:
    return {"run": "r", "test": {}, "ranks": {"toys": dict(per_user)}}


def _reference(tmp_path: Path, runs: dict) -> str:
    path = tmp_path / "upsr.json"
    path.write_text(json.dumps({"quality": {"seeds": {"0": {"runs": runs}}}}))
    return str(path)


def test_reference_rows_are_marked_and_the_baselines_agreement_recorded(bench, tmp_path: Path) -> None:
    earlier = {"sasrec": _row(u1=1, u2=5), "bert4rec": _row(u1=2, u2=2), "upsr_minilm": _row(u1=3, u2=1)}
    path = _reference(tmp_path, earlier)
    now = {"sasrec": _row(u1=1, u2=5), "bert4rec": _row(u1=2, u2=7)}  # bert4rec trained again ranks u2 otherwise
    out = bench.reference_runs(path, bench._reference_rows(path, 0), now)
    assert out.pop("_agreement") == {"sasrec": {"toys": 1.0}, "bert4rec": {"toys": 0.5}}
    assert out["upsr_minilm"]["ranks"] == earlier["upsr_minilm"]["ranks"]
    assert {r["from"] for r in out.values()} == {path}


def test_a_reference_judging_other_test_users_is_refused(bench, tmp_path: Path) -> None:
    path = _reference(tmp_path, {"sasrec": _row(u1=1, u3=5)})
    with pytest.raises(SystemExit, match="sasrec judges other test users of 'toys'"):
        bench.reference_runs(path, bench._reference_rows(path, 0), {"sasrec": _row(u1=1, u2=5)})
    with pytest.raises(SystemExit, match="no quality runs for seed 1"):
        bench._reference_rows(path, 1)


def test_a_missing_reference_is_named_before_anything_runs(bench, tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    with pytest.raises(SystemExit, match=f"--reference {missing}: not a readable benchmark JSON"):
        bench.main(["quality", "--reference", str(missing), "--data-dir", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists()  # refused before the benchmark's data was generated


def test_extra_pairs_are_tested_when_both_rows_exist(bench) -> None:
    runs = {"upsr_minilm_zero_shot": _row(u1=1, u2=3), "upsr_minilm_zero_shot_no_pretrain": _row(u1=3, u2=3),
            "upsr_t5random": _row(u1=1, u2=1)}  # its zero-shot row is missing: that pair is left out
    out = bench.paired_extra(runs, seed=0)
    assert list(out) == ["upsr_minilm_zero_shot − upsr_minilm_zero_shot_no_pretrain"]
    toys = out["upsr_minilm_zero_shot − upsr_minilm_zero_shot_no_pretrain"]["toys"]
    assert toys["n_users"] == 2
    assert toys["diff"] == pytest.approx((1 - 0.5) / 2)  # NDCG@10: rank 1 -> 1, rank 3 -> 1/log2(4)
    assert toys["mean_b"] == pytest.approx(1 / math.log2(4))


def test_attribute_rows_are_paired_against_ctd_without_pre_training(bench) -> None:
    """Only the rows without pre-training ran: they are paired against ``single CTD`` (UPSR's fine-tuning text),
    the category's effect is tested as ``single CT − single T``, and the markdown shows both."""
    runs = {name: {**_row(u1=r1, u2=r2), "test": {"toys": {**dict.fromkeys(bench.METRICS, 0.5), "n_users": 2}}}
            for name, (r1, r2) in {"single CTD": (1, 1), "single CT": (1, 3), "single T": (3, 3)}.items()}
    block = bench.attribute_block(runs, seed=0)
    assert block["ref"] == "single CTD" and set(block["paired"]) == {"single CT", "single T"}
    assert block["paired"]["single T"]["toys"]["diff"] == pytest.approx(1 - 1 / math.log2(4))
    assert list(block["paired_extra"]) == ["single CT − single T"]
    assert block["paired_extra"]["single CT − single T"]["toys"]["diff"] == pytest.approx((1 - 1 / math.log2(4)) / 2)
    md = bench.markdown({"attributes": {"target": "toys", "seeds": {"0": block}}})
    assert "| users | single CTD − row |" in md
    assert "| single T | " in md and f"{1 - 1 / math.log2(4):+.4f} (p=" in md
    assert "| single CT − single T | +0.2" in md


def test_attribute_rows_without_a_reference_row_have_no_reference_column(bench) -> None:
    runs = {name: {**_row(u1=r1), "test": {"toys": {**dict.fromkeys(bench.METRICS, 0.25), "n_users": 1}}}
            for name, r1 in {"single CT": 1, "single T": 3}.items()}
    block = bench.attribute_block(runs, seed=0)
    assert block["ref"] is None and block["paired"] == {} and list(block["paired_extra"]) == ["single CT − single T"]
    md = bench.markdown({"attributes": {"target": "toys", "seeds": {"1": block}}})
    assert "None" not in md and "| ndcg@10 | users |\n" in md
    assert "| single T | " + " | ".join(["0.2500"] * len(bench.METRICS)) + " | 1 |\n" in md
