"""The single Ray Train loop every trainable model goes through.

``train_loop_per_worker`` runs inside each Ray Train worker (Train V2): it builds the model from the
typed config, wraps it for DDP (gloo on CPU, NCCL on GPU) with ``ray.train.torch.prepare_model``, reads
its shard of the training rows with ``iter_torch_batches``, evaluates its slice of the validation users
after every epoch (sums all-reduced, so every worker takes the same early-stopping decision), and
reports metrics with a checkpoint (rank 0 writes it).  On (re)start it resumes from
``ray.train.get_checkpoint()``: model, optimiser, epoch, early-stopping state and curves.

Placement: each worker's Ray node id, IP, host and pid are all-gathered at start-up and rank 0 stores
them as ``workers.json`` in every checkpoint (read back with :func:`load_workers`), so a run can show
where its workers ran (e.g. on different nodes of a cluster).

Determinism: parameters are initialised from ``seed``; the shuffle of epoch ``e`` and the dropout /
negative-sampling RNG of epoch ``e`` are seeded from ``(seed, e, rank)``, so an interrupted run resumed
from its checkpoint ends with the same metrics as an uninterrupted one (single worker; with several
workers Ray Data's dynamic block assignment can change the order rows reach each worker).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from raypipe.config import ExperimentConfig, ModelConfig, _build
from raypipe.data.catalogue import ItemCatalogue
from raypipe.eval.metrics import metric_cutoffs
from raypipe.eval.protocols import EvalSet, evaluate
from raypipe.models.registry import build_model
from raypipe.models.spec import BatchSchema, OptimRecipe

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
BEST_FILE = "best_model.pt"
OPTIM_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
STATE_FILE = "state.json"
WORKERS_FILE = "workers.json"


@dataclass
class TrainPayload:
    """Everything a worker needs besides the config and its data shard (shipped once via the object store).

    ``model_factory()`` builds the model (the same on every worker, seeded before the call);
    ``validator(model, rank, world, device)`` returns ``valid/<metric>`` values that are identical on
    every worker (it all-reduces what each worker computed); ``schema`` names the dataset columns (and
    their dtypes) handed to ``model(batch)``, which returns the training loss; ``recipe`` is the
    optimisation recipe (the model spec's, with ``train.optim`` overrides); ``n_rows`` the size of the
    training set (for the length of the learning-rate schedule).
    """

    model_factory: Callable[[], torch.nn.Module]
    validator: Callable[[torch.nn.Module, int, int, torch.device], dict[str, float]]
    schema: BatchSchema
    init_state: dict[str, torch.Tensor] | None = None  # e.g. a pre-trained model's weights
    trainable_filter: str | None = None  # fine-tune mode, see raypipe.train.finetune
    recipe: OptimRecipe = field(default_factory=OptimRecipe)
    n_rows: int = 0


@dataclass
class ModelFactory:
    """Builds a registered model from its typed config and the item catalogue (inside each worker)."""

    model: ModelConfig
    catalogue: ItemCatalogue

    def __call__(self) -> torch.nn.Module:
        return build_model(self.model, self.catalogue)


@dataclass
class RankingValidator:
    """Leave-one-out full-ranking validation over domains (see :func:`validate`): ``average="users"``
    pools every domain's users, ``"domains"`` averages the per-domain values (PreRec early-stops on the
    mean r-NDCG@K% over domains, so a large domain does not dominate)."""

    valid: dict[str, EvalSet]
    metric: str
    average: str = "users"
    #: per domain: ``full`` ranking of its catalogue or ``sampled`` candidates (``n_neg`` negatives, seeded)
    protocols: dict[str, str] = field(default_factory=dict)
    n_neg: int = 100
    seed: int = 0

    def __call__(self, model: torch.nn.Module, rank: int, world: int, device: torch.device) -> dict[str, float]:
        names = [self.metric] + [m for m in ("hr@10", "ndcg@10") if m != self.metric]
        return validate(model, self.valid, names, rank, world, device, *metric_cutoffs(names),
                        average=self.average, protocols=self.protocols, n_neg=self.n_neg, seed=self.seed)


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without improvement of a metric to maximise."""

    patience: int
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; return True when this epoch is the new best."""
        if value > self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


@dataclass
class LoopState:
    epoch: int = 0  # next epoch to run
    stopper: EarlyStopping = field(default_factory=lambda: EarlyStopping(5))
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"epoch": self.epoch, "history": self.history,
                           "stopper": vars(self.stopper)})

    @classmethod
    def from_json(cls, text: str, patience: int | None = None) -> "LoopState":
        """``patience``: the resumed run's setting, which wins over the checkpoint's (a run re-launched with
        more patience must not stop on the old count)."""
        d = json.loads(text)
        stopper = EarlyStopping(**d["stopper"])
        if patience is not None:
            stopper.patience = patience
        return cls(d["epoch"], stopper, d["history"])


def _distributed() -> tuple[int, int]:
    import ray.train

    ctx = ray.train.get_context()
    return ctx.get_world_rank(), ctx.get_world_size()


def _all_reduce_sum(values: np.ndarray, world: int, device: torch.device) -> np.ndarray:
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.as_tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().numpy()


def validate(model: torch.nn.Module, valid: dict[str, EvalSet], metric_names: list[str], rank: int, world: int,
             device: torch.device, ks: tuple[int, ...] = (10,), k_percents: tuple[float, ...] = (),
             average: str = "users", protocols: dict[str, str] | None = None, n_neg: int = 100,
             seed: int = 0) -> dict[str, float]:
    """Validation metrics over every domain's users, pooled (``average="users"``) or averaged over domains
    (``"domains"``), plus ``valid/<domain>/<first metric>``; each worker scores users ``rank::world``.
    ``protocols[domain]`` is ``full`` (the default) or ``sampled``: each target among ``n_neg`` seeded
    negatives (the same every epoch for a given number of workers)."""
    if average not in ("users", "domains"):
        raise ValueError(f"validation average must be 'users' or 'domains', got {average!r}")
    sums = np.zeros(len(metric_names) + 1)
    per_domain: dict[str, np.ndarray] = {}
    for dom, es in valid.items():
        rows = np.arange(rank, es.n_users, world)
        local = np.zeros(len(metric_names) + 1)
        if len(rows):
            sampled = (protocols or {}).get(dom, "full") == "sampled"
            extra = {"protocol": "sampled", "n_neg": n_neg, "seed": seed} if sampled else {}
            r = evaluate(model.score, es.subset(rows), ks=ks, k_percents=k_percents, device=str(device),
                         progress=False, **extra)
            local = np.array([r[m] * r["n_users"] for m in metric_names] + [r["n_users"]])
        per_domain[dom] = local
        sums += local
    keys = sorted(per_domain)
    stacked = np.concatenate([sums] + [per_domain[k] for k in keys])
    stacked = _all_reduce_sum(stacked, world, device)
    width = len(metric_names) + 1
    blocks = [stacked[width * (j + 1): width * (j + 2)] for j in range(len(keys))]
    if average == "users":
        out = {f"valid/{m}": float(stacked[i] / max(stacked[width - 1], 1)) for i, m in enumerate(metric_names)}
    else:
        means = [b[:-1] / max(b[-1], 1) for b in blocks if b[-1] > 0]
        out = {f"valid/{m}": float(np.mean([v[i] for v in means])) if means else 0.0
               for i, m in enumerate(metric_names)}
    for k, block in zip(keys, blocks):
        out[f"valid/{k}/{metric_names[0]}"] = float(block[0] / max(block[-1], 1))
    return out


def worker_placement(rank: int) -> dict[str, Any]:
    """Where the calling Ray worker process runs: its rank, Ray node id, node IP, host name and pid."""
    import os
    import socket

    import ray

    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(), "pid": os.getpid()}


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _all_gather_objects(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def load_workers(checkpoint) -> list[dict[str, Any]]:
    """The worker placement stored in a checkpoint of this loop (``[]`` for checkpoints without one)."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as d:
        f = Path(d) / WORKERS_FILE
        return json.loads(f.read_text()) if f.exists() else []


