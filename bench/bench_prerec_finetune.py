"""PreRec fine-tuned on the target markets, full and incremental (PreRec Table 2 and Fig. 3 analogues).

    python bench/bench_prerec_finetune.py --dataset markets:small --seeds 0 --fractions 0.1,0.3,1.0 \\
        --pretrain-runs runs/bench_prerec --zero-shot bench/results/prerec.json

Same protocol as ``bench/bench_prerec.py`` (4:3:3 user split, each target test user's last item ranked
among its market's catalogue, r-NDCG@1%, Recall@1%, NDCG@10, all users and the unseen subset), but every
learnable model now trains on the target markets' training users, ``data.train_fraction`` of them
(nested, seeded shares; the dropped users' events leave the data, popularity statistics included):

* ``gru4rec`` / ``sasrec``: in-domain models over the frozen SBERT item vectors (the paper's GRU4Rec* /
  SASRec*: ``model.item_input=content``), trained from scratch with their own budget (``--baseline-*``:
  they train on one row per sequence window, so an epoch at 10% of the users is a handful of steps);
* ``prerec_scratch``: PreRec trained on the targets only (what pre-training is measured against);
* ``prerec_ft``: PreRec pre-trained on the source markets (``<pretrain-runs>/s<seed>-prerec-pre``, the
  zero-shot bench's run, else pre-trained here) and fully fine-tuned (eq. 6: every parameter, the
  targets' own D_k included);
* ``unisrec_ft``: UniSRec pre-trained on the same sources (``s<seed>-unisrec-pre`` likewise), fine-tuned
  (transductive: its target item IDs learn too).

Fraction 0 is the zero-shot point of ``prerec_ft`` and ``unisrec_ft``: their pre-trained models'
zero-shot rows in the zero-shot bench's JSON, when ``--zero-shot`` is given.
Raw: ``<out>.json`` (written after every run), ``<out>.md``, ``<out>.png`` (r-NDCG@1% against the share
of target training users, mean over markets and seeds). ``--resume`` keeps the runs already in
``<out>.json`` (same settings, else an error naming the option) and runs only the missing (variant, share,
seed) triples; a variant with fewer seeds than the others is named with its seeds in the table.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_prerec import (  # noqa: E402
    KP, METRICS, _overrides, evaluate_run, learned_model, paired_tests, start_with_text_features, test_summary,
)

from raypipe.config import load_config  # noqa: E402
from raypipe.io import save_figure_atomic, write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("bench_prerec_finetune")
VARIANTS = ("gru4rec", "sasrec", "prerec_scratch", "prerec_ft", "unisrec_ft")
ZERO_SHOT = ("pop_15d", "sbert", "prerec")  # rows of the zero-shot bench drawn at fraction 0
# the options that change what a run measures: a resumed benchmark must share them with its earlier runs
SETTINGS = ("dataset", "epochs", "patience", "baseline_epochs", "baseline_patience", "baseline_lr", "hidden",
            "n_neg", "batch_size", "max_len")


def _model(name: str, args: argparse.Namespace) -> list[str]:
    if name in ("gru4rec", "sasrec"):
        return [f"model.name={name}", "model.item_input=content", f"model.hidden={args.hidden}"]
    return learned_model(name, args)


def pretrained(args: argparse.Namespace, seed: int, features: str, kind: str = "prerec") -> Path:
    """The zero-shot bench's source-market model (``prerec`` or ``unisrec``) of this seed, or a new one
    with its settings."""
    from raypipe.rundir import WEIGHTS_FILE
    from raypipe.train.run import run_experiment

    path = Path(args.pretrain_runs) / f"s{seed}-{kind}-pre"
    if (path / WEIGHTS_FILE).is_file():
        return path
    log.info("no pre-trained %s at %s: pre-training on the source markets", kind, path)
    over = _overrides(args, seed, features) + _model(kind, args)
    if kind == "unisrec":  # one row per sequence: its own budget, as in the zero-shot bench
        over += [f"train.epochs={args.baseline_epochs}", f"train.patience={args.baseline_patience}"]
    return run_experiment(load_config(None, over + [f"run.name=s{seed}-{kind}-pre"])).run_dir


def run_variant(name: str, fraction: float, args: argparse.Namespace, seed: int, features: str) -> dict[str, Any]:
    from raypipe.train.run import run_experiment

    t0 = time.time()
    budget = []
    if name in ("gru4rec", "sasrec", "unisrec_ft"):  # one row per sequence window: few steps per epoch
        budget = [f"train.epochs={args.baseline_epochs}", f"train.patience={args.baseline_patience}",
                  f"train.lr={args.baseline_lr:g}"]
    over = _overrides(args, seed, features) + budget + _model(name, args) + [
        "run.stage=finetune", "run.mode=transductive", f"data.train_fraction={fraction:g}",
        f"run.name=s{seed}-{name}-f{fraction:g}"]
    if name in ("prerec_ft", "unisrec_ft"):
        over.append(f"run.init_from={pretrained(args, seed, features, name.removesuffix('_ft'))}")
    res = run_experiment(load_config(None, over))
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    return {"seconds": time.time() - t0, "epochs": len(metrics.get("history", [])),
            "train_rows": metrics.get("train_rows"), **evaluate_run(res.run_dir, seed)}


def market_mean(entry: dict[str, Any], subset: str, metric: str) -> float:
    """The mean of a metric over the target markets that have test users in ``subset`` (NaN: none has)."""
    vals = [d[subset][metric] for d in entry["domains"].values() if d[subset]["n_users"]]
    return float(np.mean(vals)) if vals else float("nan")


def mean_r_ndcg(entry: dict[str, Any], subset: str = "all") -> float:
    return market_mean(entry, subset, f"r_ndcg@{KP:g}%")


def column(v: str, results: dict[str, dict[str, Any]], fractions: list[float], seeds: list[int]) -> str:
    """A variant's column title: its name, with the seeds it has when that is fewer than ``seeds``."""
    have = sorted({int(s) for f in fractions for s in results.get(f"{v}@{f:g}", {})} & set(seeds))
    return v if have == sorted(seeds) else f"{v} (seeds {', '.join(map(str, have))})"


