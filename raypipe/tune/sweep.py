"""Run a tune space as a Ray Tune sweep: a ``Tuner`` over a driver function that fits one ``TorchTrainer``
per trial (the Ray 2.60 Train/Tune interop), resumable with ``Tuner.restore``.

Each trial is a *driver* that needs almost nothing itself (``{"CPU": 0, "memory": 64 MiB}``: with the
default 1 CPU a 2-worker trainer on 2 CPUs deadlocks, see RAY_NOTES) and launches the Ray Train run
whose workers hold the real resources.  The trainer's per-epoch reports reach Tune through
``TuneReportCallback``; the trial's Train run lives at ``<experiment>/trials/<trial_id>/`` so a
restored, unfinished trial resumes its own Train checkpoints.  ``storage_path`` may be a URI (``s3://``,
``gs://``, ``file://``): Tune's experiment state, the trials' checkpoints and their published run
directories all go there (:mod:`raypipe.storage`); the report is written into a local copy of the
experiment directory and uploaded.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raypipe import storage
from raypipe.tune.spaces import SpaceError, TuneSpace

log = logging.getLogger(__name__)

__all__ = ["SweepConfig", "SweepResult", "run_sweep", "restrict", "TRIALS_DIR", "DRIVER_RESOURCES"]

TRIALS_DIR = "trials"
#: resources of each trial's driver function (the Train workers request their own)
DRIVER_RESOURCES: dict[str, float] = {"CPU": 0, "memory": 64 * 1024**2}


@dataclass
class SweepConfig:
    space: TuneSpace
    #: experiment directory name under ``storage_path`` (re-use it with ``resume=True``)
    name: str
    #: a local path or a URI (:mod:`raypipe.storage`)
    storage_path: str = "runs/tune"
    #: dotted overrides applied to every trial after the space's own (dataset, epochs, workers ...)
    overrides: list[str] = field(default_factory=list)
    max_concurrent: int = 1
    #: ``None`` = the space's scheduler; ``"none"`` / ``"asha"`` override it
    scheduler: str | None = None
    resume: bool = False
    #: custom resources each trial's *driver* requests (e.g. to pin sweeps to some nodes)
    driver_resources: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepResult:
    #: the experiment directory (with a URI ``storage_path``: its local copy, where the report goes)
    experiment_dir: Path
    rows: list[dict[str, Any]]
    metric: str
    mode: str
    #: the experiment directory when ``storage_path`` is a URI (``None``: local)
    experiment_uri: str | None = None


def restrict(space: TuneSpace, only: dict[str, list[Any]]) -> TuneSpace:
    """The space with some axes narrowed to a subset of their published values."""
    grid = dict(space.grid)
    for key, values in only.items():
        if key not in grid:
            raise SpaceError(f"{space.path}: cannot restrict {key!r}: not a swept axis ({list(grid)})")
        bad = [v for v in values if v not in grid[key]]
        if bad:
            raise SpaceError(f"{space.path}: {key} values {bad} are not in the published grid {grid[key]}")
        grid[key] = list(values)
    return dataclasses.replace(space, grid=grid,
                               selected={k: v for k, v in space.selected.items() if v in grid[k]})


def _trial(config: dict[str, Any], *, space: TuneSpace, overrides: list[str], trials_dir: str) -> None:
    """The trial driver: one grid point → one Ray Train run reporting every epoch to Tune, then a final
    report of the best validation value and the test metrics of the best-epoch model."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypipe.train.run import run_experiment

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = space.config(config, overrides)
    # set directly, not as ``run.name=<id>`` text: an all-digit trial id such as ``91259_00000`` would be read
    # as a number by YAML
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, storage_path=trials_dir, name=trial_id))
    res = run_experiment(cfg, callbacks=[TuneReportCallback()])
    metric = f"best/{cfg.train.metric}"
    best = [h[metric] for h in res.history]
    final: dict[str, Any] = {"final": True, metric: best[-1] if best else float("nan")}
    for domain, m in res.test.items():
        for k, v in m.items():
            final[f"test/{domain}/{k}"] = float(v)
    ray.tune.report(final)


