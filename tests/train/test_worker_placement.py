"""A checkpoint's worker placement (rank, Ray node id, pid) is read back; a real 2-worker run records it in
its metrics.json (tests/train/test_loop.py, the DDP test)."""
from __future__ import annotations

import json
from pathlib import Path

from raypipe.train.loop import WORKERS_FILE, load_workers


def test_load_workers_of_a_checkpoint_without_placement(tmp_path: Path) -> None:
    from ray.train import Checkpoint

    assert load_workers(None) == []
    assert load_workers(Checkpoint.from_directory(str(tmp_path))) == []
    (tmp_path / WORKERS_FILE).write_text(json.dumps([{"rank": 0, "node_id": "abc", "pid": 1}]))
    assert load_workers(Checkpoint.from_directory(str(tmp_path)))[0]["node_id"] == "abc"
