"""The leaderboard's method table, settings and options."""
from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.benchmark.cli import config_from, parser
from raypipe.benchmark.methods import METHODS, REFERENCE, check_methods, not_applicable, settings
from raypipe.benchmark.runner import BenchmarkConfig, _wants_absent, modality_views, read_views
from raypipe.config import load_config
from raypipe.rundir import CONFIG_FILE


def test_the_reference_always_runs_first_then_the_table_order() -> None:
    assert check_methods(["unim2rec", "pop"]) == [REFERENCE, "pop", "unim2rec"]
    assert check_methods(list(METHODS))[0] == REFERENCE and len(check_methods(list(METHODS))) == len(METHODS)
    with pytest.raises(ValueError, match=r"--methods: unknown \['nope'\]"):
        check_methods(["sasrec", "nope"])


def test_the_table_holds_every_method_and_baseline_of_the_issue() -> None:
    assert set(METHODS) == {"random", "pop", "sbert_last", "gru4rec", "sasrec", "sasrec_converged", "bert4rec", "idp",
                            "unisrec", "unim2rec", "prerec", "upsr", "unimp"}
    # the language models re-rank; everything else is judged on the whole catalogue too
    assert {m for m, x in METHODS.items() if not x.full_ranking} == {"upsr", "unimp"}
    assert {m for m, x in METHODS.items() if x.pretrained} == {"idp", "unisrec", "unim2rec", "prerec", "upsr"}


def test_image_methods_are_not_applicable_to_movielens_and_say_why() -> None:
    ml, builtin = settings("tiny")["movielens"], settings("tiny")["builtin"]
    assert "no image features" in not_applicable(METHODS["unim2rec"], ml)
    assert not_applicable(METHODS["unimp"], ml) is not None
    assert not_applicable(METHODS["upsr"], ml) is None and not_applicable(METHODS["unim2rec"], builtin) is None
    assert (ml.source, ml.target_dataset) == ("movielens:ml-1m", "movielens:ml-100k")
    assert builtin.target_dataset == builtin.source == "builtin:tiny"


@pytest.mark.parametrize("argv, message", [
    (["--settings", "amazon"], "--settings: unknown ['amazon']"),
    (["--seeds", "0,x"], "--seeds: '0,x' is not"),
    (["--seeds", "1,1"], "--seeds: '1,1' must be distinct"),
    (["--max-len", "0"], "--max-len: 0"),
])
def test_bad_options_are_named(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError) as e:
        config_from(parser().parse_args(argv))
    assert message in str(e.value)


def test_a_bad_option_exits_2_before_ray_starts(capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from raypipe.benchmark.cli import main

    started = ray.is_initialized()
    with pytest.raises(SystemExit) as e:
        main(["--methods", "sasrec,upsr2"])
    assert e.value.code == 2 and "upsr2" in capsys.readouterr().err
    assert ray.is_initialized() == started


def test_the_sampled_protocol_counts_only_the_domains_own_touched_items() -> None:
    import numpy as np

    from raypipe.benchmark.runner import can_sample
    from raypipe.eval.protocols import EvalSet

    # catalogue 1..6; user 0 touched 1, 2 and items 50, 51 of another domain; user 1 touched 1..4
    es = EvalSet(history=np.array([[1, 2, 50, 51], [1, 2, 3, 4]]), target=np.array([3, 5]), catalogue=np.arange(1, 7))
    assert can_sample(es.subset(np.array([0])), 3)  # 6 - {1, 2} - target = 3 untouched
    assert not can_sample(es.subset(np.array([0])), 4)
    assert not can_sample(es, 2)  # user 1: 6 - {1, 2, 3, 4} - target = 1 untouched


def test_a_converging_method_gets_its_own_epochs_and_patience_after_the_shared_ones() -> None:
    from raypipe.benchmark.runner import BenchmarkConfig, common_overrides, _epochs

    cfg = BenchmarkConfig(budget="short")
    over = common_overrides(cfg, settings("small")["builtin"], METHODS["sasrec_converged"], 0) + _epochs(
        cfg, METHODS["sasrec_converged"], "finetune")
    # the last value of a key wins: 200 epochs, patience 10, after the shared patience 3
    assert [o for o in over if o.startswith("train.patience=")] == ["train.patience=3", "train.patience=10"]
    assert _epochs(cfg, METHODS["sasrec"], "finetune") == ["train.epochs=8"]
    assert "train.epochs=200" in over


def _run_reading(tmp_path: Path, views: list[str], name: str = "run") -> Path:
    run = tmp_path / name
    run.mkdir()
    load_config(None, ["model.name=sasrec", f"data.features={tmp_path / 'features'}",
                       f"data.feature_views=[{', '.join(views)}]"]).save(run / CONFIG_FILE)
    return run


def test_a_missing_image_is_missing_from_every_image_view_the_run_reads(tmp_path: Path) -> None:
    # UniMP reads the region grid, UniM2Rec the pooled vector (and text): both lose "image"
    grid, both = _run_reading(tmp_path, ["image_grid"], "grid"), _run_reading(tmp_path, ["text", "image"], "both")
    assert modality_views("image", read_views(grid)) == ["image_grid"]
    assert modality_views("image", read_views(both)) == ["image"] and modality_views("text", read_views(grid)) == []
    cfg = BenchmarkConfig()
    done = {"status": "done", "runs": {"judged": str(grid)}}
    # a check that skipped "image" for a run reading image_grid (the earlier mapping) is redone; a check
    # that covered it, or skipped a modality the run truly lacks, is not
    assert _wants_absent(cfg, METHODS["unimp"], {**done, "absent": {"skipped": ["image"], "views": {}}})
    assert not _wants_absent(cfg, METHODS["unimp"], {**done, "absent": {"skipped": [], "views": {"image": {}}}})
    assert not _wants_absent(cfg, METHODS["unim2rec"], {**done, "absent": {"skipped": ["text"], "views": {"image": {}}}})
    assert _wants_absent(cfg, METHODS["unim2rec"], {**done, "runs": {"judged": str(both)},
                                                    "absent": {"skipped": ["text"], "views": {"image": {}}}})
    assert _wants_absent(cfg, METHODS["unimp"], done)
    assert not _wants_absent(BenchmarkConfig(absent_shares=()), METHODS["unimp"], done)
