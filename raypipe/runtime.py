"""Connecting to Ray: a running cluster when there is one, else a local Ray on 127.0.0.1.

``ray job submit -- python jobs/X.py`` sets ``RAY_ADDRESS`` for the job, so jobs join the cluster;
``python jobs/X.py`` on a laptop starts a private local Ray bound to loopback, dashboard included: Ray Train's
``PlacementGroupCleaner`` needs the State API (served by the dashboard) to free the placement group of a
Train run whose controller was killed -- which is what happens to every trial a Tune scheduler stops.
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)

# Before Ray is imported anywhere: keep a local Ray on loopback, and never reach a model hub.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# Ray Train V2's controller collects each worker's `ray.train.report` when it polls the workers, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (default 2 s), and a worker's report queue holds one result: a worker
# that reports again before the poll blocks until it comes (ray/train/v2/_internal/execution/context.py,
# _wait_then_report; controller.py reads the variable when the controller starts).  So an epoch shorter
# than the interval waits for it, and every run waits for one poll to end.  Polling every 0.5 s took a
# 10-epoch SASRec run on the tiny benchmark from 43.4 s to 27.2 s, with the same metrics
# (bench/bench_train_poll.py, bench/results/train_poll.md); a poll is one actor call per worker.  The
# variable goes to every Ray process of the job, so the controller sees it; set it in the driver's
# environment to choose another value.
TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def job_env_vars() -> dict[str, str]:
    """The variables every Ray process of a raypipe job gets (local Ray or cluster)."""
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            TRAIN_POLL_ENV: os.environ.get(TRAIN_POLL_ENV, TRAIN_POLL_S)}


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None, address: str | None = None,
             log_to_driver: bool = True) -> None:
    """Idempotent ``ray.init``: join ``address``/``RAY_ADDRESS`` if given, else start Ray on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": job_env_vars()}
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=env, log_to_driver=log_to_driver)
        return
    # Ray Train V2's PlacementGroupCleaner (a detached actor, one per Train run) polls the State API once a
    # second for its controller; when the controller is gone it removes the run's placement group
    # (ray/train/v2/_internal/execution/controller/placement_group_cleaner.py, _monitor_loop).  A Tune trial
    # that a scheduler stops is terminated, its Train controller dies with it (fate-sharing) and the placement
    # group, whose lifetime is the job's, stays reserved until the cleaner frees it.  The State API is served
    # by the dashboard: without it every query fails ("Failed to query Ray Train Controller actor state",
    # once a second per cleaner) and the sweep's next trial waits for CPUs forever (issue #14).  So a local
    # Ray starts the dashboard, on 127.0.0.1 and on a free port (not 8265, which a cluster may want).
    # The lookup uses an auto-detected address; with several local Ray instances on one host it could reach
    # another instance, find no such actor and remove our placement group mid-run (it killed a benchmark's
    # training worker here).  So a local Ray gets a known GCS port, pinned in its workers as RAY_ADDRESS.
    port = _free_port()
    env["env_vars"]["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    # Ray Train workers run in their run's artifacts directory, so a relative $RAYPIPE_DATA (the default
    # `data`) would name another folder there: every UniMP worker converted SmolLM2 again (22 s, 540 MB
    # under /tmp/ray/session_*/artifacts/).  A local Ray shares the driver's disk: pin the absolute root.
    # (A cluster sets RAYPIPE_DATA on its nodes itself: cluster.yaml, k8s/.)
    from raypipe.data.registry import data_root

    env["env_vars"]["RAYPIPE_DATA"] = str(data_root().resolve())
    kwargs: dict = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": _free_port(),
                    "_node_ip_address": "127.0.0.1", "runtime_env": env, "log_to_driver": log_to_driver}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if object_store_mb is not None:
        kwargs["object_store_memory"] = object_store_mb * 1024**2
    log.info("starting a local Ray on 127.0.0.1:%d", port)
    previous = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        ray.init(**kwargs)
    finally:
        if previous is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = previous


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
