"""UPSR benchmarks: batched vs per-candidate perplexity scoring, and the Table 3 / Table 4 analogue.

    python bench/bench_upsr.py scoring --out bench/results/upsr
    python bench/bench_upsr.py quality --seeds 0 --pre-epochs 3 --ft-epochs 4 --out bench/results/upsr
    python bench/bench_upsr.py attributes --seeds 0 --pre-epochs 3 --ft-epochs 4 --out bench/results/upsr
    python bench/bench_upsr.py rerank --seeds 0 --depths 20,50,100 --out bench/results/upsr_rerank

``scoring``: one history of ``--short`` and one of ``--long`` items (their prompt lengths in tokens are
recorded), 100 candidates each; candidates scored per second by ``UPSR.score`` (each history encoded
once, the decoder prefix cached, all candidates in batched decoder passes) and by
``UPSR.score_per_candidate`` (an encoder and a decoder pass per pair); ``scoring_speedup`` is their
ratio.  Then the wall time of the sampled-100 protocol (101 candidates per user) over real test users,
per 1,000 users.  The model is untrained: speed does not depend on the weights.

``quality``: a generated benchmark with ``--items`` items per domain (so that 100 negatives can be
sampled in every domain; the embedded ``tiny`` has 60, ``small`` is beyond a CPU budget for UPSR),
3 source and 3 target domains.  Every model is judged on the target domains' leave-one-out test users
with the paper's protocol: the target among 100 sampled negatives the user never touched, HR@1/5/10 and
NDCG@5/10.  Rows: BERT4Rec and SASRec trained on each target (from scratch); UPSR (MiniLM enc-dec) and
UPSR (random small T5 + catalogue tokenizer) pre-trained on the sources (C→T text), then fine-tuned per
target (C→T→DPT text); zero-shot (Table 4 analogue): UPSR with and without pre-training, no target
training.  Paired bootstrap of per-user NDCG@10, UPSR (MiniLM) vs each other row, and zero-shot UPSR with
vs without pre-training.  ``--reference PATH`` takes the rows this invocation does not run (e.g. the
MiniLM ones, with ``--backbones t5random``) from an earlier ``quality`` JSON of the same benchmark; the
baselines are trained again first, and the reference is refused unless they judge the same test users
(their per-user rank agreement with the reference is recorded).

``attributes`` (§4.5, on one target domain, ``--attr-target``, default the first; the same protocol):
Tables 5-6, UPSR (single) fine-tuned on the target without pre-training with the item text T, C→T,
C→T→D (attribute sets) and T→C→D, D→C→T (orders); Table 7, pre-training / fine-tuning text T/T,
CT/CT, CTD/CTD and CT/CTD; Table 8, the same strategies zero-shot (pre-trained, no target training).
C = category, T = title, D = brand, price and description (``model.template=upsr:<order>``).

``rerank`` (Fig. 2, on ``--attr-target``): SASRec and BERT4Rec trained on the target, and the UPSR rows of
``--rerank-rows`` (attribute rows; their runs are shared with ``attributes``).  SASRec's top N (the user's
seen items excluded), for each N of ``--depths``, is re-ranked by every row, by SASRec itself (its own
order) and by a uniformly random order; a target outside the top N is a miss.  Each row scores the top
max(N) once (``rerank_depths``).  Paired bootstrap of per-user NDCG@10, UPSR CT/CT − each row, per N and
on the sampled-100 protocol.  Also ``<out>.png``: NDCG@10 and HR@10 against N.

Raw results: ``<out>.json`` (every part; each run invocation merges its part) and ``<out>.md``.
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

from raypipe.io import save_figure_atomic, write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("bench_upsr")
KS = [1, 5, 10]
METRICS = ["hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10"]
REF = "upsr_minilm"
#: pairs beside ``REF`` vs every row: (a, b) tested as a − b when both rows exist
EXTRA_PAIRS = [("upsr_minilm_zero_shot", "upsr_minilm_zero_shot_no_pretrain"),
               ("upsr_t5random", "upsr_t5random_zero_shot")]
#: ``attributes``: every row is paired against the first of these it ran (UPSR's choice of text, with
#: pre-training, else without), and these pairs as a − b: the category's effect (without and with
#: pre-training), UPSR's order against the other two (Table 6), pre-training's effect with each target
#: text, and zero-shot in the pre-training format against the fine-tuning format and against title-only
#: text (Table 8)
ATTR_REFS = ("CT/CTD", "single CTD")
ATTR_EXTRA_PAIRS = [("single CT", "single T"), ("CT/CT", "T/T"), ("single CTD", "single TCD"),
                    ("single CTD", "single DCT"), ("CT/CTD", "single CTD"),
                    ("CT/CT", "single CT"), ("T/T", "single T"), ("zero-shot CT/CT", "zero-shot CT/CTD"),
                    ("zero-shot CT/CT", "zero-shot T/T")]


def mini_dataset(args: argparse.Namespace) -> Path:
    """The generated benchmark of ``--items`` items per domain and ``--users`` users (written once)."""
    from raypipe.data import builtin

    out = Path(args.data_dir) / f"upsr-i{args.items}-u{args.users}-e{args.events:g}"
    if not (out / "dataset.json").exists():
        builtin.write(out, builtin.BenchmarkConfig(n_items_per_domain=args.items, n_users=args.users,
                                                   mean_events=args.events))
    return out


# -- scoring --------------------------------------------------------------------------------------------


def scoring(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from raypipe.config import load_config
    from raypipe.eval.protocols import evaluate
    from raypipe.models.registry import build_model
    from raypipe.train.run import item_catalogue, prepare_for, resolve_dataset

    torch.set_num_threads(args.threads)
    data = mini_dataset(args)
    cfg = load_config(None, ["model.name=upsr", f"data.dataset={data}", "model.template=upsr_finetune",
                             f"data.max_len={args.long}"])
    prep = prepare_for(cfg.data)
    catalogue = item_catalogue(cfg, prep, resolve_dataset(cfg.data.dataset))
    torch.manual_seed(0)
    model = build_model(cfg.model, catalogue).eval()
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"threads": args.threads, "candidates": 100, "backbone": "minilm",
                           "template": "upsr_finetune", "cases": {}}
    for label, n_items in (("short", args.short), ("long", args.long)):
        hist = torch.from_numpy(rng.choice(np.arange(1, catalogue.num_items + 1), size=(args.users_batched, n_items)))
        cands = torch.from_numpy(rng.choice(np.arange(1, catalogue.num_items + 1), size=(args.users_batched, 100)))
        tokens = len(model.encoder_input([int(i) for i in hist[0]] + [0], {n_items})[0])
        with torch.inference_mode():
            model.score(hist[:1], cands[:1, :10])  # warm-up
            t0 = time.perf_counter()
            batched = model.score(hist, cands)
            t_b = time.perf_counter() - t0
            t0 = time.perf_counter()
            naive = model.score_per_candidate(hist[: args.users_naive], cands[: args.users_naive])
            t_n = time.perf_counter() - t0
        diff = float((batched[: args.users_naive] - naive).abs().max())
        rate_b = hist.shape[0] * 100 / t_b
        rate_n = args.users_naive * 100 / t_n
        out["cases"][label] = {"history_items": n_items, "prompt_tokens": tokens, "batched_cands_per_s": rate_b,
                               "per_candidate_cands_per_s": rate_n, "speedup": rate_b / rate_n,
                               "max_abs_diff": diff, "users_batched": int(hist.shape[0]),
                               "users_per_candidate": args.users_naive}
        log.info("%s (%d items, %d tokens): batched %.1f cand/s, per-candidate %.1f cand/s, %.1fx (max diff %.1e)",
                 label, n_items, tokens, rate_b, rate_n, rate_b / rate_n, diff)
    out["scoring_speedup"] = out["cases"]["long"]["speedup"]
    # the sampled-100 protocol on real test users of the target domains (history window: --long items)
    target = max(prep.info.target_domains, key=lambda d: prep.eval_set("test", d, args.long).catalogue.size)
    es = prep.eval_set("test", target, args.long)
    indptr, _ = es.seen_csr()
    fits = np.flatnonzero(es.catalogue.size - np.diff(indptr) - 1 >= 100)  # users 100 negatives exist for
    if not fits.size:
        raise SystemExit(f"no test user of {target} has 100 untouched items: raise --items")
    es = es.subset(fits[: args.protocol_users])
    t0 = time.perf_counter()
    with torch.inference_mode():
        evaluate(model.score, es, protocol="sampled", n_neg=100, ks=tuple(KS), progress=False)
    wall = time.perf_counter() - t0
    out["sampled_protocol"] = {"domain": target, "users": es.n_users, "catalogue": int(es.catalogue.size), "seconds": wall,
                               "seconds_per_1000_users": wall / es.n_users * 1000, "history_items": args.long}
    log.info("sampled-100 protocol: %d users in %.1f s (%.0f s per 1,000 users)", es.n_users, wall,
             wall / es.n_users * 1000)
    return out


# -- quality --------------------------------------------------------------------------------------------


def _base(args: argparse.Namespace, data: Path, seed: int) -> list[str]:
    return [f"data.dataset={data}", f"data.max_len={args.max_len}", f"train.seed={seed}",
            "eval.protocol=sampled", "train.valid_protocol=sampled", "eval.n_neg=100", f"eval.ks={KS}",
            "train.metric=ndcg@10", f"train.valid_users={args.valid_users}", f"run.storage_path={args.runs}"] \
        + ([f"eval.test_users={args.test_users}"] if args.test_users else [])


def _run(args: argparse.Namespace, name: str, overrides: list[str]) -> dict[str, Any]:
    from raypipe.config import load_config
    from raypipe.rundir import RANKS_FILE, load_ranks
    from raypipe.train.run import run_experiment

    run_dir = Path(args.runs) / name
    if not (args.reuse and (run_dir / "metrics.json").exists()):
        cfg = load_config(None, overrides + [f"run.name={name}"])
        t0 = time.time()
        run_experiment(cfg)
        log.info("%s: %.0f s", name, time.time() - t0)
    m = json.loads((run_dir / "metrics.json").read_text())
    ranks = load_ranks(run_dir) if (run_dir / RANKS_FILE).exists() else {}  # a pre-training run judges no target
    ranks = {d: {str(u): r for u, r in users.items()} for d, users in ranks.items()}  # as JSON keeps them
    return {"run": str(run_dir), "test": m["test"], "protocols": m.get("protocols", {}),
            "best_epoch": m["best_epoch"], "train_seconds": m["train_seconds"], "ranks": ranks,
            "history": [{k: v for k, v in h.items() if k in ("epoch", "train_loss", "valid/ndcg@10")}
                        for h in m["history"]]}


def sampled_targets(args: argparse.Namespace, data: Path) -> list[str]:
    """``--targets`` (default: every target domain), each checked before Ray starts: every test user must
    have 100 untouched items in the domain's (k-cored) catalogue to draw the protocol's negatives from."""
    from raypipe.config import load_config
    from raypipe.train.run import prepare_for

    prep = prepare_for(load_config(None, [f"data.dataset={data}", f"data.max_len={args.max_len}"]).data)
    targets = args.targets or prep.info.target_domains
    unknown = sorted(set(targets) - set(prep.info.target_domains))
    if unknown:
        raise SystemExit(f"--targets: {unknown} are not target domains of {data}: {prep.info.target_domains}")
    for d in targets:
        es = prep.eval_set("test", d, args.max_len)
        indptr, _ = es.seen_csr()
        short = int(np.sum(es.catalogue.size - np.diff(indptr) - 1 < 100))
        if short:
            raise SystemExit(f"--targets: {short} of {es.n_users} test users of {d!r} have fewer than 100 untouched "
                             f"items among its {es.catalogue.size} (after the 5-core); drop {d!r} from --targets "
                             f"or raise --items/--users/--events")
    return list(targets)


def quality(args: argparse.Namespace) -> dict[str, Any]:
    from raypipe.runtime import init_ray

    earlier = {seed: _reference_rows(args.reference, seed) for seed in args.seeds} if args.reference else {}
    data = mini_dataset(args)
    targets = sampled_targets(args, data)
    init_ray(num_cpus=2)
    out: dict[str, Any] = {"dataset": str(data), "items_per_domain": args.items, "users": args.users,
                           "events": args.events, "max_len": args.max_len, "pre_epochs": args.pre_epochs,
                           "ft_epochs": args.ft_epochs, "valid_users": args.valid_users,
                           "test_users": args.test_users, "backbones": args.backbones, "targets": targets,
                           "skipped": args.skip,
                           "seeds": {}}
    ft = ["run.stage=finetune", "run.mode=transductive", f"data.domains=[{','.join(targets)}]"]
    for seed in args.seeds:
        base = _base(args, data, seed)
        runs: dict[str, dict[str, Any]] = {}
        for model in ("bert4rec", "sasrec"):
            runs[model] = _run(args, f"s{seed}-{model}", base + ft + [f"model.name={model}",
                                                                  f"train.epochs={args.id_epochs}"])
        reference = reference_runs(args.reference, earlier[seed], runs) if args.reference else {}
        upsr_train = [f"train.batch_size={args.batch_size}", f"train.optim.grad_accum={args.grad_accum}",
                      "train.optim.warmup_steps=10", "train.patience=2"]
        for label, backbone in (("minilm", "minilm"), ("t5random", "t5-random")):
            if label not in args.backbones:
                continue
            pre = _run(args, f"s{seed}-upsr_{label}-pre", base + upsr_train + [
                "run.stage=pretrain", "model.name=upsr", f"model.backbone={backbone}",
                f"train.epochs={args.pre_epochs}", "data.eval_domains=[]"])
            init = [f"run.init_from={pre['run']}"]
            runs[f"upsr_{label}"] = _run(args, f"s{seed}-upsr_{label}-ft", base + ft + upsr_train + init + [
                "model.name=upsr", f"model.backbone={backbone}", f"train.epochs={args.ft_epochs}"])
            runs[f"upsr_{label}_zero_shot"] = _run(args, f"s{seed}-upsr_{label}-zs", base + init + ft[2:] + [
                "run.stage=finetune", "run.mode=zero-shot", "model.name=upsr", f"model.backbone={backbone}"])
            if label == "minilm" and "upsr_minilm_zero_shot_ct" not in args.skip:
                # Table 8 analogue: the zero-shot text in the pre-training format (C→T)
                runs["upsr_minilm_zero_shot_ct"] = _run(args, f"s{seed}-upsr_minilm-zs-ct", base + init + ft[2:] + [
                    "run.stage=finetune", "run.mode=zero-shot", "model.name=upsr", "model.backbone=minilm",
                    "model.template=upsr_pretrain"])
            if label == "minilm":
                runs["upsr_minilm_zero_shot_no_pretrain"] = _run(args, f"s{seed}-upsr_minilm-zs-raw", base + ft[2:] + [
                    "run.stage=finetune", "run.mode=zero-shot", "model.name=upsr", "model.backbone=minilm"])
        agreement = reference.pop("_agreement", None)
        for name, r in reference.items():
            runs.setdefault(name, r)
        block: dict[str, Any] = {"runs": runs, "paired": paired(runs, seed), "paired_extra": paired_extra(runs, seed)}
        if agreement is not None:
            block["reference"] = {"path": args.reference, "baseline_rank_agreement": agreement,
                                  "rows": sorted(n for n, r in runs.items() if r.get("from") == args.reference)}
        out["seeds"][str(seed)] = block
    return out


def _reference_rows(path: str, seed: int) -> dict[str, Any]:
    """``quality`` runs of ``seed`` in the JSON at ``path`` (SystemExit naming the file when there are none)."""
    try:
        q = json.loads(Path(path).read_text()).get("quality", {})
    except (OSError, ValueError) as e:
        raise SystemExit(f"--reference {path}: not a readable benchmark JSON ({e})") from None
    ref = q.get("seeds", {}).get(str(seed), {}).get("runs")
    if not ref:
        raise SystemExit(f"--reference {path}: no quality runs for seed {seed}")
    return ref


def reference_runs(path: str, ref: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rows ``ref`` of the ``--reference`` JSON at ``path`` (one seed's, from ``_reference_rows``), each
    marked ``from``, plus ``_agreement``: per baseline and target, the share of test users whose rank of
    the target is the same as in the reference.  Refused (SystemExit) unless the baselines judge the same
    test users there."""
    agreement: dict[str, dict[str, float]] = {}
    for model, r in baselines.items():
        if model not in ref:
            raise SystemExit(f"--reference {path}: no {model!r} row to check the test users against")
        agreement[model] = {}
        for d, users in r["ranks"].items():
            theirs = ref[model]["ranks"].get(d, {})
            if set(users) != set(theirs):
                raise SystemExit(f"--reference {path}: {model} judges other test users of {d!r} there "
                                 f"({len(set(users) ^ set(theirs))} differ): not the same benchmark")
            agreement[model][d] = float(np.mean([users[u] == theirs[u] for u in users]))
    log.info("--reference: baseline rank agreement %s", agreement)
    return {**{n: {**r, "from": path} for n, r in ref.items()}, "_agreement": agreement}


