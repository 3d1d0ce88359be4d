"""UniM2Rec vs UniSRec vs SASRec on the target domains (UniM2Rec paper protocol), with its ablations.

    python bench/bench_unim2rec.py --dataset builtin:small --seeds 0,1,2          # main comparison
    python bench/bench_unim2rec.py --variants all --seeds 0                       # + Table 3 ablations
    python bench/bench_unim2rec.py --dataset builtin:tiny --quick                 # smoke run (minutes)

Protocol (UniM2Rec §4.1): leave-one-out per user and target domain, full ranking over the target
domain's items (seen excluded), Recall/NDCG@5/10/20, early stopping on validation NDCG@10 with patience
10.  Every model is evaluated on the same target events (the mixed-flow split holds out the same events
as the per-domain one), so per-user paired bootstraps compare them.  Pre-training: the source domains,
the contrastive objective (UniM2Rec on mixed flows over text, image and cross views; UniSRec on text,
per domain).  Fine-tuning: the target domains, transductive unless the variant says otherwise.

Raw results: ``<out>.json`` (every run's metrics, per-seed rows, paired tests) and ``<out>.md``.
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

from raypipe.config import load_config  # noqa: E402
from raypipe.eval.metrics import ndcg  # noqa: E402
from raypipe.eval.significance import paired_bootstrap  # noqa: E402
from raypipe.io import write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("bench_unim2rec")
KS = [5, 10, 20]

#: variant -> (pre-training overrides or None = no pre-training / reuse, fine-tuning overrides, mode)
#: the pre-training key names which pre-trained model a variant starts from
VARIANTS: dict[str, dict[str, Any]] = {
    "sasrec": {"pre": None, "fine": ["model.name=sasrec", "model.loss=ce", "data.flow=domain"], "mode": "transductive"},
    # SASRec with its own budget (an ID model needs more epochs than the content models' fine-tuning)
    "sasrec_own_budget": {"pre": None, "fine": ["model.name=sasrec", "model.loss=ce", "data.flow=domain"],
                          "mode": "transductive", "epochs": 200, "patience": 10},
    "unisrec": {"pre": "unisrec", "fine": [], "mode": "transductive"},
    "unisrec_zero_shot": {"pre": "unisrec", "fine": [], "mode": "zero-shot"},
    "unim2rec": {"pre": "unim2rec", "fine": [], "mode": "transductive"},
    "unim2rec_zero_shot": {"pre": "unim2rec", "fine": [], "mode": "zero-shot"},
    # UniM2Rec fine-tuned with a longer budget (is an 8-epoch gap to a converged SASRec a budget effect?)
    "unim2rec_own_budget": {"pre": "unim2rec", "fine": [], "mode": "transductive", "epochs": 40, "patience": 5},
    # Table 3 ablations
    "wo_id": {"pre": "unim2rec", "fine": ["model.item_input=content"], "mode": "transductive"},
    "wo_mix": {"pre": "unim2rec", "fine": ["model.flow=single"], "mode": "transductive"},
    # Table 4: the mixed-flow prediction alone (wo_mix is the target-only one; unim2rec fuses both)
    "mixed_only": {"pre": "unim2rec", "fine": ["model.flow=mixed"], "mode": "transductive"},
    "wo_cl": {"pre": None, "fine": [], "mode": "transductive"},
    "wo_cp": {"pre": "wo_cp", "fine": [], "mode": "transductive"},
    "wo_tp": {"pre": "wo_tp", "fine": [], "mode": "transductive"},
    "wo_vp": {"pre": "wo_vp", "fine": [], "mode": "transductive"},
    "wo_vt": {"pre": "wo_vt", "fine": [], "mode": "transductive"},
    "wo_cvt": {"pre": "wo_cvt", "fine": [], "mode": "transductive"},
    # Fig. 4: fewer pre-training domains (the embedded benchmark's sources: books, movies, electronics)
    "sources_1": {"pre": "sources_1", "fine": [], "mode": "transductive"},
    "sources_2": {"pre": "sources_2", "fine": [], "mode": "transductive"},
}
MAIN = ["sasrec", "unisrec", "unisrec_zero_shot", "unim2rec", "unim2rec_zero_shot"]
PRETRAIN: dict[str, list[str]] = {
    "unisrec": ["model.name=unisrec", "data.flow=domain"],
    "unim2rec": ["model.name=unim2rec"],
    "wo_cp": ["model.name=unim2rec", "model.linear_views=[cross]"],
    "wo_tp": ["model.name=unim2rec", "model.linear_views=[text]"],
    "wo_vp": ["model.name=unim2rec", "model.linear_views=[image]"],
    "wo_vt": ["model.name=unim2rec", "model.linear_views=[image,text]"],
    "wo_cvt": ["model.name=unim2rec", "model.linear_views=[cross,image,text]"],
    "sources_1": ["model.name=unim2rec", "data.domains=[books]"],
    "sources_2": ["model.name=unim2rec", "data.domains=[books,movies]"],
}
#: the model a variant fine-tunes (its pre-training's, else UniM2Rec's)
PAIRS = [("unim2rec", "sasrec"), ("unim2rec", "unisrec"), ("unisrec", "sasrec"), ("unim2rec", "sasrec_own_budget"),
         ("unisrec", "sasrec_own_budget"), ("unim2rec_own_budget", "sasrec_own_budget"),
         ("unim2rec_zero_shot", "unisrec_zero_shot")] + [
    (v, "unim2rec") for v in VARIANTS if v.startswith(("wo_", "sources_")) or v == "mixed_only"]


def base_overrides(args: argparse.Namespace, seed: int) -> list[str]:
    return [f"data.dataset={args.dataset}", "data.flow=mixed", f"data.max_len={args.max_len}",
            f"train.seed={seed}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
            f"train.patience={args.patience}", "train.metric=ndcg@10", f"train.valid_users={args.valid_users}",
            "eval.protocol=full", "eval.exclude_seen=true", f"eval.ks=[{','.join(map(str, KS))}]",
            f"model.hidden={args.hidden}", f"run.storage_path={args.storage_path}"]


def _fine_model(variant: str) -> list[str]:
    pre = VARIANTS[variant]["pre"]
    if variant.startswith("sasrec"):
        return []
    # the pre-training's model options (and flow), not its choice of domains
    return [o for o in PRETRAIN[pre] if not o.startswith("data.domains=")] if pre else ["model.name=unim2rec"]


def run(args: argparse.Namespace, name: str, overrides: list[str]):
    from raypipe.train.run import RunResult, run_experiment

    metrics = Path(args.storage_path) / name / "metrics.json"
    if args.reuse and metrics.exists():  # a finished run of an earlier invocation
        m = json.loads(metrics.read_text())
        log.info("reusing %s", name)
        return RunResult(metrics.parent, m["test"], m["history"], m["best_epoch"], m["train_seconds"])
    cfg = load_config(None, overrides + [f"run.name={name}"])
    from raypipe.features.ondemand import ensure_features

    cfg = ensure_features(cfg)
    t0 = time.time()
    res = run_experiment(cfg)
    log.info("%s: %.0f s", name, time.time() - t0)
    return res


def per_user_ndcg(run_dir: Path) -> dict[str, dict[str, float]]:
    """``{domain: {user_id: NDCG@10}}`` of a finished run on its test users (full ranking)."""
    from raypipe.train.run import evaluate_domains, load_run

    model, prep, cfg = load_run(run_dir)
    ranks: dict[str, np.ndarray] = {}
    domains = prep.info.target_domains
    evaluate_domains(model, prep, domains, cfg, ranks_out=ranks)
    out = {}
    for d in domains:
        users = prep.eval_set("test", d, cfg.data.max_len).user_ids
        out[d] = dict(zip(map(str, users), ndcg(ranks[d], 10).tolist()))
    return out


def paired(per_user: dict[str, dict[str, dict[str, float]]], a: str, b: str, seed: int) -> dict[str, Any]:
    res = {}
    for d in per_user[a]:
        users = sorted(set(per_user[a][d]) & set(per_user[b].get(d, {})))
        if users:
            res[d] = paired_bootstrap(np.array([per_user[a][d][u] for u in users]),
                                      np.array([per_user[b][d][u] for u in users]), seed=seed).as_dict()
    return res


def markdown(results: dict[str, Any]) -> str:
    lines = [f"UniM2Rec benchmark on {results['dataset']} ({results['quick'] and 'QUICK smoke run: ' or ''}"
             f"seeds {results['seeds']}; full ranking, test users per target domain)", ""]
    domains = sorted({d for s in results["runs"].values() for v in s.values() for d in v["test"]})
    head = "| Variant | " + " | ".join(f"{d} R@10 | {d} N@10" for d in domains) + " |"
    lines += [head, "|---|" + "---:|" * (2 * len(domains))]
    for variant in results["variants"]:
        cells = []
        for d in domains:
            vals = [results["runs"][str(s)][variant]["test"][d] for s in results["seeds"]
                    if variant in results["runs"].get(str(s), {})]  # seeds still to run are left out
            for k in ("recall@10", "ndcg@10"):
                xs = np.array([v[k] for v in vals])
                cells.append(f"{xs.mean():.4f}" + (f" ± {xs.std(ddof=1):.4f}" if len(xs) > 1 else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    by_seed = results.get("paired_by_seed") or {str(results["seeds"][0]): results["paired"]}
    seeds = [s for s in map(str, results["seeds"]) if s in by_seed]
    lines += ["", "Paired bootstrap of per-user NDCG@10, per seed: A − B (p)", "",
              "| A vs B | Domain | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---:|" * len(seeds)]
    for name in by_seed[seeds[0]]:
        for d in by_seed[seeds[0]][name]:
            cells = [f"{by_seed[s][name][d]['diff']:+.4f} ({by_seed[s][name][d]['p_value']:.3f})"
                     if name in by_seed[s] else "" for s in seeds]
            lines.append(f"| {name} | {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="builtin:small")
    p.add_argument("--seeds", default="0")
    p.add_argument("--variants", default="main", help="main | all | comma-separated names")
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--finetune-epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--valid-users", type=int, default=2000)
    p.add_argument("--storage-path", default="runs/bench_unim2rec")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "unim2rec")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs of an earlier invocation")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs per stage")
    args = p.parse_args(argv)
    if args.quick:
        args.pretrain_epochs, args.finetune_epochs = 2, 2
    variants = MAIN if args.variants == "main" else list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.runtime import init_ray

    init_ray()
    t_start = time.time()
    results: dict[str, Any] = {"dataset": args.dataset, "seeds": seeds, "variants": variants, "quick": args.quick,
                               "args": {k: str(v) for k, v in vars(args).items()}, "runs": {}, "paired": {},
                               "replacements": {"text": "packaged MiniLM-L6 (BERT in the paper)",
                                                "image": "packaged ImageNet EfficientNet-Lite0 (ResNet-50 in the paper)",
                                                "cross": "text+image aligned on the catalogue (VisualBERT in the paper)"}}
    for seed in seeds:
        per_user: dict[str, dict[str, dict[str, float]]] = {}  # this seed's runs
        base = base_overrides(args, seed)
        pre_runs: dict[str, Path] = {}
        for key in dict.fromkeys(VARIANTS[v]["pre"] for v in variants if VARIANTS[v]["pre"]):
            res = run(args, f"pre-{key}-s{seed}", base + PRETRAIN[key] + [
                "run.stage=pretrain", f"train.epochs={args.pretrain_epochs}"])
            pre_runs[key] = res.run_dir
            results.setdefault("pretrain", {}).setdefault(str(seed), {})[key] = {
                "best_epoch": res.best_epoch, "epochs_run": len(res.history), "train_seconds": res.train_seconds,
                "valid": [h.get("valid/ndcg@10") for h in res.history],
                "samples_per_s": float(np.median([h["samples_per_s"] for h in res.history])) if res.history else None}
        seed_runs: dict[str, Any] = {}
        for v in variants:
            spec = VARIANTS[v]
            over = base + _fine_model(v) + spec["fine"] + ["run.stage=finetune", f"run.mode={spec['mode']}",
                                                           f"train.epochs={spec.get('epochs', args.finetune_epochs)}",
                                                           f"train.patience={spec.get('patience', args.patience)}"]
            if spec["pre"]:
                over.append(f"run.init_from={pre_runs[spec['pre']]}")
            res = run(args, f"{v}-s{seed}", over)
            seed_runs[v] = {"test": res.test, "best_epoch": res.best_epoch, "train_seconds": res.train_seconds,
                            "epochs_run": len(res.history), "run_dir": str(res.run_dir),
                            "epochs_budget": spec.get("epochs", args.finetune_epochs),
                            "samples_per_s": float(np.median([h["samples_per_s"] for h in res.history]))
                            if res.history else None}
            per_user[v] = per_user_ndcg(res.run_dir)
        results["runs"][str(seed)] = seed_runs
        results["wall_seconds"] = time.time() - t_start
        by_seed = results.setdefault("paired_by_seed", {}).setdefault(str(seed), {})
        for a, b in PAIRS:
            if a in per_user and b in per_user:
                by_seed[f"{a} vs {b}"] = paired(per_user, a, b, seed=0)
        results["paired"] = results["paired_by_seed"][str(seeds[0])]
        md = markdown(results)
        write_json_atomic(args.out.with_suffix(".json"), results)  # after every seed
        write_text_atomic(args.out.with_suffix(".md"), md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
