"""Autoscaling for real on one machine: a sweep asks for workers the cluster does not have, Ray's autoscaler
adds (fake) nodes, the sweep finishes, and the idle nodes are removed.

    python scripts/autoscale_demo.py --dir /tmp/rpa                 # default job: a tiny SASRec sweep
    python scripts/autoscale_demo.py --dir /tmp/rpa -- python jobs/pretrain.py --dataset builtin:tiny \\
        --num-workers 2 train.cpus_per_worker=1 train.epochs=1 --storage-path /tmp/rpa/runs

1. starts a head with no CPUs and the fake multi-node autoscaler (``scripts/fake_cluster.yaml``: worker
   nodes of 1 CPU + the custom resource ``fake_worker``, min 0, max 4, idle timeout 0.5 min), on 127.0.0.1
   with token auth, a capped object store and ports of its own;
2. submits the job with ``ray job submit --no-wait`` (every Train worker needs a CPU, so none can start
   until the autoscaler adds nodes);
3. polls the node list and the job status every ``--poll-s`` seconds, records ``ss -ltnp`` for the
   cluster's processes at the peak, and after the job ends keeps polling until every worker node is gone;
4. writes ``<dir>/autoscale_timeline.json`` (timeline + summary), ``<dir>/job.log`` and ``<dir>/ray_status_peak.txt``,
   then stops only this cluster's processes (never ``ray stop``).

Exit status 0 only if the job succeeded, worker nodes were added and all removed again, nothing listened
outside 127.0.0.1 and nothing was left running.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import clusterlib as cl  # noqa: E402

HERE = Path(__file__).resolve().parent


def default_job(d: Path, max_concurrent: int) -> list[str]:
    """Two grid points of SASRec's published lr grid on the tiny benchmark, ``max_concurrent`` at a time,
    each a 2-worker Train run of 1 CPU per worker (so each running trial needs two 1-CPU nodes)."""
    return ["python", "jobs/tune.py", "--space", "tune_spaces/sasrec.yaml", "--dataset", "builtin:tiny",
            "--storage-path", str(d / "runs"), "--name", "autoscale", "--only", "train.lr=1e-3,3e-4",
            "--max-concurrent", str(max_concurrent), "--num-workers", "2", "--scheduler", "none",
            "train.cpus_per_worker=1", "train.epochs=1", "train.batch_size=64", "train.valid_users=200"]


def write_config(d: Path, gcs_port: int, idle_minutes: float | None, max_workers: int | None) -> Path:
    cfg = yaml.safe_load((HERE / "fake_cluster.yaml").read_text())
    cfg["provider"]["gcs_address"] = f"127.0.0.1:{gcs_port}"
    if idle_minutes is not None:
        cfg["idle_timeout_minutes"] = idle_minutes
    if max_workers is not None:
        cfg["max_workers"] = cfg["available_node_types"]["ray.worker.cpu"]["max_workers"] = max_workers
    out = d / "fake_cluster.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    job_cmd = argv[argv.index("--") + 1:] if "--" in argv else None
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp/raypipe-autoscale", help="state directory (short: socket paths)")
    p.add_argument("--max-concurrent", type=int, default=2, help="concurrent trials of the default sweep")
    p.add_argument("--idle-timeout-minutes", type=float, default=None, help="override fake_cluster.yaml")
    p.add_argument("--max-workers", type=int, default=None, help="override fake_cluster.yaml")
    p.add_argument("--poll-s", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=1200.0, help="for the job; removal gets its own budget")
    p.add_argument("--keep", action="store_true", help="leave the cluster running (stop it with `down`)")
    args = p.parse_args(argv)

    d = Path(args.dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    cl.write_token(d)
    gcs, dash, client = cl.free_ports(3)
    conf = write_config(d, gcs, args.idle_timeout_minutes, args.max_workers)
    idle_minutes = yaml.safe_load(conf.read_text())["idle_timeout_minutes"]
    env = cl.cluster_env(d, {
        "RAY_FAKE_CLUSTER": "1",
        "RAY_enable_autoscaler_v2": "0",
        "AUTOSCALER_UPDATE_INTERVAL_S": "2",
        # placement groups wait for nodes the autoscaler is still starting
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
    })
    state = {"dir": str(d), "temp_dir": str(d / cl.TEMP_SUBDIR), "gcs_address": f"127.0.0.1:{gcs}",
             "dashboard_url": f"http://127.0.0.1:{dash}", "token_path": str(d / cl.TOKEN_FILE), "pids": []}
    job_cmd = job_cmd or default_job(d, args.max_concurrent)
    summary: dict = {"job": job_cmd, "idle_timeout_minutes": idle_minutes, "timeline": []}
    t0 = time.time()
    try:
        head = cl.start_node(d, "head", head=True, gcs_port=gcs, num_cpus=0, resources={"head_node": 1},
                             object_store_mb=200, env=env, dashboard_port=dash, client_port=client,
                             extra_args=[f"--autoscaling-config={conf}"])
        state["pids"].append(head.pid)
        cl.save_state(d, state)
        cl.wait_started(head, d / "head.log")
        os.environ.update(env)
        from ray.job_submission import JobSubmissionClient

        client_sdk = None
        while client_sdk is None and time.time() - t0 < 120:
            try:
                client_sdk = JobSubmissionClient(state["dashboard_url"])
            except Exception:  # dashboard still starting
                time.sleep(1)
        summary["head_up_s"] = round(time.time() - t0, 1)
        sid = f"autoscale-{int(time.time())}"
        runtime_env = {"env_vars": {"RAYPIPE_DATA": str(d / "data"), "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300"}}
        subprocess.run([str(cl.BIN / "ray"), "job", "submit", "--address", state["dashboard_url"], "--no-wait",
                        "--submission-id", sid, "--working-dir", cl.WORKING_DIR,
                        "--runtime-env-json", json.dumps(runtime_env), "--", *job_cmd],
                       env=env, check=True, cwd=str(cl.REPO), stdout=subprocess.DEVNULL)
        t_submit = time.time()
        print(f"[{t_submit - t0:6.1f}s] submitted {sid}: {' '.join(job_cmd)}", flush=True)
        peak, job_status, t_end, t_gone, last = 0, "PENDING", None, None, None
        removal_budget = idle_minutes * 60 + 120
        while True:
            now = time.time()
            try:
                nodes = [n for n in cl.list_nodes(state["dashboard_url"]) if n["state"] == "ALIVE"]
            except Exception as e:  # noqa: BLE001 - a transient state-API error is recorded, not fatal
                nodes, err = None, str(e)
            if t_end is None:
                job_status = str(client_sdk.get_job_status(sid)).split(".")[-1]
                if job_status in ("SUCCEEDED", "FAILED", "STOPPED"):
                    t_end = now
            if nodes is not None:
                workers = [n for n in nodes if not n["is_head"]]
                row = {"t": round(now - t_submit, 1), "worker_nodes": len(workers), "job": job_status,
                       "fake_worker": sum(n["resources"].get("fake_worker", 0) for n in workers)}
                summary["timeline"].append(row)
                if (row["worker_nodes"], job_status) != last:
                    print(f"[{now - t0:6.1f}s] worker nodes alive: {len(workers)}  job: {job_status}", flush=True)
                    last = (row["worker_nodes"], job_status)
                if len(workers) > peak:
                    peak = len(workers)
                    summary["t_peak"] = row["t"]
                    summary["listening_at_peak"] = cl.listening_sockets(cl.cluster_pids(state))
                    st = subprocess.run([str(cl.BIN / "ray"), "status", "--address", state["gcs_address"]],
                                        env=env, capture_output=True, text=True, timeout=60)
                    (d / "ray_status_peak.txt").write_text(st.stdout + st.stderr)
                if workers and "t_first_node" not in summary:
                    summary["t_first_node"] = row["t"]
                if t_end is not None and not workers:
                    t_gone = now
                    break
            else:
                summary["timeline"].append({"t": round(now - t_submit, 1), "error": err})
            if t_end is None and now - t_submit > args.timeout:
                client_sdk.stop_job(sid)
                job_status = "TIMEOUT"
                break
            if t_end is not None and now - t_end > removal_budget:
                break
            time.sleep(args.poll_s)
        summary.update({
            "job_status": job_status, "peak_worker_nodes": peak,
            "t_job_end": round(t_end - t_submit, 1) if t_end else None,
            "t_all_removed": round(t_gone - t_submit, 1) if t_gone else None,
            "removed_after_job_s": round(t_gone - t_end, 1) if (t_gone and t_end) else None,
            "working_dir": cl.WORKING_DIR,
            # must stay empty: a removal here pulls the cwd from under processes on other nodes
            "working_dir_removals": cl.working_dir_removals(state["temp_dir"]),
        })
        try:
            (d / "job.log").write_text(client_sdk.get_job_logs(sid))
        except Exception as e:  # noqa: BLE001
            (d / "job.log").write_text(f"could not fetch logs: {e}")
    finally:
        if args.keep:
            print(f"cluster left running: python {HERE / 'local_cluster.py'} down --dir {d}")
        else:
            res = cl.teardown(state)
            summary["teardown"] = res
        (d / "autoscale_timeline.json").write_text(json.dumps(summary, indent=2))
    off = [s for s in summary.get("listening_at_peak", []) if not cl.is_loopback(s["local"])]
    ok = (summary["job_status"] == "SUCCEEDED" and summary["peak_worker_nodes"] > 0
          and summary["t_all_removed"] is not None and not off and not summary["working_dir_removals"]
          and (args.keep or not summary["teardown"]["left"]))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("timeline", "listening_at_peak")}, indent=2))
    print(f"{'OK' if ok else 'FAILED'}: see {d / 'autoscale_timeline.json'} and {d / 'job.log'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
