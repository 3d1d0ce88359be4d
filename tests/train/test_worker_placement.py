"""Each Train worker's placement (rank, Ray node id, pid) reaches the run's metrics.json."""
from __future__ import annotations

import json
import os
from pathlib import Path

from raypipe.config import load_config
from raypipe.train.loop import WORKERS_FILE, load_workers
from raypipe.train.run import METRICS_FILE, run_experiment


def test_load_workers_of_a_checkpoint_without_placement(tmp_path: Path) -> None:
    from ray.train import Checkpoint

    assert load_workers(None) == []
    assert load_workers(Checkpoint.from_directory(str(tmp_path))) == []
    (tmp_path / WORKERS_FILE).write_text(json.dumps([{"rank": 0, "node_id": "abc", "pid": 1}]))
    assert load_workers(Checkpoint.from_directory(str(tmp_path)))[0]["node_id"] == "abc"


def test_two_workers_record_node_and_pid(ray_local, tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path}", "run.name=placement",
                             "train.epochs=1", "model.hidden=32", "train.batch_size=64", "train.num_workers=2",
                             "train.cpus_per_worker=0.5"])
    res = run_experiment(cfg)
    workers = json.loads((res.run_dir / METRICS_FILE).read_text())["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    # a one-node Ray: both workers on the driver's node, in two separate worker processes
    assert {w["node_id"] for w in workers} == {ray_local.get_runtime_context().get_node_id()}
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {w["node_ip"] for w in workers} == {"127.0.0.1"}
