"""bench/bench_upsr.py rerank: the first stage's recall, the paired tests per shortlist size, the tables (no Ray)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from ..scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench/bench_upsr.py")


def _judged(ranks: dict[str, dict[str, float | None]]) -> dict:
    """A judged row: per depth, its stored ranks (None = a miss) and metrics (left out: not read here)."""
    return {"run": "r", "rerank_seconds": 1.0, "sampled": {"ndcg@10": 0.5},
            "depths": {n: {"metrics": {"ndcg@10": 0.0, "hr@10": 0.0}, "ranks": r}
                       for n, r in ranks.items()}}


def test_rerank_pairs_ndcg_per_depth_and_counts_misses_as_zero(bench, tmp_path: Path) -> None:
    judged = {
        # u2's target is outside the top 2 (a miss for every row at N=2) and inside the top 5
        "CT/CT": _judged({"2": {"u1": 1, "u2": None}, "5": {"u1": 1, "u2": 3}}),
        "sasrec": _judged({"2": {"u1": 2, "u2": None}, "5": {"u1": 2, "u2": 5}}),
    }
    runs = {"CT/CT": {"ranks": {"kitchen": {"u1": 1, "u2": 40}}}, "sasrec": {"ranks": {"kitchen": {"u1": 3, "u2": 1}}}}
    block = bench.rerank_block(judged, runs, seed=0)
    assert block["first_stage_recall"] == {"2": 0.5, "5": 1.0}
    d2, d5 = block["paired"]["sasrec"]["2"], block["paired"]["sasrec"]["5"]
    assert d2["diff"] == pytest.approx((1 - 1 / math.log2(3)) / 2)  # u1: rank 1 vs 2; u2: 0 vs 0
    assert d5["diff"] == pytest.approx((1 - 1 / math.log2(3) + 1 / math.log2(4) - 1 / math.log2(6)) / 2)
    # the sampled-100 protocol from the runs' own ranks: u1 1 vs 3, u2 40 (beyond 10) vs 1
    assert block["paired_sampled"]["sasrec"]["kitchen"]["diff"] == pytest.approx((1 - 0.5 - 1) / 2)
    # every UPSR row against each baseline that ran: here CT/CT − sasrec, the same test as above
    assert list(block["vs_baselines"]) == ["CT/CT"] and list(block["vs_baselines"]["CT/CT"]) == ["sasrec"]
    assert block["vs_baselines"]["CT/CT"]["sasrec"]["5"]["diff"] == pytest.approx(d5["diff"])
    assert block["vs_baselines_sampled"]["CT/CT"]["sasrec"]["kitchen"]["diff"] == pytest.approx(-0.25)
    rr = {"target": "kitchen", "first_stage": "sasrec", "depths": [2, 5], "rows": ["sasrec", "CT/CT"],
          "seeds": {"0": block}}
    md = "\n".join(bench.rerank_markdown(rr))
    assert "Targets inside sasrec's top N: N=2 50.0%, N=5 100.0%." in md
    assert "| sasrec | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 0.5000 | 2 | 1 |" in md
    assert md.index("| sasrec | 0.0000") < md.index("| CT/CT | 0.0000")  # the rows' order, not the JSON's
    assert f"| sasrec | {d2['diff']:+.4f} (p={d2['p_value']:.3f}) | {d5['diff']:+.4f}" in md
    assert "UPSR row − sasrec:" in md and "UPSR row − random:" not in md  # no random row ran
    assert f"| CT/CT | {d2['diff']:+.4f} (p={d2['p_value']:.3f}) | {d5['diff']:+.4f}" in md
    bench.rerank_plot(rr, tmp_path / "rr.png")
    assert (tmp_path / "rr.png").read_bytes()[:4] == b"\x89PNG"


def test_rerank_options_are_checked_before_ray_starts(bench, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--rerank-rows: unknown rows \\['CT'\\]"):
        bench.main(["rerank", "--rerank-rows", "CT", "--items", "120", "--users", "60", "--events", "8",
                    "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="--depths: shortlist sizes must be positive"):
        bench.main(["rerank", "--depths", "0,20", "--items", "120", "--users", "60", "--events", "8",
                    "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "data").exists()  # nothing generated
