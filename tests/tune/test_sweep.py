"""Sweeps on the tiny benchmark: a 2-point grid interrupted after its first trial resumes without
rerunning that trial, and writes every output for both (one sweep: each costs a minute on 2 CPUs)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raypipe.config import load_config
from raypipe.tune.spaces import load_space
from raypipe.tune.sweep import SweepConfig, restrict, run_sweep

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["train.epochs=2", "train.patience=5", "train.valid_users=200", "data.max_len=20", "model.hidden=16",
             "train.batch_size=64"]


def _space():
    return restrict(load_space(ROOT / "tune_spaces" / "sasrec.yaml"), {"train.lr": [1e-3, 3e-5]})


def _check_outputs(res, space, overrides: list[str]) -> None:
    """Both trials of the 2-point grid finished; the report files hold them, best first."""
    from raypipe.tune.report import write_report

    assert len(res.rows) == 2 and {r["status"] for r in res.rows} == {"finished"}
    assert sorted(r["train.lr"] for r in res.rows) == pytest.approx([3e-5, 1e-3])
    for r in res.rows:
        assert r["epochs_run"] == 2 and 0.0 <= r["best/ndcg@10"] <= 1.0
        run = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        # the row's validation value is the best epoch's value in the trial's own Train history
        assert r["best/ndcg@10"] == pytest.approx(max(h["valid/ndcg@10"] for h in run["history"]))
        assert any(k.startswith("test/") and k.endswith("/ndcg@10") for k in r)
    paths = write_report(res.experiment_dir, res.rows, space, res.metric, res.mode, overrides)
    with open(paths["results.csv"]) as f:
        table = list(csv.DictReader(f))
    assert [float(t["best/ndcg@10"]) for t in table] == sorted((r["best/ndcg@10"] for r in res.rows), reverse=True)
    md = paths["results.md"].read_text()
    assert md.count("| finished |") == 2 and "sorted by best/ndcg@10" in md
    best = max(res.rows, key=lambda r: r["best/ndcg@10"])
    cfg = load_config(paths["best_config.yaml"])  # what jobs/finetune.py --config reads
    assert cfg.train.lr == pytest.approx(best["train.lr"]) and cfg.model.loss == "bpr" and cfg.model.hidden == 16
    assert paths["metric_vs_axes.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _experiment_trials(exp: Path) -> dict[str, str]:
    """trial_id -> status from the newest experiment state Tune saved."""
    states = sorted(exp.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
    except json.JSONDecodeError:
        return {}
    out = {}
    for entry in data.get("trial_data", []):
        meta = json.loads(entry[0]) if isinstance(entry, list) else entry
        tid = meta.get("trial_id")
        status = meta.get("status")
        if tid:
            out[tid] = status
    return out


def test_an_interrupted_sweep_resumes_without_rerunning_its_finished_trial_and_reports_both(
        ray_local, tiny_dataset, tmp_path):
    address = ray_local.get_runtime_context().gcs_address
    cmd = [sys.executable, str(ROOT / "jobs" / "tune.py"), "--space", str(ROOT / "tune_spaces" / "sasrec.yaml"),
           "--only", "train.lr=1e-3,3e-5", "--scheduler", "none", "--name", "resume2",
           "--storage-path", str(tmp_path), "--dataset", str(tiny_dataset), "--address", address, *OVERRIDES]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    exp = tmp_path / "resume2"
    deadline = time.time() + 300
    first = None
    try:
        while time.time() < deadline and proc.poll() is None:
            done = [t for t, s in _experiment_trials(exp).items() if s == "TERMINATED"]
            if done:
                first = done[0]
                break
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep's driver dies mid-sweep
        proc.wait()
    assert first is not None, "the first trial did not finish in time"
    first_metrics = exp / "trials" / first / "metrics.json"
    stamp = first_metrics.stat().st_mtime_ns
    assert list(_experiment_trials(exp).values()).count("TERMINATED") == 1  # really interrupted mid-sweep

    space, overrides = _space(), OVERRIDES + [f"data.dataset={tiny_dataset}"]
    res = run_sweep(SweepConfig(space=space, name="resume2", storage_path=str(tmp_path), overrides=overrides,
                                resume=True))
    rows = {r["trial_id"]: r for r in res.rows}
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"finished"}
    assert first_metrics.stat().st_mtime_ns == stamp, "the finished trial was trained again"
    assert rows[first]["epochs_run"] == 2
    _check_outputs(res, space, overrides)  # the restored trial and the one trained now, both reported
    with pytest.raises(FileExistsError, match="--resume"):
        run_sweep(SweepConfig(space=_space(), name="resume2", storage_path=str(tmp_path), overrides=OVERRIDES))
