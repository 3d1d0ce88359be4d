"""The leaderboard report from result files: numbers, tables, and the HTML as a browser renders it."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from raypipe.benchmark.report import summarise, tables, write_report
from raypipe.benchmark.runner import BenchmarkConfig


def _judged(per_user: dict[str, float], few: dict[str, float]) -> dict:
    vals = np.array(list(per_user.values()))
    return {"protocols": {"full": {"toys": {"metrics": {"ndcg@10": float(vals.mean()), "recall@10": float((vals > 0).mean()),
                                                        "n_users": len(vals)},
                                            "per_user_ndcg@10": per_user}}},
            "few_shot": {"toys": {g: {"ndcg@10": v, "n_users": 2} for g, v in few.items()}},
            "skipped": {}, "parameters": 1000, "trainable_parameters": 500, "eval_seconds": 2.0}


def _result(method: str, seed: int, per_user: dict[str, float], zero: dict[str, float] | None = None) -> dict:
    r = {"method": method, "seed": seed, "status": "done", "runs": {},
         "judged": _judged(per_user, {"0": per_user["u1"], "1": per_user["u2"]}),
         "cost": {"train_seconds": 10.0 * (seed + 1), "peak_rss_mb": 900.0 + seed, "samples_per_s": 50.0,
                  "curves": {"judged": [0.1, 0.2]}, "epochs": {"judged": 2}}}
    if zero:
        r["zero_shot"] = _judged(zero, {})
    return r


@pytest.fixture
def results() -> dict:
    sas0 = {"u1": 1.0, "u2": 0.5, "u3": 0.0, "u4": 0.0}
    sas1 = {"u1": 1.0, "u2": 0.0, "u3": 0.0, "u4": 0.0}
    uni0 = {"u1": 1.0, "u2": 1.0, "u3": 1.0, "u4": 0.5}
    uni1 = {"u1": 1.0, "u2": 1.0, "u3": 0.5, "u4": 0.5}
    uni = [_result("unisrec", 0, uni0, zero=sas0), _result("unisrec", 1, uni1, zero=sas1)]
    for r, (half, none) in zip(uni, [(0.5, 0.25), (0.25, 0.0)]):
        r["absent"] = {"protocol": "full", "skipped": [], "views": {"text": {
            "0.5": {"toys": {"ndcg@10": half, "hr@10": 1.0}}, "1": {"toys": {"ndcg@10": none, "hr@10": 0.0}}}}}
    return {"builtin-tiny": {
        "0": {"sasrec": _result("sasrec", 0, sas0), "unisrec": uni[0],
              "sasrec_converged": _result("sasrec_converged", 0, {"u1": 1.0, "u2": 1.0, "u3": 0.5, "u4": 0.5}),
              "unimp": {"method": "unimp", "seed": 0, "status": "not_applicable", "reason": "no images"}},
        "1": {"sasrec": _result("sasrec", 1, sas1), "unisrec": uni[1],
              "unimp": {"method": "unimp", "seed": 1, "status": "not_applicable", "reason": "no images"}}}}


def test_means_over_seeds_paired_tests_and_costs(results: dict) -> None:
    board = summarise(results, BenchmarkConfig(seeds=(0, 1), size="tiny", budget="quick"))
    s = board["settings"]["builtin-tiny"]
    # SASRec: seed means 0.375 and 0.25; UniSRec: 0.875 and 0.75
    assert s["methods"]["sasrec"]["protocols"]["full"]["toys"]["ndcg@10"] == pytest.approx([0.375, 0.25])
    assert s["methods"]["unisrec"]["zero_shot"]["full"]["toys"]["ndcg@10"] == pytest.approx([0.375, 0.25])
    assert s["methods"]["unimp"] == {"status": "not_applicable", "reason": "no images"}
    paired = s["paired"]["full"]["unisrec"]["toys"]
    assert paired["0"]["diff"] == pytest.approx(0.5) and paired["1"]["diff"] == pytest.approx(0.5)
    # against the converged SASRec too (seed 0 only: it has no seed 1): 0.875 - 0.75
    against = s["paired_sasrec_converged"]["full"]
    assert set(against["unisrec"]["toys"]) == {"0"} and against["unisrec"]["toys"]["0"]["diff"] == pytest.approx(0.125)
    assert against["sasrec"]["toys"]["0"]["diff"] == pytest.approx(0.375 - 0.75)
    cost = s["methods"]["unisrec"]["cost"]
    assert cost["train_seconds"] == pytest.approx(15.0) and cost["peak_rss_mb"] == 901.0
    assert s["methods"]["unisrec"]["few_shot"]["toys"]["0"] == [1.0, 1.0]
    md = "\n".join(t.markdown() for t in tables(board, "builtin-tiny"))
    assert "| unisrec | 0.8125 ± 0.0884 |" in md  # mean and sd of 0.875, 0.75
    assert "| sasrec | 0.3125 ± 0.0884 |" in md
    assert "| unisrec | full | toys | 0.3125 ± 0.0884 | 0.8125 ± 0.0884 |" in md  # zero-shot vs fine-tuned
    assert "| unimp | n/a |" in md and "no images" in md
    # missing text: seeds give 0.5, 0.25 (50% absent) and 0.25, 0 (all absent) against 0.8125 intact
    assert s["methods"]["unisrec"]["absent"]["views"]["text"]["0.5"]["toys"] == [0.5, 0.25]
    assert "| unisrec | text | full | 0.8125 | 0.3750 (-54%) | 0.1250 (-85%) |" in md


def test_the_report_files_are_written_and_self_contained(results: dict, tmp_path: Path) -> None:
    board = summarise(results, BenchmarkConfig(seeds=(0, 1), size="tiny", budget="quick"))
    paths = write_report(board, tmp_path / "leaderboard")
    page = paths["html"].read_text()
    assert page.count("<table>") == len(tables(board, "builtin-tiny"))
    assert page.count("<img") == 4 and "src='data:image/png;base64," in page
    assert not re.search(r"src=['\"]https?:", page)  # nothing fetched from elsewhere
    assert paths["json"].is_file() and paths["md"].read_text().startswith("# Leaderboard")


def test_a_real_browser_renders_every_table_and_image(results: dict, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    board = summarise(results, BenchmarkConfig(seeds=(0, 1), size="tiny", budget="quick"))
    html_file = write_report(board, tmp_path / "leaderboard")["html"]
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", html_file.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    n_tables = len(tables(board, "builtin-tiny"))
    assert f'data-tables="{n_tables}"' in body and 'data-images-decoded="4"' in body


def test_the_readme_block_is_generated_from_the_board(results: dict) -> None:
    from raypipe.benchmark.report import README_END, README_START, readme_block, replace_readme_block

    board = summarise(results, BenchmarkConfig(seeds=(0, 1), size="tiny", budget="quick"))
    block = readme_block(board, "x.json")
    assert "| unisrec | 0.8125 | 0.3125 |" in block  # full ranking, then zero-shot
    assert "| unimp | n/a | n/a (no images) |" in block
    assert "`builtin-tiny`, budget `quick`, seeds [0, 1]:" in block
    readme = f"intro\n{README_START}\nold\n{README_END}\nrest\n"
    assert replace_readme_block(readme, block) == f"intro\n{block}\nrest\n"
    with pytest.raises(ValueError, match="no leaderboard markers"):
        replace_readme_block("no markers", block)


def test_each_setting_reports_the_seeds_it_has(results: dict, tmp_path: Path) -> None:
    """Seeds 0 and 1 asked; a second setting with seed 0 only says [0], not the seeds asked."""
    from raypipe.benchmark.report import readme_block

    results["ml1m-ml100k"] = {"0": {"sasrec": _result("sasrec", 0, {"u1": 1.0, "u2": 0.0, "u3": 0.0, "u4": 0.0})}}
    board = summarise(results, BenchmarkConfig(seeds=(0, 1), size="tiny", budget="quick"))
    assert board["settings"]["builtin-tiny"]["seeds"] == [0, 1] and board["settings"]["ml1m-ml100k"]["seeds"] == [0]
    block = readme_block(board, "x.json")
    assert "`builtin-tiny`, budget `quick`, seeds [0, 1]:" in block and "`ml1m-ml100k`, budget `quick`, seeds [0]:" in block
    md = write_report(board, tmp_path / "lb")["md"].read_text()
    assert "## ml1m-ml100k\n\nSeeds with results: [0]." in md
    assert "Mean ± sd over seeds [0]; " in "\n".join(t.markdown() for t in tables(board, "ml1m-ml100k"))


def test_the_readme_shows_the_committed_leaderboard() -> None:
    from raypipe.benchmark.readme import ROOT, main

    board = ROOT / "bench" / "results" / "leaderboard.json"
    if not board.is_file():
        pytest.skip("no leaderboard committed yet")
    assert main(["--board", str(board), "--check"]) == 0


def test_a_method_with_fewer_seeds_names_them(results: dict) -> None:
    """A benchmark still running (or resumed): UniSRec has seed 0 only while SASRec has seeds 0 and 1, so
    UniSRec's means are over seed 0 alone and every table says so; complete rows stay unlabelled."""
    from raypipe.benchmark.report import readme_block

    del results["builtin-tiny"]["1"]["unisrec"]
    board = summarise(results, BenchmarkConfig(seeds=(0, 1), size="tiny", budget="quick"))
    md = "\n".join(t.markdown() for t in tables(board, "builtin-tiny"))
    assert "| unisrec (seeds [0]) | 0.8750 |" in md  # full ranking: seed 0's mean alone
    assert "| unisrec (seeds [0]) | text | full | 0.8750 |" in md  # missing-modality row
    assert "| sasrec | 0.3125 ± 0.0884 |" in md and "| sasrec (seeds" not in md
    block = readme_block(board, "x.json")
    assert "| unisrec (seeds [0]) | 0.8750 | 0.3750 |" in block and "| sasrec | 0.3125 |" in block


def test_the_per_seed_table_lists_each_seed_mean_over_domains(results: dict) -> None:
    """UniSRec's seeds score 0.875 and 0.75 (one domain), zero-shot 0.375 and 0.25; a method without a
    zero-shot run shows a dash; a not-applicable method has no row."""
    from raypipe.benchmark.report import per_seed_table

    board = summarise(results, BenchmarkConfig(seeds=(0, 1), size="tiny", budget="quick"))
    s = board["settings"]["builtin-tiny"]
    md = per_seed_table(s, "builtin-tiny").markdown()
    assert "| unisrec | 0, 1 | 0.8750 / 0.7500 | 0.3750 / 0.2500 |" in md
    assert "| sasrec | 0, 1 | 0.3750 / 0.2500 | – |" in md
    assert "| sasrec_converged | 0 | 0.7500 | – |" in md and "unimp" not in md
    # two domains: the per-seed value is the mean over them
    s["methods"]["sasrec"]["protocols"]["full"]["kitchen"] = {"ndcg@10": [0.125, 0.75]}
    assert "| sasrec | 0, 1 | 0.2500 / 0.5000 | – |" in per_seed_table(s, "builtin-tiny").markdown()