#: §4.5: (pre-training text or None = no pre-training, target text, zero-shot?) per row
ATTRIBUTE_ROWS: dict[str, tuple[str | None, str, bool]] = {
    "single T": (None, "T", False), "single CT": (None, "CT", False), "single CTD": (None, "CTD", False),
    "single TCD": (None, "TCD", False), "single DCT": (None, "DCT", False),
    "T/T": ("T", "T", False), "CT/CT": ("CT", "CT", False), "CTD/CTD": ("CTD", "CTD", False),
    "CT/CTD": ("CT", "CTD", False),
    "zero-shot T/T": ("T", "T", True), "zero-shot CT/CT": ("CT", "CT", True),
    "zero-shot CTD/CTD": ("CTD", "CTD", True), "zero-shot CT/CTD": ("CT", "CTD", True),
}


def _attr_target(args: argparse.Namespace) -> tuple[Path, str]:
    """The benchmark and ``--attr-target`` (default: its first target domain), checked."""
    from raypipe.data.dataset import CanonicalDataset
    from raypipe.data.registry import resolve_dataset

    data = mini_dataset(args)
    info = CanonicalDataset.open(resolve_dataset(str(data))).info
    target = args.attr_target or info.target_domains[0]
    if target not in info.target_domains:
        raise SystemExit(f"--attr-target {target!r} is not a target domain of {data}: {info.target_domains}")
    return data, target


