"""The driver of every stage: prepare data, run the Ray Train loop, evaluate, write the run directory.

``run_experiment(cfg)`` is the one library call behind ``jobs/pretrain.py``, ``jobs/finetune.py`` and
``jobs/evaluate.py``.  A run directory (``<storage_path>/<name>/``) holds Ray Train's checkpoints plus:
``config.yaml`` (resolved), ``item_index.parquet``, ``model.pt`` (best weights), ``metrics.json``
(test metrics per domain, validation curve, timings, the node each Train worker ran on) and ``curves.png``.
With a URI ``storage_path`` (``s3://``, ``gs://``, ``file://``) Ray Train's checkpoints go straight to
``<uri>/<name>/``, raypipe's files are written into a local staging directory and published there when the
run has finished (``metrics.json`` last), and ``run.init_from`` URIs are read from a local cached copy
(:mod:`raypipe.storage`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from raypipe import storage
from raypipe.config import ExperimentConfig
from raypipe.data.catalogue import FeatureView, ItemCatalogue, load_views
from raypipe.data.prepare import Prepared, prepare_for
from raypipe.data.registry import resolve_dataset
from raypipe.data.sequences import ItemIndex, seq_columns
from raypipe.eval.metrics import check_metric_name
from raypipe.eval.protocols import EvalSet, auto_protocol, evaluate
from raypipe.io import save_figure_atomic, write_json_atomic
from raypipe.models.registry import build_model, get_spec
from raypipe.meta import run_meta
from raypipe.rundir import (CONFIG_FILE, CURVES_FILE, INDEX_FILE, METRICS_FILE, RANKS_FILE, WEIGHTS_FILE, load_weights,
                            save_weights)
from raypipe.train.finetune import cross_catalogue_state, trainable_filter_for
from raypipe.train.loop import (
    BEST_FILE, ModelFactory, RankingValidator, TrainPayload, load_workers, train_loop_per_worker,
)

log = logging.getLogger(__name__)



@dataclass
class RunResult:
    #: the run directory (with a URI ``storage_path``: the local copy of the published run)
    run_dir: Path
    test: dict[str, dict[str, float]]  # domain -> metrics
    history: list[dict[str, float]]
    best_epoch: int | None
    train_seconds: float
    #: where the run was published when ``storage_path`` is a URI (``None``: a local run)
    uri: str | None = None


def default_run_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.run.stage}-{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def stage_domains(cfg: ExperimentConfig, prep: Prepared) -> tuple[list[str], list[str]]:
    """Training and evaluation domains: pretrain → source domains, finetune/evaluate → target domains
    (all domains when the dataset has no domain of that role)."""
    present = set(prep.domains)
    if cfg.data.domains is not None:
        train = cfg.data.domains
    else:
        role = prep.info.source_domains if cfg.run.stage == "pretrain" else prep.info.target_domains
        train = [d for d in role if d in present] or sorted(present)
    unknown = set(train) - present
    if unknown:
        raise ValueError(f"domains {sorted(unknown)} have no sequences after preprocessing; have {sorted(present)}")
    evals = cfg.data.eval_domains if cfg.data.eval_domains is not None else train
    unknown = set(evals) - present
    if unknown:
        raise ValueError(f"eval domains {sorted(unknown)} have no sequences; have {sorted(present)}")
    return list(train), list(evals)


def item_catalogue(cfg: ExperimentConfig, prep: Prepared, dataset: Path | None = None,
                   run_dir: Path | None = None, save_aligner: bool = False,
                   absent: Mapping[str, float] | None = None) -> ItemCatalogue:
    """The catalogue models see: the prepared item index, training popularity, the configured feature
    views, every interaction event (for popularity statistics) and (for texts and images) the dataset
    directory.  ``run_dir``: the run (a derived cross view's heads are read from, or with ``save_aligner``
    saved into, it); ``absent``: see :func:`load_features`."""
    seqs = prep.sequences
    events = (np.concatenate(list(seqs["items"])).astype(np.int64),
              np.concatenate(list(seqs["timestamps"])).astype(np.int64)) if len(seqs) else None
    views = load_features(cfg, prep.index, run_dir=run_dir, save_aligner=save_aligner, absent=absent)
    return ItemCatalogue(prep.index, prep.counts, views, dataset, events=events)


def derives_cross(cfg: ExperimentConfig) -> bool:
    """Whether the run's ``cross`` view is derived from text and image (the store has no real one)."""
    return (cfg.data.features is not None and "cross" in cfg.data.feature_views
            and "cross" not in store_views(cfg.data.features))


