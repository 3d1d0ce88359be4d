"""Run the leaderboard: every method on every setting and seed, judged the same way, resumable.

Layout under ``storage_path`` (each method in its own directories)::

    <storage>/<setting>/<method>-s<seed>-pretrain/      a run directory (pre-trained methods)
    <storage>/<setting>/<method>-s<seed>-zero_shot/     the pre-trained model on the target, no target training
    <storage>/<setting>/<method>-s<seed>/               the judged run (fine-tuned, trained, or evaluation-only)
    <storage>/<setting>/idp-s<seed>/                    IDP's pipeline directory (its ``idp`` run is judged)
    <storage>/<setting>/results/<method>-s<seed>.json   the judgement: metrics, per-user NDCG@10, cost, curves

A method whose result file exists is not run again (delete the file to re-judge, the run directories to
re-train).  Runs judge nothing themselves (``data.eval_domains=[]``): every method is judged here, on the
target domains' test users (``eval.test_users`` of them per domain, one seeded sample for all methods
and seeds), under

* ``full``: the whole target catalogue, seen items excluded (methods with ``full_ranking``);
* ``sampled``: the target among 100 negatives the user never touched, the same negatives for every
  method (drawn from the evaluation seed);
* ``rerank``: the reference's (SASRec's) top-N shortlist of the same seed re-scored by the method: the
  only protocol of the language-model rerankers, and reported for every method.

Missing-modality robustness: each method that reads feature views is judged again, on its main protocol,
with a seeded share (``absent_shares``) of the items missing each of its modalities in turn (a zero vector
flagged absent in every view of it the run reads, as an item the feature store has no vector of: UniMP's
``image_grid`` loses the image as UniM2Rec's ``image`` does), the same trained weights.  A result file
of a finished run that lacks this check, or whose check skipped a modality the run reads, gets it on the
next run of the benchmark.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from raypipe.benchmark.methods import BUDGETS, METHODS, REFERENCE, Budget, Method, Setting, not_applicable, settings
from raypipe.io import write_json_atomic

log = logging.getLogger(__name__)
KS = (5, 10, 20)
#: training-popularity groups of the target item (few-shot analysis): [0, 5), [5, 20), [20, 100), [100, inf)
FEW_SHOT_EDGES = (0, 5, 20, 100, float("inf"))
EVAL_SEED = 0


@dataclass(frozen=True)
class BenchmarkConfig:
    settings: tuple[str, ...] = ("builtin",)
    size: str = "small"
    methods: tuple[str, ...] = tuple(METHODS)
    budget: str = "short"
    seeds: tuple[int, ...] = (0, 1, 2)
    storage_path: str = "runs/benchmark"
    max_len: int = 50
    tracker: Literal["none", "mlflow", "tensorboard"] = "none"
    #: the same runs judged again (the result files are rewritten; the run directories are reused)
    rejudge: bool = False
    #: shares of the items made to miss each feature view in the missing-modality check (empty: none)
    absent_shares: tuple[float, ...] = (0.5, 1.0)

    @property
    def plan(self) -> Budget:
        return BUDGETS[self.budget]

    def setting_list(self) -> list[Setting]:
        table = settings(self.size)
        return [table[s] for s in self.settings]


def _model_fields(method: Method) -> set[str]:
    from raypipe.config import model_config_class

    name = next((o.split("=", 1)[1] for o in method.model if o.startswith("model.name=")), "sasrec")
    return {f for f in model_config_class(name).__dataclass_fields__}


def common_overrides(cfg: BenchmarkConfig, setting: Setting, method: Method, seed: int) -> list[str]:
    """What every run of the benchmark shares: data, seeds, validation, the judged users, the size."""
    b = cfg.plan
    lm = method.language_model
    out = [f"data.max_len={cfg.max_len}", "data.split_seed=0", f"train.seed={seed}", f"train.patience={b.patience}",
           f"train.valid_users={b.lm_valid_users if lm else b.valid_users}", "train.metric=ndcg@10",
           f"eval.ks=[{','.join(map(str, KS))}]", "eval.exclude_seen=true", f"eval.n_neg={b.n_neg}",
           f"eval.test_users={b.test_users if b.test_users is not None else 'null'}",
           f"run.storage_path={Path(cfg.storage_path) / setting.name}", "data.eval_domains=[]"]
    if lm:
        out += [f"train.max_rows={b.lm_rows}", "train.batch_size=8"]
    else:
        out += [f"train.batch_size={b.batch_size}"]
    if "hidden" in _model_fields(method) and not lm:
        out.append(f"model.hidden={b.hidden}")
    return out


def _epochs(cfg: BenchmarkConfig, method: Method, stage: str) -> list[str]:
    b = cfg.plan
    if method.converge and stage != "pretrain":
        return [f"train.epochs={b.converge_epochs}", f"train.patience={b.converge_patience}"]
    if method.language_model:
        return [f"train.epochs={b.lm_epochs}"]
    if method.per_event:
        return [f"train.epochs={b.event_epochs}"]
    return [f"train.epochs={b.pretrain_epochs if stage == 'pretrain' else b.finetune_epochs}"]


Callbacks = Callable[[str, dict[str, Any]], list[Any]]


def _run(name: str, overrides: list[str], callbacks: Callbacks) -> Path:
    """A finished run directory (reused when its ``metrics.json`` exists); ``callbacks(name, params)``
    gives the tracker's callbacks of a run that really trains."""
    from raypipe.benchmark.tracking import finish
    from raypipe.config import load_config
    from raypipe.features.ondemand import ensure_features
    from raypipe.rundir import METRICS_FILE
    from raypipe.train.run import run_experiment

    cfg = load_config(None, overrides + [f"run.name={name}"])
    run_dir = Path(cfg.run.storage_path) / name
    if (run_dir / METRICS_FILE).is_file():
        log.info("reusing %s", run_dir)
        return run_dir
    t0 = time.time()
    cbs = callbacks(name, {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides if "=" in o})
    try:
        run_experiment(ensure_features(cfg), callbacks=cbs)
    except BaseException:
        finish(cbs, "FAILED")
        raise
    finish(cbs)
    log.info("%s trained in %.0f s", name, time.time() - t0)
    return run_dir


