"""The single Ray Train loop on the tiny benchmark: DDP, resume after a failure, early stopping, learning."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from raypipe.config import load_config
from raypipe.rundir import load_ranks
from raypipe.train.loop import EarlyStopping, LoopState
from raypipe.train.run import METRICS_FILE, run_experiment


def cfg_for(tiny_dataset: Path, tmp_path: Path, *overrides: str):
    # model options only for learned models: POP's config has none (an unknown key is an error)
    model = [] if "model.name=pop" in overrides else ["model.hidden=32"]
    return load_config(None, [f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path}", "train.epochs=3",
                              "train.patience=10", *model, "train.batch_size=64", *overrides])


def test_early_stopping_logic() -> None:
    s = EarlyStopping(patience=2)
    assert s.update(0.1, 0) and s.update(0.2, 1)
    assert not s.update(0.2, 2) and not s.should_stop  # equal is not an improvement
    assert not s.update(0.15, 3) and s.should_stop
    assert (s.best, s.best_epoch) == (0.2, 1)


def test_resumed_state_takes_the_new_patience() -> None:
    """A run stopped by patience 2 and re-launched with patience 5 goes on (the count is kept)."""
    s = EarlyStopping(patience=2)
    for e, v in enumerate([0.1, 0.3, 0.2, 0.25]):
        s.update(v, e)
    assert s.should_stop
    saved = LoopState(epoch=4, stopper=s, history=[{"epoch": e} for e in range(4)]).to_json()
    assert LoopState.from_json(saved).stopper.should_stop  # as checkpointed
    again = LoopState.from_json(saved, patience=5)
    assert (again.epoch, again.stopper.patience, again.stopper.bad_epochs, again.stopper.best) == (4, 5, 2, 0.3)
    assert not again.stopper.should_stop


def test_two_worker_ddp_run_writes_a_complete_run_dir(ray_local, tiny_dataset: Path, tmp_path: Path) -> None:
    res = run_experiment(cfg_for(tiny_dataset, tmp_path, "train.num_workers=2", "train.cpus_per_worker=0.5",
                                 "run.name=ddp", "train.epochs=2"))
    assert [h["epoch"] for h in res.history] == [0, 1]
    # each epoch saw every training row once, across both workers together
    rows = {h["train_rows"] for h in res.history}
    assert len(rows) == 1 and rows.pop() > 300
    for f in ("config.yaml", "item_index.parquet", "model.pt", "metrics.json", "curves.png"):
        assert (res.run_dir / f).exists(), f
    m = json.loads((res.run_dir / METRICS_FILE).read_text())
    assert set(m["test"]) == {"books", "movies", "electronics"}
    assert 0.0 <= m["test"]["books"]["ndcg@10"] <= 1.0
    assert m["protocols"] == {"books": "full", "movies": "full", "electronics": "full"}  # SASRec's auto
    # every test user's rank is kept: their NDCG@10 averages to the reported value
    ranks = load_ranks(res.run_dir)["books"]
    assert len(ranks) == m["test"]["books"]["n_users"]
    r = np.array(list(ranks.values()))
    assert np.mean(np.where(r <= 10, 1 / np.log2(r + 1), 0.0)) == pytest.approx(m["test"]["books"]["ndcg@10"])
    # the cost and provenance the leaderboard reports: the largest worker's peak memory, the meta block
    assert all(100 < h["peak_rss_mb"] < 64_000 for h in res.history)
    assert m["meta"]["seeds"] == {"train": 0, "split": 0} and m["meta"]["packages"]["torch"] is not None
    # each worker's placement: a one-node Ray, both on the driver's node, in two separate worker processes
    workers = m["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert {w["node_id"] for w in workers} == {ray_local.get_runtime_context().get_node_id()}
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {w["node_ip"] for w in workers} == {"127.0.0.1"}


def test_resume_after_failure_matches_uninterrupted(sasrec_learned, tiny_dataset: Path, tmp_path: Path) -> None:
    plain = sasrec_learned  # the same configuration, trained without a failure
    failed = run_experiment(cfg_for(tiny_dataset, tmp_path, *LEARN, "model.name=sasrec", "run.name=failed",
                                    "train.inject_failure_at_epoch=2", "train.max_failures=1"))
    assert (failed.run_dir / ".injected_failure").exists()  # it really failed once and was restarted
    assert [h["epoch"] for h in failed.history] == list(range(10))
    for a, b in zip(plain.history, failed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["valid/ndcg@10"] == pytest.approx(b["valid/ndcg@10"], rel=1e-5)
    assert plain.test["books"]["ndcg@10"] == pytest.approx(failed.test["books"]["ndcg@10"], rel=1e-5)


def test_early_stopping_stops_before_the_epoch_budget(ray_local, tiny_dataset: Path, tmp_path: Path) -> None:
    # lr=1e-30 (lr must be > 0): updates below float32 resolution, so the model does not change and the
    # validation metric never improves after epoch 0
    res = run_experiment(cfg_for(tiny_dataset, tmp_path, "run.name=es", "train.lr=1e-30", "train.patience=2",
                                 "train.epochs=20"))
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    assert res.best_epoch == 0


LEARN = ("train.epochs=10", "train.lr=3e-3")  # enough for each model to beat POP on tiny


@pytest.fixture(scope="module")
def sasrec_learned(ray_local, tiny_dataset: Path, tmp_path_factory):
    """SASRec trained 10 epochs on tiny: it must beat POP, and a run that fails once must match it."""
    return run_experiment(cfg_for(tiny_dataset, tmp_path_factory.mktemp("sasrec"), *LEARN, "model.name=sasrec",
                                  "run.name=sasrec"))


@pytest.fixture(scope="module")
def pop_result(ray_local, tiny_dataset: Path, tmp_path_factory):
    return run_experiment(cfg_for(tiny_dataset, tmp_path_factory.mktemp("pop"), "model.name=pop", "run.name=pop"))


def _mean_ndcg(test: dict) -> float:
    return sum(m["ndcg@10"] * m["n_users"] for m in test.values()) / sum(m["n_users"] for m in test.values())


@pytest.mark.parametrize("model", ["sasrec", "gru4rec", "bert4rec"])
def test_each_model_learns_and_beats_pop(pop_result, tiny_dataset: Path, tmp_path: Path, model: str,
                                         request: pytest.FixtureRequest) -> None:
    res = request.getfixturevalue("sasrec_learned") if model == "sasrec" else run_experiment(
        cfg_for(tiny_dataset, tmp_path, *LEARN, f"model.name={model}", f"run.name={model}"))
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert set(res.test) == set(pop_result.test)
    assert _mean_ndcg(res.test) > 1.1 * _mean_ndcg(pop_result.test)
