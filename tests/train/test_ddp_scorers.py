"""The language-model scorers through two Ray Train workers (DDP over gloo): UPSR's token batches with
gradient accumulation (``no_sync`` between the syncing steps) and UniMP's frozen LM with new item tokens
(``find_unused_parameters``). Small random backbones keep the runs to seconds; the packaged ones go
through the same loop."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from raypipe.config import load_config
from raypipe.rundir import METRICS_FILE
from raypipe.train.run import run_experiment

MODELS = {
    "upsr": ["model.backbone=t5-random", "model.vocab_size=600", "model.d_model=64", "model.d_ff=128",
             "model.num_layers=2", "model.num_heads=2", "train.max_rows=64", "train.optim.grad_accum=2",
             "run.stage=finetune"],
    "unimp": ["model.backbone=llama-random", "model.fusion=none", "model.tasks=[rec, explanation]",
              "model.max_users=20", "model.heads=4", "train.optim.grad_accum=2"],
}


@pytest.mark.slow  # two Ray Train runs per model: 40-100 s each here
@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_ddp_workers_train_a_scorer(ray_local, tiny_dataset: Path, tmp_path: Path, model: str) -> None:
    def run(name: str, workers: int):
        return run_experiment(load_config(None, [
            f"model.name={model}", f"data.dataset={tiny_dataset}", *MODELS[model], "train.epochs=1",
            "train.valid_users=10", "eval.test_users=10", f"train.num_workers={workers}",
            "train.cpus_per_worker=0.5", "train.torch_threads=1", f"run.storage_path={tmp_path}",
            f"run.name={name}"]))

    two = run("ddp", 2)
    m = json.loads((two.run_dir / METRICS_FILE).read_text())
    assert [w["rank"] for w in m["workers"]] == [0, 1] and len({w["pid"] for w in m["workers"]}) == 2
    assert len(m["history"]) == 1 and math.isfinite(m["history"][0]["train_loss"])
    one = run("single", 1)
    # the two workers split the epoch's rows between them: together they saw what one worker sees, less the
    # odd row an equal split drops (each worker must run the same number of steps for DDP's all-reduce)
    assert 0 <= one.history[0]["train_rows"] - m["history"][0]["train_rows"] <= 1
    # the same data and recipe: the mean training loss is of the same size either way (no worker trained on
    # a broken shard or an unsynchronised model: those drift far apart within an epoch of this size)
    assert 0.5 < m["history"][0]["train_loss"] / one.history[0]["train_loss"] < 2.0
    assert all(0.0 <= v["ndcg@10"] <= 1.0 for v in m["test"].values())