def load_features(cfg: ExperimentConfig, index: ItemIndex, run_dir: Path | None = None,
                  save_aligner: bool = False, absent: Mapping[str, float] | None = None) -> dict[str, FeatureView]:
    """The configured feature views (``data.feature_views`` of ``data.features``) aligned to the index.
    A ``cross`` view the store lacks is derived from its text and image views by
    :mod:`raypipe.features.aligned` (no vision-language weights ship offline), with the heads saved in
    ``run_dir`` or in the run it starts from (``run.init_from``), else fitted anew (and saved into
    ``run_dir`` when ``save_aligner``).  ``absent``: ``{view: share}``, that share of the items lose
    their vector of that view (``text`` or ``image`` of a derived cross view are dropped before it is
    derived, so the cross view keeps what remains), as when a modality is missing at serving time."""
    absent = dict(absent or {})
    if cfg.data.features is None:
        if absent:
            raise ValueError(f"absent views {sorted(absent)}: the run reads no feature views (data.features)")
        return {}
    wanted = list(cfg.data.feature_views)
    derive = derives_cross(cfg)
    names = [v for v in wanted if not (derive and v == "cross")]
    if derive:
        names += [v for v in ("text", "image") if v not in names]
    views = load_views(cfg.data.features, names, index)
    unknown = sorted(set(absent) - set(views))
    if unknown:
        raise ValueError(f"absent views {unknown}: the run reads {sorted(views)} (data.feature_views)")
    views.update({v: views[v].without(share, seed=0) for v, share in absent.items()})
    if derive:
        from raypipe.features.aligned import run_aligner

        # a URI's cached copy (fetched by run_experiment); not fetched here
        init = storage.local_path(cfg.run.init_from, fetch=False) if cfg.run.init_from else None
        aligner = run_aligner(views["text"], views["image"], cfg.train.seed,
                              look_in=[run_dir, init if init is None or init.is_dir() else init.parent],
                              save_to=run_dir if save_aligner else None)
        views["cross"] = aligner.view(views["text"], views["image"])
    return {v: views[v] for v in wanted}


def store_views(features: str) -> list[str]:
    """The views a feature store holds (none for a ``.npy`` array or a directory without a store)."""
    from raypipe.features.store import MANIFEST_FILE, FeatureStore

    if str(features).endswith(".npy") or not (Path(features) / MANIFEST_FILE).is_file():
        return []
    return FeatureStore.open(features).views


def training_rows(cfg: ExperimentConfig, prep: Prepared, domains: list[str],
                  catalogue: ItemCatalogue) -> dict[str, np.ndarray]:
    """The model's training rows (its spec's ``rows``) over the training sequences of ``domains``,
    checked against its batch schema."""
    spec = get_spec(cfg.model.name)
    if "domains" in prep.train.columns:
        train = mixed_training_flows(prep, domains)
    else:
        train = prep.train[prep.train["domain"].isin(domains)].copy()
    train.attrs["train_domains"] = list(domains)
    rows = spec.rows(cfg.model, train, catalogue)
    spec.schema(cfg.model).check(rows)
    return subsample_rows(rows, cfg.train.max_rows, cfg.train.seed)


def subsample_rows(rows: dict[str, np.ndarray], max_rows: int | None, seed: int) -> dict[str, np.ndarray]:
    """At most ``max_rows`` rows, a sample seeded by ``seed`` kept in their original order (all when fewer)."""
    n = len(next(iter(rows.values())))
    if max_rows is None or n <= max_rows:
        return rows
    keep = np.sort(np.random.default_rng([seed, 0x5EED]).choice(n, size=max_rows, replace=False))
    log.info("train.max_rows=%d: training on a seeded sample of %d of %d rows", max_rows, max_rows, n)
    return {k: v[keep] for k, v in rows.items()}