def _save_checkpoint(path: Path, model: torch.nn.Module, best_state: dict[str, torch.Tensor],
                     optim: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler, state: LoopState,
                     workers: list[dict[str, Any]]) -> None:
    torch.save(model.state_dict(), path / MODEL_FILE)
    torch.save(best_state, path / BEST_FILE)
    torch.save(optim.state_dict(), path / OPTIM_FILE)
    torch.save(sched.state_dict(), path / SCHEDULER_FILE)
    (path / STATE_FILE).write_text(state.to_json())
    (path / WORKERS_FILE).write_text(json.dumps(workers))


def snapshot(model: torch.nn.Module) -> dict[str, Any]:
    """A CPU copy of ``model.state_dict()`` (tensors cloned; a module's extra state, e.g. a tokenizer
    that is part of the weights, copied as is)."""
    import copy

    return {k: v.detach().cpu().clone() if torch.is_tensor(v) else copy.deepcopy(v)
            for k, v in model.state_dict().items()}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters in optimiser groups by weight decay: a model may declare
    ``weight_decays = {parameter-name prefix: decay}`` (e.g. PreRec's Gaussian priors, eq. 4, one λ per
    latent variable); the longest matching prefix wins, other parameters get ``weight_decay``."""
    declared: dict[str, float] = dict(getattr(model, "weight_decays", None) or {})
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        match = max((k for k in declared if name.startswith(k)), key=len, default=None)
        groups.setdefault(declared[match] if match is not None else weight_decay, []).append(p)
    return [{"params": ps, "weight_decay": wd} for wd, ps in sorted(groups.items())]


def make_optimizer(params: list[torch.nn.Parameter] | list[dict[str, Any]], recipe: OptimRecipe, lr: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optim: torch.optim.Optimizer, recipe: OptimRecipe, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then the recipe's decay, stepped once per optimiser step (not per batch)."""
    return torch.optim.lr_scheduler.LambdaLR(optim, lambda step: recipe.lr_factor(step, total_steps))


