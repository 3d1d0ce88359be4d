"""The local Ray that :func:`raypipe.runtime.init_ray` starts: loopback, and its workers know its address."""
from __future__ import annotations

import os


def test_local_ray_pins_its_own_gcs_address_in_workers(ray_local):
    ray = ray_local

    @ray.remote(num_cpus=0)
    def worker_env() -> dict[str, str | None]:
        return {k: os.environ.get(k) for k in ("RAY_ADDRESS", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")}

    gcs = ray.get_runtime_context().gcs_address
    env = ray.get(worker_env.remote())
    assert gcs.startswith("127.0.0.1:")
    # a State API lookup from a worker (Train's PlacementGroupCleaner) reaches this instance, not another one
    assert env["RAY_ADDRESS"] == gcs
    assert env["HF_HUB_OFFLINE"] == "1" and env["OMP_NUM_THREADS"] == "1"
    assert "RAY_GCS_SERVER_PORT" not in os.environ  # the port pin does not leak into later ray.init calls
