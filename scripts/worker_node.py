"""A Ray worker node joining ``--address`` on 127.0.0.1, blocking like ``ray start --block``.

``ray start --address`` refuses to join with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and, with ``=1``,
rewrites 127.0.0.1 to the machine's external IP.  This starts the node the way Ray's own fake multi-node
provider and ``ray.cluster_utils.Cluster`` do (``ray._private.node.Node``), so it stays on loopback.
SIGTERM stops the node's processes (raylet, agents, workers).  Used by ``clusterlib.start_node``.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--temp-dir", required=True)
    p.add_argument("--num-cpus", type=int, required=True)
    p.add_argument("--resources", default="{}")
    p.add_argument("--object-store-memory", type=int, required=True)
    p.add_argument("--dashboard-agent-listen-port", type=int, default=0)
    args = p.parse_args()
    import ray._private.node
    import ray._private.parameter

    params = ray._private.parameter.RayParams(
        gcs_address=args.address, node_ip_address="127.0.0.1", num_cpus=args.num_cpus,
        resources=json.loads(args.resources), object_store_memory=args.object_store_memory,
        temp_dir=args.temp_dir, min_worker_port=0, max_worker_port=0,
        dashboard_agent_listen_port=args.dashboard_agent_listen_port)
    node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # atexit then kills the node's processes
    print(f"Ray runtime started. node id {node.node_id}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