def steps_per_epoch(n_rows: int, world: int, batch_size: int, grad_accum: int) -> int:
    """Optimiser steps one worker takes per epoch (its shard is about ``n_rows / world`` rows)."""
    batches = math.ceil(math.ceil(n_rows / max(world, 1)) / batch_size)
    return max(1, math.ceil(batches / grad_accum))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (``TorchTrainer(train_loop_per_worker, train_loop_config=...)``)."""
    import ray
    import ray.train
    import ray.train.torch

    cfg: ExperimentConfig = _build(ExperimentConfig, config["cfg"], "")
    payload: TrainPayload = ray.get(config["payload"])
    tc = cfg.train
    torch.set_num_threads(tc.torch_threads)
    rank, world = _distributed()
    workers = _all_gather_objects(worker_placement(rank), world)
    if rank == 0:
        log.info("train workers: %s", [(w["rank"], w["node_id"][:8], w["pid"]) for w in workers])
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    model = payload.model_factory()
    if payload.init_state is not None:
        missing, unexpected = model.load_state_dict(payload.init_state, strict=False)
        log.info("initialised from a pre-trained state (missing %s, unexpected %s)", missing, unexpected)
    if payload.trainable_filter is not None:
        from raypipe.train.finetune import apply_trainable_filter

        apply_trainable_filter(model, payload.trainable_filter)
    device = ray.train.torch.get_device()
    # a model whose objective leaves some parameters without a gradient in a step (e.g. UniM2Rec: a head
    # with no valid position in a batch) asks DDP to look for them (``ddp_kwargs``)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=getattr(model, "ddp_kwargs", None))
    params = [p for p in model.parameters() if p.requires_grad]
    recipe = payload.recipe
    optim = make_optimizer(param_groups(_unwrap(model), tc.weight_decay), recipe, tc.lr, tc.weight_decay)
    sched = make_scheduler(optim, recipe, tc.epochs * steps_per_epoch(payload.n_rows, world, tc.batch_size,
                                                                     recipe.grad_accum))
    # bf16 autocast only where it is fast and safe (GPU workers); CPU workers stay fp32
    autocast = recipe.precision == "bf16" and device.type == "cuda"
    state = LoopState(stopper=EarlyStopping(tc.patience))
    best_state = snapshot(_unwrap(model))
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            d = Path(d)
            _unwrap(model).load_state_dict(torch.load(d / MODEL_FILE, map_location=device))
            optim.load_state_dict(torch.load(d / OPTIM_FILE, map_location=device))
            if (d / SCHEDULER_FILE).exists():
                sched.load_state_dict(torch.load(d / SCHEDULER_FILE, map_location="cpu"))
            best_state = torch.load(d / BEST_FILE, map_location="cpu")
            state = LoopState.from_json((d / STATE_FILE).read_text(), patience=tc.patience)
        log.info("resumed at epoch %d (best %s=%.4f)", state.epoch, tc.metric, state.stopper.best)
    shard = ray.train.get_dataset_shard("train")
    dtypes = payload.schema.torch_dtypes()
    columns = payload.schema.names
    while state.epoch < tc.epochs and not state.stopper.should_stop:
        epoch = state.epoch
        if tc.inject_failure_at_epoch == epoch and config.get("failure_marker"):
            marker = Path(config["failure_marker"])
            if not marker.exists():
                marker.write_text("failed once")
                raise RuntimeError(f"injected failure at epoch {epoch} (fault-injection test)")
        torch.manual_seed(tc.seed * 100_003 + epoch * 101 + rank)
        model.train()
        t0, n_rows, loss_sum, n_batches = time.time(), 0, 0.0, 0
        optim.zero_grad(set_to_none=True)
        pending = 0  # batches accumulated since the last optimiser step
        for batch in shard.iter_torch_batches(batch_size=tc.batch_size, dtypes=dtypes, device=device,
                                              local_shuffle_buffer_size=tc.shuffle_buffer,
                                              local_shuffle_seed=tc.seed * 7919 + epoch):
            # DDP all-reduces gradients only on the micro-batch that completes an accumulation
            syncs = pending + 1 == recipe.grad_accum or not hasattr(model, "no_sync")
            with (contextlib.nullcontext() if syncs else model.no_sync()):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = model({c: batch[c] for c in columns})
                (loss / recipe.grad_accum).backward()
            pending += 1
            if pending == recipe.grad_accum:
                _step(optim, sched, params, recipe)
                pending = 0
            loss_sum += float(loss.detach())
            n_rows += int(batch[columns[0]].shape[0])
            n_batches += 1
        if pending:  # the epoch's last, partial accumulation (its gradients were not all-reduced yet)
            _average_gradients(params, world)
            _step(optim, sched, params, recipe)
        train_time = time.time() - t0
        totals = _all_reduce_sum(np.array([loss_sum, n_batches, n_rows]), world, device)
        metrics: dict[str, float] = {
            "epoch": epoch,
            "lr": float(sched.get_last_lr()[0]),
            "train_loss": float(totals[0] / max(totals[1], 1)),
            "train_rows": int(totals[2]),
            "samples_per_s": float(totals[2] / max(train_time, 1e-9)),
            # the largest resident set of any worker so far (MiB): the cost tables' peak memory
            "peak_rss_mb": float(max(_all_gather_objects(_peak_rss_mb(), world))),
        }
        metrics.update(payload.validator(_unwrap(model), rank, world, device))
        if state.stopper.update(metrics[f"valid/{tc.metric}"], epoch):
            best_state = snapshot(_unwrap(model))
        metrics["best/" + tc.metric] = state.stopper.best
        state.history.append(metrics)
        state.epoch = epoch + 1
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                _save_checkpoint(Path(tmp), _unwrap(model), best_state, optim, sched, state, workers)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0:
            log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})


def _step(optim: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
          params: list[torch.nn.Parameter], recipe: OptimRecipe) -> None:
    if recipe.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
    optim.step()
    sched.step()
    optim.zero_grad(set_to_none=True)


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world
