"""A real two-node Ray cluster on 127.0.0.1 (scripts/local_cluster.py) running raypipe jobs submitted with
``ray job submit``: a 2-worker pre-training whose Train workers land on different nodes, a tiny sweep, and
the leaderboard as one job.

Slow: starting the nodes takes ~20 s and each job ~1-3 min on 2 CPUs.  The cluster has its own state
directory, ports and token; only its own processes are stopped (never ``ray stop``).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))
import clusterlib as cl  # noqa: E402

pytestmark = pytest.mark.slow


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "local_cluster.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=str(REPO))


@pytest.fixture(scope="module")
def cluster():
    d = Path(tempfile.mkdtemp(prefix="rpc", dir="/tmp"))  # short: Ray's socket paths live under it
    t0 = time.time()
    up = _cli("up", "--dir", str(d), "--workers", "1", "--head-cpus", "2", "--worker-cpus", "2",
              "--object-store-mb", "200", "--timeout", "240", timeout=600)
    state = json.loads((d / cl.STATE_FILE).read_text()) if (d / cl.STATE_FILE).exists() else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state["up_seconds"] = time.time() - t0
        yield state
    finally:
        if state is not None:
            _cli("down", "--dir", str(d))
            assert not cl.cluster_pids(state), "cluster processes left behind"
        shutil.rmtree(d, ignore_errors=True)


def status(cluster: dict) -> dict:
    r = _cli("status", "--dir", cluster["dir"], "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def submit(cluster: dict, sid: str, *cmd: str, timeout: float = 900) -> tuple[subprocess.CompletedProcess, str]:
    """``ray job submit`` (blocking, as a user would) and then ``ray job status``."""
    env = cl.cluster_env(Path(cluster["dir"]))
    runtime_env = {"env_vars": {"RAYPIPE_DATA": f"{cluster['dir']}/data"}}
    ray = str(cl.BIN / "ray")
    r = subprocess.run([ray, "job", "submit", "--address", cluster["dashboard_url"], "--submission-id", sid,
                        "--working-dir", cl.WORKING_DIR, "--runtime-env-json", json.dumps(runtime_env), "--", *cmd],
                       env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)
    st = subprocess.run([ray, "job", "status", sid, "--address", cluster["dashboard_url"]], env=env,
                        capture_output=True, text=True, timeout=60)
    return r, st.stdout + st.stderr


def node_ids(cluster: dict) -> dict[str, str]:
    nodes = [n for n in status(cluster)["nodes"] if n["state"] == "ALIVE"]
    return {("head" if n["is_head"] else "worker"): n["node_id"] for n in nodes}


def assert_loopback_only(report: dict) -> None:
    assert report["listening"], "no listening sockets found for the cluster's processes"
    off = [s for s in report["listening"] if not cl.is_loopback(s["local"])]
    assert not off, f"listening outside 127.0.0.1: {off}"


def test_two_nodes_with_distinct_custom_resources_on_loopback(cluster: dict) -> None:
    report = status(cluster)
    alive = [n for n in report["nodes"] if n["state"] == "ALIVE"]
    assert len(alive) == 2
    head = next(n for n in alive if n["is_head"])
    worker = next(n for n in alive if not n["is_head"])
    assert head["resources"].get("head_node") == 1 and "worker_node" not in head["resources"]
    assert worker["resources"].get("worker_node") == 1 and "head_node" not in worker["resources"]
    assert head["ip"] == worker["ip"] == "127.0.0.1"
    assert_loopback_only(report)


def test_pretrain_job_runs_its_two_train_workers_on_different_nodes(cluster: dict) -> None:
    storage = Path(cluster["dir"]) / "runs"
    # 1.5 CPUs per worker on two 2-CPU nodes: one worker fits per node, so the two must be spread
    r, st = submit(cluster, "pretrain-two-nodes", "python", "jobs/pretrain.py", "--dataset", "builtin:tiny",
                   "--num-workers", "2", "--storage-path", str(storage), "--name", "two-nodes",
                   "train.cpus_per_worker=1.5", "train.epochs=2", "model.hidden=32", "train.batch_size=64")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "succeeded" in st.lower(), st
    metrics = json.loads((storage / "two-nodes" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    workers = metrics["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    ids = node_ids(cluster)
    assert {w["node_id"] for w in workers} == {ids["head"], ids["worker"]}  # one worker on each node


def test_tiny_sweep_job_succeeds_with_trials_spanning_both_nodes(cluster: dict) -> None:
    storage = Path(cluster["dir"]) / "sweeps"
    r, st = submit(cluster, "sweep-sasrec", "python", "jobs/tune.py", "--space", "tune_spaces/sasrec.yaml",
                   "--dataset", "builtin:tiny", "--storage-path", str(storage), "--name", "sasrec-tiny",
                   "--only", "train.lr=1e-3,3e-4", "--max-concurrent", "1", "--num-workers", "2",
                   "--scheduler", "none", "train.cpus_per_worker=1.5", "train.epochs=1", "train.batch_size=64",
                   "train.valid_users=200")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "succeeded" in st.lower(), st
    exp = storage / "sasrec-tiny"
    for f in ("results.csv", "results.md", "best_config.yaml"):
        assert (exp / f).exists(), f
    trial_metrics = sorted((exp / "trials").glob("*/metrics.json"))
    assert len(trial_metrics) == 2
    ids = node_ids(cluster)
    for m in trial_metrics:
        workers = json.loads(m.read_text())["workers"]
        assert {w["node_id"] for w in workers} == {ids["head"], ids["worker"]}, m


def test_the_leaderboard_runs_as_one_submitted_job(cluster: dict) -> None:
    storage, out = Path(cluster["dir"]) / "bench", Path(cluster["dir"]) / "leaderboard"
    r, st = submit(cluster, "benchmark-tiny", "python", "jobs/benchmark.py", "--size", "tiny", "--budget", "quick",
                   "--seeds", "0", "--methods", "pop,sbert_last", "--storage-path", str(storage), "--out", str(out))
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "succeeded" in st.lower(), st
    results = storage / "builtin-tiny" / "results"
    assert sorted(p.name for p in results.iterdir()) == ["pop-s0.json", "sasrec-s0.json", "sbert_last-s0.json"]
    board = json.loads(out.with_suffix(".json").read_text())
    methods = board["settings"]["builtin-tiny"]["methods"]
    assert {m: v["status"] for m, v in methods.items()} == {"pop": "done", "sbert_last": "done", "sasrec": "done"}
    assert set(methods["sbert_last"]["absent"]["views"]) == {"text"}  # the missing-modality check ran too
    assert out.with_suffix(".html").read_text().count("<table>") >= 5


def test_still_loopback_only_after_the_jobs(cluster: dict) -> None:
    assert_loopback_only(status(cluster))  # job drivers and Train workers included


def test_down_stops_every_process_of_the_cluster(cluster: dict) -> None:
    before = cl.cluster_pids(cluster)
    assert len(before) > 5
    r = _cli("down", "--dir", cluster["dir"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not cl.cluster_pids(cluster)
    assert not cl.alive(before)