def train_method(cfg: BenchmarkConfig, setting: Setting, method: Method, seed: int,
                 callbacks: Callbacks = lambda name, params: []) -> dict[str, Path]:
    """The method's runs: ``{"judged": run dir, "zero_shot": run dir?, "pretrain": run dir?}``."""
    if method.pipeline == "idp":
        return _train_idp(cfg, setting, seed)
    base = common_overrides(cfg, setting, method, seed) + list(method.model)
    target = [f"data.dataset={setting.target_dataset}"]
    name = f"{method.name}-s{seed}"
    if not method.trains:
        return {"judged": _run(name, base + target + ["run.stage=evaluate"] + list(method.finetune), callbacks)}
    fine = base + target + list(method.finetune) + ["run.stage=finetune", "run.mode=transductive"] + _epochs(
        cfg, method, "finetune")
    if not method.pretrained:
        return {"judged": _run(name, fine, callbacks)}
    pre = _run(f"{name}-pretrain", base + [f"data.dataset={setting.source}", "run.stage=pretrain"] + _epochs(
        cfg, method, "pretrain"), callbacks)
    init = [f"run.init_from={pre}"]
    zero = _run(f"{name}-zero_shot", base + target + list(method.finetune) + init + [
        "run.stage=finetune", "run.mode=zero-shot"], callbacks)
    return {"pretrain": pre, "zero_shot": zero, "judged": _run(name, fine + init, callbacks)}


def _train_idp(cfg: BenchmarkConfig, setting: Setting, seed: int) -> dict[str, Path]:
    from raypipe.pipelines.idp import IDPConfig, run_idp

    b = cfg.plan
    both = [f"data.max_len={cfg.max_len}", "data.split_seed=0", f"train.seed={seed}", f"train.patience={b.patience}",
            f"train.valid_users={b.valid_users}", f"model.hidden={b.hidden}", f"train.batch_size={b.batch_size}",
            f"eval.test_users={b.test_users if b.test_users is not None else 'null'}"]
    idp = IDPConfig(dataset=setting.source, target_dataset=setting.target, storage_path=str(Path(cfg.storage_path) /
                    setting.name), name=f"idp-s{seed}", variants=["idp_zero_shot", "idp"], seed=seed)
    idp = idp.with_overrides(both=both, pretrain=[f"train.epochs={b.pretrain_epochs}"],
                             finetune=[f"train.epochs={b.finetune_epochs}"])
    root = Path(idp.storage_path) / idp.name
    if not all((root / v / "metrics.json").is_file() for v in idp.variants):
        run_idp(idp)
    return {"pretrain": root / "pretrain", "zero_shot": root / "idp_zero_shot", "judged": root / "idp"}