def _checked_rows(rows: list[str], option: str) -> list[str]:
    unknown = set(rows) - set(ATTRIBUTE_ROWS)
    if unknown:
        raise SystemExit(f"{option}: unknown rows {sorted(unknown)}; choose from {list(ATTRIBUTE_ROWS)}")
    return rows


def _attribute_run(args: argparse.Namespace, base: list[str], target: str, seed: int, name: str,
                   pre: dict[str, str]) -> dict[str, Any]:
    """One row of ``ATTRIBUTE_ROWS`` (MiniLM enc-dec) on ``target``; ``pre`` caches the pre-training run of
    each pre-training text (trained here when missing)."""
    pre_text, text, zero = ATTRIBUTE_ROWS[name]
    train = [f"train.batch_size={args.batch_size}", f"train.optim.grad_accum={args.grad_accum}",
             "train.optim.warmup_steps=10", "train.patience=2", "model.name=upsr", "model.backbone=minilm"]
    if pre_text is not None and pre_text not in pre:
        pre[pre_text] = _run(args, f"s{seed}-attr-pre-{pre_text}", base + train + [
            "run.stage=pretrain", f"model.template=upsr:{pre_text}", f"train.epochs={args.pre_epochs}",
            "data.eval_domains=[]"])["run"]
    init = [f"run.init_from={pre[pre_text]}"] if pre_text is not None else []
    stage = ["run.stage=finetune", "run.mode=zero-shot"] if zero else [
        "run.stage=finetune", "run.mode=transductive", f"train.epochs={args.ft_epochs}"]
    return _run(args, f"s{seed}-attr-{name.replace(' ', '_').replace('/', '-')}", base + train + init + stage
                + [f"data.domains=[{target}]", f"model.template=upsr:{text}"])


