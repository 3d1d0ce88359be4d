"""Load benchmark of the recommender Serve app on loopback (open-loop, bounded in count and time).

    python bench/bench_serve.py                  # builtin 'large' catalogue (150k items), 12k requests at 100 QPS
    python bench/bench_serve.py --quick          # builtin 'small' (6k items), 300 requests, short fault phase
    python bench/bench_serve.py --artifacts runs/idp   # a trained IDP pipeline / run directory instead
    python bench/bench_serve.py --artifacts runs/sasrec --reranker-run runs/upsr --rerank-depth 2 \
        --qps 0.5 --requests 40 --fault-seconds 0 --out bench/results/serve_rerank_upsr_d20.json
    python bench/bench_serve.py ... --reranker-run runs/unimp --explain-share 0.3   # a share of POST /explain

Without ``--artifacts`` the served model is a **randomly initialised** SASRec (hidden 64, 2 layers, seed
0, never trained) whose item table covers the whole builtin catalogue, and the matcher is the packaged
MiniLM untuned over at most ``--matcher-max-items`` source items: a pure latency/robustness test, not
a quality one.  The JSON records exactly this.  Requests (Python aiohttp client in this process, so
the client shares the machine's CPUs with Serve): POST /recommend with real histories from the
dataset (a share with only unknown ids → popularity fallback), GET /items/{id}, POST /match,
GET /healthz, and a share of malformed requests (bad JSON, wrong types, k out of range, oversized
body, unknown domain).  Then a fault phase kills one of the two encoder replicas under load and counts
failures until Serve has replaced it.  Writes bench/results/serve.json and prints Markdown tables.
Over the load it also records the machine's CPU time (steal included) and each Ray/Serve process's
cores and niceness, the client's loop stalls and GC pauses, and a CPU probe before Ray and after the
load (``bench/serve_variance.py`` compares runs by them); ``--worker-niceness`` and ``--proxy-grpc`` set
``RAY_worker_niceness`` and ``RAY_SERVE_PROXY_USE_GRPC`` for the run.

Serve runs in its throughput-optimised mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``, set here before Ray
starts) and the load goes to the ingress replica's direct HTTP port (127.0.0.1:30000+);
``--via-proxy`` sends it through Serve's HTTP proxy and ``--no-throughput-optimized`` keeps Serve's
defaults, for comparison; ``--colocate`` runs the encoder and retriever inside the ingress replica; ``--config FILE`` deploys the
app as that Serve config does (e.g. ``serve_apps/recommender_colocated.yaml``).  Every
answered /recommend's ``Server-Timing`` header gives its hops (queue, encode, retrieve, rerank, respond,
app); the JSON's ``load.hop_profile`` has their percentiles and the time the client saw outside the app.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import raypipe.runtime  # noqa: E402,F401  (loopback + offline env before Ray is imported)
from raypipe.serve.timing import HEADER as SERVER_TIMING, HOPS, parse_server_timing  # noqa: E402

MALFORMED = ["bad_json", "wrong_type", "k_out_of_range", "oversized", "unknown_domain"]


def random_model_run(size: str, out: Path) -> tuple[Path, Path]:
    """A random-init SASRec run directory over the builtin catalogue (every item of items.parquet)."""
    import pyarrow.parquet as pq
    import torch

    from raypipe.config import load_config
    from raypipe.data.registry import resolve_dataset
    from raypipe.data.sequences import ItemIndex
    from raypipe.models.registry import build_model
    from raypipe.data.catalogue import ItemCatalogue
    from raypipe.rundir import CONFIG_FILE, INDEX_FILE, save_weights

    data = resolve_dataset(f"builtin:{size}").resolve()
    run = out / "random-sasrec"
    if not (run / "model.pt").exists():
        items = pq.read_table(data / "items.parquet", columns=["item_id", "domain"]).to_pandas()
        index = ItemIndex.build(items["item_id"], items["domain"])
        cfg = load_config(None, [f"data.dataset={data}", "model.name=sasrec", "model.loss=bpr", "model.hidden=64",
                                 f"run.name={run.name}", f"run.storage_path={out}"])
        torch.manual_seed(0)
        model = build_model(cfg.model, ItemCatalogue(index))
        run.mkdir(parents=True, exist_ok=True)
        cfg.save(run / CONFIG_FILE)
        index.save(run / INDEX_FILE)
        save_weights(run, model.state_dict())
    return run, data


def sample_histories(data: Path, n: int, seed: int) -> list[tuple[str, list[str]]]:
    import pandas as pd

    df = pd.read_parquet(data / "interactions.parquet", columns=["user_id", "item_id", "domain", "timestamp"])
    rng = np.random.default_rng(seed)
    users = df[["user_id", "domain"]].drop_duplicates().sample(n=min(n, 50_000), random_state=seed)
    df = df.merge(users, on=["user_id", "domain"]).sort_values("timestamp", kind="stable")
    out = [(d, list(g["item_id"])[-int(rng.integers(1, 21)):]) for (u, d), g in df.groupby(["user_id", "domain"])]
    rng.shuffle(out)
    return out[:n]


def plan(n: int, args, histories, item_ids, domains, rng,
         items_by_domain: dict[str, list[str]] | None = None) -> list[tuple[str, str, str, object]]:
    """(kind, method, path, body) per request; body str = raw bytes to send.  With ``args.explain_share``
    that share of the requests (taken from the valid /recommend ones) are POST /explain of a random item of
    the history's domain (``items_by_domain``)."""
    reqs = []
    big = json.dumps({"history": ["x" * 200] * 400, "k": 5})
    for i in range(n):
        u = rng.random()
        if u < args.malformed_share:
            kind = MALFORMED[i % len(MALFORMED)]
            body = {"bad_json": '{"history": ["a", ', "wrong_type": json.dumps({"history": "a", "k": "5"}),
                    "k_out_of_range": json.dumps({"history": [], "k": 10_000}), "oversized": big,
                    "unknown_domain": json.dumps({"history": [], "domain": "garden"})}[kind]
            reqs.append(("malformed:" + kind, "POST", "/recommend", body))
        elif u < args.malformed_share + 0.02:
            reqs.append(("get_item", "GET", f"/items/{item_ids[rng.integers(len(item_ids))]}", None))
        elif u < args.malformed_share + 0.04:
            d, h = histories[rng.integers(len(histories))]
            reqs.append(("match", "POST", "/match", json.dumps({"text": f"{d} item like {h[-1]}", "k": 10})))
        elif u < args.malformed_share + 0.05:
            reqs.append(("healthz", "GET", "/healthz", None))
        elif u < args.malformed_share + 0.10:
            reqs.append(("recommend_unknown", "POST", "/recommend",
                         json.dumps({"history": [f"nowhere/{i}"], "domain": domains[i % len(domains)], "k": 10})))
        elif u < args.malformed_share + 0.10 + args.explain_share:
            d, h = histories[rng.integers(len(histories))]
            pool = items_by_domain[d]  # type: ignore[index]
            reqs.append(("explain", "POST", "/explain", json.dumps(
                {"history": h, "item_id": pool[rng.integers(len(pool))], "max_tokens": args.explain_tokens})))
        else:
            d, h = histories[rng.integers(len(histories))]
            reqs.append(("recommend", "POST", "/recommend", json.dumps({"history": h, "domain": d, "k": 10})))
    return reqs


