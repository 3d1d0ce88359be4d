"""Sweep outputs: ``results.csv``, ``results.md`` (sorted by the metric), ``best_config.yaml`` (an
ExperimentConfig that ``jobs/finetune.py --config`` accepts) and ``metric_vs_axes.png``.  All atomic."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from raypipe.io import save_figure_atomic, write_text_atomic
from raypipe.tune.spaces import TuneSpace

__all__ = ["write_report", "sort_rows", "best_row", "markdown_table"]

RESULTS_CSV, RESULTS_MD, BEST_YAML, PLOT_PNG = "results.csv", "results.md", "best_config.yaml", "metric_vs_axes.png"


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not math.isnan(v)


def sort_rows(rows: list[dict[str, Any]], metric: str, mode: str) -> list[dict[str, Any]]:
    """Best first; trials without a value last (in their original order)."""
    scored = [r for r in rows if _ok(r.get(metric))]
    rest = [r for r in rows if not _ok(r.get(metric))]
    return sorted(scored, key=lambda r: r[metric], reverse=mode == "max") + rest


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    ranked = sort_rows(rows, metric, mode)
    if not ranked or not _ok(ranked[0].get(metric)):
        raise ValueError(f"no trial reported {metric}")
    return ranked[0]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else (f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.3g}")
    return str(v)


def markdown_table(rows: list[dict[str, Any]], space: TuneSpace, metric: str, mode: str) -> str:
    test_cols = sorted({k for r in rows for k in r if k.startswith("test/") and k.endswith(f"/{space.metric}")})
    cols = ["rank", *space.axes, metric, "best_epoch", "epochs_run", *test_cols, "status"]
    lines = [f"Sweep of {space.model} — {space.paper}, {space.source}; sorted by {metric} ({mode}).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, r in enumerate(sort_rows(rows, metric, mode), 1):
        lines.append("| " + " | ".join(_fmt(i if c == "rank" else r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict[str, Any]], metric: str, mode: str) -> str:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in sort_rows(rows, metric, mode):
        w.writerow(r)
    return buf.getvalue()


def _plot(rows: list[dict[str, Any]], space: TuneSpace, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = space.axes
    fig, ax = plt.subplots(1, len(axes), figsize=(4.2 * len(axes), 3.4), squeeze=False)
    for a, key in zip(ax[0], axes):
        pts = [(r[key], r[metric]) for r in rows if _ok(r.get(metric)) and r.get(key) is not None]
        numeric = all(isinstance(x, (int, float)) for x, _ in pts)
        if numeric:
            a.scatter([x for x, _ in pts], [y for _, y in pts], color="tab:blue")
            if all(x > 0 for x, _ in pts) and len({x for x, _ in pts}) > 1:
                a.set_xscale("log")
        else:
            cats = [str(v) for v in space.grid[key]]
            a.scatter([cats.index(str(x)) for x, _ in pts], [y for _, y in pts], color="tab:blue")
            a.set_xticks(range(len(cats)), cats)
        a.set_xlabel(key)
        a.set_ylabel(metric)
        a.grid(alpha=0.3)
    fig.suptitle(f"{space.model}: {metric} per trial vs each swept axis")
    save_figure_atomic(fig, path)


def write_report(out_dir: Path, rows: list[dict[str, Any]], space: TuneSpace, metric: str, mode: str,
                 overrides: list[str]) -> dict[str, Path]:
    """Write the four outputs into ``out_dir`` and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in (RESULTS_CSV, RESULTS_MD, BEST_YAML, PLOT_PNG)}
    write_text_atomic(paths[RESULTS_CSV], _csv(rows, metric, mode))
    write_text_atomic(paths[RESULTS_MD], markdown_table(rows, space, metric, mode))
    best = best_row(rows, metric, mode)
    cfg = space.config({k: best[k] for k in space.axes}, overrides)
    header = (f"# Best trial {best['trial_id']} of the {space.model} sweep ({space.paper}, {space.source}):\n"
              f"# {metric} = {best[metric]:.6f} at epoch {best['best_epoch']}; run dir {best['run_dir']}\n"
              f"# Use: python jobs/finetune.py --config {paths[BEST_YAML]}\n")
    write_text_atomic(paths[BEST_YAML], header + cfg.to_yaml())
    _plot(rows, space, metric, paths[PLOT_PNG])
    return paths