def attributes(args: argparse.Namespace) -> dict[str, Any]:
    """UPSR §4.5 (Tables 5-8) on one target domain, the MiniLM enc-dec backbone."""
    from raypipe.runtime import init_ray

    rows = _checked_rows(args.attr_rows or list(ATTRIBUTE_ROWS), "--attr-rows")
    data, target = _attr_target(args)
    init_ray(num_cpus=2)
    out: dict[str, Any] = {"dataset": str(data), "target": target, "pre_epochs": args.pre_epochs,
                           "ft_epochs": args.ft_epochs, "rows": rows, "seeds": {}}
    for seed in args.seeds:
        base = _base(args, data, seed)
        pre: dict[str, str] = {}
        runs = {name: _attribute_run(args, base, target, seed, name, pre) for name in rows}
        out["seeds"][str(seed)] = attribute_block(runs, seed)
    return out


def attribute_block(runs: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    """One seed's attribute rows with their paired tests: every row against the first of ``ATTR_REFS``
    that ran (``ref``; None and no such tests when neither did), and ``ATTR_EXTRA_PAIRS``."""
    ref = next((r for r in ATTR_REFS if r in runs), None)
    return {"runs": runs, "ref": ref, "paired": paired(runs, seed, ref=ref) if ref else {},
            "paired_extra": paired_extra(runs, seed, ATTR_EXTRA_PAIRS)}


def _ndcg_pair(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]], d: str, seed: int) -> dict[str, Any]:
    from raypipe.eval.significance import paired_ndcg

    return paired_ndcg(a[d], b.get(d, {}), seed=seed).as_dict()


