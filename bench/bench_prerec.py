"""PreRec zero-shot on the target markets (PreRec Table 1 analogue): all test users and the "unseen" subset.

    python bench/bench_prerec.py --dataset markets:small --seeds 0,1,2
    python bench/bench_prerec.py --dataset markets:tiny --seeds 0 --epochs 3 --out bench/results/prerec_quick_tiny

Protocol (PreRec appendix C): users of every market split 4:3:3 train/validation/test; each test user's
last item is the target, ranked among its market's whole catalogue (seen items excluded), Recall@K% and
r-NDCG@K% (a=2, b=15000) at K% = 1 (ours: 10-50 items on the markets' catalogues, the paper's reason
for 0.04% on XMarket) and NDCG@10. Unseen: test users whose target's product no source market sells
(users never overlap markets here). Learnable models are pre-trained on the source markets with early
stopping on the mean validation r-NDCG@1% over the source markets, then applied to the targets without
target training. Baselines: Random, POP (training interactions), POP_15d (the paper's POP: interactions in
the 15 days before each recommendation), SBERT last item, UniSRec (pre-trained on the same sources, text
view), PreRec_n, w/o D, w/o Z.

Raw results: ``<out>.json`` (every run, per seed, paired tests PreRec vs each other) and ``<out>.md``.
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

log = logging.getLogger("bench_prerec")
KP = 1.0
METRICS = [f"recall@{KP:g}%", f"r_ndcg@{KP:g}%", "ndcg@10"]
#: variant -> model overrides (None: not trained)
VARIANTS: dict[str, list[str] | None] = {
    "random": None, "pop": None, "pop_15d": None, "sbert": None,
    "prerec_n": ["model.domain_confounder=false", "model.popularity=false"],
    "wo_d": ["model.domain_confounder=false"],
    "wo_z": ["model.popularity=false"],
    "unisrec": [],  # UniSRec (text, per domain) pre-trained on the same sources: the Table 1 row
    "prerec": [],
}
BASELINE_MODEL = {"random": ["model.name=random"], "pop": ["model.name=pop"],
                  "pop_15d": ["model.name=pop", "model.window_days=15"], "sbert": ["model.name=content_last_item"]}


def _overrides(args: argparse.Namespace, seed: int, features: str) -> list[str]:
    return [f"data.dataset={args.dataset}", "data.split=user_433", f"data.split_seed={seed}", f"train.seed={seed}",
            f"data.features={features}", f"data.max_len={args.max_len}", f"eval.k_percents=[{KP:g}]",
            f"train.metric=r_ndcg@{KP:g}%", "train.valid_average=domains", f"train.epochs={args.epochs}",
            f"train.patience={args.patience}", "train.lr=3e-4", f"train.batch_size={args.batch_size}",
            f"run.storage_path={args.runs}"]


def run_variant(name: str, args: argparse.Namespace, seed: int, features: str) -> dict[str, Any]:
    from raypipe.train.run import run_experiment

    over = _overrides(args, seed, features)
    t0 = time.time()
    extra = VARIANTS[name]
    if extra is None:
        cfg = load_config(None, over + BASELINE_MODEL[name] + ["run.stage=evaluate", f"run.name=s{seed}-{name}"])
    else:
        model = learned_model(name, args) + extra
        if name == "unisrec":  # one row per sequence, not per event: an epoch is a few dozen steps
            model += [f"train.epochs={args.unisrec_epochs}", f"train.patience={args.unisrec_patience}"]
        pre = run_experiment(load_config(None, over + model + [f"run.name=s{seed}-{name}-pre"]))
        cfg = load_config(None, over + model + ["run.stage=finetune", "run.mode=zero-shot",
                                                f"run.init_from={pre.run_dir}", f"run.name=s{seed}-{name}"])
    res = run_experiment(cfg)
    return {"seconds": time.time() - t0, **evaluate_run(res.run_dir, seed)}


def learned_model(name: str, args: argparse.Namespace) -> list[str]:
    """The model overrides of a learnable row: UniSRec (text view, per-domain flow, its paper's lr 1e-3)
    or PreRec."""
    if name.startswith("unisrec"):
        return ["model.name=unisrec", "data.flow=domain", f"model.hidden={args.hidden}", "train.lr=1e-3"]
    return ["model.name=prerec", f"model.hidden={args.hidden}", f"model.n_neg={args.n_neg}"]


def evaluate_run(run_dir: Path, seed: int) -> dict[str, Any]:
    """A finished run's test metrics per target market, on all test users and on the unseen subset, with
    the per-user r-NDCG@K% the paired tests need."""
    from raypipe.data.markets import unseen_items
    from raypipe.eval.protocols import evaluate
    from raypipe.train.run import load_run

    model, prep, cfg = load_run(run_dir)
    sources = [d for d in prep.domains if prep.info.role_of(d) == "source"]
    unseen = unseen_items(prep.index.item_ids, prep.index.domains, sources) + 1  # item indices
    out: dict[str, Any] = {"domains": {}}
    for d in [d for d in prep.domains if prep.info.role_of(d) == "target"]:
        es = prep.eval_set("test", d, cfg.data.max_len)
        for subset, items in (("all", None), ("unseen", unseen)):
            m, ranks = evaluate(model.score, es, ks=(10,), k_percents=(KP,), seed=seed, unseen_items=items,
                                return_ranks=True)
            per_user = r_ndcg_at_k_percent(np.nan_to_num(ranks, nan=np.inf), es.catalogue.size, KP)
            out["domains"].setdefault(d, {})[subset] = {
                **{k: float(m[k]) for k in METRICS}, "n_users": int(m["n_users"]),
                "per_user_r_ndcg": per_user[~np.isnan(ranks)].tolist()}
    return out


def table(results: dict[str, dict[str, Any]], seeds: list[int]) -> str:
    variants = list(results)
    first = results[variants[0]][str(seeds[0])]["domains"]
    lines = ["| Market | Subset | Metric | " + " | ".join(variants) + " |",
             "|---|---|---|" + "---:|" * len(variants)]
    for d in first:
        for subset in ("all", "unseen"):
            for m in METRICS:
                vals = [np.mean([results[v][str(s)]["domains"][d][subset][m] for s in seeds]) for v in variants]
                lines.append(f"| {d} | {subset} (n={first[d][subset]['n_users']}) | {m} | "
                             + " | ".join(f"{x:.4f}" for x in vals) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="markets:small")
    p.add_argument("--seeds", default="0")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--unisrec-epochs", type=int, default=60, help="UniSRec's own budget (one training row "
                   "per sequence: an epoch is a few dozen steps)")
    p.add_argument("--unisrec-patience", type=int, default=8)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--n-neg", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--runs", default="runs/bench_prerec")
    p.add_argument("--out", default="bench/results/prerec")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="no runs: merge the variants of earlier <out>.json files (the seeds every one finished) "
                        "and write --out from them")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.report:
        report(args, argv, args.report)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    features = start_with_text_features(args.dataset)
    results: dict[str, dict[str, Any]] = {}
    for s in seeds:  # seed-major: a stopped run still holds every variant of its first seeds
        for v in variants:
            log.info("variant %s seed %d", v, s)
            results.setdefault(v, {})[str(s)] = run_variant(v, args, s, str(features))
            done = [x for x in seeds if all(str(x) in results.get(w, {}) for w in variants)]
            write_results(args, argv, results, done, complete=False)
    write_results(args, argv, results, seeds, complete=True)


def paired_tests(results: dict[str, dict[str, Any]], seeds: list[int], ref: str = "prerec",
                 others: list[str] | None = None) -> dict[str, Any]:
    """Paired bootstrap of per-user r-NDCG@K%: ``ref`` against every other variant (or ``others``), per
    seed/market/subset."""
    tests: dict[str, Any] = {}
    if ref not in results:
        return tests
    for v in others if others is not None else results:
        if v == ref or v not in results:
            continue
        for s in seeds:
            if str(s) not in results[ref] or str(s) not in results[v]:
                continue
            for d, sub in results[ref][str(s)]["domains"].items():
                for subset in ("all", "unseen"):
                    a = np.asarray(sub[subset]["per_user_r_ndcg"])
                    b = np.asarray(results[v][str(s)]["domains"][d][subset]["per_user_r_ndcg"])
                    if len(a) and len(a) == len(b):
                        tests[f"{ref}-vs-{v}/s{s}/{d}/{subset}"] = paired_bootstrap(a, b, seed=s).as_dict()
    return tests


def start_with_text_features(dataset: str) -> Path:
    """Start Ray and return the dataset's MiniLM text feature store (extracted once, with Ray Data)."""
    from raypipe.data.registry import resolve_dataset
    from raypipe.features.pipeline import FeatureConfig, extract_features
    from raypipe.runtime import init_ray

    init_ray()
    data = resolve_dataset(dataset)
    features = data / "features"
    if not (features / "manifest.json").exists():
        extract_features(FeatureConfig(dataset=str(data), out=str(features), views=["text"]))
    return features


def test_summary(tests: dict[str, Any]) -> str:
    """Per comparison and subset: the mean paired difference and how many (seed, market) tests it won or
    lost at p < 0.05."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for key, t in tests.items():
        comp, _seed, _market, subset = key.split("/")
        groups.setdefault((comp, subset), []).append(t)
    lines = ["| Comparison | Subset | Mean difference | Better, p < 0.05 | Worse, p < 0.05 | Tests |",
             "|---|---|---:|---:|---:|---:|"]
    for (comp, subset), ts in groups.items():
        better = sum(t["p_value"] < 0.05 and t["diff"] > 0 for t in ts)
        worse = sum(t["p_value"] < 0.05 and t["diff"] < 0 for t in ts)
        lines.append(f"| {comp} | {subset} | {np.mean([t['diff'] for t in ts]):+.4f} | {better} | {worse} | {len(ts)} |")
    return "\n".join(lines)


def write_results(args: argparse.Namespace, argv: list[str] | None, results: dict[str, dict[str, Any]],
                  seeds: list[int], complete: bool) -> None:
    """``<out>.json`` (every run so far) and ``<out>.md`` (the table over the seeds every variant finished)."""
    tests = paired_tests(results, seeds)
    write_json_atomic(Path(args.out + ".json"), {"args": vars(args), "k_percent": KP, "complete": complete,
                                                 "seeds_done": seeds, "results": results,
                                                 "paired_r_ndcg": tests})
    if not seeds:
        return
    md = (f"# PreRec zero-shot on {args.dataset} (seeds {','.join(map(str, seeds))}, mean over seeds"
          f"{'' if complete else '; run in progress'})\n\n"
          f"Command: `python bench/bench_prerec.py {' '.join(argv or sys.argv[1:])}`\n\n"
          + table({v: results[v] for v in results}, seeds)
          + "\n\nPaired bootstrap of per-user r-NDCG@1% (PreRec - other), per seed and market:\n\n"
          + test_summary(tests) + "\n\nEvery test: "
          + "; ".join(f"{k}: {t['diff']:+.4f} (p={t['p_value']:.3f})" for k, t in tests.items()) + "\n")
    write_text_atomic(Path(args.out + ".md"), md)
    if complete:
        print(md)

def report(args: argparse.Namespace, argv: list[str] | None, paths: list[str]) -> None:
    import json

    results: dict[str, dict[str, Any]] = {}
    done: set[int] | None = None
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"--report: no file {path}")
        raw = json.loads(Path(path).read_text())
        seeds = set(raw.get("seeds_done") or [int(s) for s in next(iter(raw["results"].values()))])
        done = seeds if done is None else done & seeds
        for v, runs in raw["results"].items():
            results.setdefault(v, {}).update({s: r for s, r in runs.items() if int(s) in seeds})
    order = [v for v in VARIANTS if v in results]
    write_results(args, argv, {v: results[v] for v in order}, sorted(done or []), complete=True)


if __name__ == "__main__":
    main()
