"""A real crash: the extraction job is SIGKILLed mid-view, then re-run (slow: starts its own Ray)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raypipe.data.schema import ITEMS_FILE
from raypipe.features.pipeline import extract_features
from raypipe.features.store import FeatureStore

from .conftest import extraction_config

REPO = Path(__file__).resolve().parents[2]


def _processes_of(sessions: list[str]) -> list[int]:
    """Pids whose command line names one of the given Ray session directories."""
    pids = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if any(s in cmd for s in sessions):
            pids.append(int(proc_dir.name))
    return pids


@pytest.mark.slow
def test_sigkill_mid_view_then_resume(feature_store, features_dataset, tiny_clip_dir, tmp_path):
    ref_dir, _ = feature_store
    out = tmp_path / "features"
    argv = [sys.executable, str(REPO / "jobs" / "extract_features.py"), "--dataset", str(features_dataset),
            "--out", str(out), "--views", "text", "--batch-size", "8", "--rows-per-file", "16", "--num-actors", "1",
            "--address", "local"]
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # a private Ray for the job ("local"), never the session's
    sessions_before = set(Path("/tmp/ray").glob("session_2*"))
    proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            parts = list((out / ".work").glob("text-*/*.parquet")) if (out / ".work").is_dir() else []
            if parts:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the job wrote no part file before finishing or timing out")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the job, its local Ray and its workers
        proc.wait(timeout=60)
    # nothing of the killed job survives: its Ray daemons shared its process group, and its Ray workers
    # (each in a session of their own) exit once their raylet is gone
    new_sessions = [p.name for p in set(Path("/tmp/ray").glob("session_2*")) - sessions_before
                    if p.name.endswith(f"_{proc.pid}")]  # Ray names a session after the starting pid
    assert new_sessions
    deadline = time.time() + 60
    while time.time() < deadline and _processes_of(new_sessions):
        time.sleep(1)
    assert not _processes_of(new_sessions)
    if (out / "manifest.json").exists() and "text" in FeatureStore.open(out).views:
        pytest.skip("the view finished before it could be killed")

    results = {r.view: r for r in extract_features(extraction_config(features_dataset, out, tiny_clip_dir,
                                                                     views=["text"]))}
    n = pq.ParquetFile(features_dataset / ITEMS_FILE).metadata.num_rows
    assert results["text"].status == "resumed" and 0 < results["text"].encoded_this_run < n
    ids = pq.read_table(features_dataset / ITEMS_FILE, columns=["item_id"]).column(0).to_pylist()
    a, ma = FeatureStore.open(ref_dir).aligned("text", ids)
    b, mb = FeatureStore.open(out).aligned("text", ids)
    assert (ma == mb).all()
    np.testing.assert_allclose(a, b, atol=2e-5)
