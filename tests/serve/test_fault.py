"""Fault injection: kill one of two encoder replicas while requests run; Serve replaces it."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from raypipe.serve.replicas import kill_replica, replica_names, wait_running

from .conftest import deploy


@pytest.mark.slow
def test_killed_encoder_replica_is_replaced_and_requests_keep_succeeding(serve_port, idp_artifacts: Path,
                                                                          tiny_dataset: Path, tmp_path: Path) -> None:
    from ray import serve

    url = deploy("fault", serve_port, {"artifacts": str(idp_artifacts), "state_dir": str(tmp_path / "state"),
                                       "num_replicas": {"SequenceEncoder": 2}})
    try:
        wait_running("fault", "SequenceEncoder", 2, timeout_s=60)
        before = set(replica_names("fault", "SequenceEncoder"))
        assert len(before) == 2
        history = requests.get(f"{url}/healthz", timeout=10).json()  # warm
        body = {"history": ["toys/NOPE"], "domain": "toys", "k": 5}
        items = requests.post(f"{url}/recommend", json=body, timeout=10).json()["items"]
        body = {"history": [i["item_id"] for i in items], "domain": "toys", "k": 5}
        log: list[tuple[float, int]] = []
        stop = threading.Event()

        def worker() -> None:
            s = requests.Session()
            while not stop.is_set():
                t = time.time()
                try:
                    code = s.post(f"{url}/recommend", json=body, timeout=30).status_code
                except requests.RequestException:
                    code = -1
                log.append((t, code))

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for th in threads:
            th.start()
        time.sleep(3)
        victim = sorted(before)[0]
        t_kill = time.time()
        kill_replica(victim)
        recovered_after = wait_running("fault", "SequenceEncoder", 2, timeout_s=90, replaced=before)
        t_rec = time.time()
        time.sleep(3)
        stop.set()
        for th in threads:
            th.join()
        after = set(replica_names("fault", "SequenceEncoder"))
        assert victim not in after and len(after) == 2  # a new replica replaced the killed one
        window = [c for t, c in log if t_kill <= t < t_rec]
        later = [c for t, c in log if t >= t_rec]
        failed = sum(c != 200 for c in window)
        print(f"\nfault window {recovered_after:.1f}s: {len(window)} requests, {failed} failed; "
              f"{len(later)} after recovery, {sum(c != 200 for c in later)} failed; "
              f"{sum(c == 200 for t, c in log if t < t_kill)} ok before the kill")
        assert len(later) > 10 and all(c == 200 for c in later)
        assert all(c < 500 or c == 503 for t, c in log)  # only 'unavailable' may appear, in the window
        assert failed <= max(3, len(window) // 10)
        assert history["status"] == "ok"
    finally:
        serve.delete("fault")
