"""The local Ray that :func:`raypipe.runtime.init_ray` starts: loopback, its workers know its address, and its
State API answers (Ray Train's PlacementGroupCleaner depends on it, issue #14)."""
from __future__ import annotations

import os
import time
from pathlib import Path


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


def test_local_ray_workers_see_the_data_root_whatever_their_directory(ray_local, tmp_path: Path):
    """A Train worker runs in its run's artifacts directory; the default relative ``data`` must still name
    the driver's data directory there (else every UniMP worker converted SmolLM2 again, 540 MB each)."""
    ray = ray_local

    @ray.remote(num_cpus=0)
    def root_from(directory: str) -> str:
        from raypipe.data.registry import data_root

        before = os.getcwd()
        os.chdir(directory)
        try:
            return str(data_root().resolve())
        finally:
            os.chdir(before)  # the worker goes back to Ray's pool

    # the root the driver had when Ray started (a test may have changed $RAYPIPE_DATA since)
    pinned = ray.get_runtime_context().runtime_env["env_vars"]["RAYPIPE_DATA"]
    assert Path(pinned).is_absolute()
    seen = ray.get(root_from.remote(str(tmp_path)))
    assert seen == pinned and not seen.startswith(str(tmp_path))


def test_train_controllers_poll_every_half_second_unless_the_environment_says(ray_local, monkeypatch) -> None:
    """Ray Train V2 collects each report when its controller polls (2 s by default): the job's processes
    get 0.5 s, or what the environment sets."""
    from raypipe.runtime import TRAIN_POLL_ENV, job_env_vars

    ray = ray_local

    @ray.remote(num_cpus=0)
    def seen() -> str | None:
        return os.environ.get(TRAIN_POLL_ENV)

    pinned = ray.get_runtime_context().runtime_env["env_vars"][TRAIN_POLL_ENV]  # when the session's Ray started
    assert ray.get(seen.remote()) == pinned
    monkeypatch.delenv(TRAIN_POLL_ENV, raising=False)
    assert job_env_vars()[TRAIN_POLL_ENV] == "0.5"
    monkeypatch.setenv(TRAIN_POLL_ENV, "1.5")
    assert job_env_vars()[TRAIN_POLL_ENV] == "1.5"


def test_state_api_tells_the_placement_group_cleaner_whether_an_actor_is_alive(ray_local):
    """The exact call Train's PlacementGroupCleaner makes once a second, from a worker: it must answer (no
    RayStateApiException, i.e. no "Failed to query Ray Train Controller actor state" warning), True for a
    live actor and False once the actor is dead (then the cleaner removes the placement group)."""
    ray = ray_local

    @ray.remote(num_cpus=0)
    class Controller:
        def ping(self) -> int:
            return 1

    @ray.remote(num_cpus=0)
    def alive(actor_id: str):
        from ray.train.v2._internal.state.util import is_actor_alive
        from ray.util.state.exception import RayStateApiException

        try:
            return bool(is_actor_alive(actor_id=actor_id, timeout=10))
        except RayStateApiException as e:
            return f"State API unavailable: {e}"

    actor = Controller.remote()
    ray.get(actor.ping.remote())
    actor_id = actor._actor_id.hex()
    assert ray.get(alive.remote(actor_id)) is True
    ray.kill(actor)
    deadline = time.monotonic() + 30  # ray.kill is asynchronous
    while (answer := ray.get(alive.remote(actor_id))) is True and time.monotonic() < deadline:
        time.sleep(0.2)
    assert answer is False, answer


def _listening_inodes() -> dict[str, str]:
    """socket inode -> local address for every listening TCP socket on this host (from /proc/net/tcp*)."""
    out: dict[str, str] = {}
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A":  # LISTEN
                out[f[9]] = f[1].split(":")[0]
    return out


def _loopback(hex_addr: str) -> bool:
    if len(hex_addr) == 8:  # IPv4, little-endian
        return hex_addr[-2:] == "7F"
    # IPv6 ::1, or IPv4-mapped ::ffff:127.x.x.x
    return hex_addr == "00000000000000000000000001000000" or (
        hex_addr.startswith("0000000000000000FFFF0000") and hex_addr[-2:] == "7F")


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, stack = set(), [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.add(c)
            stack.append(c)
    return out


def test_local_ray_and_its_dashboard_listen_on_loopback_only(ray_local):
    ray = ray_local
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    dashboard = ray._private.worker.global_worker.node.address_info["webui_url"]
    assert dashboard.startswith("127.0.0.1:"), dashboard
    listening = _listening_inodes()
    found: dict[int, list[str]] = {}
    for pid in _descendants(os.getpid()) | {os.getpid()}:  # the session's Ray: GCS, raylet, dashboard, workers
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                found.setdefault(pid, []).append(listening[target[8:-1]])
    addrs = [a for v in found.values() for a in v]
    assert len(addrs) >= 4, found  # GCS, raylet, dashboard, dashboard agent at least
    assert all(_loopback(a) for a in addrs), {p: [a for a in v if not _loopback(a)] for p, v in found.items()}
