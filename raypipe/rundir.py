"""The files of a run directory, named once for every part that writes or reads one (train, pipelines,
serve, benchmarks).

A run directory (``<storage_path>/<name>/``) holds ``config.yaml`` (the resolved ExperimentConfig),
``item_index.parquet``, ``model.pt`` (best weights), ``metrics.json``, ``test_ranks.json`` (every test
user's target rank per domain, for paired tests), ``curves.png`` and Ray Train's checkpoints.
``<storage_path>`` may be a URI (``s3://``, ``gs://``, ``file://``; :mod:`raypipe.storage`): the run's
files are then published when it has finished, ``metrics.json`` (:data:`COMMIT_FILE`) last.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG_FILE = "config.yaml"
INDEX_FILE = "item_index.parquet"
WEIGHTS_FILE = "model.pt"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
RANKS_FILE = "test_ranks.json"
#: written last: a run in storage is finished once this file is there (:mod:`raypipe.storage`)
COMMIT_FILE = METRICS_FILE


def load_ranks(run_dir: str | Path, name: str = RANKS_FILE) -> dict[str, dict[str, float]]:
    """``{domain: {user_id: rank}}`` of a finished run's test users (``inf``: a rerank miss), from its
    ``name`` file (another evaluation of the run may write its ranks in the same format)."""
    import json

    raw = json.loads((Path(run_dir) / name).read_text())
    return {d: {u: float(r) for u, r in zip(v["users"], v["ranks"])} for d, v in raw.items()}


def save_weights(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write a model's state dict as the run's ``model.pt`` (atomically)."""
    from raypipe.io import save_torch_atomic

    path = Path(run_dir) / WEIGHTS_FILE
    save_torch_atomic(path, state)
    return path


def load_weights(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``model.pt`` on the CPU (``run_dir`` may also be the weights file itself)."""
    import torch

    p = Path(run_dir)
    path = p / WEIGHTS_FILE if p.is_dir() else p
    if not path.exists():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {p}")
    return torch.load(path, map_location="cpu")
