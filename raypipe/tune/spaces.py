"""The papers' published hyper-parameter grids (``tune_spaces/<model>.yaml``) as typed, validated data.

A space file::

    model: sasrec                  # raypipe.models registry name the grid tunes
    paper: IDP                     # where the grid comes from ...
    source: "§4.1 Implement Details"  # ... and exactly where in it
    stage: pretrain                # pretrain | finetune (the ExperimentConfig stage of every trial)
    fixed: {model.hidden: 64, train.batch_size: 256}   # dotted ExperimentConfig keys held constant
    grid: {train.lr: [1.0e-3, 3.0e-4, 1.0e-4, 3.0e-5]} # dotted keys swept (full Cartesian product)
    selected: {train.lr: 1.0e-3}   # optional: the values the paper reports choosing
    metric: ndcg@10                # validation metric (raypipe.eval names) and mode
    mode: max
    patience: 20                   # early-stopping patience (epochs) of every trial
    scheduler: {type: asha, grace_period: 2, reduction_factor: 2}   # optional; null = run every trial out

Every dotted key and value is checked against :class:`raypipe.config.ExperimentConfig`, the ``model.*``
keys against the named model's own config class.  A file for a model that is not in the registry yet
still loads (its ``model.*`` keys are kept unvalidated, everything else is checked);
:meth:`TuneSpace.require_built` is what refuses to *run* it.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from raypipe.config import ConfigError, ExperimentConfig, load_config

__all__ = ["SchedulerSpec", "SpaceError", "TuneSpace", "load_space", "SPACES_DIR"]

#: the repository's tune_spaces/ directory
SPACES_DIR = Path(__file__).resolve().parents[2] / "tune_spaces"

_TOP_KEYS = {"model", "paper", "source", "stage", "fixed", "grid", "selected", "metric", "mode", "patience",
             "scheduler", "notes"}


class SpaceError(ValueError):
    """A tune space file that does not parse or does not validate (the message names file and key)."""


@dataclass(frozen=True)
class SchedulerSpec:
    type: Literal["asha"] = "asha"
    #: ASHA: epochs every trial runs before it can be stopped, and the halving rate
    grace_period: int = 1
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        if self.type != "asha":
            raise ValueError(f"scheduler.type must be 'asha', got {self.type!r}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ValueError("scheduler needs grace_period >= 1 and reduction_factor >= 2")


@dataclass(frozen=True)
class TuneSpace:
    model: str
    paper: str
    source: str
    grid: dict[str, list[Any]]
    stage: Literal["pretrain", "finetune"] = "pretrain"
    fixed: dict[str, Any] = field(default_factory=dict)
    selected: dict[str, Any] = field(default_factory=dict)
    metric: str = "ndcg@10"
    mode: Literal["max", "min"] = "max"
    patience: int = 10
    scheduler: SchedulerSpec | None = None
    notes: str = ""
    path: Path | None = None

    @property
    def n_trials(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    @property
    def axes(self) -> list[str]:
        return list(self.grid)

    def overrides(self, point: dict[str, Any] | None = None) -> list[str]:
        """Dotted overrides of one trial: the stage, the fixed settings, then the grid point."""
        items = {"model.name": self.model, "run.stage": self.stage, "train.metric": self.metric, "train.patience": self.patience,
                 **self.fixed, **(point or {})}
        return [f"{k}={_literal(v)}" for k, v in items.items()]

    def config(self, point: dict[str, Any] | None = None, extra: list[str] | None = None) -> ExperimentConfig:
        """The ExperimentConfig of one grid point (``extra`` overrides win, e.g. a dataset or epochs)."""
        return load_config(None, self.overrides(point) + list(extra or []), allow_unregistered=not self.built)

    @property
    def built(self) -> bool:
        """Whether the registry has the space's model (only then are its ``model.*`` keys validated)."""
        from raypipe.models.registry import SPECS

        return self.model in SPECS

    def points(self) -> list[dict[str, Any]]:
        """Every grid point, in file order (the last axis varies fastest)."""
        keys = self.axes
        return [dict(zip(keys, vals)) for vals in itertools.product(*(self.grid[k] for k in keys))]

    def require_built(self) -> None:
        """Raise :class:`SpaceError` naming the model when the registry has no such model yet."""
        from raypipe.models.registry import SPECS

        if not self.built:
            where = f" ({self.path})" if self.path else ""
            raise SpaceError(f"model {self.model!r}{where} is not built yet: raypipe.models has no "
                             f"{self.model!r} (built: {sorted(SPECS)}); its grid ({self.paper}, "
                             f"{self.source}) is stored but cannot be swept")