def paired_extra(runs: dict[str, dict[str, Any]], seed: int,
                 pairs: list[tuple[str, str]] = EXTRA_PAIRS) -> dict[str, Any]:
    """``pairs`` present in ``runs``, keyed ``"a − b"``: paired bootstrap of per-user NDCG@10."""
    return {f"{a} − {b}": {d: _ndcg_pair(runs[a]["ranks"], runs[b]["ranks"], d, seed) for d in runs[a]["ranks"]}
            for a, b in pairs if a in runs and b in runs}


def paired(runs: dict[str, dict[str, Any]], seed: int, ref: str = REF) -> dict[str, Any]:
    """``ref`` (UPSR, MiniLM) vs every other row: paired bootstrap of per-user NDCG@10 over each target's
    users."""
    if ref not in runs:
        return {}
    return {other: {d: _ndcg_pair(runs[ref]["ranks"], r["ranks"], d, seed) for d in runs[ref]["ranks"]}
            for other, r in runs.items() if other != ref}


# -- rerank ---------------------------------------------------------------------------------------------

#: ``rerank``: first-stage model whose top-N every row re-ranks; the baselines trained beside it
FIRST_STAGE = "sasrec"
RERANK_BASELINES = ("sasrec", "bert4rec")
RERANK_REF = "CT/CT"


def _constant(history: Any, candidates: Any) -> Any:
    """Every candidate scores 0: the protocol's tie-breaking makes this a uniformly random re-ranking."""
    import torch

    return torch.zeros(history.shape[0], candidates.shape[-1])


