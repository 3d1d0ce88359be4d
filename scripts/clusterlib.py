"""Ray node processes on this machine, bound to 127.0.0.1, that can be torn down without touching anyone else's.

Used by ``scripts/local_cluster.py`` (a head plus worker nodes) and ``scripts/autoscale_demo.py`` (a head
with the fake multi-node autoscaler).  Every cluster lives in its own state directory:

``<dir>/cluster.json``  ports, addresses and the pids of the ``ray start --block`` processes
``<dir>/auth_token``    the cluster's token (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``)
``<dir>/ray``           the ``--temp-dir`` of every node (sessions, logs, sockets)
``<dir>/*.log``         the output of each ``ray start``

Teardown never uses ``ray stop`` (it kills every Ray process on the machine): it signals the ``ray start``
processes it started, then kills what is left of their process trees and any process of this user whose
command line names this cluster's temp dir, and reports anything that survived.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtual environment's bin/ (ray, python)
STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
TEMP_SUBDIR = "ray"
# Jobs on a one-machine cluster run in the repository itself (``working_dir: local://<repo>``), not in an
# uploaded copy.  Every node of such a cluster shares one session directory, and Ray's working_dir plugin
# re-creates the unpacked package (``shutil.rmtree`` + unzip) each time another node first sets up the
# job's runtime env: processes already running in it on other nodes are left in a deleted cwd.  That
# killed trials (oneMKL "Cannot load libtorch_cpu.so" while importing torch) and Tune's final analysis.
# ``local://`` names a directory that already exists on every node; Ray never copies or deletes it.
WORKING_DIR = f"local://{REPO}"


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def cluster_env(state_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``ray start`` / ``ray job`` / ``ray status`` against this cluster."""
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(k, None)
    env.update({
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # GCS, raylet, dashboard, workers on 127.0.0.1
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(Path(state_dir) / TOKEN_FILE),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in a job = this venv's python
    })
    env.update(extra or {})
    return env


def write_token(state_dir: Path) -> Path:
    path = Path(state_dir) / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def load_state(state_dir: Path) -> dict[str, Any]:
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        raise SystemExit(f"no cluster state in {state_dir} ({STATE_FILE} missing)")
    return json.loads(path.read_text())


def save_state(state_dir: Path, state: dict[str, Any]) -> None:
    tmp = Path(state_dir) / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(Path(state_dir) / STATE_FILE)


def start_node(state_dir: Path, name: str, *, head: bool, gcs_port: int, num_cpus: int,
               resources: dict[str, float], object_store_mb: int, env: dict[str, str],
               dashboard_port: int | None = None, client_port: int | None = None,
               extra_args: Iterable[str] = ()) -> subprocess.Popen:
    """One node in its own session (process group): ``ray start --head --block`` for the head,
    ``worker_node.py`` (blocking too) for a worker; returns the process."""
    state_dir = Path(state_dir)
    (agent_port,) = free_ports(1)
    temp = state_dir / TEMP_SUBDIR
    if head:
        args = [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}",
                f"--object-store-memory={object_store_mb * 1024**2}", f"--dashboard-agent-listen-port={agent_port}",
                "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats",
                "--head", f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
    else:
        # `ray start --address` will not join on loopback (see worker_node.py)
        args = [sys.executable, str(Path(__file__).resolve().parent / "worker_node.py"),
                f"--address=127.0.0.1:{gcs_port}", f"--temp-dir={temp}", f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}", f"--object-store-memory={object_store_mb * 1024**2}",
                f"--dashboard-agent-listen-port={agent_port}"]
    args += list(extra_args)
    with open(state_dir / f"{name}.log", "ab") as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=str(state_dir))


