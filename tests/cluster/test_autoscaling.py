"""Autoscaling for real on one machine (scripts/autoscale_demo.py with Ray's fake multi-node provider): a
sweep whose Train workers need CPUs only worker nodes have makes the autoscaler add nodes; the sweep
finishes; the idle nodes are removed after ``idle_timeout_minutes``.  Slow (several minutes on 2 CPUs).
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))
import clusterlib as cl  # noqa: E402

pytestmark = pytest.mark.slow


def test_sweep_scales_out_finishes_and_idle_nodes_are_removed() -> None:
    d = Path(tempfile.mkdtemp(prefix="rpa", dir="/tmp"))
    try:
        r = subprocess.run([sys.executable, str(SCRIPTS / "autoscale_demo.py"), "--dir", str(d)],
                           capture_output=True, text=True, timeout=1800, cwd=str(REPO))
        out = r.stdout + r.stderr
        summary = json.loads((d / "autoscale_timeline.json").read_text())
        job_log = (d / "job.log").read_text() if (d / "job.log").exists() else ""
        assert r.returncode == 0, out[-3000:] + "\n--- job log ---\n" + job_log[-3000:]
        timeline = [row for row in summary["timeline"] if "worker_nodes" in row]
        assert summary["job_status"] == "SUCCEEDED"
        # the job ran in the repository in place: no node deleted a working-dir copy under another's processes
        assert summary["working_dir"].startswith("local://") and summary["working_dir_removals"] == []
        assert "oneMKL" not in job_log
        # nothing but the CPU-less head when the sweep was submitted ...
        assert timeline[0]["worker_nodes"] == 0
        # ... each of the 2 concurrent trials asks for 2 workers x 1 CPU; fake nodes have 1 CPU each
        assert summary["peak_worker_nodes"] >= 2
        assert max(row["fake_worker"] for row in timeline) == summary["peak_worker_nodes"]
        # every added node was removed again, within the idle timeout (+ autoscaler/poll slack) of the end
        assert timeline[-1]["worker_nodes"] == 0 and timeline[-1]["job"] == "SUCCEEDED"
        assert summary["removed_after_job_s"] <= summary["idle_timeout_minutes"] * 60 + 90
        # the sweep wrote its results
        exp = d / "runs" / "autoscale"
        assert (exp / "results.csv").exists() and len(list((exp / "trials").glob("*/metrics.json"))) == 2
        with open(exp / "results.csv") as f:
            assert [row["status"] for row in csv.DictReader(f)] == ["finished", "finished"]
        # everything listened on loopback only; nothing was left running
        assert summary["listening_at_peak"]
        assert all(cl.is_loopback(s["local"]) for s in summary["listening_at_peak"])
        assert summary["teardown"]["left"] == []
        assert not cl.cluster_pids(json.loads((d / cl.STATE_FILE).read_text()))
    finally:
        state_file = d / cl.STATE_FILE
        if state_file.exists():
            cl.teardown(json.loads(state_file.read_text()))
        shutil.rmtree(d, ignore_errors=True)