def rerank(args: argparse.Namespace, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """UPSR's Fig. 2 on one target domain: SASRec's top-N (seen items excluded) re-ranked by each row, for
    each N of ``--depths``; the target counts as a miss when it is outside the top N.  With ``--reuse``, a
    row that ``previous`` (the out JSON's ``rerank``) already judged with the same settings is not scored
    again (its run, users and ranks are kept; the pairs are computed afresh)."""
    from raypipe.benchmark.runner import aligned_shortlist, shortlists
    from raypipe.eval.metrics import compute_metrics
    from raypipe.eval.protocols import EvalConfig, rerank_depths
    from raypipe.runtime import init_ray
    from raypipe.train.run import judged_set, load_run

    rows = _checked_rows(args.rerank_rows, "--rerank-rows")
    depths = sorted(set(args.depths))
    if not depths or depths[0] < 1:
        raise SystemExit(f"--depths: shortlist sizes must be positive, got {args.depths}")
    data, target = _attr_target(args)
    init_ray(num_cpus=2)
    out: dict[str, Any] = {"dataset": str(data), "target": target, "first_stage": FIRST_STAGE, "depths": depths,
                           "pre_epochs": args.pre_epochs, "ft_epochs": args.ft_epochs, "id_epochs": args.id_epochs,
                           "rows": ["random", *RERANK_BASELINES, *rows], "all_users": args.rerank_all_users,
                           "seeds": {}}
    for seed in args.seeds:
        base = _base(args, data, seed)
        ft = ["run.stage=finetune", "run.mode=transductive", f"data.domains=[{target}]"]
        runs = {m: _run(args, f"s{seed}-{target}-{m}", base + ft + [f"model.name={m}", f"train.epochs={args.id_epochs}"])
                for m in RERANK_BASELINES}
        pre: dict[str, str] = {}
        runs.update({name: _attribute_run(args, base, target, seed, name, pre) for name in rows})
        short = shortlists(Path(runs[FIRST_STAGE]["run"]), depths[-1], args.rerank_all_users)[target]
        judged: dict[str, Any] = {}
        same = previous is not None and args.reuse and all(
            previous.get(k) == out[k] for k in ("dataset", "target", "first_stage", "depths", "all_users"))
        earlier = previous["seeds"].get(str(seed), {}).get("judged", {}) if same else {}
        for name in out["rows"]:
            run = runs[FIRST_STAGE if name == "random" else name]
            if earlier.get(name, {}).get("run") == run["run"]:
                judged[name] = earlier[name]
                log.info("seed %d, %s: re-ranking reused from the earlier %s", seed, name, args.out)
                continue
            model, prep, rcfg = load_run(run["run"])
            es = judged_set(prep, target, rcfg, all_users=args.rerank_all_users)
            t0 = time.time()
            ranks = rerank_depths(_constant if name == "random" else model.score, es,
                                  aligned_shortlist(short, es, prep.index), depths, EvalConfig(seed=rcfg.train.seed))
            seconds = time.time() - t0
            judged[name] = {"run": run["run"], "rerank_seconds": seconds, "sampled": run["test"].get(target),
                            "depths": {str(n): {"metrics": {k: float(v) for k, v in compute_metrics(
                                r, int(es.catalogue.size), ks=KS).items()},
                                "ranks": {str(u): (float(x) if np.isfinite(x) else None)
                                          for u, x in zip(es.user_ids, r)}} for n, r in ranks.items()}}
            log.info("seed %d, %s re-ranked %d users at N=%s in %.0f s: NDCG@10 %s", seed, name, es.n_users, depths,
                     seconds, [round(judged[name]["depths"][str(n)]["metrics"]["ndcg@10"], 4) for n in depths])
        out["seeds"][str(seed)] = rerank_block(judged, runs, seed)
    return out


def _depth_pair(judged: dict[str, Any], a: str, b: str, n: str, seed: int) -> dict[str, Any]:
    """Paired bootstrap of per-user NDCG@10, row ``a`` − row ``b``, re-ranking the top ``n`` (a stored rank
    ``None``: the target was outside the shortlist, NDCG 0)."""
    a_ranks, b_ranks = ({n: {u: np.inf if r is None else r for u, r in judged[row]["depths"][n]["ranks"].items()}}
                        for row in (a, b))
    return _ndcg_pair(a_ranks, b_ranks, n, seed)


def rerank_block(judged: dict[str, Any], runs: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    """One seed of ``rerank``: per depth, the share of users whose target is in SASRec's top N; paired
    bootstraps of per-user NDCG@10: ``paired``, ``RERANK_REF`` − every other row (the text choices), and
    ``vs_baselines``, every UPSR row − each of ``random`` and ``RERANK_BASELINES``; each with the same pair
    on the sampled-100 protocol where both rows have one (the runs' own test ranks, same users and
    negatives), to see where UPSR gains more."""
    depths = next(iter(judged.values()))["depths"]
    recall = {n: float(np.mean([r is not None for r in d["ranks"].values()])) for n, d in depths.items()}
    pairs: dict[str, dict[str, Any]] = {}
    if RERANK_REF in judged:
        pairs = {other: {n: _depth_pair(judged, RERANK_REF, other, n, seed) for n in depths}
                 for other in judged if other != RERANK_REF}
    baselines = ["random", *RERANK_BASELINES]
    upsr = [r for r in judged if r not in baselines]
    vs = {row: {b: {n: _depth_pair(judged, row, b, n, seed) for n in depths} for b in baselines if b in judged}
          for row in upsr}
    sampled = {row: paired(runs, seed, ref=row) for row in upsr if row in runs}
    return {"judged": judged, "first_stage_recall": recall, "paired": pairs,
            "paired_sampled": paired(runs, seed, ref=RERANK_REF), "vs_baselines": vs, "vs_baselines_sampled": sampled}


# -- report ---------------------------------------------------------------------------------------------


def _diff_cell(per: dict[str, Any], d: str) -> str:
    """One paired-bootstrap result of domain ``d`` as a table cell (``–`` when ``d`` was not tested)."""
    return f"{per[d]['diff']:+.4f} (p={per[d]['p_value']:.3f})" if d in per else "–"


def markdown(results: dict[str, Any]) -> str:
    lines = ["# UPSR benchmark", ""]
    sc = results.get("scoring")
    if sc:
        lines += [f"## Scoring 100 candidates ({sc['threads']} torch thread(s), untrained MiniLM enc-dec, "
                  f"{sc['template']} text)", "",
                  "| History | Prompt tokens | Batched cand/s | Per-candidate cand/s | Speed-up | Max abs diff |",
                  "|---|---:|---:|---:|---:|---:|"]
        for label, c in sc["cases"].items():
            lines.append(f"| {label} ({c['history_items']} items) | {c['prompt_tokens']} | "
                         f"{c['batched_cands_per_s']:.1f} | {c['per_candidate_cands_per_s']:.1f} | "
                         f"{c['speedup']:.1f}x | {c['max_abs_diff']:.1e} |")
        p = sc["sampled_protocol"]
        lines += ["", f"Sampled-100 protocol: {p['users']} test users of `{p['domain']}` in {p['seconds']:.1f} s, "
                  f"{p['seconds_per_1000_users']:.0f} s per 1,000 users.", ""]
    q = results.get("quality")
    if q:
        lines += [f"## Target domains, sampled 100 negatives ({q['items_per_domain']} items per domain, "
                  f"{q['users']} users; pre-training {q['pre_epochs']} epochs, fine-tuning {q['ft_epochs']})", ""]
        for seed, block in q["seeds"].items():
            for d in q["targets"]:
                lines += [f"### seed {seed}, `{d}`", "", "| Model | " + " | ".join(METRICS) + " | users |",
                          "|---|" + "---:|" * (len(METRICS) + 1)]
                for name, r in block["runs"].items():
                    m = r["test"].get(d)
                    if m:
                        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in METRICS)
                                     + f" | {int(m['n_users'])} |")
                lines.append("")
            lines += [f"Paired bootstrap, {REF} − other, NDCG@10 (seed {seed}):", "",
                      "| Other | " + " | ".join(q["targets"]) + " |", "|---|" + "---:|" * len(q["targets"])]
            extra = ((f"({pair})", per) for pair, per in block.get("paired_extra", {}).items())
            rows = [*block["paired"].items(), *extra]
            for other, per in rows:
                lines.append(f"| {other} | " + " | ".join(_diff_cell(per, d) for d in q["targets"]) + " |")
            lines.append("")
            ref = block.get("reference")
            if ref:
                agree = "; ".join(f"{m} " + ", ".join(f"{d} {v:.0%}" for d, v in per.items())
                                  for m, per in ref["baseline_rank_agreement"].items())
                lines += [f"Rows from `{ref['path']}` (an earlier invocation): {', '.join(ref['rows'])}. "
                          f"Baselines trained again here rank the target the same as there for: {agree} "
                          "of the test users.", ""]
    a = results.get("attributes")
    if a:
        lines += [f"## Item text attributes and orders (§4.5), target `{a['target']}`, MiniLM enc-dec", "",
                  "C = category, T = title, D = brand + price + description; pre-training / target text "
                  "(`single`: no pre-training). Paired bootstrap of per-user NDCG@10: the reference row "
                  "(UPSR's choice of text: CT/CTD, or single CTD without pre-training) − each row.", ""]
        d = a["target"]
        for seed, block in a["seeds"].items():
            ref = block.get("ref")  # None: neither reference row ran, no such column
            lines += [f"### seed {seed}", "", "| Row | " + " | ".join(METRICS) + " | users |"
                      + (f" {ref} − row |" if ref else ""), "|---|" + "---:|" * (len(METRICS) + 1 + bool(ref))]
            for name, r in block["runs"].items():
                m = r["test"].get(d)
                if m:
                    lines.append(f"| {name} | " + " | ".join(f"{m[k]:.4f}" for k in METRICS) + f" | {int(m['n_users'])} |"
                                 + (f" {_diff_cell(block['paired'].get(name, {}), d)} |" if ref else ""))
            extra = block.get("paired_extra", {})
            if extra:
                lines += ["", "| Pair | " + d + " |", "|---|---:|"]
                lines += [f"| {pair} | {_diff_cell(per, d)} |" for pair, per in extra.items()]
            lines.append("")
    lines += rerank_markdown(results.get("rerank"))
    return "\n".join(lines) + "\n"


