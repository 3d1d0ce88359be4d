"""A real multi-node Ray cluster on one machine: a head and N worker node processes on 127.0.0.1.

    python scripts/local_cluster.py up --dir /tmp/rpc --workers 1     # head + 1 worker node
    eval "$(python scripts/local_cluster.py env --dir /tmp/rpc)"       # RAY_ADDRESS + token auth for `ray job`
    # the nodes share this machine's files: run in the repository in place (see clusterlib.WORKING_DIR)
    ray job submit --working-dir "local://$PWD" -- python jobs/pretrain.py --dataset builtin:tiny \\
        --num-workers 2 train.cpus_per_worker=1.5 --storage-path /tmp/rpc/runs
    python scripts/local_cluster.py status --dir /tmp/rpc [--json]
    python scripts/local_cluster.py down --dir /tmp/rpc

Each node is its own ``ray start --block`` process group with distinct custom resources (head:
``{"head_node": 1}``, worker i: ``{"worker_node": 1, "worker_<i>": 1}``), a capped object store, free
ports picked on 127.0.0.1 (GCS, dashboard, client server, each node's dashboard agent; worker ports
random) and token authentication with a token file of its own.  ``down`` stops only this cluster's
processes (see ``clusterlib.teardown``); never ``ray stop``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import clusterlib as cl  # noqa: E402

DEFAULT_DIR = "/tmp/raypipe-cluster"


def up(args: argparse.Namespace) -> int:
    d = Path(args.dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if (d / cl.STATE_FILE).exists() and cl.cluster_pids(cl.load_state(d)):
        print(f"a cluster is already running from {d}; run `down` first", file=sys.stderr)
        return 1
    cl.write_token(d)
    gcs, dash, client = cl.free_ports(3)
    env = cl.cluster_env(d)
    state = {"dir": str(d), "temp_dir": str(d / cl.TEMP_SUBDIR), "gcs_address": f"127.0.0.1:{gcs}",
             "dashboard_url": f"http://127.0.0.1:{dash}", "client_port": client,
             "token_path": str(d / cl.TOKEN_FILE), "pids": [], "nodes": []}
    t0 = time.time()
    specs = [("head", True, args.head_cpus, {"head_node": 1})]
    specs += [(f"worker{i}", False, args.worker_cpus, {"worker_node": 1, f"worker_{i}": 1})
              for i in range(1, args.workers + 1)]
    try:
        for name, head, cpus, res in specs:
            proc = cl.start_node(d, name, head=head, gcs_port=gcs, num_cpus=cpus, resources=res,
                                 object_store_mb=args.object_store_mb, env=env, dashboard_port=dash,
                                 client_port=client)
            state["pids"].append(proc.pid)
            state["nodes"].append({"name": name, "pid": proc.pid, "num_cpus": cpus, "resources": res,
                                   "log": str(d / f"{name}.log")})
            cl.save_state(d, state)
            cl.wait_started(proc, d / f"{name}.log", args.timeout)
        os.environ.update(env)
        deadline = time.time() + args.timeout
        alive = []
        while time.time() < deadline:
            try:
                alive = [n for n in cl.list_nodes(state["dashboard_url"]) if n["state"] == "ALIVE"]
            except Exception:  # dashboard still starting
                alive = []
            if len(alive) == len(specs):
                break
            time.sleep(1)
        if len(alive) != len(specs):
            raise TimeoutError(f"{len(alive)} of {len(specs)} nodes alive after {args.timeout}s")
    except BaseException:
        res = cl.teardown(state)
        print(f"start-up failed; stopped {res['stopped']} processes, left {res['left']}", file=sys.stderr)
        raise
    print(f"cluster up in {time.time() - t0:.1f}s: {len(specs)} nodes, GCS {state['gcs_address']}, "
          f"dashboard {state['dashboard_url']}, state {d}")
    print(f'eval "$(python {Path(__file__).name} env --dir {d})"  # then: ray job submit ... / ray status')
    return 0


def env_cmd(args: argparse.Namespace) -> int:
    state = cl.load_state(Path(args.dir))
    print(f"export RAY_ADDRESS={state['dashboard_url']}")
    print("export RAY_AUTH_MODE=token")
    print(f"export RAY_AUTH_TOKEN_PATH={state['token_path']}")
    print("export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0")
    print(f"# ray status --address {state['gcs_address']}")
    return 0


def status(args: argparse.Namespace) -> int:
    d = Path(args.dir).resolve()
    state = cl.load_state(d)
    pids = cl.cluster_pids(state)
    report: dict = {"dir": str(d), "gcs_address": state["gcs_address"], "dashboard_url": state["dashboard_url"],
                    "processes": len(pids), "nodes": [], "listening": cl.listening_sockets(pids)}
    if pids:
        os.environ.update(cl.cluster_env(d))
        try:
            report["nodes"] = cl.list_nodes(state["dashboard_url"])
        except Exception as e:  # noqa: BLE001 - report, don't crash a status command
            report["error"] = f"{type(e).__name__}: {e}"
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(pids)} processes; GCS {state['gcs_address']}; dashboard {state['dashboard_url']}")
    for n in report["nodes"]:
        res = {k: v for k, v in n["resources"].items() if not k.startswith(("node:", "object_store", "memory"))}
        print(f"  {'head  ' if n['is_head'] else 'worker'} {n['node_id'][:12]} {n['state']:<6} {n['ip']} {res}")
    off = [s for s in report["listening"] if not cl.is_loopback(s["local"])]
    print(f"  {len(report['listening'])} listening TCP sockets, {len(off)} not on loopback")
    return 0


def down(args: argparse.Namespace) -> int:
    state = cl.load_state(Path(args.dir))
    res = cl.teardown(state)
    print(f"stopped {res['stopped']} processes; left: {res['left'] or 'none'}")
    return 1 if res["left"] else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "env"):
        s = sub.add_parser(name)
        s.add_argument("--dir", default=DEFAULT_DIR, help="state directory (keep it short: socket paths)")
        if name == "up":
            s.add_argument("--workers", type=int, default=1)
            s.add_argument("--head-cpus", type=int, default=2)
            s.add_argument("--worker-cpus", type=int, default=2)
            s.add_argument("--object-store-mb", type=int, default=200)
            s.add_argument("--timeout", type=float, default=120.0)
        if name == "status":
            s.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    return {"up": up, "down": down, "status": status, "env": env_cmd}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