LAG_TICK_S = 0.005


STALL_MS = 20.0


async def loop_lag(stop: asyncio.Event, lags_ms: list[float], stalls: list[dict], t0: float) -> None:
    """How late this event loop wakes a 5 ms sleep, sampled until ``stop``: the client's own delay in
    reading answers (the load generator shares the machine's CPUs with Serve).  Wakes later than
    ``STALL_MS`` also go to ``stalls`` with their time since ``t0``."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(LAG_TICK_S)
        lag = max(0.0, (time.perf_counter() - t - LAG_TICK_S) * 1000)
        lags_ms.append(lag)
        if lag > STALL_MS:
            stalls.append({"t": t - t0, "lag_ms": lag})


class GcPauses:
    """This process's garbage-collector pauses (``gc.callbacks``): generation, start time, ms."""

    def __init__(self) -> None:
        self.pauses: list[dict] = []
        self._start = 0.0
        self.t0 = time.perf_counter()

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append({"generation": info["generation"], "t": self._start - self.t0,
                                "ms": (time.perf_counter() - self._start) * 1000})

    def summary(self) -> dict:
        by = {g: [p["ms"] for p in self.pauses if p["generation"] == g] for g in (0, 1, 2)}
        return {f"gen{g}": {"n": len(v), "total_ms": float(sum(v)), "max_ms": max(v, default=0.0)}
                for g, v in by.items()}


