"""Why the same Serve load gives a different p99 from run to run: a table and a plot over bench_serve runs.

    python bench/serve_variance.py bench/results/serve_frozen_*.json bench/results/serve_nice*.json \
        --out bench/results/serve_variance

Reads ``bench/bench_serve.py`` JSON files (those with the ``load.cpu`` accounting) and writes, per run:
the settings (worker niceness, client GC frozen or not), the machine's busy cores over the load, the
``encode`` hop's median (in a colocated app the model alone: a measure of how fast the CPUs ran the same
code), the CPU probe where recorded, the client's longest stall, how many of the slowest 1% were sent in
the load's first second, and p50/p95/p99.  Plus the rank correlation of p99 with busy cores and with the
encode median, and a scatter plot of p99 against busy cores.  Writes ``OUT.json``, ``OUT.md``, ``OUT.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raypipe.io import save_figure_atomic, write_json_atomic, write_text_atomic  # noqa: E402


def row(path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    load = d.get("load")
    if not isinstance(load, dict) or "cpu" not in load:
        raise ValueError(f"{path}: no load.cpu (not a bench_serve run, or one from before the CPU accounting)")
    args = d["args"]
    hops = load["hop_profile"]["hops"]
    probe = load.get("cpu_probe")
    slowest = load.get("slowest_1pct")  # absent from the first runs with CPU accounting
    return {
        "run": path.stem, "seed": args["seed"], "config": args.get("config"),
        "worker_niceness": int(d["entry"].get("RAY_worker_niceness") or 15),
        "client_gc_frozen": not args.get("no_client_gc_freeze", True),
        "proxy_grpc": d["entry"].get("RAY_SERVE_PROXY_USE_GRPC") == "1",
        "busy_cores": load["cpu"]["busy_cores"], "steal_cores": load["cpu"]["steal_cores"],
        "encode_p50_ms": hops["encode"]["p50_ms"], "gc_p99_ms": hops.get("gc", {}).get("p99_ms"),
        "probe_torch_ms": probe["before_ray"]["torch_matmul_ms"] if probe else None,
        "probe_python_ms": probe["before_ray"]["python_loop_ms"] if probe else None,
        "client_max_stall_ms": load["client_loop_lag_ms"]["max"],
        "slowest_in_first_s": None if slowest is None else sum(r["t"] < 1.0 for r in slowest),
        "slowest_n": None if slowest is None else len(slowest),
        "p50_ms": load["p50_ms"], "p95_ms": load["p95_ms"], "p99_ms": load["p99_ms"],
        "recommend_p99_ms": load["per_kind"]["recommend"]["p99_ms"],
    }


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (no ties expected in these continuous measurements)."""
    if len(x) < 3:
        return float("nan")
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def table(rows: list[dict[str, Any]]) -> str:
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    lines = ["| Run | niceness | client GC frozen | proxy gRPC | busy cores | encode p50 ms | probe torch ms "
             "| client max stall ms | slowest 1% sent in 1st s | p50 ms | p95 ms | p99 ms |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['worker_niceness']} | {'yes' if r['client_gc_frozen'] else 'no'} | "
                     f"{'yes' if r['proxy_grpc'] else 'no'} | "
                     f"{r['busy_cores']:.2f} | {r['encode_p50_ms']:.1f} | {fmt(r['probe_torch_ms'], '.1f')} | "
                     f"{r['client_max_stall_ms']:.0f} | "
                     f"{fmt(r['slowest_in_first_s'], 'd')} of {fmt(r['slowest_n'], 'd')} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for frozen, marker in ((True, "o"), (False, "x")):
        for nice, grpc, colour in ((15, False, "tab:blue"), (0, False, "tab:orange"), (15, True, "tab:green"),
                                   (0, True, "tab:red")):
            pts = [r for r in rows if r["client_gc_frozen"] == frozen and r["worker_niceness"] == nice
                   and r["proxy_grpc"] == grpc]
            if pts:
                ax.scatter([r["busy_cores"] for r in pts], [r["p99_ms"] for r in pts], marker=marker, c=colour,
                           label=f"niceness {nice}, client GC {'frozen' if frozen else 'not frozen'}"
                                 + (", proxy over gRPC" if grpc else ""))
    ax.set_xlabel("machine cores busy during the load (of 2)")
    ax.set_ylabel("p99 latency through the proxy (ms)")
    ax.set_title("The same load: p99 against the CPU the run used")
    ax.legend(fontsize=8)
    save_figure_atomic(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("bench/results/serve_variance"))
    a = p.parse_args(argv)
    rows = sorted((row(f) for f in a.runs), key=lambda r: r["run"])
    p99 = [r["p99_ms"] for r in rows]
    corr = {"p99_vs_busy_cores": spearman([r["busy_cores"] for r in rows], p99),
            "p99_vs_encode_p50": spearman([r["encode_p50_ms"] for r in rows], p99)}
    write_json_atomic(a.out.with_suffix(".json"), {"runs": rows, "spearman": corr})
    md = (table(rows) + f"\n\nSpearman rank correlation over {len(rows)} runs: p99 with busy cores "
          f"{corr['p99_vs_busy_cores']:.2f}, p99 with the encode median {corr['p99_vs_encode_p50']:.2f}.\n")
    write_text_atomic(a.out.with_suffix(".md"), md)
    plot(rows, a.out.with_suffix(".png"))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
