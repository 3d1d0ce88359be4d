"""Real-data transfer by titles: pre-train on MovieLens-1M, apply to MovieLens-100k (zero-shot and fine-tuned).

    python bench/bench_ml_transfer.py --seeds 0                     # PreRec and UniSRec, every baseline
    python bench/bench_ml_transfer.py --source builtin:tiny --quick # smoke run (minutes)

The two datasets share no item ids: items meet only through their titles (the packaged MiniLM text view
of each catalogue).  A pre-trained model starts a run on the target (``run.init_from``): the
catalogue-bound state (PreRec's residuals and domain confounders, UniSRec's ID table) stays behind, the
rest carries over (docs/ARCHITECTURE.md, Training).

Protocol (PreRec appendix C, on both datasets): users split 4:3:3 train / validation / test; each test
user's last item is the target, ranked among the whole target catalogue (seen items excluded).  Metrics:
NDCG@10, Recall@10, and PreRec's Recall@K% and r-NDCG@K% (a=2, b=15000) at K% = 0.5 (the paper's
cross-platform setting: 7 of ML-100k's 1,342 items after the 5-core) and 1 (13 items).  Early stopping on validation
r-NDCG@1%.  The same test users for every row, so per-user paired bootstraps compare them.

Budgets: PreRec trains on one row per event (ML-1M: about 400,000 per epoch), so ``--pretrain-epochs``
and ``--finetune-epochs`` count its epochs; SASRec and UniSRec train on one row per sequence window (an
epoch is a few steps), so they get ``--sasrec-epochs`` with ``--sasrec-patience`` at every stage.

Rows on the target: Random, POP (training interactions), SBERT last item (title similarity to the last
item), SASRec (item IDs, from scratch), and for each pre-trained model (PreRec: do(D=0) with Z from the
target's own counts; UniSRec: text only, single domain): zero-shot, fine-tuned from the ML-1M
pre-training, and the same model trained from scratch on the target.

Raw results: ``<out>.json`` (written after every run) and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.config import load_config  # noqa: E402
from raypipe.eval.metrics import r_ndcg_at_k_percent  # noqa: E402
from raypipe.eval.significance import paired_bootstrap  # noqa: E402
from raypipe.io import write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("bench_ml_transfer")
KPS = (0.5, 1.0)
METRICS = ["ndcg@10", "recall@10", "recall@0.5%", "r_ndcg@0.5%", "recall@1%", "r_ndcg@1%"]
MODELS: dict[str, list[str]] = {
    "prerec": ["model.name=prerec"],
    "unisrec": ["model.name=unisrec", "data.flow=domain"],
}
#: models trained on one row per sequence (not per event) get the ID baseline's epoch budget
PER_SEQUENCE = ("unisrec",)
BASELINES: dict[str, list[str]] = {
    "random": ["model.name=random"], "pop": ["model.name=pop"], "sbert_last": ["model.name=content_last_item"],
}


def common(args: argparse.Namespace, seed: int, dataset: str) -> list[str]:
    from bench_prerec import start_with_text_features

    features = start_with_text_features(dataset)
    return [f"data.dataset={dataset}", f"data.features={features}", "data.split=user_433",
            f"data.split_seed={seed}", f"train.seed={seed}", f"data.max_len={args.max_len}",
            f"eval.k_percents=[{','.join(f'{k:g}' for k in KPS)}]", "eval.ks=[10]", "train.metric=r_ndcg@1%",
            f"train.patience={args.patience}", f"train.batch_size={args.batch_size}", f"run.storage_path={args.runs}"]


def run(name: str, overrides: list[str], reuse: bool) -> Path:
    """Run an experiment (or reuse a finished one of the same name); its run directory."""
    from raypipe.rundir import METRICS_FILE
    from raypipe.train.run import run_experiment

    cfg = load_config(None, overrides + [f"run.name={name}"])
    done = Path(cfg.run.storage_path) / name
    if reuse and (done / METRICS_FILE).is_file():
        log.info("reusing %s", done)
        return done
    t0 = time.time()
    out = run_experiment(cfg).run_dir
    log.info("%s: %.0f s", name, time.time() - t0)
    return out


def evaluate_run(run_dir: Path, seed: int) -> dict[str, Any]:
    """Test metrics of a finished run on the target catalogue, with per-user r-NDCG@1% and NDCG@10."""
    from raypipe.eval.protocols import evaluate
    from raypipe.train.run import load_run

    model, prep, cfg = load_run(run_dir)
    (domain,) = prep.domains
    es = prep.eval_set("test", domain, cfg.data.max_len)
    m, ranks = evaluate(model.score, es, ks=(10,), k_percents=KPS, seed=seed, return_ranks=True)
    ranks = np.nan_to_num(ranks, nan=np.inf)
    return {**{k: float(m[k]) for k in METRICS}, "n_users": int(m["n_users"]), "n_items": int(es.catalogue.size),
            "per_user_r_ndcg": r_ndcg_at_k_percent(ranks, es.catalogue.size, 1.0).tolist(),
            "per_user_ndcg": np.where(ranks <= 10, 1.0 / np.log2(ranks + 1), 0.0).tolist()}


def markdown(results: dict[str, Any]) -> str:
    seeds = results["seeds"]
    rows = [v for v in results["rows"] if all(str(s) in results["rows"][v] for s in seeds)]
    lines = [f"{results['source']} → {results['target']} by titles (seeds {seeds}; 4:3:3 users, full ranking "
             f"over the target's items; mean over seeds)", "",
             "| Row | " + " | ".join(METRICS) + " | epochs (best) |", "|---|" + "---:|" * (len(METRICS) + 1)]
    for v in rows:
        runs = [results["rows"][v][str(s)] for s in seeds]
        cells = [f"{np.mean([r[m] for r in runs]):.4f}" for m in METRICS]
        ep = "; ".join(f"{r.get('epochs_run', 0)} ({r.get('best_epoch')})" for r in runs)
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {ep} |")
    lines += ["", "Paired bootstrap, per-user r-NDCG@1% (A − B, p; every seed):", "",
              "| A vs B | seed | A − B | 95% CI | p |", "|---|---:|---:|---|---:|"]
    for key, t in results["paired"].items():
        a_b, seed = key.rsplit("/s", 1)
        lines.append(f"| {a_b} | {seed} | {t['diff']:+.4f} | [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] | "
                     f"{t['p_value']:.3f} |")
    return "\n".join(lines)


def pairs(models: list[str]) -> list[tuple[str, str]]:
    out = []
    for m in models:
        out += [(f"{m}_zero_shot", "sbert_last"), (f"{m}_zero_shot", "pop"), (f"{m}_finetuned", f"{m}_scratch"),
                (f"{m}_finetuned", "sasrec"), (f"{m}_finetuned", f"{m}_zero_shot")]
    if {"prerec", "unisrec"} <= set(models):
        out += [("prerec_zero_shot", "unisrec_zero_shot"), ("prerec_finetuned", "unisrec_finetuned")]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="movielens:ml-1m")
    p.add_argument("--target", default="movielens:ml-100k")
    p.add_argument("--models", default="prerec,unisrec")
    p.add_argument("--seeds", default="0")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=20)
    p.add_argument("--sasrec-epochs", type=int, default=100,
                   help="SASRec's budget, and UniSRec's (one row per sequence) at both stages")
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--sasrec-patience", type=int, default=15,
                   help="an ID model from scratch on a few hundred users improves slowly and noisily")
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--runs", default="runs/bench_ml_transfer")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ml_transfer")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs of an earlier invocation")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 epoch per stage")
    args = p.parse_args(argv)
    if args.quick:
        args.pretrain_epochs = args.finetune_epochs = args.sasrec_epochs = 1
    models = args.models.split(",")
    unknown = set(models) - set(MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(ROOT / "bench"))
    t0 = time.time()
    results: dict[str, Any] = {"source": args.source, "target": args.target, "seeds": seeds, "quick": args.quick,
                               "args": {k: str(v) for k, v in vars(args).items()}, "rows": {}, "paired": {},
                               "replacements": {"text": "packaged MiniLM-L6 (SBERT / BERT in the papers)"}}

    def record(row: str, seed: int, run_dir: Path, extra: dict[str, Any] | None = None) -> None:
        import json

        from raypipe.rundir import METRICS_FILE

        res = json.loads((run_dir / METRICS_FILE).read_text())
        results["rows"].setdefault(row, {})[str(seed)] = {
            **evaluate_run(run_dir, seed), "run_dir": str(run_dir), "epochs_run": len(res["history"]),
            "best_epoch": res["best_epoch"], "train_seconds": res["train_seconds"], **(extra or {})}
        results["wall_seconds"] = time.time() - t0
        write_json_atomic(args.out.with_suffix(".json"), results)

    for seed in seeds:
        tgt = common(args, seed, args.target)
        size = [f"model.hidden={args.hidden}"]
        for row, over in BASELINES.items():
            record(row, seed, run(f"{row}-s{seed}", tgt + over + ["run.stage=evaluate"], args.reuse))
        record("sasrec", seed, run(f"sasrec-s{seed}", tgt + size + ["model.name=sasrec", "model.loss=ce",
                                                             f"train.epochs={args.sasrec_epochs}",
                                                             f"train.patience={args.sasrec_patience}"], args.reuse))
        for m in models:
            # epochs of a model with one row per event / of one with one row per sequence (a few steps)
            pre_budget = [f"train.epochs={args.pretrain_epochs}"] if m not in PER_SEQUENCE else [
                f"train.epochs={args.sasrec_epochs}", f"train.patience={args.sasrec_patience}"]
            ft_budget = [f"train.epochs={args.finetune_epochs}"] if m not in PER_SEQUENCE else [
                f"train.epochs={args.sasrec_epochs}", f"train.patience={args.sasrec_patience}"]
            pre = run(f"pre-{m}-s{seed}", common(args, seed, args.source) + MODELS[m] + size + [
                "run.stage=pretrain"] + pre_budget, args.reuse)
            record(f"{m}_zero_shot", seed, run(f"{m}_zero_shot-s{seed}", tgt + MODELS[m] + size + [
                "run.stage=finetune", "run.mode=zero-shot", f"run.init_from={pre}"], args.reuse),
                {"pretrain_run": str(pre)})
            record(f"{m}_finetuned", seed, run(f"{m}_finetuned-s{seed}", tgt + MODELS[m] + size + [
                "run.stage=finetune", "run.mode=transductive", f"run.init_from={pre}"] + ft_budget, args.reuse),
                {"pretrain_run": str(pre)})
            record(f"{m}_scratch", seed, run(f"{m}_scratch-s{seed}", tgt + MODELS[m] + size + [
                "run.stage=finetune", "run.mode=transductive"] + ft_budget, args.reuse))
        for a, b in pairs(models):
            ra, rb = results["rows"].get(a, {}).get(str(seed)), results["rows"].get(b, {}).get(str(seed))
            if ra and rb:
                results["paired"][f"{a} vs {b}/s{seed}"] = paired_bootstrap(
                    np.asarray(ra["per_user_r_ndcg"]), np.asarray(rb["per_user_r_ndcg"]), seed=seed).as_dict()
        write_json_atomic(args.out.with_suffix(".json"), results)
        write_text_atomic(args.out.with_suffix(".md"), markdown(results) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