def mixed_training_flows(prep: Prepared, domains: list[str]) -> pd.DataFrame:
    """Mixed cross-domain training flows restricted to the events a stage may read: those of its training
    domains and of the source domains (context).  Pre-training on the sources thus never sees a target
    domain's events; fine-tuning on a target reads the user's source events as context.  Which targets
    train is the model's business (``train.attrs["train_domains"]``)."""
    allowed = set(domains) | {d for d in prep.domains if prep.info.role_of(d) == "source"}
    cols = seq_columns(prep.train)
    out = prep.train.copy()
    keep = [np.isin(np.asarray(ds, dtype=object), list(allowed)) for ds in out["domains"]]
    for c in cols:
        out[c] = pd.Series([np.asarray(v)[k] for v, k in zip(out[c], keep)], index=out.index, dtype=object)
    return out[out["items"].map(len) > 0].reset_index(drop=True)


def valid_sets(prep: Prepared, domains: list[str], max_len: int, budget: int | None, seed: int) -> dict[str, EvalSet]:
    """Per-domain validation sets, jointly sub-sampled (seeded, proportionally) to ``budget`` users."""
    sets = {d: prep.eval_set("valid", d, max_len) for d in domains}
    total = sum(s.n_users for s in sets.values())
    if budget is None or total <= budget:
        return sets
    rng = np.random.default_rng(seed)
    out = {}
    for d, s in sets.items():
        k = max(1, math.ceil(budget * s.n_users / total))
        out[d] = s.subset(np.sort(rng.choice(s.n_users, size=min(k, s.n_users), replace=False)))
    return out