async def run_load(url: str, reqs, qps: float, max_s: float, lags_ms: list[float] | None = None,
                   stalls: list[dict] | None = None) -> list[dict]:
    """Send ``reqs`` open-loop at ``qps``; with ``lags_ms`` (and ``stalls``) also sample the client's
    loop lag into them (:func:`loop_lag`)."""
    import aiohttp

    results: list[dict] = []
    stop = asyncio.Event()
    t0 = time.perf_counter()
    lag_task = (asyncio.create_task(loop_lag(stop, lags_ms, stalls if stalls is not None else [], t0))
                if lags_ms is not None else None)
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def one(i, kind, method, path, body):
            await asyncio.sleep(max(0.0, t0 + i / qps - time.perf_counter()))
            if time.perf_counter() - t0 > max_s:
                return
            t = time.perf_counter()
            try:
                async with s.request(method, url + path, data=body,
                                     headers={"content-type": "application/json"} if body else None) as r:
                    answer = await r.read()
                    code = r.status
                    timing = r.headers.get(SERVER_TIMING)
            except Exception as e:  # noqa: BLE001 - counted, never raised
                code, timing, answer = f"client:{type(e).__name__}", None, b""
            results.append({"kind": kind, "status": code, "ms": (time.perf_counter() - t) * 1000,
                            "t": t - t0, "timing": timing, "answer": answer if kind == "explain" else None})
        await asyncio.gather(*(one(i, *r) for i, r in enumerate(reqs)))
    stop.set()
    if lag_task is not None:
        await lag_task
    # the headers are parsed after the load: the client shares the CPUs with Serve
    for r in results:
        timing, answer = r.pop("timing"), r.pop("answer")
        r["hops"] = parse_server_timing(timing) if timing else None
        if answer and r["status"] == 200:  # an explanation's length: its latency grows with it
            r["tokens"] = int(json.loads(answer)["tokens"])
    return results


def pct(xs, q):
    return float(np.percentile(xs, q)) if len(xs) else float("nan")