def wait_started(proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Wait until ``ray start`` says the node is up (it then blocks); raise with the log tail if it died."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "Ray runtime started" in text:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.5)
    raise TimeoutError(f"ray start did not come up within {timeout:.0f}s; see {log}")


# ---------------------------------------------------------------- processes of this cluster, and teardown

def _proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (ppid, uid, state, command line) for every readable process."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            uid = d.stat().st_uid
        except (OSError, ValueError):
            continue
        out[int(d.name)] = (int(fields[1]), uid, fields[0], cmd)
    return out


def _ancestors(table: dict[int, tuple[int, int, str, str]], pid: int) -> set[int]:
    seen = set()
    while pid in table and pid not in seen and pid > 1:
        seen.add(pid)
        pid = table[pid][0]
    return seen


def cluster_pids(state: dict[str, Any]) -> set[int]:
    """Live processes of this cluster: the ``ray start`` processes and their descendants, plus any process
    of this user whose command line names the cluster's temp dir (never this process or its ancestors)."""
    table = _proc_table()
    me = os.getuid()
    names_temp = re.compile(re.escape(str(state["temp_dir"])) + r"(?=[/\s'\",]|$)")
    roots = {p for p in state.get("pids", []) if p in table}
    roots |= {p for p, (_, uid, _, cmd) in table.items() if uid == me and names_temp.search(cmd)}
    children: dict[int, list[int]] = {}
    for p, (pp, _, _, _) in table.items():
        children.setdefault(pp, []).append(p)
    found, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in found:
            continue
        found.add(p)
        todo.extend(children.get(p, []))
    found = {p for p in found if table[p][1] == me and table[p][2] != "Z"}
    return found - _ancestors(table, os.getpid())


def alive(pids: Iterable[int]) -> set[int]:
    table = _proc_table()
    return {p for p in pids if p in table and table[p][2] != "Z"}


def _signal(pids: Iterable[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.time() + timeout
    left = alive(pids)
    while left and time.time() < deadline:
        time.sleep(0.3)
        left = alive(left)
    return left


def teardown(state: dict[str, Any], grace_s: float = 20.0) -> dict[str, Any]:
    """Stop this cluster's processes only.  Returns ``{"stopped": n, "left": [pids]}``."""
    everything = cluster_pids(state)
    starters = alive(state.get("pids", []))
    _signal(starters, signal.SIGTERM)  # `ray start --block` shuts its node down on SIGTERM
    _wait_gone(starters, grace_s)
    everything |= cluster_pids(state)
    rest = alive(everything)
    _signal(rest, signal.SIGTERM)
    rest = _wait_gone(rest, 5.0)
    _signal(rest, signal.SIGKILL)
    _wait_gone(rest, 5.0)
    left = alive(everything) | cluster_pids(state)
    return {"stopped": len(everything), "left": sorted(left)}


def is_loopback(local: str) -> bool:
    """``ss`` local address on loopback: ``127.0.0.1:P``, IPv4-mapped ``[::ffff:127.0.0.1]:P`` or ``[::1]:P``."""
    return local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))


def listening_sockets(pids: set[int]) -> list[dict[str, Any]]:
    """TCP sockets in LISTEN state owned by ``pids`` (from ``ss -ltnpH``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    socks = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 6 or "pid=" not in line:
            continue
        local = parts[3]
        for chunk in line.split("pid=")[1:]:
            pid = int(chunk.split(",")[0])
            if pid in pids:
                name = line.split('(("')[1].split('"')[0] if '(("' in line else "?"
                socks.append({"local": local, "pid": pid, "process": name})
    return socks


def working_dir_removals(temp_dir: str | Path) -> list[str]:
    """Log lines where a node's runtime-env agent removed an unpacked working_dir package of this cluster
    (``Removing .../working_dir_files/_ray_pkg_...``): each one pulled the cwd from under running processes."""
    hits = []
    for log in sorted(Path(temp_dir).glob("session_*/logs/runtime_env_setup-*.log")):
        hits += [line.strip() for line in log.read_text(errors="replace").splitlines()
                 if "Removing " in line and "working_dir_files" in line]
    return hits


def list_nodes(dashboard_url: str) -> list[dict[str, Any]]:
    """Nodes known to the cluster (state API over the dashboard; the auth env must be set in this process)."""
    from ray.util.state import list_nodes as _list

    out = []
    for n in _list(address=dashboard_url, detail=True, raise_on_missing_output=False):
        n = n if isinstance(n, dict) else vars(n)
        out.append({"node_id": n["node_id"], "state": str(n["state"]), "is_head": bool(n["is_head_node"]),
                    "ip": n["node_ip"], "resources": dict(n.get("resources_total") or {})})
    return out
