"""Connecting to Ray: a running cluster when there is one, else a local Ray on 127.0.0.1.

``ray job submit -- python jobs/X.py`` sets ``RAY_ADDRESS`` for the job, so jobs join the cluster;
``python jobs/X.py`` on a laptop starts a private local Ray bound to loopback (no dashboard).
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# Before Ray is imported anywhere: keep a local Ray on loopback, and never reach a model hub.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def init_ray(num_cpus: int | None = None, object_store_mb: int | None = None, address: str | None = None) -> None:
    """Idempotent ``ray.init``: join ``address``/``RAY_ADDRESS`` if given, else start Ray on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    env = {"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}}
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        return
    kwargs: dict = {"include_dashboard": False, "_node_ip_address": "127.0.0.1", "runtime_env": env}
    if num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    if object_store_mb is not None:
        kwargs["object_store_memory"] = object_store_mb * 1024**2
    log.info("starting a local Ray on 127.0.0.1")
    ray.init(**kwargs)