def summarise(results: list[dict], wall: float, offered: float) -> dict:
    by = defaultdict(list)
    for r in results:
        by[r["kind"].split(":")[0]].append(r)
    rows = {}
    for kind, rs in sorted(by.items()):
        ms = [r["ms"] for r in rs]
        rows[kind] = {"n": len(rs), "status": dict(Counter(str(r["status"]) for r in rs)),
                      "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99)}
        tokens = [r["tokens"] for r in rs if "tokens" in r]
        if tokens:
            rows[kind]["tokens_mean"] = float(np.mean(tokens))
    ms = [r["ms"] for r in results]
    codes = Counter(str(r["status"]) for r in results)
    return {"requests": len(results), "offered_qps": offered, "achieved_qps": len(results) / wall if wall else 0,
            "wall_s": wall, "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "p99_ms": pct(ms, 99),
            "status": dict(codes), "n_5xx": sum(n for c, n in codes.items() if c.startswith("5")),
            "n_client_errors": sum(n for c, n in codes.items() if c.startswith("client")),
            "malformed_share": sum(1 for r in results if r["kind"].startswith("malformed")) / max(1, len(results)),
            "per_kind": rows}


def hop_profile(results: list[dict]) -> dict | None:
    """Per-hop percentiles of the answered /recommend requests from their ``Server-Timing`` headers, and
    ``outside_app``: what the client measured beyond the replica's endpoint (HTTP, proxy, FastAPI)."""
    timed = [r for r in results if r["kind"] == "recommend" and r["status"] == 200 and r.get("hops")]
    if not timed:
        return None
    series = {h: [r["hops"].get(h, 0.0) for r in timed] for h in (*HOPS, "app")}
    if all("gc" in r["hops"] for r in timed):  # the replica's GC pauses in the request's time (overlap the hops)
        series["gc"] = [r["hops"]["gc"] for r in timed]
    # inside the app but in no hop: the replica's event loop (other requests' work, the endpoint resuming)
    series["app_other"] = [r["hops"]["app"] - sum(r["hops"].get(h, 0.0) for h in HOPS) for r in timed]
    series["outside_app"] = [r["ms"] - r["hops"]["app"] for r in timed]
    series["client"] = [r["ms"] for r in timed]
    return {"n": len(timed), "hops": {h: {"mean_ms": float(np.mean(v)), "p50_ms": pct(v, 50), "p95_ms": pct(v, 95),
                                          "p99_ms": pct(v, 99)} for h, v in series.items()},
            # the slowest 1%: where their time went (mean ms per hop over those requests)
            "slowest_1pct_mean_ms": {h: float(np.mean([series[h][i] for i in _slowest(series["client"], 0.01)]))
                                     for h in series}}


def _slowest(ms: list[float], share: float) -> list[int]:
    k = max(1, int(round(len(ms) * share)))
    return list(np.argsort(ms)[-k:])


def hop_table(profile: dict) -> str:
    lines = ["| Hop (answered /recommend) | mean ms | p50 ms | p95 ms | p99 ms | slowest 1%: mean ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for h, v in profile["hops"].items():
        lines.append(f"| {h} | {v['mean_ms']:.1f} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} | {v['p99_ms']:.1f} | "
                     f"{profile['slowest_1pct_mean_ms'][h]:.1f} |")
    return "\n".join(lines)


def memory_table(memory: dict[str, dict[str, list[dict[str, int]]]]) -> str:
    """One row per deployment, one column per moment (``replica_memory`` snapshots): RSS / USS in MiB."""
    moments = list(memory)
    deployments = sorted({d for snap in memory.values() for d in snap})
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    rows = ["| Deployment | " + " | ".join(moments) + " |", "|---|" + "---:|" * len(moments)]
    for d in deployments:
        cells = [", ".join(f"{mib(p['rss'])} / {mib(p['uss'])}" for p in memory[m].get(d, [])) or "–" for m in moments]
        rows.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def cpu_probe(repeats: int = 5) -> dict[str, float]:
    """Milliseconds of two fixed single-threaded workloads (best of ``repeats``): a pure-Python loop and
    a small torch matmul chain.  Taken before Ray starts and after the load, it shows how fast this
    machine's CPUs were for the run: the same code's latency moves with it on a shared host."""
    import torch

    def py() -> None:
        total = 0
        for i in range(300_000):
            total += i * i

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    a = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))

    def mm() -> None:
        x = a
        for _ in range(40):
            x = torch.tanh(x @ a)

    try:
        out = {}
        for name, fn in (("python_loop_ms", py), ("torch_matmul_ms", mm)):
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                best = min(best, (time.perf_counter() - t) * 1000)
            out[name] = best
        return out
    finally:
        torch.set_num_threads(threads)


def cpu_use(m0: dict[str, float], m1: dict[str, float], p0: dict[str, float], p1: dict[str, float],
            wall: float) -> dict:
    """What the machine's CPUs did over ``wall`` seconds (two :func:`machine_cpu_seconds` snapshots) and
    which local processes used them (two :func:`process_cpu_seconds` snapshots), as cores in use."""
    if wall <= 0:
        raise ValueError(f"cpu_use: wall must be > 0 seconds, got {wall}")
    machine = {k: m1[k] - m0[k] for k in m0}
    total = sum(machine.values())
    used = {r: p1[r] - p0.get(r, 0.0) for r in p1}
    return {"wall_s": wall, "machine_share": {k: v / total for k, v in machine.items()} if total else {},
            "busy_cores": (total - machine["idle"] - machine["iowait"]) / wall,
            "steal_cores": machine["steal"] / wall,
            "process_cores": {r: used[r] / wall for r in sorted(used, key=lambda r: -used[r])}}


def cpu_table(cpu: dict) -> str:
    share = cpu["machine_share"]
    lines = [f"Machine: {cpu['busy_cores']:.2f} cores busy over {cpu['wall_s']:.0f} s; steal (other tenants) "
             f"{cpu['steal_cores']:.2f} cores; " + ", ".join(f"{k} {v:.0%}" for k, v in share.items() if v >= 0.005),
             "", "| Process | cores | niceness |", "|---|---:|---|"]
    nice = cpu.get("niceness", {})
    lines += [f"| {r} | {c:.2f} | {', '.join(map(str, nice.get(r, []))) or '–'} |"
              for r, c in cpu["process_cores"].items()]
    return "\n".join(lines)