# -- judging ------------------------------------------------------------------------------------------


def judged_domains(prep: Any) -> list[str]:
    return [d for d in prep.info.target_domains if d in set(prep.domains)] or sorted(prep.domains)


def shortlists(run_dir: Path, top_n: int, all_users: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """The reference run's top-``top_n`` shortlist per target domain: ``{domain: {user id: item ids}}``, for
    the users the run is judged on or, with ``all_users``, for every test user of the domain."""
    from raypipe.eval.protocols import first_stage_shortlist
    from raypipe.train.run import judged_set, load_run

    model, prep, rcfg = load_run(run_dir)
    out: dict[str, dict[str, np.ndarray]] = {}
    for d in judged_domains(prep):
        es = judged_set(prep, d, rcfg, all_users=all_users)
        short = first_stage_shortlist(model.score, es, top_n)
        ids = prep.index.item_ids  # index i holds item_ids[i - 1]; 0 is an empty slot
        out[d] = {str(u): np.array([ids[i - 1] if i else "" for i in row], dtype=object)
                  for u, row in zip(es.user_ids, short)}
    return out


def aligned_shortlist(short: dict[str, np.ndarray], es: Any, index: Any) -> np.ndarray:
    """The reference's shortlist (item ids) in a run's own item indices, rows in ``es``'s user order."""
    lookup = {i: k for k, i in enumerate(index.item_ids, start=1)}
    missing = [u for u in map(str, es.user_ids) if u not in short]
    if missing:
        raise ValueError(f"{len(missing)} judged users (e.g. {missing[0]!r}) have no reference shortlist: the runs "
                         "judge different users")
    return np.array([[lookup.get(i, 0) if i else 0 for i in short[str(u)]] for u in es.user_ids], dtype=np.int64)


def _ndcg10(ranks: np.ndarray) -> np.ndarray:
    r = np.nan_to_num(ranks, nan=np.inf)
    return np.where(r <= 10, 1.0 / np.log2(r + 1.0), 0.0)


def can_sample(es: Any, n_neg: int) -> bool:
    """Whether every user has ``n_neg`` untouched catalogue items to draw the sampled protocol from."""
    indptr, indices = es.seen_csr()
    rows = np.repeat(np.arange(es.n_users), np.diff(indptr))
    # touched items of the domain's catalogue (a mixed-flow history also holds other domains' items)
    touched = np.isin(indices, es.catalogue) & (indices != es.target[rows])
    return bool(np.all(es.catalogue.size - np.bincount(rows[touched], minlength=es.n_users) - 1 >= n_neg))


def judge_run(run_dir: Path, method: Method, short: dict[str, dict[str, np.ndarray]] | None,
              n_neg: int = 100) -> dict[str, Any]:
    """Metrics and per-user NDCG@10 of one run under each of its protocols, per judged domain, plus the
    NDCG@10 of the few-shot groups of target items (by training count, on its main protocol)."""
    from raypipe.eval.protocols import evaluate
    from raypipe.train.run import judged_set, load_run

    model, prep, rcfg = load_run(run_dir)
    protocols = (["full", "sampled"] if method.full_ranking else []) + (["rerank"] if short is not None else [])
    out: dict[str, Any] = {"protocols": {}, "few_shot": {}, "skipped": {}, "parameters": int(sum(p.numel() for p in model.parameters())),
                           "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}
    t0 = time.time()
    for d in judged_domains(prep):
        es = judged_set(prep, d, rcfg)
        for protocol in protocols:
            if protocol == "sampled" and not can_sample(es, n_neg):
                out["skipped"].setdefault(protocol, {})[d] = f"some test users have fewer than {n_neg} untouched items"
                continue
            kw: dict[str, Any] = {"protocol": protocol, "ks": KS, "n_neg": n_neg, "seed": EVAL_SEED, "progress": False}
            if protocol == "rerank":
                kw["shortlist"] = aligned_shortlist(short[d], es, prep.index)
            m, ranks = evaluate(model.score, es, return_ranks=True, **kw)
            out["protocols"].setdefault(protocol, {})[d] = {
                "metrics": {k: float(v) for k, v in m.items()},
                "per_user_ndcg@10": dict(zip(map(str, es.user_ids), _ndcg10(ranks).tolist()))}
            if protocol == protocols[0]:  # few-shot groups on the method's main protocol
                counts = prep.counts[es.target]
                group = np.searchsorted(FEW_SHOT_EDGES, counts, side="right") - 1
                out["few_shot"][d] = {str(g): {"ndcg@10": float(_ndcg10(ranks[group == g]).mean()),
                                               "n_users": int((group == g).sum())}
                                      for g in range(len(FEW_SHOT_EDGES) - 1) if (group == g).any()}
        log.info("judged %s on %s (%s)", run_dir.name, d, ", ".join(protocols))
    out["eval_seconds"] = time.time() - t0
    return out


def read_views(run_dir: Path) -> set[str]:
    """The feature views a run reads (with the text and image views a derived cross view comes from)."""
    from raypipe.config import load_config
    from raypipe.rundir import CONFIG_FILE

    data = load_config(run_dir / CONFIG_FILE).data
    if data.features is None:
        return set()
    views = set(data.feature_views)
    return views | ({"text", "image"} if "cross" in views else set())


def modality_views(modality: str, reads: set[str]) -> list[str]:
    """The feature views of ``modality`` (a method's ``views`` entry: ``text`` or ``image``) that a run
    reading ``reads`` takes in: an image is missing from the pooled vector and the region grid alike."""
    from raypipe.features.pipeline import IMAGE_VIEWS

    return [v for v in (IMAGE_VIEWS if modality == "image" else (modality,)) if v in reads]


def judge_absent(run_dir: Path, method: Method, short: dict[str, dict[str, np.ndarray]] | None,
                 shares: tuple[float, ...], n_neg: int = 100) -> dict[str, Any]:
    """NDCG@10 and HR@10 of a run on its main protocol (``full``, else ``rerank``) with ``share`` of the
    items missing one of its modalities (every view of it the run reads, the same items), for each
    modality the method reads and each share; the items are a seeded sample, the same for every method.
    Modalities the run reads no view of are listed under ``skipped``."""
    from raypipe.eval.protocols import evaluate
    from raypipe.train.run import judged_set, load_run

    proto = "full" if method.full_ranking else "rerank"
    reads = read_views(run_dir)
    views = {m: modality_views(m, reads) for m in method.views}
    out: dict[str, Any] = {"protocol": proto, "views": {}, "skipped": sorted(m for m, vs in views.items() if not vs)}
    for view in [m for m in method.views if views[m]]:
        for share in shares:
            model, prep, rcfg = load_run(run_dir, absent={v: share for v in views[view]})
            for d in judged_domains(prep):
                es = judged_set(prep, d, rcfg)
                kw: dict[str, Any] = {"protocol": proto, "ks": KS, "n_neg": n_neg, "seed": EVAL_SEED, "progress": False}
                if proto == "rerank":
                    if short is None:
                        raise ValueError(f"{method.name}: the rerank protocol needs the reference's shortlists")
                    kw["shortlist"] = aligned_shortlist(short[d], es, prep.index)
                m = evaluate(model.score, es, **kw)
                out["views"].setdefault(view, {}).setdefault(f"{share:g}", {})[d] = {
                    "ndcg@10": float(m["ndcg@10"]), "hr@10": float(m["hr@10"])}
            log.info("judged %s with %.0f%% of the items missing %s", run_dir.name, 100 * share, view)
    return out


def _wants_absent(cfg: BenchmarkConfig, method: Method, res: dict[str, Any]) -> bool:
    """A finished result lacks the missing-modality check, or its check skipped a modality the run reads
    (a result of a version that did not map ``image`` onto UniMP's ``image_grid``)."""
    if not (cfg.absent_shares and method.views and res.get("status") == "done"):
        return False
    if "absent" not in res:
        return True
    skipped = res["absent"].get("skipped") or []
    return bool(skipped) and any(modality_views(m, read_views(Path(res["runs"]["judged"]))) for m in skipped)


def run_cost(runs: dict[str, Path]) -> dict[str, Any]:
    """Training cost over a method's runs: seconds, median samples/s of the judged run's training, peak
    worker memory, epochs, and the validation curve of each trained run."""
    from raypipe.rundir import METRICS_FILE

    cost: dict[str, Any] = {"train_seconds": 0.0, "peak_rss_mb": None, "curves": {}, "epochs": {}}
    for stage, run_dir in runs.items():
        f = run_dir / METRICS_FILE
        if not f.is_file():
            continue
        m = json.loads(f.read_text())
        cost["train_seconds"] += float(m.get("train_seconds") or 0.0)
        hist = m.get("history") or []
        if hist:
            cost["epochs"][stage] = len(hist)
            cost["curves"][stage] = [h.get("valid/ndcg@10") for h in hist]
            peaks = [h["peak_rss_mb"] for h in hist if "peak_rss_mb" in h]
            if peaks:
                cost["peak_rss_mb"] = max(peaks + [cost["peak_rss_mb"] or 0.0])
            if stage == "judged" or "samples_per_s" not in cost:
                cost["samples_per_s"] = float(np.median([h["samples_per_s"] for h in hist]))
    return cost


def result_path(cfg: BenchmarkConfig, setting: Setting, method: str, seed: int) -> Path:
    return Path(cfg.storage_path) / setting.name / "results" / f"{method}-s{seed}.json"


Shortlists = Callable[[Path], "dict[str, dict[str, np.ndarray]] | None"]


def run_method(cfg: BenchmarkConfig, setting: Setting, method: Method, seed: int, shortlist_of: Shortlists,
               callbacks: Callbacks) -> dict[str, Any]:
    """Train (or reuse) and judge one method; ``shortlist_of(judged run)`` gives the reference's shortlists
    (the reference's own judged run makes them)."""
    out = result_path(cfg, setting, method.name, seed)
    if out.is_file() and not cfg.rejudge:
        res = json.loads(out.read_text())
        log.info("%s/%s seed %d: finished earlier (%s)", setting.name, method.name, seed, out)
        if _wants_absent(cfg, method, res):  # a result of an earlier version: add the missing-modality check
            judged = Path(res["runs"]["judged"])
            res["absent"] = judge_absent(judged, method, None if method.full_ranking else shortlist_of(judged),
                                         cfg.absent_shares, cfg.plan.n_neg)
            write_json_atomic(out, res)
        return res
    reason = not_applicable(method, setting)
    if reason:
        res: dict[str, Any] = {"method": method.name, "seed": seed, "status": "not_applicable", "reason": reason}
    else:
        runs = train_method(cfg, setting, method, seed, callbacks)
        short = shortlist_of(runs["judged"])
        res = {"method": method.name, "seed": seed, "status": "done", "runs": {k: str(v) for k, v in runs.items()},
               "judged": judge_run(runs["judged"], method, short, cfg.plan.n_neg), "cost": run_cost(runs)}
        if "zero_shot" in runs:
            res["zero_shot"] = judge_run(runs["zero_shot"], method, short, cfg.plan.n_neg)
        if _wants_absent(cfg, method, res):
            res["absent"] = judge_absent(runs["judged"], method, short, cfg.absent_shares, cfg.plan.n_neg)
    from raypipe.meta import run_meta

    res["meta"] = run_meta({"train": seed, "split": 0, "eval": EVAL_SEED})
    write_json_atomic(out, res)
    return res


def run_benchmark(cfg: BenchmarkConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every (setting, seed, method), the reference first in each seed; then the report's data."""
    from raypipe.benchmark.tracking import tracker_callbacks

    results: dict[str, Any] = {}
    methods = [METHODS[REFERENCE]] + [METHODS[m] for m in cfg.methods if m != REFERENCE]
    todo = [(s, seed, m) for s in cfg.setting_list() for seed in cfg.seeds for m in methods]
    cache: dict[tuple[str, int], Any] = {}

    def shortlist_for(setting: Setting, seed: int) -> Shortlists:
        def of(judged: Path) -> dict[str, dict[str, np.ndarray]] | None:
            key = (setting.name, seed)
            if key not in cache:  # the reference comes first: its own judged run is `judged`
                ref = Path(results[setting.name][str(seed)][REFERENCE]["runs"]["judged"]) \
                    if REFERENCE in results.get(setting.name, {}).get(str(seed), {}) else judged
                cache[key] = shortlists(ref, cfg.plan.rerank_top_n)
            return cache[key]
        return of

    for i, (setting, seed, method) in enumerate(todo, 1):
        progress(f"[{i}/{len(todo)}] {setting.name} seed {seed}: {method.name}")
        res = run_method(cfg, setting, method, seed, shortlist_for(setting, seed),
                         lambda name, params, s=setting: tracker_callbacks(cfg.tracker, Path(cfg.storage_path),
                                                                           s.name, name, params))
        if method.name == REFERENCE and res["status"] != "done":
            raise RuntimeError(f"the reference {REFERENCE} did not run on {setting.name}: {res.get('reason')}")
        results.setdefault(setting.name, {}).setdefault(str(seed), {})[method.name] = res
    return results
