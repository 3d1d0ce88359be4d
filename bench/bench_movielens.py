"""SASRec on MovieLens-1M under the SASRec paper's protocol (Kang & McAuley, ICDM 2018), plus full-ranking
numbers on ML-1M and ML-100k and training throughput with 1 vs 2 Ray Train workers.

Protocol: MovieLens ratings as implicit feedback, 5-core, chronological sequences, leave-one-out (last item
= test, the one before = validation, the rest = training; one training row per user: its most recent
``max_len + 1`` training items).  Test: the target ranked against 100 negatives drawn uniformly without
replacement from the items the user never touched (our ``"sampled"`` protocol, ``n_neg=100``, seed 0),
HR@10 / NDCG@10.  Paper hyper-parameters: max length 200, 2 blocks, hidden 50, 1 head, dropout 0.2, Adam
lr 1e-3, batch 128; the loss is our softmax cross-entropy over the whole catalogue (``model.loss=ce``), not
the paper's BCE with one negative.  Early stopping (``train.patience``) and model selection use validation
NDCG@10 under *full* ranking over the catalogue (what the Ray Train loop computes every epoch), on a seeded
sample of 3,000 of the 6,040 validation users (``--valid-users``; 0 = all).  The same trained ML-1M model is also scored under full
ranking (seen items excluded; Recall@10 / NDCG@10).  Seen items are the user's whole history, as in the
paper (every rated item); ``*_window_seen`` also reports the earlier definition (only the last ``max_len``
items the model sees).  ML-100k: a separate SASRec with the same hyper-parameters, full ranking.  Throughput: a short
fixed ML-1M run (``--throughput-epochs``, default 2) with 1 worker (2 torch threads) and with 2 DDP workers
(1 torch thread each); we record the loop's ``samples_per_s`` (training rows / training-loop seconds of an
epoch, validation excluded) and the wall time of the whole ``run_experiment`` call.  On a 2-core machine the
2 workers share the same cores as the 1 worker's 2 threads, so this measures DDP overhead rather than
scaling.  Run (the ML-1M run takes ~30-60 min on 2 CPU cores)::

    RAYPIPE_DATA=data python bench/bench_movielens.py [--epochs 80] [--patience 10] \
        [--out bench/results/movielens.json] [--storage-path runs]
    python bench/bench_movielens.py --quick            # smoke version: 1 epoch per run, few validation users
    python bench/bench_movielens.py --phases ml100k,throughput --merge   # re-run some phases only
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raypipe.config import ExperimentConfig, load_config
from raypipe.data.prepare import prepare_for
from raypipe.eval.protocols import EvalSet, evaluate
from raypipe.io import write_json_atomic
from raypipe.runtime import init_ray
from raypipe.train.run import RunResult, load_run, run_experiment

log = logging.getLogger("bench_movielens")

PAPER = {"hr@10": 0.8245, "ndcg@10": 0.5905}  # SASRec paper, Table III, ML-1M
TARGET = {"hr@10": 0.80, "ndcg@10": 0.57}
PHASES = ("ml1m", "ml100k", "throughput")

SASREC_PAPER = [
    "model.name=sasrec", "model.hidden=50", "model.n_layers=2", "model.n_heads=1", "model.dropout=0.2",
    "model.loss=ce", "data.max_len=200", "data.k_core=5", "train.batch_size=128", "train.lr=1e-3",
    "train.metric=ndcg@10", "train.seed=0", "eval.n_neg=100", "eval.ks=[1,5,10,20]", "eval.exclude_seen=true",
]


def make_config(args: argparse.Namespace, dataset: str, name: str, protocol: str, *, epochs: int, patience: int,
                valid_users: int | None, num_workers: int = 1) -> ExperimentConfig:
    # never more torch threads in total than the 2 cores (--threads: fewer, to leave a core free)
    threads = min(args.threads, 2 if num_workers == 1 else 1)
    cpus = 1.0 if num_workers == 1 else 0.5  # logical Ray CPUs only; leaves room for Ray Data's coordinator
    overrides = SASREC_PAPER + [
        f"data.dataset={dataset}", f"eval.protocol={protocol}", f"train.epochs={epochs}",
        f"train.patience={patience}", f"train.valid_users={'null' if valid_users is None else valid_users}",
        f"train.num_workers={num_workers}", f"train.torch_threads={threads}", f"train.cpus_per_worker={cpus}",
        f"run.storage_path={args.storage_path}", f"run.name={name}", "run.stage=pretrain",
    ]
    return load_config(None, overrides)


def score_run(res: RunResult, cfg: ExperimentConfig) -> dict[str, Any]:
    """Re-load the best weights of a finished run and score its test users under every protocol: seen =
    the whole history (the default of every protocol), and ``*_window_seen`` = only the last ``max_len``
    items (the definition used before; kept to compare with earlier results)."""
    model, prep, _ = load_run(res.run_dir)
    ec, seed, L = cfg.eval, cfg.train.seed, cfg.data.max_len
    out: dict[str, Any] = {}
    for dom in res.test:
        es = prep.eval_set("test", dom, L)
        window = EvalSet(es.history, es.target, es.catalogue, user_ids=es.user_ids)  # seen = the window
        kw = dict(ks=tuple(ec.ks), n_neg=ec.n_neg, seed=seed, progress=False)
        out[dom] = {
            "sampled": evaluate(model.score, es, protocol="sampled", **kw),
            "sampled_window_seen": evaluate(model.score, window, protocol="sampled", **kw),
            "full": evaluate(model.score, es, protocol="full", exclude_seen=True, **kw),
            "full_window_seen": evaluate(model.score, window, protocol="full", exclude_seen=True, **kw),
        }
    return out


def dataset_stats(cfg: ExperimentConfig) -> dict[str, Any]:
    prep = prepare_for(cfg.data)
    lengths = prep.sequences["items"].map(len).to_numpy()
    test_hist = np.array([len(h) for h in prep.test.history])
    return {"users": int(len(prep.sequences)), "items": int(len(prep.index)), "interactions": int(lengths.sum()),
            "mean_seq_len": float(lengths.mean()), "median_seq_len": float(np.median(lengths)),
            "test_users": int(len(prep.test)),
            "test_users_history_over_max_len": int((test_hist > cfg.data.max_len).sum())}


def summarise_run(res: RunResult, cfg: ExperimentConfig, wall: float) -> dict[str, Any]:
    hist = res.history
    best = max(hist, key=lambda h: h[f"valid/{cfg.train.metric}"]) if hist else {}
    sps = [h["samples_per_s"] for h in hist]
    return {
        "run_dir": str(res.run_dir), "config": cfg.to_dict(), "epochs_run": len(hist), "best_epoch": res.best_epoch,
        "best_valid": {k: v for k, v in best.items() if k.startswith("valid/")},
        "stopped_early": len(hist) < cfg.train.epochs, "train_seconds": res.train_seconds, "wall_seconds": wall,
        "samples_per_s_mean": float(np.mean(sps)) if sps else None,
        "history": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in h.items()} for h in hist],
        "test_run_experiment": res.test,
    }


def resumed_at(cfg: ExperimentConfig) -> int | None:
    """The epoch a run re-using an existing run name resumes at (None for a fresh run)."""
    run_dir = Path(cfg.run.storage_path) / str(cfg.run.name)
    ckpts = sorted(p for p in run_dir.glob("checkpoint_*") if (p / "state.json").exists())
    return int(json.loads((ckpts[-1] / "state.json").read_text())["epoch"]) if ckpts else None


def run_quality(args: argparse.Namespace, dataset: str, protocol: str, stamp: str, epochs: int) -> dict[str, Any]:
    tag = dataset.split(":")[1]
    cfg = make_config(args, dataset, f"bench-{tag}-{stamp}", protocol, epochs=epochs, patience=args.patience,
                      valid_users=args.valid_users)
    log.info("%s: training SASRec (%s), up to %d epochs, patience %d", tag, protocol, epochs, args.patience)
    resumed = resumed_at(cfg)
    t0 = time.time()
    res = run_experiment(cfg)
    wall = time.time() - t0
    out = summarise_run(res, cfg, wall)
    out["resumed_at_epoch"] = resumed  # when set, train/wall seconds cover only the epochs from there on
    out["data"] = dataset_stats(cfg)
    out["test"] = score_run(res, cfg)
    log.info("%s done in %.0fs: best epoch %s of %d; test %s", tag, wall, res.best_epoch, len(res.history),
             json.dumps(out["test"]))
    return out


def run_throughput(args: argparse.Namespace, stamp: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for nw in (1, 2):
        cfg = make_config(args, "movielens:ml-1m", f"bench-tput{nw}-{stamp}", "sampled",
                          epochs=args.throughput_epochs, patience=10**6, valid_users=args.throughput_valid_users,
                          num_workers=nw)
        log.info("throughput: %d worker(s), %d epochs", nw, args.throughput_epochs)
        t0 = time.time()
        res = run_experiment(cfg)
        wall = time.time() - t0
        sps = [h["samples_per_s"] for h in res.history]
        out[f"{nw}_workers"] = {
            "num_workers": nw, "torch_threads_per_worker": cfg.train.torch_threads,
            "cpus_per_worker_logical": cfg.train.cpus_per_worker, "epochs": len(res.history),
            "samples_per_s_per_epoch": sps, "samples_per_s_mean": float(np.mean(sps)),
            "train_rows_per_epoch": [h["train_rows"] for h in res.history],
            "train_seconds": res.train_seconds, "wall_seconds": wall, "run_dir": str(res.run_dir),
        }
        log.info("throughput %d worker(s): samples/s %s, wall %.0fs", nw, [round(s, 1) for s in sps], wall)
    return out


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}"


def markdown(results: dict[str, Any]) -> str:
    lines = []
    ml1m, ml100k, tput = results.get("ml1m"), results.get("ml100k"), results.get("throughput")
    if ml1m or ml100k:
        lines += ["| Dataset | Protocol | Metric | SASRec paper | Ours |", "|---|---|---|---:|---:|"]
    if ml1m:
        t = ml1m["test"]["ml-1m"]
        for m, label in (("hr@10", "HR@10"), ("ndcg@10", "NDCG@10")):
            lines.append(f"| ML-1M | 100 sampled negatives | {label} | {PAPER[m]:.4f} | {t['sampled'][m]:.4f} |")
        for m, label in (("recall@10", "Recall@10"), ("ndcg@10", "NDCG@10")):
            lines.append(f"| ML-1M | full ranking | {label} | – | {t['full'][m]:.4f} |")
    if ml100k:
        t = ml100k["test"]["ml-100k"]
        for m, label in (("recall@10", "Recall@10"), ("ndcg@10", "NDCG@10")):
            lines.append(f"| ML-100k | full ranking | {label} | – | {t['full'][m]:.4f} |")
    runs = [(k, r) for k, r in (("ML-1M", ml1m), ("ML-100k", ml100k)) if r]
    if runs:
        lines += ["", "| Run | #Users | #Items | Epochs run | Best epoch (valid NDCG@10, full) | Train s | Wall s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for k, r in runs:
            d = r["data"]
            lines.append(f"| {k} | {d['users']:,} | {d['items']:,} | {r['epochs_run']} | {r['best_epoch']} "
                         f"({_f(r['best_valid'].get('valid/ndcg@10'))}) | {r['train_seconds']:.0f} | "
                         f"{r['wall_seconds']:.0f} |")
    if tput:
        lines += ["", "| Ray Train workers | torch threads / worker | samples/s per epoch | mean samples/s | Wall s |",
                  "|---:|---:|---|---:|---:|"]
        for r in tput.values():
            per = ", ".join(f"{s:.0f}" for s in r["samples_per_s_per_epoch"])
            lines.append(f"| {r['num_workers']} | {r['torch_threads_per_worker']} | {per} | "
                         f"{r['samples_per_s_mean']:.0f} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=80, help="epoch budget of the ML-1M run")
    p.add_argument("--epochs-100k", type=int, default=None,
                   help="epoch budget of the ML-100k run (default: --epochs; 943 users = 8 steps an epoch)")
    p.add_argument("--patience", type=int, default=10, help="early-stopping patience (validation NDCG@10, full)")
    p.add_argument("--valid-users", type=int, default=3000,
                   help="validation users per epoch, a fixed seeded sample (0 = all)")
    p.add_argument("--stamp", default=None,
                   help="run-name suffix (default: now); re-using one resumes those runs from their checkpoints")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the 1-worker quality runs")
    p.add_argument("--throughput-epochs", type=int, default=2)
    p.add_argument("--throughput-valid-users", type=int, default=1000)
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--merge", action="store_true", help="keep the other phases' results already in --out")
    p.add_argument("--note", action="append", default=[], help="free-text note stored in the JSON (repeatable)")
    p.add_argument("--quick", action="store_true", help="smoke version: 1 epoch per run, 500 validation users")
    p.add_argument("--storage-path", default="runs", help="where run directories go")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default bench/results/movielens.json; movielens-quick.json with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.epochs_100k, args.patience, args.valid_users = 1, 1, 1, 500
        args.throughput_epochs, args.throughput_valid_users = 1, 200
    out_path = args.out or Path("bench/results/movielens-quick.json" if args.quick else "bench/results/movielens.json")
    phases = [x for x in args.phases.split(",") if x]
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s) {sorted(unknown)}; choose from {PHASES}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)

    init_ray()
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # keep the log readable
    stamp = args.stamp or time.strftime("%Y%m%d-%H%M%S")
    args.valid_users = args.valid_users or None
    results: dict[str, Any] = {}
    if args.merge and out_path.exists():
        results = json.loads(out_path.read_text())
    results.update({
        "benchmark": "SASRec on MovieLens (SASRec paper protocol)", "quick": args.quick,
        "protocol": {
            "split": "leave-one-out (last item test, second-to-last validation), 5-core, chronological",
            "sampled": "target + 100 negatives uniform without replacement from untouched items, seed 0 "
                       "('sampled': touched = the whole history; 'sampled_window_seen': the last max_len items)",
            "full": "full ranking over the catalogue, seen items excluded ('full': the whole history; "
                    "'full_window_seen': the last max_len items)",
            "model_selection": "early stopping on validation NDCG@10 under full ranking "
                               f"({args.valid_users or 'all'} validation users, seeded sample)",
            "loss": "softmax cross-entropy over all items (paper: BCE with one sampled negative)",
        },
        "paper": {"ml-1m": PAPER}, "target": TARGET,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "ray": __import__("ray").__version__, "machine": platform.machine(),
                        "cpus": os.cpu_count()},
    })
    results["notes"] = results.get("notes", []) + args.note
    for phase in phases:
        if phase == "ml1m":
            results["ml1m"] = run_quality(args, "movielens:ml-1m", "sampled", stamp, args.epochs)
            t = results["ml1m"]["test"]["ml-1m"]["sampled"]
            results["target_met"] = bool(t["hr@10"] >= TARGET["hr@10"] and t["ndcg@10"] >= TARGET["ndcg@10"])
        elif phase == "ml100k":
            results["ml100k"] = run_quality(args, "movielens:ml-100k", "full", stamp, args.epochs_100k or args.epochs)
        else:
            results["throughput"] = run_throughput(args, stamp)
        results["markdown"] = markdown(results)
        write_json_atomic(out_path, results)  # after every phase: a later failure keeps what was measured
    print(results["markdown"])
    if "target_met" in results:
        print(f"\nTarget (HR@10 >= {TARGET['hr@10']}, NDCG@10 >= {TARGET['ndcg@10']}, sampled): "
              f"{'met' if results['target_met'] else 'NOT met'}")
    print(f"results -> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