def _init_state(src: Path | None, index: ItemIndex, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The pre-trained weights a run starts from (``src``: ``run.init_from``, local).  Over the same item
    index, all of them; over another catalogue (another dataset: ML-1M -> ML-100k), what a content model can
    carry over (:func:`cross_catalogue_state`: everything but its item- and domain-indexed entries)."""
    if src is None:
        return None
    weights = src / WEIGHTS_FILE if src.is_dir() else src
    if not weights.exists():
        raise FileNotFoundError(f"run.init_from: no {WEIGHTS_FILE} in {src}")
    state = torch.load(weights, map_location="cpu")
    idx_file = weights.parent / INDEX_FILE
    if idx_file.exists():
        other = ItemIndex.load(idx_file)
        if not np.array_equal(other.item_ids, index.item_ids):
            state, dropped = cross_catalogue_state(model, state, str(idx_file))
            log.info("starting from %s over another catalogue (%d pre-trained items, %d here): %d entries carried "
                     "over, %s initialised afresh", src, len(other.item_ids), len(index.item_ids), len(state),
                     dropped)
    return state


def eval_protocol(cfg: ExperimentConfig, es: EvalSet, what: str = "eval") -> str:
    """The protocol of ``eval.protocol`` (``what="eval"``) or ``train.valid_protocol`` (``"valid"``) on one
    domain's users: ``auto`` is the model spec's protocol, and a ``sampled`` spec protocol ranks the whole
    catalogue instead where some user has fewer than ``eval.n_neg`` items left to sample (a catalogue that
    small is cheaper to rank whole than to sample from).  An explicit ``sampled`` is never changed."""
    value = cfg.eval.protocol if what == "eval" else cfg.train.valid_protocol
    if value != "auto":
        return value
    return auto_protocol(get_spec(cfg.model.name).protocol, es, cfg.eval.n_neg)


def judged_set(prep: Prepared, domain: str, cfg: ExperimentConfig, split: str = "test",
               all_users: bool = False) -> EvalSet:
    """The users a run is judged on in ``domain``: all of them, or ``eval.test_users`` of them (a sample
    seeded by ``data.split_seed`` and the domain's name, so every run of a comparison sees the same users);
    ``all_users``: every user of the split, whatever ``eval.test_users`` says."""
    es = prep.eval_set(split, domain, cfg.data.max_len)
    cap = cfg.eval.test_users
    if all_users or cap is None or es.n_users <= cap:
        return es
    seed = [cfg.data.split_seed, *domain.encode()]
    keep = np.sort(np.random.default_rng(seed).choice(es.n_users, size=cap, replace=False))
    return es.subset(keep)


def repeated_targets(prep: Prepared, domains: list[str], cfg: ExperimentConfig, all_users: bool = False
                     ) -> dict[str, dict[str, bool]]:
    """Per domain, whether each judged test user's target is one of their seen items
    (:meth:`EvalSet.target_seen`): ``{domain: {user_id: bool}}``, for
    :func:`raypipe.eval.repeats.split_by_repeat`."""
    out: dict[str, dict[str, bool]] = {}
    for d in domains:
        es = judged_set(prep, d, cfg, all_users=all_users)
        out[d] = {str(u): bool(r) for u, r in zip(es.user_ids, es.target_seen())}
    return out


def evaluate_domains(model: torch.nn.Module, prep: Prepared, domains: list[str], cfg: ExperimentConfig,
                     split: str = "test", ranks_out: dict[str, np.ndarray] | None = None,
                     protocols_out: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Metrics per domain; with ``ranks_out`` also each domain's per-user target ranks (for paired tests),
    with ``protocols_out`` the protocol each domain was ranked with."""
    ec = cfg.eval
    out = {}
    for d in domains:
        es = judged_set(prep, d, cfg, split)
        protocol = eval_protocol(cfg, es)
        if protocols_out is not None:
            protocols_out[d] = protocol
        out[d], ranks = evaluate(model.score, es, protocol=protocol, ks=tuple(ec.ks),
                                 k_percents=tuple(ec.k_percents), n_neg=ec.n_neg, exclude_seen=ec.exclude_seen,
                                 seed=cfg.train.seed, return_ranks=True)
        if ranks_out is not None:
            ranks_out[d] = ranks
    return out


def write_ranks(path: Path, prep: Prepared, cfg: ExperimentConfig, ranks: dict[str, np.ndarray]) -> None:
    """Each domain's per-user test ranks (from :func:`evaluate_domains`' ``ranks_out``) as
    ``{domain: {"users", "ranks"}}``, the format :func:`raypipe.rundir.load_ranks` reads."""
    write_json_atomic(path, {
        d: {"users": [str(u) for u in judged_set(prep, d, cfg).user_ids],
            "ranks": [float(x) if np.isfinite(x) else "inf" for x in r]} for d, r in ranks.items()})


def plot_curves(history: list[dict[str, float]], metric: str, path: Path) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(ep, [h["train_loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax[1].plot(ep, [h[f"valid/{metric}"] for h in history], marker="o", color="C1")
    ax[1].set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    save_figure_atomic(fig, path)


def ray_dataset(columns: dict[str, np.ndarray], n_blocks: int):
    """A Ray Dataset of fixed-shape columns (row-aligned numpy arrays of any dtype), split into blocks."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    n = len(next(iter(columns.values())))
    splits = np.array_split(np.arange(n), max(1, min(n_blocks, n)))
    def arrow(v: np.ndarray):
        v = np.ascontiguousarray(v)
        return pa.array(v) if v.ndim == 1 else ArrowTensorArray.from_numpy(v)

    tables = [pa.table({k: arrow(v[idx]) for k, v in columns.items()}) for idx in splits]
    return ray.data.from_arrow(tables)


def fit(cfg: ExperimentConfig, run_dir: Path, columns: dict[str, np.ndarray], payload: TrainPayload,
        callbacks: Sequence[Any] = ()):
    """Run the Ray Train loop over ``columns`` (a dataset of rows) and return the Ray ``Result``.
    ``callbacks`` are Ray Train ``UserCallback``s (e.g. Tune's ``TuneReportCallback`` inside a trial).
    Ray Train persists into ``run_dir`` (a local run), or straight into ``<run.storage_path>/<run.name>``
    when the storage path is a URI (``run_dir`` is then the local staging directory)."""
    import ray
    import ray.data
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = run_dir / ".injected_failure" if tc.inject_failure_at_epoch is not None else None
    ds = ray_dataset(columns, max(4 * tc.num_workers, 8))
    if storage.is_uri(cfg.run.storage_path):  # pyarrow.fs resolves it on every node (Ray's own URI support)
        if not cfg.run.name:
            raise ValueError("fit: run.name must be set when run.storage_path is a URI")
        ray_storage, ray_name = cfg.run.storage_path, cfg.run.name
    else:
        ray_storage, ray_name = str(run_dir.parent.resolve()), run_dir.name
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.to_dict(), "payload": ray.put(payload),
                           "failure_marker": str(marker) if marker else None},
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                     resources_per_worker={"CPU": tc.cpus_per_worker}),
        run_config=RunConfig(name=ray_name, storage_path=ray_storage,
                             failure_config=FailureConfig(max_failures=tc.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=list(callbacks)),
        datasets={"train": ds},
        dataset_config=DataConfig(execution_options=ray.data.ExecutionOptions(preserve_order=True)),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint (error: {result.error})")
    return result


def best_weights(result) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """The best-epoch weights and the per-epoch history stored in a run's last checkpoint."""
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / BEST_FILE, map_location="cpu")
        history = json.loads((Path(d) / "state.json").read_text())["history"]
    return state, history


def run_experiment(cfg: ExperimentConfig, callbacks: Sequence[Any] = ()) -> RunResult:
    """Prepare → (train with Ray Train) → evaluate → write the run directory.  Ray must be initialised
    (see :func:`raypipe.runtime.init_ray`) unless the stage trains nothing.  ``callbacks`` go to the
    trainer's ``RunConfig`` (see :func:`fit`).  With a URI ``run.storage_path`` the run is written into a
    local staging directory and published to ``<uri>/<name>`` when it has finished; a URI
    ``run.init_from`` is read from its local cached copy (:mod:`raypipe.storage`)."""

    name = cfg.run.name or default_run_name(cfg)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name))
    spec = get_spec(cfg.model.name)
    if spec.trainable and spec.validator is None:  # validated by next-item ranking: a metric it reports
        check_metric_name(cfg.train.metric)
    if spec.resolve is not None:  # the model's "auto" options (saved resolved in config.yaml)
        cfg = dataclasses.replace(cfg, model=spec.resolve(cfg.model, cfg))
    init_dir = storage.local_path(cfg.run.init_from) if cfg.run.init_from is not None else None
    if not storage.is_uri(cfg.run.storage_path):
        run_dir = Path(cfg.run.storage_path) / name
        run_dir.mkdir(parents=True, exist_ok=True)
        return _run_into(cfg, run_dir, init_dir, callbacks)
    uri = storage.join(cfg.run.storage_path, name)
    staging = storage.staging_dir(uri)
    try:
        res = _run_into(cfg, staging, init_dir, callbacks)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # the checkpoints are in storage: a re-run resumes
        raise
    try:
        local = storage.publish_run(staging, uri)
    except BaseException:
        log.error("publishing the finished run to %s failed; its files stay in %s", uri, staging)
        raise
    return dataclasses.replace(res, run_dir=local, uri=uri)


def _run_into(cfg: ExperimentConfig, run_dir: Path, init_dir: Path | None, callbacks: Sequence[Any]) -> RunResult:
    """:func:`run_experiment` writing into the local directory ``run_dir``, starting from ``init_dir``."""
    spec = get_spec(cfg.model.name)
    path = resolve_dataset(cfg.data.dataset)
    prep = prepare_for(cfg.data)
    train_domains, eval_domains = stage_domains(cfg, prep)
    catalogue = item_catalogue(cfg, prep, path, run_dir, save_aligner=True)
    cfg.save(run_dir / CONFIG_FILE)
    prep.index.save(run_dir / INDEX_FILE)
    model = build_model(cfg.model, catalogue)
    init_state = _init_state(init_dir, prep.index, model)
    history: list[dict[str, float]] = []
    workers: list[dict[str, Any]] = []  # where each Train worker ran (rank, node id, ...)
    n_rows, untrained_valid = 0, None
    best_epoch = None
    t0 = time.time()
    item_input = getattr(cfg.model, "item_input", "id")
    mode_filter = trainable_filter_for(cfg.run.mode, item_input) if cfg.run.stage == "finetune" else "all"
    trains = spec.trainable and cfg.run.stage != "evaluate" and mode_filter is not None
    if trains:
        rows = training_rows(cfg, prep, train_domains, catalogue)
        n_rows = len(next(iter(rows.values())))
        if spec.validator is not None:
            validator, what = spec.validator(cfg.model, catalogue), f"{cfg.model.name}'s own validation"
        else:
            valid = valid_sets(prep, train_domains, cfg.data.max_len, cfg.train.valid_users, cfg.train.seed)
            validator = RankingValidator(valid, cfg.train.metric, cfg.train.valid_average,
                                         {d: eval_protocol(cfg, es, "valid") for d, es in valid.items()},
                                         cfg.eval.n_neg, cfg.train.seed)
            what = f"{sum(v.n_users for v in valid.values())} validation users"
        if spec.validator is not None:  # e.g. CDIM: the untuned encoder's values, to compare with
            untrained_valid = validator(model, 0, 1, torch.device("cpu"))
        payload = TrainPayload(ModelFactory(cfg.model, catalogue), validator, spec.schema(cfg.model), init_state,
                               mode_filter, spec.recipe.with_overrides(cfg.train.optim), n_rows)
        log.info("training %s on %s: %d rows, %s, %d worker(s)", cfg.model.name, train_domains, n_rows, what,
                 cfg.train.num_workers)
        result = fit(cfg, run_dir, rows, payload, callbacks)
        state, history = best_weights(result)
        workers = load_workers(result.checkpoint)
        model.load_state_dict(state)
        best = max(history, key=lambda h: h[f"valid/{cfg.train.metric}"]) if history else None
        best_epoch = int(best["epoch"]) if best else None
    elif init_state is not None:
        model.load_state_dict(init_state, strict=False)
    train_seconds = time.time() - t0
    save_weights(run_dir, model.state_dict())
    # only recommenders are judged by next-item ranking (a matcher such as CDIM reports its validation)
    protocols: dict[str, str] = {}
    ranks: dict[str, np.ndarray] = {}
    test = evaluate_domains(model, prep, eval_domains, cfg, ranks_out=ranks, protocols_out=protocols) \
        if "scorer" in spec.capabilities else {}
    if ranks:
        write_ranks(run_dir / RANKS_FILE, prep, cfg, ranks)
    write_json_atomic(run_dir / METRICS_FILE, {
        "stage": cfg.run.stage, "mode": cfg.run.mode, "model": cfg.model.name, "dataset": str(path),
        "train_domains": train_domains, "test": test, "protocols": protocols, "history": history, "best_epoch": best_epoch,
        "train_seconds": train_seconds, "workers": workers, "train_rows": n_rows,
        **({"untrained_valid": untrained_valid} if untrained_valid is not None else {}),
        "meta": run_meta({"train": cfg.train.seed, "split": cfg.data.split_seed}),
    })
    plot_curves(history, cfg.train.metric, run_dir / CURVES_FILE)
    return RunResult(run_dir, test, history, best_epoch, train_seconds)


def format_results(res: RunResult, metrics: tuple[str, ...] = ("hr@10", "ndcg@10", "mrr")) -> str:
    head = "| Domain | #Users | " + " | ".join(metrics) + " |"
    lines = [head, "|---|---:|" + "---:|" * len(metrics)]
    for d, m in res.test.items():
        lines.append(f"| {d} | {int(m['n_users']):,} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in metrics) + " |")
    return "\n".join(lines)


def load_run(run_dir: str | Path, absent: Mapping[str, float] | None = None,
             ) -> tuple[torch.nn.Module, Prepared, ExperimentConfig]:
    """Rebuild a finished run's model (best weights) with its prepared data and resolved config
    (``run_dir``: a path, or a URI read from its local cached copy); ``absent``: ``{view: share}`` of the
    items whose vector of a feature view is missing (:func:`load_features`)."""
    from raypipe.config import load_config

    run_dir = storage.local_path(run_dir)
    cfg = load_config(run_dir / CONFIG_FILE)
    prep = prepare_for(cfg.data)
    saved = ItemIndex.load(run_dir / INDEX_FILE)
    if not np.array_equal(saved.item_ids, prep.index.item_ids):
        raise ValueError(f"{run_dir}: the dataset no longer gives the run's item index")
    model = build_model(cfg.model, item_catalogue(cfg, prep, resolve_dataset(cfg.data.dataset), run_dir, absent=absent))
    model.load_state_dict(load_weights(run_dir))
    return model.eval(), prep, cfg