def _literal(v: Any) -> str:
    """A value as the override parser reads it back (YAML flow style, one line)."""
    return yaml.safe_dump(v, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _validate_keys(space: TuneSpace, where: str) -> None:
    """Every fixed value and every grid value, one axis at a time, must give a valid ExperimentConfig."""
    try:
        space.config()
    except ConfigError as e:
        raise SpaceError(f"{where}: fixed settings: {e}") from None
    for key, values in space.grid.items():
        for v in values:
            try:
                cfg = space.config({key: v})
            except ConfigError as e:
                raise SpaceError(f"{where}: grid.{key} value {v!r}: {e}") from None
            got = _lookup(cfg, key)
            if got != v and not (isinstance(v, (int, float)) and isinstance(got, (int, float)) and math.isclose(got, v)):
                raise SpaceError(f"{where}: grid.{key} value {v!r} reads back as {got!r}")


def _lookup(cfg: ExperimentConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def load_space(path: str | Path) -> TuneSpace:
    """Read and validate one ``tune_spaces/*.yaml`` file (errors name the file and the key)."""
    path = Path(path)
    if not path.exists():
        raise SpaceError(f"{path}: no such tune space file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SpaceError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    for req in ("model", "paper", "source", "grid"):
        if not raw.get(req):
            raise SpaceError(f"{path}: missing required key {req!r}")
    grid = raw["grid"]
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise SpaceError(f"{path}: grid must map dotted keys to non-empty lists of values")
    for k, v in grid.items():
        if len(set(map(repr, v))) != len(v):
            raise SpaceError(f"{path}: grid.{k} repeats a value: {v}")
    for name in ("fixed", "selected"):
        if not isinstance(raw.get(name) or {}, dict):
            raise SpaceError(f"{path}: {name} must be a mapping of dotted keys to values")
    overlap = set(grid) & set(raw.get("fixed") or {})
    if overlap:
        raise SpaceError(f"{path}: keys both fixed and swept: {sorted(overlap)}")
    for k, v in (raw.get("selected") or {}).items():
        if k not in grid or v not in grid[k]:
            raise SpaceError(f"{path}: selected.{k}={v!r} is not a value of grid.{k}")
    sched = raw.get("scheduler")
    try:
        scheduler = SchedulerSpec(**sched) if sched else None
        space = TuneSpace(model=str(raw["model"]), paper=str(raw["paper"]), source=str(raw["source"]),
                          grid={str(k): list(v) for k, v in grid.items()}, stage=raw.get("stage", "pretrain"),
                          fixed=dict(raw.get("fixed") or {}), selected=dict(raw.get("selected") or {}),
                          metric=str(raw.get("metric", "ndcg@10")), mode=raw.get("mode", "max"),
                          patience=int(raw.get("patience", 10)), scheduler=scheduler,
                          notes=str(raw.get("notes", "")), path=path)
    except (TypeError, ValueError) as e:
        raise SpaceError(f"{path}: {e}") from None
    if space.stage not in ("pretrain", "finetune") or space.mode not in ("max", "min") or space.patience < 1:
        raise SpaceError(f"{path}: stage must be pretrain|finetune, mode max|min, patience >= 1")
    _validate_keys(space, str(path))
    if space.fixed.get("model.name", space.model) != space.model:
        raise SpaceError(f"{path}: fixed model.name contradicts model {space.model!r}")
    return space