def _scheduler(space: TuneSpace, which: str | None, max_epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    spec = space.scheduler
    if which == "none":
        return None
    if which == "asha" and spec is None:
        from raypipe.tune.spaces import SchedulerSpec

        spec = SchedulerSpec()
    if spec is None:
        return None
    # ``stop_last_trials=False``: a trial that survives every rung runs to its own end.  With the default,
    # ASHA stops it on its ``max_t``-th report, i.e. its last epoch's -- killing its Train run before the test
    # evaluation and the final report, so the sweep's best trial came back "stopped" without test metrics.
    return ASHAScheduler(time_attr="training_iteration", max_t=max(max_epochs, spec.grace_period),
                         grace_period=spec.grace_period, reduction_factor=spec.reduction_factor,
                         stop_last_trials=False)


def run_sweep(sc: SweepConfig) -> SweepResult:
    """Run (or resume) the sweep and return one row per trial; Ray must be initialised."""
    import ray.tune
    from ray.tune import CheckpointConfig, RunConfig, TuneConfig, Tuner

    space = sc.space
    space.require_built()
    sweep_env()
    probe = space.config(space.points()[0], sc.overrides)  # fail fast on bad overrides, before Ray work
    if storage.is_uri(sc.storage_path):  # Tune and Train write straight to it; the report is uploaded
        exp_uri: str | None = storage.join(sc.storage_path, sc.name)
        exp_dir, exp_loc, ray_storage = storage.cache_dir(exp_uri), exp_uri, sc.storage_path
    else:
        exp_uri = None
        exp_dir = (Path(sc.storage_path) / sc.name).resolve()
        exp_loc, ray_storage = str(exp_dir), str(exp_dir.parent)
    trials_dir = storage.join(exp_loc, TRIALS_DIR)
    metric, mode = f"best/{space.metric}", space.mode
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, space=space, overrides=list(sc.overrides), trials_dir=trials_dir),
        {**DRIVER_RESOURCES, **sc.driver_resources})
    if sc.resume:
        if not Tuner.can_restore(exp_loc):
            raise FileNotFoundError(f"{exp_loc}: no Tune experiment to resume (run without --resume first)")
        log.info("restoring %s (finished trials are kept, unfinished ones resume)", exp_loc)
        tuner = Tuner.restore(exp_loc, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        if storage.is_nonempty_dir(exp_loc):
            raise FileExistsError(f"{exp_loc} already holds a sweep: pass --resume or choose another --name")
        param_space = {k: ray.tune.grid_search(v) for k, v in space.grid.items()}
        tuner = Tuner(
            trainable,
            param_space=param_space,
            tune_config=TuneConfig(metric=metric, mode=mode, max_concurrent_trials=sc.max_concurrent,
                                   scheduler=_scheduler(space, sc.scheduler, probe.train.epochs)),
            run_config=RunConfig(name=sc.name, storage_path=ray_storage,
                                 checkpoint_config=CheckpointConfig(num_to_keep=1), verbose=1),
        )
    warn_without_state_api()
    log.info("sweep %s: %s grid of %d trial(s) (%s, %s), max %d concurrent", sc.name, space.model,
             space.n_trials, space.paper, space.source, sc.max_concurrent)
    grid = tuner.fit()
    rows = [_row(r, space, metric, trials_dir) for r in grid]
    return SweepResult(exp_dir, rows, metric, mode, exp_uri)


def _row(result: Any, space: TuneSpace, metric: str, trials_dir: str) -> dict[str, Any]:
    """One trial of the result grid as a flat row: id, swept values, status, best validation value and
    its epoch, epochs run, test metrics of the best-epoch model (only for trials that ran to the end)."""
    cfg = result.config or {}
    final = result.metrics or {}
    trial_id = str(final.get("trial_id") or Path(result.path).name)
    row: dict[str, Any] = {"trial_id": trial_id, **{k: cfg.get(k) for k in space.axes}}
    df = result.metrics_dataframe
    epochs = df[df["epoch"].notna()] if df is not None and "epoch" in df else None
    valid = f"valid/{space.metric}"
    row["status"] = "error" if result.error else ("finished" if final.get("final") else "stopped")
    if epochs is not None and len(epochs) and valid in epochs:
        best = epochs[valid].idxmax() if space.mode == "max" else epochs[valid].idxmin()
        row[metric], row["best_epoch"] = float(epochs.loc[best, valid]), int(epochs.loc[best, "epoch"])
        row["epochs_run"] = len(epochs)
    else:
        row[metric], row["best_epoch"], row["epochs_run"] = float("nan"), -1, 0
    row.update({k: v for k, v in final.items() if k.startswith("test/")})
    row["run_dir"] = storage.join(trials_dir, trial_id)
    row["error"] = str(result.error).splitlines()[0] if result.error else ""
    return row


def warn_without_state_api() -> bool:
    """Warn (and return False) when this Ray's State API does not answer.  A trial that a scheduler stops has
    its Train controller killed, and only Train's PlacementGroupCleaner -- which asks the State API whether
    the controller is alive -- frees the run's placement group: without it every stopped trial keeps its
    CPUs/GPUs for the rest of the sweep (issue #14).  ``raypipe.runtime.init_ray`` starts a local Ray with
    the dashboard (which serves the State API); a cluster needs ``--include-dashboard=true``."""
    import ray
    from ray.util.state import list_nodes
    from ray.util.state.exception import RayStateApiException

    try:  # this instance's address: auto-detection may find several local Ray instances
        list_nodes(address=ray.get_runtime_context().gcs_address, limit=1, timeout=10, raise_on_missing_output=False)
        return True
    except (RayStateApiException, ConnectionError, TimeoutError, ValueError) as e:  # ValueError: no dashboard address
        log.warning("the Ray State API does not answer (%s): trials the scheduler stops will keep their placement "
                    "groups, so the sweep may hang waiting for resources; start Ray with the dashboard",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return False


def sweep_env() -> None:
    """Tune settings this project relies on (set before Tune starts)."""
    # Save experiment state often so a resumed sweep does not rerun a trial that had just finished.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