def table(results: dict[str, dict[str, Any]], fractions: list[float], seeds: list[int]) -> str:
    cols = [v for v in VARIANTS if any(f"{v}@{f:g}" in results for f in fractions)]
    lines = ["| Share of target training users | Subset | Metric | "
             + " | ".join(column(v, results, fractions, seeds) for v in cols) + " |",
             "|---|---|---|" + "---:|" * len(cols)]
    for f in fractions:
        for subset in ("all", "unseen"):
            for m in METRICS:
                vals = []
                for v in cols:
                    runs = [results[f"{v}@{f:g}"][str(s)] for s in seeds if str(s) in results.get(f"{v}@{f:g}", {})]
                    per = [market_mean(r, subset, m) for r in runs]
                    vals.append(f"{np.mean(per):.4f}" if per and not np.isnan(per).any() else "–")
                lines.append(f"| {f:g} | {subset} | {m} (mean over markets with users) | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], zero: dict[str, Any] | None, fractions: list[float],
         seeds: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    def point(runs: list[dict[str, Any]]) -> tuple[float, float]:
        """Mean and sd over seeds (0 for one) of the per-seed r-NDCG, mean over markets."""
        per = [mean_r_ndcg(r) for r in runs]
        return float(np.mean(per)), float(np.std(per, ddof=1)) if len(per) > 1 else 0.0

    for v in VARIANTS:
        xs, ys, sds = [], [], []
        for f in fractions:
            runs = [results[f"{v}@{f:g}"][str(s)] for s in seeds if str(s) in results.get(f"{v}@{f:g}", {})]
            if runs:
                xs.append(f)
                y, sd = point(runs)
                ys.append(y), sds.append(sd)
        pre = v.removesuffix("_ft")  # a fine-tuned model starts at its zero-shot point (share 0)
        if v.endswith("_ft") and xs and zero is not None and pre in zero:
            z = [zero[pre][str(s)] for s in seeds if str(s) in zero[pre]]
            if z:
                y, sd = point(z)
                xs, ys, sds = [0.0] + xs, [y] + ys, [sd] + sds
        if xs:
            ax.errorbar(xs, ys, yerr=sds, marker="o", capsize=3, label=column(v, results, fractions, seeds))
    for v in ZERO_SHOT[:2]:
        if zero is not None and v in zero:
            z = [zero[v][str(s)] for s in seeds if str(s) in zero[v]]
            if z:
                ax.axhline(float(np.mean([mean_r_ndcg(r) for r in z])), ls="--", lw=1, label=f"{v} (no training)",
                           color="grey" if v == "sbert" else "tan")
    ax.set_xlabel("share of target training users")
    ax.set_ylabel(f"r-NDCG@{KP:g}% (mean over target markets)")
    ax.set_title(f"PreRec incremental fine-tuning (markets; error bars: sd over seeds {', '.join(map(str, seeds))})",
                 fontsize=9)
    ax.legend(fontsize=8)
    save_figure_atomic(fig, path, dpi=120)


def write(args: argparse.Namespace, argv: list[str] | None, results: dict[str, dict[str, Any]],
          zero: dict[str, Any] | None, fractions: list[float], seeds: list[int], complete: bool) -> None:
    tests: dict[str, Any] = {}
    for f in fractions:
        ref = f"prerec_ft@{f:g}"
        tests.update(paired_tests(results, seeds, ref=ref, others=[f"{v}@{f:g}" for v in VARIANTS]))
    write_json_atomic(Path(args.out + ".json"), {"args": vars(args), "k_percent": KP, "complete": complete,
                                                 "results": results, "paired_r_ndcg": tests})
    md = (f"# PreRec fine-tuning on {args.dataset} (seeds {args.seeds}{'' if complete else '; run in progress'})\n\n"
          f"Command: `python bench/bench_prerec_finetune.py {' '.join(argv or sys.argv[1:])}`\n\n"
          + table(results, fractions, seeds)
          + "\n\nPaired bootstrap of per-user r-NDCG@1% (PreRec fine-tuned - other, same share), per seed and "
          "market:\n\n" + test_summary(tests) + "\n\nEvery test: "
          + "; ".join(f"{k}: {t['diff']:+.4f} (p={t['p_value']:.3f})" for k, t in tests.items()) + "\n")
    write_text_atomic(Path(args.out + ".md"), md)
    plot(results, zero, fractions, seeds, Path(args.out + ".png"))
    if complete:
        print(md)


def earlier_results(args: argparse.Namespace, p: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """The runs of ``<out>.json`` for ``--resume`` (none if it does not exist yet); a parser error when its
    settings differ from this command's."""
    path = Path(args.out + ".json")
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
        old, results = earlier["args"], earlier["results"]
    except (ValueError, KeyError) as e:
        p.error(f"--resume: {path} is not a benchmark result ({e})")
    differ = [k for k in SETTINGS if k in old and old[k] != getattr(args, k)]
    if differ:
        p.error("--resume: " + "; ".join(f"--{k.replace('_', '-')} is {getattr(args, k)!r} here, {old[k]!r} in "
                                         f"{path}" for k in differ))
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="markets:small")
    p.add_argument("--seeds", default="0")
    p.add_argument("--fractions", default="0.1,0.3,1.0")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--baseline-epochs", type=int, default=60, help="GRU4Rec*/SASRec*/UniSRec epochs (one row "
                   "per sequence window: an epoch is a few steps)")
    p.add_argument("--baseline-patience", type=int, default=8)
    p.add_argument("--baseline-lr", type=float, default=1e-3, help="GRU4Rec*/SASRec* learning rate (SASRec's)")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--n-neg", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--pretrain-runs", default="runs/bench_prerec")
    p.add_argument("--zero-shot", default=None, help="the zero-shot bench's JSON (its rows at share 0)")
    p.add_argument("--runs", default="runs/bench_prerec_finetune")
    p.add_argument("--out", default="bench/results/prerec_finetune")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="no runs: rewrite --out (table, tests, plot) from an earlier <out>.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs in <out>.json and run only the missing (variant, share, seed) ones")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        p.error(f"--variants: unknown {sorted(set(variants) - set(VARIANTS))}; choose from {list(VARIANTS)}")
    if any(not 0 < f <= 1 for f in fractions):
        p.error(f"--fractions must lie in (0, 1], got {fractions}")
    zero = None
    if args.zero_shot:
        if not Path(args.zero_shot).is_file():
            p.error(f"--zero-shot: no file {args.zero_shot}")
        zero = json.loads(Path(args.zero_shot).read_text())["results"]
    if args.report:
        if not Path(args.report).is_file():
            p.error(f"--report: no file {args.report}")
        write(args, argv, json.loads(Path(args.report).read_text())["results"], zero, sorted(fractions), seeds,
              complete=True)
        return
    results = earlier_results(args, p) if args.resume else {}
    features = start_with_text_features(args.dataset)
    for s in seeds:
        for f in sorted(fractions):  # the smallest shares first: a stopped run still holds a whole curve start
            for v in variants:
                if str(s) in results.get(f"{v}@{f:g}", {}):
                    log.info("variant %s share %g seed %d: in %s.json, kept", v, f, s, args.out)
                    continue
                log.info("variant %s share %g seed %d", v, f, s)
                results.setdefault(f"{v}@{f:g}", {})[str(s)] = run_variant(v, f, args, s, str(features))
                write(args, argv, results, zero, sorted(fractions), seeds, complete=False)
    write(args, argv, results, zero, sorted(fractions), seeds, complete=True)


if __name__ == "__main__":
    main()
