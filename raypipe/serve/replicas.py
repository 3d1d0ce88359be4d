"""Find the replica actors of a Serve deployment and kill one (fault injection for tests and benchmarks).

Serve names each replica actor ``SERVE_REPLICA::<app>#<deployment>#<id>`` in the ``serve`` namespace
(:meth:`ray.serve._private.common.ReplicaID.to_full_id_str`); the names are listed from the GCS with
:func:`ray.util.list_named_actors`, which needs no dashboard.  Killing one with ``ray.kill(...,
no_restart=True)`` is what Serve's own fault-tolerance docs do; the controller notices the dead actor
and starts a replacement to keep the target replica count.
"""
from __future__ import annotations

import time

PREFIX = "SERVE_REPLICA::"
NAMESPACE = "serve"


def replica_names(app: str, deployment: str) -> list[str]:
    import ray

    want = f"{PREFIX}{app}#{deployment}#"
    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(n["name"] for n in names if n.get("namespace") == NAMESPACE and n["name"].startswith(want))


def kill_replica(name: str) -> None:
    import ray

    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


def running_replicas(app: str, deployment: str) -> int:
    """Replicas Serve reports RUNNING for ``app``/``deployment`` (0 when unknown)."""
    from ray import serve

    try:
        states = serve.status().applications[app].deployments[deployment].replica_states
    except KeyError:
        return 0
    return int(sum(n for s, n in states.items() if str(getattr(s, "value", s)) == "RUNNING"))


def wait_running(app: str, deployment: str, n: int, timeout_s: float = 120.0,
                 replaced: set[str] | None = None) -> float:
    """Wait until ``n`` replicas run; with ``replaced`` (the names before a kill) also until at least one
    live replica has a name not in it, i.e. Serve has started a replacement.  Returns the seconds
    waited; raises ``TimeoutError``."""
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        names = set(replica_names(app, deployment))
        fresh = not replaced or bool(names - replaced)
        if fresh and len(names) >= n and running_replicas(app, deployment) >= n:
            return time.time() - t0
        time.sleep(0.1)
    raise TimeoutError(f"{app}/{deployment}: {n} running replicas not reached in {timeout_s}s")


def direct_ingress_urls(app: str) -> list[str]:
    """HTTP URLs of ``app``'s ingress replicas when Serve runs with direct ingress
    (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` or ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` set before Ray starts):
    each ingress replica then serves HTTP itself, and a client (or a load balancer) that calls it skips
    the proxy's extra actor hop.  Read from the controller's instance details (``target_groups``, what
    ``GET /api/serve/applications`` returns); empty when direct ingress is off."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME
    from ray.serve.schema import ServeInstanceDetails

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=NAMESPACE)
    details = ServeInstanceDetails(**ray.get(controller.get_serve_instance_details.remote()))
    urls = []
    for group in details.target_groups:
        if group.app_name == app and str(getattr(group.protocol, "value", group.protocol)) == "HTTP":
            urls += [f"http://{t.ip}:{t.port}" for t in group.targets]
    return sorted(urls)


#: the process title Ray gives a Serve replica's worker: ``ray::ServeReplica:<app>:<deployment>``
TITLE_PREFIX = "ray::ServeReplica:"


def replica_memory(app: str) -> dict[str, list[dict[str, int]]]:
    """Resident memory of ``app``'s replica processes on this node, per deployment: a list (one entry per
    replica) of ``rss`` and ``uss`` bytes (USS: the pages only that process holds; RSS also counts the
    shared libraries and the pages shared with other workers).  Found by process title, so it needs no
    dashboard; replicas on other nodes are not seen."""
    import psutil

    want = f"{TITLE_PREFIX}{app}:"
    out: dict[str, list[dict[str, int]]] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            if not title.startswith(want):
                continue
            deployment = title[len(want):].split()[0]
            mem = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        out.setdefault(deployment, []).append({"pid": proc.pid, "rss": int(mem.rss), "uss": int(mem.uss)})
    return {d: sorted(v, key=lambda e: e["pid"]) for d, v in sorted(out.items())}


#: /proc/stat's CPU fields, in order (seconds after dividing by the clock tick)
PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_cpu_seconds(stat: str | None = None) -> dict[str, float]:
    """The machine's CPU time so far by kind (``/proc/stat``'s first line, in seconds).  ``steal`` is the
    time a virtual CPU was ready but the hypervisor ran something else: the share of a run's CPU time
    that other tenants took.  ``stat`` is the file's text (read when omitted)."""
    import os
    from pathlib import Path

    text = stat if stat is not None else Path("/proc/stat").read_text()
    first = text.splitlines()[0].split()
    if first[0] != "cpu":
        raise ValueError(f"/proc/stat: first line is {first[0]!r}, not the 'cpu' total")
    tick = os.sysconf("SC_CLK_TCK")
    return {k: int(v) / tick for k, v in zip(PROC_STAT_FIELDS, first[1:1 + len(PROC_STAT_FIELDS)])}


def process_role(cmdline: list[str], own_pid: int, pid: int) -> str | None:
    """Which part of a local Ray/Serve node a process is, from its command line (None: not Ray's)."""
    title = " ".join(cmdline)
    if pid == own_pid:
        return "this process (client)"
    if title.startswith(TITLE_PREFIX):
        return "replica " + title[len(TITLE_PREFIX):].split()[0]
    for marker, role in (("ray::ServeController", "Serve controller"), ("ray::ProxyActor", "Serve HTTP proxy"),
                         ("gcs_server", "GCS"), ("/raylet", "raylet"), ("ray::DashboardAgent", "Ray node agents"),
                         ("ray::RuntimeEnvAgent", "Ray node agents"), ("dashboard", "dashboard"),
                         ("log_monitor", "log monitor"),
                         ("ray::", "other Ray workers"), ("default_worker.py", "other Ray workers")):
        if marker in title:
            return role
    return None


def node_processes(attrs: tuple[str, ...]) -> list[tuple[str, dict]]:
    """This node's Ray/Serve processes and this one, as ``(role, psutil info with attrs)`` pairs."""
    import os

    import psutil

    own = os.getpid()
    out = []
    for proc in psutil.process_iter(["cmdline", *attrs]):
        try:
            role = process_role(proc.info["cmdline"] or [], own, proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if role is not None and all(proc.info.get(a) is not None for a in attrs):
            out.append((role, proc.info))
    return out


def process_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) each part of this node has used so far, summed per role
    (:func:`process_role`); two snapshots around a load give each part's share of it."""
    out: dict[str, float] = {}
    for role, info in node_processes(("cpu_times",)):
        out[role] = out.get(role, 0.0) + float(info["cpu_times"].user + info["cpu_times"].system)
    return out


def process_niceness() -> dict[str, list[int]]:
    """The scheduling niceness of each part of this node (Ray starts its workers, Serve's proxy and
    replicas among them, at ``RAY_worker_niceness``, 15 by default: below any process at 0)."""
    out: dict[str, set[int]] = {}
    for role, info in node_processes(("nice",)):
        out.setdefault(role, set()).add(int(info["nice"]))
    return {r: sorted(v) for r, v in sorted(out.items())}
