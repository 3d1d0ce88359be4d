"""The leaderboard end to end on the embedded `tiny` benchmark at the `quick` budget."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from raypipe.benchmark.cli import main


def _run(tmp_path: Path, methods: str, *extra: str) -> int:
    return main(["--size", "tiny", "--budget", "quick", "--seeds", "0", "--methods", methods,
                 "--storage-path", str(tmp_path / "runs"), "--out", str(tmp_path / "leaderboard"), *extra])


def test_baselines_are_judged_reported_and_not_run_twice(ray_local, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAYPIPE_DATA", str(tmp_path / "data"))
    assert _run(tmp_path, "random,pop") == 0
    results = tmp_path / "runs" / "builtin-tiny" / "results"
    assert sorted(p.name for p in results.iterdir()) == ["pop-s0.json", "random-s0.json", "sasrec-s0.json"]
    sas = json.loads((results / "sasrec-s0.json").read_text())
    full = sas["judged"]["protocols"]["full"]
    assert set(full) == {"toys", "kitchen", "sports"}
    # SASRec re-ranking its own shortlist gives its full-ranking NDCG@10 (the shortlist holds its top 10)
    for d in full:
        assert sas["judged"]["protocols"]["rerank"][d]["metrics"]["ndcg@10"] == pytest.approx(
            full[d]["metrics"]["ndcg@10"])
    assert sas["meta"]["seeds"]["train"] == 0 and sas["cost"]["peak_rss_mb"] > 100
    # the same judged users for every method
    pop = json.loads((results / "pop-s0.json").read_text())
    for d in full:
        assert set(pop["judged"]["protocols"]["full"][d]["per_user_ndcg@10"]) == set(full[d]["per_user_ndcg@10"])
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert set(board["settings"]["builtin-tiny"]["methods"]) == {"random", "pop", "sasrec"}
    assert "| sasrec |" in (tmp_path / "leaderboard.md").read_text()
    # resumable: a second invocation judges nothing again
    stamps = {p.name: p.stat().st_mtime_ns for p in results.iterdir()}
    assert _run(tmp_path, "random,pop") == 0
    assert {p.name: p.stat().st_mtime_ns for p in results.iterdir()} == stamps
    (tmp_path / "leaderboard.md").unlink()
    assert _run(tmp_path, "random,pop", "--report-only") == 0 and (tmp_path / "leaderboard.md").is_file()


@pytest.mark.slow
def test_every_method_runs_one_epoch_on_tiny(ray_local, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RAYPIPE_DATA", str(tmp_path / "data"))
    assert _run(tmp_path, "all") == 0
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    methods = board["settings"]["builtin-tiny"]["methods"]
    assert all(m["status"] == "done" for m in methods.values()), {k: v.get("reason") for k, v in methods.items()}
    for name in ("upsr", "unimp"):  # the rerankers: judged over SASRec's shortlist only
        assert set(methods[name]["protocols"]) == {"rerank"}
    for name in ("idp", "unisrec", "unim2rec", "prerec", "upsr"):
        assert methods[name]["zero_shot"], name