def client_text(load: dict) -> str:
    """The load generator's own delays (loop lag, stalls, GC) and the CPU probe, as two lines."""
    lag, probe = load["client_loop_lag_ms"], load["cpu_probe"]
    return (f"Client loop lag (a {lag['tick_ms']:.0f} ms sleep woken late by): p50 {lag['p50']:.1f} ms, "
            f"p99 {lag['p99']:.1f} ms, max {lag['max']:.1f} ms; stalls over {lag['stall_ms']:.0f} ms at "
            + (", ".join(f"{st['t']:.1f} s ({st['lag_ms']:.0f} ms)" for st in lag["stalls"]) or "none")
            + "; client GC: " + ", ".join(f"{g} {v['n']} pauses, max {v['max_ms']:.1f} ms"
                                          for g, v in load["client_gc"].items())
            + "\n\nCPU probe (ms, single thread; before Ray / after the load): "
            + ", ".join(f"{k} {probe['before_ray'][k]:.1f} / {probe['after_load'][k]:.1f}" for k in probe["before_ray"]))


def table(s: dict) -> str:
    lines = ["| Requests | QPS offered | QPS achieved | p50 ms | p95 ms | p99 ms | Status counts | Malformed share | 5xx |",
             "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
             f"| {s['requests']:,} | {s['offered_qps']:g} | {s['achieved_qps']:.1f} | {s['p50_ms']:.1f} | "
             f"{s['p95_ms']:.1f} | {s['p99_ms']:.1f} | "
             + ", ".join(f"{k}: {v}" for k, v in sorted(s["status"].items())) +
             f" | {s['malformed_share']:.1%} | {s['n_5xx']} |", "",
             "| Kind | n | p50 ms | p95 ms | p99 ms | Status counts |", "|---|---:|---:|---:|---:|---|"]
    for k, r in s["per_kind"].items():
        lines.append(f"| {k} | {r['n']:,} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                     + ", ".join(f"{c}: {v}" for c, v in sorted(r["status"].items()))
                     + (f" (mean {r['tokens_mean']:.1f} tokens generated)" if "tokens_mean" in r else "") + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="large", choices=["small", "large"])
    p.add_argument("--artifacts", default=None, help="trained IDP pipeline or run dir (default: random SASRec)")
    p.add_argument("--requests", type=int, default=12_000)
    p.add_argument("--qps", type=float, default=100.0)
    p.add_argument("--max-seconds", type=float, default=240.0)
    p.add_argument("--malformed-share", type=float, default=0.10)
    p.add_argument("--matcher-max-items", type=int, default=20_000)
    p.add_argument("--fault-seconds", type=float, default=40.0, help="0 = no fault phase")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="small catalogue, 300 requests, 12 s fault phase")
    p.add_argument("--via-proxy", action="store_true",
                   help="send the load through Serve's HTTP proxy instead of the ingress replica's direct port")
    p.add_argument("--no-throughput-optimized", action="store_true",
                   help="leave RAY_SERVE_THROUGHPUT_OPTIMIZED unset (no direct ingress: the proxy is the only way in)")
    p.add_argument("--reranker-run", default=None,
                   help="a run directory served in the reranker slot (UPSR, UniMP) over the same items")
    p.add_argument("--rerank-depth", type=int, default=3,
                   help="with --reranker-run: candidates reranked = k (10) x this")
    p.add_argument("--explain-share", type=float, default=0.0,
                   help="with a generative --reranker-run (UniMP): this share of the load is POST /explain")
    p.add_argument("--explain-tokens", type=int, default=16, help="max_tokens of each /explain request")
    p.add_argument("--colocate", action="store_true",
                   help="encoder and retriever inside the ingress replica (build_app colocate=true); no fault "
                        "phase (there is no encoder replica to kill)")
    p.add_argument("--config", default=None,
                   help="deploy the app as this Serve config file does (its args, deployments' resources and "
                        "autoscaling, top-level logging_config), with this run's artifacts, port and state dir")
    p.add_argument("--proxy-access-log", action="store_true",
                   help="leave the Serve proxy's access log on (Serve's default; a log line per request)")
    p.add_argument("--worker-niceness", type=int, default=None,
                   help="RAY_worker_niceness for this run's Ray (Ray's default: 15, below the client at 0)")
    p.add_argument("--proxy-grpc", action="store_true",
                   help="RAY_SERVE_PROXY_USE_GRPC=1: the HTTP proxy calls the ingress replica over gRPC, not a Ray "
                        "actor call (in Ray 2.60 RAY_SERVE_THROUGHPUT_OPTIMIZED=1 turns gRPC on between deployments "
                        "but not for the proxy)")
    p.add_argument("--no-client-gc-freeze", action="store_true",
                   help="leave this process's garbage collector as it is (by default: collect and freeze before "
                        "the load, as Serve does in its proxy and replicas, so a full collection of the client's "
                        "start-up objects does not stall its reading of answers)")
    p.add_argument("--out", default="bench/results/serve.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not 0.0 <= args.explain_share <= 1.0 - args.malformed_share - 0.10:
        p.error(f"--explain-share {args.explain_share}: must be in [0, {1.0 - args.malformed_share - 0.10:g}] "
                "(the malformed share and 10% of other endpoints come first)")
    if args.explain_share > 0 and not args.reranker_run:
        p.error("--explain-share needs --reranker-run (a generative run such as UniMP answers /explain)")
    if not 1 <= args.explain_tokens <= 64:
        p.error(f"--explain-tokens {args.explain_tokens}: the app accepts 1-64")
    if args.quick:
        args.size, args.requests, args.max_seconds, args.fault_seconds, args.warmup = "small", 300, 30, 12, 50
        args.matcher_max_items = min(args.matcher_max_items, 2000)
        if args.out == "bench/results/serve.json":
            args.out = "bench/results/serve_quick.json"
    if args.config:
        import yaml

        conf = yaml.safe_load(Path(args.config).read_text())
        args.colocate = bool(conf["applications"][0].get("args", {}).get("colocate"))
        if args.proxy_access_log:
            p.error("--config: the file's logging_config sets the proxy's access log")
        if args.fault_seconds > 0:  # the file's autoscaling decides the encoder replicas, not two fixed ones
            print("--config: no fault phase (the config's autoscaling sets the replica counts)", flush=True)
            args.fault_seconds = 0.0
    if args.colocate and args.fault_seconds > 0:
        print("--colocate: no fault phase (the encoder runs inside the ingress replica)", flush=True)
        args.fault_seconds = 0.0
    if not args.no_throughput_optimized:
        # Serve's throughput-optimised mode (read when Ray starts): direct ingress (the ingress replica
        # serves HTTP itself, on http_options.host), gRPC between replicas, user code on the replica's
        # own event loop.  Measured here: it is what makes 100 QPS fit on 2 CPUs (see README).
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    probe_before = cpu_probe()
    if args.proxy_grpc:  # read by the proxy actor when it starts
        os.environ["RAY_SERVE_PROXY_USE_GRPC"] = "1"
    if args.worker_niceness is not None:  # read by the raylet when it starts workers
        os.environ["RAY_worker_niceness"] = str(args.worker_niceness)
    import ray
    from ray import serve

    from raypipe.serve.replicas import (direct_ingress_urls, kill_replica, machine_cpu_seconds, process_cpu_seconds,
                                        process_niceness, replica_memory, replica_names, wait_running)
    from raypipe.serve.app import build_app

    work = Path("runs") / f"bench-serve-{args.size}"
    t_setup = time.time()
    if args.artifacts:
        from raypipe.serve.artifacts import ServingSpec

        spec = ServingSpec.resolve(args.artifacts)
        artifacts, data = Path(args.artifacts), Path(spec.dataset)
        model_desc = {"kind": "trained", **spec.description}
    else:
        artifacts, data = random_model_run(args.size, work)
        model_desc = {"kind": "random-init SASRec (hidden 64, 2 layers, torch seed 0), never trained",
                      "matcher": f"packaged MiniLM untuned over <= {args.matcher_max_items} source items"}
    rng = np.random.default_rng(args.seed)
    histories = sample_histories(data, 2000, args.seed)
    from raypipe.data.sequences import ItemIndex
    from raypipe.serve.artifacts import ServingSpec

    spec = ServingSpec.resolve(artifacts)
    index = ItemIndex.load(Path(spec.run_dir) / "item_index.parquet")
    # worker logs stay out of this process: it is also the load generator
    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}})
    with socket.socket() as s_:
        s_.bind(("127.0.0.1", 0))
        port = s_.getsockname()[1]
    rerank = {"reranker_run": args.reranker_run, "rerank_depth": args.rerank_depth} if args.reranker_run else {}
    run_args = {"artifacts": str(artifacts), "state_dir": str(work / f"state-{int(time.time())}"),
                "matcher_max_items": args.matcher_max_items, **rerank}
    if args.config:  # what `raypipe serve --config FILE` does, with this run's artifacts, port and app name
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        from raypipe.serve.launch import check_config_file, start_serve_as_configured

        conf["http_options"]["port"] = port
        app_conf = conf["applications"][0]
        app_conf.update(name="bench", route_prefix="/")
        app_conf["args"].update(run_args)
        conf["applications"] = [app_conf]
        deployed = work / "serve_config.yaml"
        deployed.parent.mkdir(parents=True, exist_ok=True)
        deployed.write_text(yaml.safe_dump(conf, sort_keys=False))
        check_config_file(deployed)
        if not start_serve_as_configured(deployed):
            serve.start(http_options=conf["http_options"], proxy_location=conf.get("proxy_location"))
        # not _blocking: it gives up after 60 s, and the 150k catalogue's replicas take longer to start
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(conf), _blocking=False)
        t_dep, shown = time.time(), 0.0
        while (state := str(getattr(app_status := getattr(serve.status().applications.get("bench"), "status", None),
                                    "value", app_status))) != "RUNNING":
            waited = time.time() - t_dep
            if "FAIL" in state or waited > 900:
                raise RuntimeError(f"--config: the app is {state} after {waited:.0f}s")
            if waited - shown >= 15.0:  # the 150k catalogue's replicas take minutes to start
                print(f"--config: app {state} after {waited:.0f}s, waiting for RUNNING (900 s at most)", flush=True)
                shown = waited
            time.sleep(1.0)
    else:
        # no access log in the proxy either (the app's is off below): a log line per request is proxy CPU
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    logging_config=None if args.proxy_access_log else {"enable_access_log": False,
                                                                       "log_level": "WARNING"})
        app = build_app({**run_args, **({"colocate": True} if args.colocate
                                        else {"num_replicas": {"SequenceEncoder": 2}})})
        serve.run(app, name="bench", route_prefix="/",
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
    proxy_url = f"http://127.0.0.1:{port}"
    direct = direct_ingress_urls("bench")
    if args.via_proxy or not direct:
        url, entry = proxy_url, "Serve HTTP proxy"
    else:  # one ingress replica here; with several, a load balancer in front spreads over these URLs
        url, entry = direct[0], "ingress replica's direct HTTP port (Serve direct ingress)"
    print(f"load target: {url} ({entry}); proxy {proxy_url}; direct ingress {direct}", flush=True)
    setup_s = time.time() - t_setup
    import requests

    onboard = requests.post(f"{url}/items", json={"items": [
        {"item_id": f"{index.domains[0]}/bench-new-{i}", "domain": str(index.domains[0]),
         "title": f"bench onboarded item number {i}"} for i in range(5)]}, timeout=60)
    assert onboard.status_code == 201, onboard.text
    health = requests.get(f"{url}/healthz", timeout=30).json()
    item_ids = list(index.item_ids)
    domains = sorted(set(index.domains))
    items_by_domain = {d: [i for i, di in zip(item_ids, index.domains) if di == d] for d in domains}
    memory = {"after_setup": replica_memory("bench")}
    asyncio.run(run_load(url, plan(args.warmup, args, histories, item_ids, domains, rng, items_by_domain),
                         args.qps, 60))
    reqs = plan(args.requests, args, histories, item_ids, domains, rng, items_by_domain)
    lags: list[float] = []
    stalls: list[dict] = []
    import gc

    if not args.no_client_gc_freeze:
        gc.collect()
        gc.freeze()
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    cpu0, procs0, t0 = machine_cpu_seconds(), process_cpu_seconds(), time.time()
    results = asyncio.run(run_load(url, reqs, args.qps, args.max_seconds, lags, stalls))
    wall = time.time() - t0
    gc.callbacks.remove(gc_pauses)
    main_s = summarise(results, wall, args.qps)
    main_s["hop_profile"] = hop_profile(results)
    main_s["cpu"] = cpu_use(cpu0, machine_cpu_seconds(), procs0, process_cpu_seconds(), wall)
    main_s["cpu"]["niceness"] = process_niceness()
    main_s["client_loop_lag_ms"] = {"tick_ms": LAG_TICK_S * 1000, "n": len(lags), "p50": pct(lags, 50),
                                    "p99": pct(lags, 99), "max": max(lags, default=float("nan")),
                                    "stall_ms": STALL_MS, "stalls": stalls}
    main_s["client_gc"] = gc_pauses.summary()
    main_s["cpu_probe"] = {"before_ray": probe_before, "after_load": cpu_probe()}
    # when the slowest answers were sent (s since the load began): bunched at a stall or spread out
    main_s["slowest_1pct"] = sorted(({"t": round(results[i]["t"], 3), "ms": round(results[i]["ms"], 1),
                                      "kind": results[i]["kind"]}
                                     for i in _slowest([r["ms"] for r in results], 0.01)), key=lambda r: r["t"])
    memory["after_load"] = replica_memory("bench")
    print("\n## Replica memory (MiB: RSS / USS, one pair per replica)\n\n" + memory_table(memory))
    print(f"\n## Load ({len(results)} requests)\n\n" + table(main_s))
    print("\n## CPU during the load (share of the machine's CPU time; cores in use)\n\n" + cpu_table(main_s["cpu"])
          + "\n\n" + client_text(main_s))
    if main_s["hop_profile"]:
        print(f"\n## Where /recommend's time goes (Server-Timing, {main_s['hop_profile']['n']} answers)\n\n"
              + hop_table(main_s["hop_profile"]))
    fault = None
    if args.fault_seconds > 0:
        n = int(args.qps * args.fault_seconds)
        before = set(replica_names("bench", "SequenceEncoder"))
        victim = sorted(before)[0]
        reqs = plan(n, args, histories, item_ids, domains, rng, items_by_domain)
        info: dict = {}

        async def killer():
            await asyncio.sleep(args.fault_seconds / 4)
            info["t_kill"] = time.perf_counter()
            kill_replica(victim)
            info["recovery_s"] = await asyncio.to_thread(wait_running, "bench", "SequenceEncoder", 2, 120.0, before)
            info["t_rec"] = time.perf_counter()

        async def both():
            t0_ = time.perf_counter()
            res, _ = await asyncio.gather(run_load(url, reqs, args.qps, args.fault_seconds * 3), killer())
            return res, t0_

        res, base = asyncio.run(both())
        k0, k1 = info["t_kill"] - base, info["t_rec"] - base
        window = [r for r in res if k0 <= r["t"] < k1]
        ok = lambda r: r["status"] == 200 or (r["kind"].startswith("malformed") and isinstance(r["status"], int)  # noqa: E731
                                               and 400 <= r["status"] < 500)
        fault = {"killed": victim, "recovery_s": info["recovery_s"], "requests": len(res),
                 "in_window": len(window), "failed_in_window": sum(not ok(r) for r in window),
                 "failed_total": sum(not ok(r) for r in res), "after_recovery": sum(r["t"] >= k1 for r in res),
                 "failed_after_recovery": sum(not ok(r) for r in res if r["t"] >= k1),
                 "status": dict(Counter(str(r["status"]) for r in res))}
        print(f"\n## Fault: killed {victim}; Serve had a replacement running after {info['recovery_s']:.1f}s; "
              f"{fault['failed_in_window']} of {fault['in_window']} requests failed in that window, "
              f"{fault['failed_after_recovery']} of {fault['after_recovery']} after it")
    la = os.getloadavg()
    health_end = requests.get(f"{url}/healthz", timeout=30).json()
    out = {"benchmark": "Ray Serve recommender app, loopback HTTP, open-loop aiohttp client in the same process",
           "args": vars(args), "entry": {"url": url, "kind": entry, "proxy_url": proxy_url, "direct_ingress": direct,
                                         **{v: os.environ.get(v) for v in ("RAY_SERVE_THROUGHPUT_OPTIMIZED",
                                                                           "RAY_SERVE_PROXY_USE_GRPC",
                                                                           "RAY_worker_niceness")}},
           **{k: health_end.get(k) for k in ("ingress_batching", "ingress_gc")},
           "model": model_desc, "catalogue_items": len(index), "dataset": str(data),
           "setup_s": setup_s, "healthz": health, "load": main_s, "fault": fault, "replica_memory": memory,
           "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                       "loadavg_end": la}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from raypipe.io import write_json_atomic

    write_json_atomic(args.out, out)
    print(f"\nwrote {args.out}")
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
