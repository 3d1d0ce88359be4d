"""UniM2Rec benchmark results of several invocations and seeds side by side: per variant and target,
NDCG@10 of every seed with mean ± sd, and each seed's paired bootstrap against the reference variant,
tallied (how many seed x target tests are significantly above or below it).

    python bench/unim2rec_seeds.py bench/results/unim2rec_small_wo_views_s0.json \\
        bench/results/unim2rec_small_wo_cvt_s0.json bench/results/unim2rec_small_wo_{cp,vp,tp,vt,cvt}_s1.json \\
        bench/results/unim2rec_small_wo_{cp,vp,tp,vt,cvt}_s2.json --out bench/results/unim2rec_small_projectors

Each argument is a ``bench/bench_unim2rec.py`` result (``<out>.json``).  A run that appears in several
files (the reference of each invocation, reused with ``--reuse``) must have the same test metrics in
each, or the files are refused.  Writes ``<out>.json``, ``<out>.md`` and ``<out>.png`` (NDCG@10 per
variant and target, one marker per seed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from raypipe.io import save_figure_atomic, write_json_atomic, write_text_atomic

ALPHA = 0.05
METRIC = "ndcg@10"


def load(files: list[Path]) -> dict[str, Any]:
    """``{"test": {seed: {variant: {domain: ndcg}}}, "paired": {seed: {"A vs B": {domain: {diff, p}}}},
    "pretrain": {seed: {variant: {...}}}, "source": {seed: {variant: file}}}``."""
    test: dict[str, dict[str, dict[str, float]]] = {}
    paired: dict[str, dict[str, Any]] = {}
    pretrain: dict[str, dict[str, Any]] = {}
    source: dict[str, dict[str, str]] = {}
    for f in files:
        if not f.is_file():
            raise SystemExit(f"{f}: no such file")
        r = json.loads(f.read_text())
        missing = {"runs", "paired_by_seed", "dataset"} - set(r)
        if missing:
            raise SystemExit(f"{f}: missing {sorted(missing)} (not a bench_unim2rec.py result)")
        for seed, variants in r["runs"].items():
            for v, run in variants.items():
                got = {d: float(m[METRIC]) for d, m in run["test"].items()}
                seen = test.setdefault(seed, {}).get(v)
                if seen is not None and seen != got:
                    raise SystemExit(f"{f}: seed {seed} {v} differs from the same run in "
                                     f"{source[seed][v]} ({got} against {seen}): two different runs")
                test[seed][v] = got
                source.setdefault(seed, {}).setdefault(v, str(f))
        for seed, pairs in r["paired_by_seed"].items():
            for name, per in pairs.items():
                paired.setdefault(seed, {})[name] = {d: {"diff": float(x["diff"]), "p_value": float(x["p_value"])}
                                                    for d, x in per.items()}
        for seed, variants in r.get("pretrain", {}).items():
            for v, p in variants.items():
                pretrain.setdefault(seed, {}).setdefault(v, {k: p.get(k) for k in ("train_seconds", "best_epoch",
                                                                                     "epochs_run")})
    return {"test": test, "paired": paired, "pretrain": pretrain, "source": source}


def _sd(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def summarise(data: dict[str, Any], reference: str) -> dict[str, Any]:
    """Per variant (the reference first) and target: NDCG@10 by seed, mean, sample sd; for the others,
    per seed the paired test against the reference and the tally over the seeds that have one."""
    seeds = sorted(data["test"], key=int)
    variants = sorted({v for s in seeds for v in data["test"][s]}, key=lambda v: (v != reference, v))
    out: dict[str, Any] = {}
    for v in variants:
        domains = sorted({d for s in seeds for d in data["test"][s].get(v, {})})
        row: dict[str, Any] = {}
        for d in domains:
            by_seed = {s: data["test"][s][v][d] for s in seeds if d in data["test"][s].get(v, {})}
            vals = list(by_seed.values())
            cell: dict[str, Any] = {"by_seed": by_seed, "mean": statistics.fmean(vals), "sd": _sd(vals)}
            if v != reference:
                tests = {s: data["paired"][s][f"{v} vs {reference}"][d] for s in seeds
                         if d in data["paired"].get(s, {}).get(f"{v} vs {reference}", {})}
                cell["paired"] = tests
                cell["above"] = sum(t["diff"] > 0 and t["p_value"] < ALPHA for t in tests.values())
                cell["below"] = sum(t["diff"] < 0 and t["p_value"] < ALPHA for t in tests.values())
            row[d] = cell
        out[v] = row
    return out


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def markdown(summary: dict[str, Any], reference: str, data: dict[str, Any]) -> str:
    domains = sorted({d for row in summary.values() for d in row})
    seeds = sorted(data["test"], key=int)
    lines = [f"# UniM2Rec variants over seeds {', '.join(seeds)}: NDCG@10 (full ranking), against `{reference}`", "",
             "| Variant | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    for v, row in summary.items():
        cells = []
        for d in domains:
            c = row.get(d)
            cells.append("–" if c is None else f"{c['mean']:.4f} ± {_f(c['sd'])} (n={len(c['by_seed'])})")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", f"Paired bootstrap of per-user NDCG@10, A − {reference} (p), per seed; then the tests with "
              f"p < {ALPHA} above / below:", "", "| A | " + " | ".join(domains) + " | above / below / tests |",
              "|---|" + "---|" * len(domains) + "---:|"]
    for v, row in summary.items():
        if v == reference:
            continue
        cells, above, below, n = [], 0, 0, 0
        for d in domains:
            c = row.get(d, {})
            t = c.get("paired", {})
            cells.append(" / ".join(f"s{s} {x['diff']:+.4f} ({x['p_value']:.3f})" for s, x in t.items()) or "–")
            above, below, n = above + c.get("above", 0), below + c.get("below", 0), n + len(t)
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {above} / {below} / {n} |")
    lines += ["", "Pre-training per seed (training seconds; the epoch, counted from 1, with the best source validation, "
              "of the epochs run):", ""]
    for s in seeds:
        pre = data["pretrain"].get(s, {})
        lines.append(f"- seed {s}: " + "; ".join(
            f"{v} {p['train_seconds']:.0f} s, best {p['best_epoch'] + 1} of {p['epochs_run']}" for v, p in sorted(pre.items())
            if p.get("train_seconds") is not None))
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted({d for row in summary.values() for d in row})
    variants = list(summary)
    fig, axes = plt.subplots(1, len(domains), figsize=(4 * len(domains), 3.6), sharey=True, squeeze=False)
    for ax, d in zip(axes[0], domains):
        for i, v in enumerate(variants):
            c = summary[v].get(d)
            if c is None:
                continue
            ax.bar(i, c["mean"], color="C0" if i else "C1", alpha=0.5)
            ax.plot([i] * len(c["by_seed"]), list(c["by_seed"].values()), "k.", ms=6)
        ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right")
        ax.set_title(d)
    # one y range for the shared axis, from every seed's value (a limit set per panel would freeze the top at
    # the first panel's and clip the others' dots)
    values = [x for row in summary.values() for c in row.values() for x in c["by_seed"].values()]
    axes[0][0].set_ylim(min(values) * 0.9, max(values) * 1.03)
    axes[0][0].set_ylabel("test NDCG@10 (bar: mean; dots: seeds)")
    save_figure_atomic(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path, help="bench_unim2rec.py result files (.json)")
    p.add_argument("--reference", default="unim2rec", help="the variant every other is tested against")
    p.add_argument("--out", required=True, type=Path, help="output stem: writes .json, .md and .png")
    args = p.parse_args(argv)
    data = load(args.files)
    if not any(args.reference in v for v in data["test"].values()):
        p.error(f"--reference {args.reference!r} is in none of the files")
    summary = summarise(data, args.reference)
    write_json_atomic(args.out.with_suffix(".json"), {"files": [str(f) for f in args.files], "reference": args.reference,
                                                      "alpha": ALPHA, "metric": METRIC, "summary": summary,
                                                      "pretrain": data["pretrain"], "source": data["source"]})
    md = markdown(summary, args.reference, data)
    write_text_atomic(args.out.with_suffix(".md"), md)
    plot(summary, args.out.with_suffix(".png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