def rerank_markdown(rr: dict[str, Any] | None) -> list[str]:
    """The ``rerank`` part's tables: NDCG@10 / HR@10 per row and depth, and the paired tests."""
    if not rr:
        return []
    d, depths = rr["target"], [str(n) for n in rr["depths"]]
    lines = [f"## Re-ranking {rr['first_stage']}'s top N (Fig. 2), target `{d}`", "",
             f"Every row re-ranks the same {rr['first_stage']} top-N shortlist (the user's seen items excluded); a "
             "target outside it is a miss. `random`: a uniformly random order of the shortlist; "
             f"`{rr['first_stage']}`: its own order. UPSR rows as in the attribute table (MiniLM enc-dec). "
             "`sampled`: the same run on the sampled-100 protocol, on its own test users"
             + (" (a sample of those re-ranked here; its paired tests are over that sample)."
                if rr.get("all_users") else " (the same users)."), ""]
    for seed, block in rr["seeds"].items():
        rec = block["first_stage_recall"]
        lines += [f"### seed {seed}", "", "| Row | " + " | ".join(f"NDCG@10 N={n}" for n in depths) + " | "
                  + " | ".join(f"HR@10 N={n}" for n in depths) + " | NDCG@10 sampled | users | s |",
                  "|---|" + "---:|" * (2 * len(depths) + 3)]
        for name in [r for r in rr.get("rows", []) if r in block["judged"]] or list(block["judged"]):
            j = block["judged"][name]
            m = [j["depths"][n]["metrics"] for n in depths]
            samp = f"{j['sampled']['ndcg@10']:.4f}" if j.get("sampled") and name != "random" else "–"
            lines.append(f"| {name} | " + " | ".join(f"{x['ndcg@10']:.4f}" for x in m) + " | "
                         + " | ".join(f"{x['hr@10']:.4f}" for x in m) + f" | {samp} | {len(j['depths'][depths[0]]['ranks'])} | "
                         f"{j['rerank_seconds']:.0f} |")
        lines += ["", f"Targets inside {rr['first_stage']}'s top N: "
                  + ", ".join(f"N={n} {rec[n]:.1%}" for n in depths) + ".", ""]
        if block["paired"]:
            lines += [f"Paired bootstrap of per-user NDCG@10, {RERANK_REF} − row:", "",
                      "| Row | " + " | ".join(f"N={n}" for n in depths) + " | sampled |",
                      "|---|" + "---:|" * (len(depths) + 1)]
            for other in [r for r in rr.get("rows", []) if r in block["paired"]] or list(block["paired"]):
                per = block["paired"][other]
                lines.append(f"| {other} | " + " | ".join(_diff_cell(per, n) for n in depths) + " | "
                             + _diff_cell(block["paired_sampled"].get(other, {}), d) + " |")
            lines.append("")
        vs = block.get("vs_baselines", {})
        for base in ["random", *RERANK_BASELINES]:
            rows = [r for r in rr.get("rows", vs) if base in vs.get(r, {})]
            if not rows:
                continue
            lines += [f"Paired bootstrap of per-user NDCG@10, UPSR row − {base}:", "",
                      "| Row | " + " | ".join(f"N={n}" for n in depths) + " | sampled |",
                      "|---|" + "---:|" * (len(depths) + 1)]
            for r in rows:
                samp = block.get("vs_baselines_sampled", {}).get(r, {}).get(base, {})
                lines.append(f"| {r} | " + " | ".join(_diff_cell(vs[r][base], n) for n in depths) + " | "
                             + _diff_cell(samp, d) + " |")
            lines.append("")
    return lines


