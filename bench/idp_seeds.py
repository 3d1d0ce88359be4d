"""IDP pipeline runs of several fine-tuning seeds side by side: per-seed metrics, mean ± sd over the
seeds, every paired bootstrap the runs recorded, and each run's training length.

    python bench/idp_seeds.py runs/idp_conv/idp-ml-s0 runs/idp_conv/idp-ml-s1 runs/idp_conv/idp-ml-s2 \
        --out bench/results/idp_ml1m_to_ml100k_conv

Each argument is a finished pipeline directory (``results.json``; e.g. seeds run with
``jobs/idp.py --shared-from``).  Writes ``<out>.json`` (every run's results, paired tests and training
summary, keyed by its directory name), ``<out>.md`` and ``<out>.png`` (full NDCG@10 per variant, one
marker per seed).  A variant missing from a run is left out of that run's column, not imputed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from raypipe.io import save_figure_atomic, write_json_atomic, write_text_atomic
from raypipe.pipelines.idp import VARIANTS

#: (metric key in results.json, column title)
METRICS = [("s_hr@1", "HR@1"), ("s_hr@5", "HR@5"), ("s_ndcg@5", "NDCG@5"), ("s_mrr", "MRR"),
           ("full_ndcg@10", "full NDCG@10"), ("full_recall@10", "full Recall@10")]


def load(dirs: list[Path]) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    for d in dirs:
        f = d / "results.json"
        if not f.is_file():
            raise SystemExit(f"{f}: no such file (has the pipeline in {d} finished?)")
        r = json.loads(f.read_text())
        missing = {"results", "paired", "training", "config"} - set(r)
        if missing:
            raise SystemExit(f"{f}: missing {sorted(missing)}")
        runs[d.name] = r
    return runs


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per variant, domain and metric: the value of every run (``None`` where absent) and, over the runs
    that have it, the mean and the sample sd (``None`` with fewer than two)."""
    order = list(VARIANTS)  # the pipeline's report order; names it does not know go last
    variants = sorted(dict.fromkeys(v for r in runs.values() for v in r["results"]),
                      key=lambda v: order.index(v) if v in order else len(order))
    out: dict[str, Any] = {}
    for v in variants:
        domains = sorted({d for r in runs.values() for d in r["results"].get(v, {})})
        out[v] = {}
        for d in domains:
            out[v][d] = {}
            for key, _ in METRICS:
                vals = {n: r["results"].get(v, {}).get(d, {}).get(key) for n, r in runs.items()}
                have = [x for x in vals.values() if x is not None]
                out[v][d][key] = {"per_run": vals, "mean": statistics.fmean(have) if have else None,
                                  "sd": statistics.stdev(have) if len(have) > 1 else None}
    return out


def markdown(runs: dict[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    names = list(runs)
    lines = [f"Runs: {', '.join(names)}.", ""]
    for key, title in METRICS:
        lines += [f"**{title}**", "", "| Variant | Domain | " + " | ".join(names) + " | mean ± sd |",
                  "|---|---|" + "---:|" * (len(names) + 1)]
        for v, per in summary.items():
            for d, m in per.items():
                s = m[key]
                ms = "–" if s["mean"] is None else (f"{s['mean']:.4f}" + ("" if s["sd"] is None else f" ± {s['sd']:.4f}"))
                lines.append(f"| {v} | {d} | " + " | ".join(_fmt(s["per_run"][n]) for n in names) + f" | {ms} |")
        lines.append("")
    lines += ["**Paired bootstrap within each run** (A − B over its test users, two-sided p)", "",
              "| Pair | Domain | Metric | " + " | ".join(names) + " |", "|---|---|---|" + "---:|" * len(names)]
    pairs = list(dict.fromkeys(p for r in runs.values() for p in r["paired"]))
    for p in pairs:
        cells = {(d, m) for r in runs.values() for d, per in r["paired"].get(p, {}).items() for m in per}
        for d, m in sorted(cells):
            row = []
            for n in names:
                x = runs[n]["paired"].get(p, {}).get(d, {}).get(m)
                row.append("–" if x is None else f"{x['diff']:+.4f} ({x['p_value']:.3f})")
            lines.append(f"| {p} | {d} | {m} | " + " | ".join(row) + " |")
    lines += ["", "**Training** (epochs run / best epoch; * = stopped by its epoch budget, not early stopping)", "",
              "| Variant | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    trained = list(dict.fromkeys(v for r in runs.values() for v in r["training"]))
    for v in trained:
        row = []
        for n in names:
            t = runs[n]["training"].get(v)
            row.append("–" if t is None else f"{t['epochs']} / {t['best_epoch']}{'' if t['early_stopped'] else '*'}")
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], names: list[str], path: Path, key: str = "full_ndcg@10") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(v, d) for v, per in summary.items() for d in per]
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(cells), 3.4))
    for j, n in enumerate(names):
        ys = [summary[v][d][key]["per_run"][n] for v, d in cells]
        ax.plot([i + (j - (len(names) - 1) / 2) * 0.12 for i in range(len(cells))],
                [float("nan") if y is None else y for y in ys], "o", label=n, ms=5)
    means = [summary[v][d][key]["mean"] for v, d in cells]
    ax.plot(range(len(cells)), [float("nan") if m is None else m for m in means], "_", color="k", ms=18,
            label="mean")
    multi = len({d for _, d in cells}) > 1
    ax.set_xticks(range(len(cells)), [f"{v}\n{d}" if multi else v for v, d in cells], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel(key.replace("full_", "full "))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    save_figure_atomic(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="finished IDP pipeline directories")
    p.add_argument("--out", type=Path, required=True, help="output prefix (.json, .md, .png)")
    a = p.parse_args(argv)
    if len({d.name for d in a.runs}) != len(a.runs):
        p.error("the run directories must have distinct names (they key the output)")
    runs = load(a.runs)
    summary = summarise(runs)
    write_json_atomic(a.out.with_suffix(".json"), {
        "runs": {n: {k: r[k] for k in ("results", "paired", "training", "config", "total_s", "timings_s") if k in r}
                 for n, r in runs.items()},
        "summary": summary})
    write_text_atomic(a.out.with_suffix(".md"), markdown(runs, summary))
    plot(summary, list(runs), a.out.with_suffix(".png"))
    print(markdown(runs, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
