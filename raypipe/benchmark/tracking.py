"""Experiment tracking of Ray Train runs: MLflow or TensorBoard, through Ray Train's callback API.

``tracker_callbacks("mlflow" | "tensorboard" | "none", root, experiment, run_name)`` gives the callbacks
for :func:`raypipe.train.run.run_experiment` (``RunConfig(callbacks=...)``): Ray Train V2 calls
``after_report`` on its controller with every worker's epoch metrics, and rank 0's numeric metrics are
logged per epoch (``@`` becomes ``_at_``: ``valid/ndcg_at_10``).  The stores are local files by default:

* ``mlflow``: an MLflow file store at ``<root>/tracking/mlruns`` (``mlflow ui --backend-store-uri
  <root>/tracking/mlruns``), one experiment per setting, one MLflow run per Ray Train run, created by the
  driver and marked finished by it (:func:`finish`).  MLflow 3 keeps the file store in maintenance mode;
  it is enabled here with ``MLFLOW_ALLOW_FILE_STORE=true`` (set ``MLFLOW_TRACKING_URI`` to log elsewhere).
* ``tensorboard``: tensorboardX event files at ``<root>/tracking/tensorboard/<experiment>/<run>``
  (``tensorboard --logdir <root>/tracking/tensorboard``).

Tune sweeps go through the same ``run_experiment``, so a sweep's trials are tracked the same way.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from ray.train import UserCallback

Tracker = Literal["none", "mlflow", "tensorboard"]
TRACKERS: tuple[str, ...] = ("none", "mlflow", "tensorboard")


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _tag(metric: str) -> str:
    """A metric's name in both stores: ``@`` is not allowed there (``valid/ndcg@10`` → ``valid/ndcg_at_10``)."""
    return metric.replace("@", "_at_")


def check_tracker(tracker: str) -> None:
    """Reject an unknown tracker, or MLflow when it is not installed, before Ray starts."""
    if tracker not in TRACKERS:
        raise ValueError(f"--tracker: unknown {tracker!r}; choose from {list(TRACKERS)}")
    if tracker == "mlflow":
        try:
            import mlflow  # noqa: F401
        except ImportError as e:
            raise ValueError("--tracker mlflow: the mlflow package is not installed (pip install mlflow-skinny)") from e


class TensorBoardCallback(UserCallback):
    """Rank 0's metrics of every epoch as TensorBoard scalars (tensorboardX), step = epoch."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        from tensorboardX import SummaryWriter

        if not metrics:
            return
        m = _numeric(metrics[0])
        step = int(m.get("epoch", 0))
        # open per epoch (the controller may restart), each time a new file: tensorboardX names it by the
        # second and truncates, and two reports can come within one second (Ray Train polls every 0.5 s)
        with SummaryWriter(self.logdir, filename_suffix=f".epoch{step}.{time.time_ns()}") as w:
            for k, v in m.items():
                w.add_scalar(_tag(k), v, step)


def _mlflow_client(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


class MLflowCallback(UserCallback):
    """Rank 0's metrics of every epoch logged to an MLflow run created by the driver."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if not metrics:
            return
        m = _numeric(metrics[0])
        step = int(m.get("epoch", 0))
        client = _mlflow_client(self.uri)
        for k, v in m.items():
            client.log_metric(self.run_id, _tag(k), v, step=step)


def mlflow_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (root / "tracking" / "mlruns").resolve().as_uri()


def tracker_callbacks(tracker: str, root: Path, experiment: str, run_name: str,
                      params: dict[str, Any] | None = None) -> list[UserCallback]:
    """The callbacks of one Ray Train run (``[]`` for ``none``)."""
    if tracker == "none":
        return []
    if tracker == "tensorboard":
        logdir = root / "tracking" / "tensorboard" / experiment / run_name
        logdir.mkdir(parents=True, exist_ok=True)
        return [TensorBoardCallback(str(logdir.resolve()))]
    if tracker == "mlflow":
        uri = mlflow_uri(root)
        client = _mlflow_client(uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        run = client.create_run(exp_id, run_name=run_name)
        for k, v in (params or {}).items():
            client.log_param(run.info.run_id, k, str(v)[:500])
        return [MLflowCallback(uri, run.info.run_id)]
    raise ValueError(f"unknown tracker {tracker!r}; choose from {list(TRACKERS)}")


def finish(callbacks: list[UserCallback], status: str = "FINISHED") -> None:
    """Mark the MLflow runs of ``callbacks`` finished (or ``FAILED``); nothing for other trackers."""
    for cb in callbacks:
        if isinstance(cb, MLflowCallback):
            _mlflow_client(cb.uri).set_terminated(cb.run_id, status)