def rerank_plot(rr: dict[str, Any], path: Path) -> None:
    """NDCG@10 and HR@10 against the shortlist size N, one line per row, one column per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = list(rr["seeds"])
    fig, axes = plt.subplots(2, len(seeds), figsize=(4.6 * len(seeds), 7), squeeze=False)
    for col, seed in enumerate(seeds):
        for row, metric in enumerate(("ndcg@10", "hr@10")):
            ax = axes[row][col]
            for name in rr["rows"]:
                j = rr["seeds"][seed]["judged"][name]
                ax.plot(rr["depths"], [j["depths"][str(n)]["metrics"][metric] for n in rr["depths"]], marker="o",
                        label=name, linestyle=":" if name == "random" else "-")
            ax.set_xticks(rr["depths"])
            ax.set_xlabel(f"{rr['first_stage']} shortlist size N")
            ax.set_ylabel(metric)
            ax.set_title(f"seed {seed}, {rr['target']}")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"UPSR and baselines re-ranking {rr['first_stage']}'s top N")
    save_figure_atomic(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["scoring", "quality", "attributes", "rerank", "report"])
    p.add_argument("--out", default="bench/results/upsr")
    p.add_argument("--data-dir", default="/tmp/rpdata")
    p.add_argument("--runs", default="/tmp/upsr_runs")
    p.add_argument("--items", type=int, default=150)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--events", type=float, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--short", type=int, default=5)
    p.add_argument("--long", type=int, default=50)
    p.add_argument("--users-batched", type=int, default=8)
    p.add_argument("--users-naive", type=int, default=2)
    p.add_argument("--protocol-users", type=int, default=50)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    p.add_argument("--max-len", type=int, default=10)
    p.add_argument("--pre-epochs", type=int, default=3)
    p.add_argument("--ft-epochs", type=int, default=4)
    p.add_argument("--id-epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--valid-users", type=int, default=100)
    p.add_argument("--targets", type=lambda s: s.split(","), default=None,
                   help="quality: the target domains judged (default: all; each needs 100 untouched items per user)")
    p.add_argument("--skip", type=lambda s: s.split(","), default=[],
                   help="quality: rows left out (upsr_minilm_zero_shot_ct: the Table 8 analogue)")
    p.add_argument("--test-users", type=int, default=None,
                   help="quality/attributes: test users judged per target (eval.test_users; default: all)")
    p.add_argument("--backbones", type=lambda s: s.split(","), default=["minilm", "t5random"])
    p.add_argument("--attr-target", default=None, help="attributes: the target domain (default: the first)")
    p.add_argument("--attr-rows", type=lambda s: s.split(","), default=None,
                   help="attributes: a comma-separated subset of the rows (default: all 13)")
    p.add_argument("--depths", type=lambda s: [int(x) for x in s.split(",")], default=[20, 50, 100],
                   help="rerank: the first-stage shortlist sizes N")
    p.add_argument("--rerank-rows", type=lambda s: s.split(","), default=["CT/CT", "single CT", "single T"],
                   help="rerank: the UPSR rows (attribute rows) that re-rank, beside SASRec and BERT4Rec")
    p.add_argument("--rerank-all-users", action="store_true",
                   help="rerank: judge every test user of the target (default: the runs' own --test-users sample)")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs of an earlier invocation")
    p.add_argument("--reference", default=None,
                   help="quality: an earlier quality JSON whose rows this invocation does not run are kept "
                        "(checked: the baselines trained again judge the same test users)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    path = out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.part == "scoring":
        results["scoring"] = scoring(args)
        results["scoring_speedup"] = results["scoring"]["scoring_speedup"]
    elif args.part == "quality":
        results["quality"] = quality(args)
    elif args.part == "attributes":
        results["attributes"] = attributes(args)
    elif args.part == "rerank":
        results["rerank"] = rerank(args, results.get("rerank"))
    results.setdefault("commands", {})[args.part] = "python bench/bench_upsr.py " + " ".join(argv or sys.argv[1:])
    write_json_atomic(path, results)
    write_text_atomic(out.with_suffix(".md"), markdown(results))
    if results.get("rerank"):
        rerank_plot(results["rerank"], out.with_suffix(".png"))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
