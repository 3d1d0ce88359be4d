"""The model contract: what a model file exports (:class:`ModelSpec`) and what the trainer reads from it.

Every model file ends with one ``SPEC = ModelSpec(...)``; :mod:`raypipe.models.registry` collects them
(``python -m raypipe.models`` lists the registry).  A spec gives

* ``config``: the model's typed config dataclass (a :class:`raypipe.config.ModelConfig`); the YAML
  ``model:`` section is validated against it before Ray starts;
* ``build(cfg, catalogue) -> nn.Module``: the model, from its config and the
  :class:`raypipe.data.catalogue.ItemCatalogue` (the only thing a model sees of the items);
* ``schema(cfg) -> BatchSchema``: the columns and dtypes of its training rows (item ids, floats, token
  ids + attention masks, pixels, per-row candidate lists);
* ``rows(cfg, train, catalogue) -> {column: array}``: its training rows from the training sequences
  (``None`` for models with nothing to fit); ``train.attrs["train_domains"]`` names the domains whose
  targets train (a mixed cross-domain flow also holds events of context domains);
* ``recipe``: its optimisation recipe (optimiser, warm-up + decay schedule, gradient clipping,
  accumulation, precision), which ``train.optim.*`` can override per run;
* ``capabilities``: ``retrieval`` (``user_repr``/``item_repr``: served through the ANN index),
  ``scorer`` (``score(history, candidates)``: reranking), ``generative`` (produces text),
  ``live_popularity`` (``live_pop_scores(counts)``: the retrieval vectors' last coordinate is a
  popularity term that serving recomputes from the interactions it receives), ``content_items``
  (``content_item_repr(views, present)``: the retrieval vector of an item it never trained on, from its
  raw feature-view vectors alone; serving onboards new items through it).  Only models with
  ``scorer`` are evaluated on the recommendation protocols;
* ``resolve(cfg, experiment) -> cfg``: ``auto`` options resolved from the experiment config (optional);
* ``feature_views(cfg) -> [view, ...]``: the feature views it reads (optional);
* ``validator(cfg, catalogue) -> validator``: the per-epoch validation of models that are not judged by
  next-item ranking (``None``: leave-one-out ranking of the validation users, NDCG@10 by default);
* ``protocol``: the ranking protocol ``eval.protocol=auto`` and ``train.valid_protocol=auto`` mean for
  this model (``full``; ``sampled`` for models that score every candidate separately, e.g. UPSR);
* ``experiment_defaults``: dotted experiment settings the model starts from (under the user's own
  values), e.g. a language model's batch size, learning rate and gradient accumulation.

The training loop knows nothing of a model beyond its spec.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping

import numpy as np

from raypipe.config import ModelConfig, OptimConfig

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from raypipe.data.catalogue import ItemCatalogue

CAPABILITIES = ("retrieval", "scorer", "generative", "live_popularity", "content_items")
DTypeName = Literal["int64", "int32", "float32", "bool", "uint8"]


@dataclass(frozen=True)
class Column:
    """One training-row column: its name, dtype and per-row shape (``()`` = a scalar per row)."""

    name: str
    dtype: DTypeName
    shape: tuple[int, ...] = ()
    doc: str = ""


@dataclass(frozen=True)
class BatchSchema:
    """The columns a model trains on; :meth:`check` validates row arrays against it."""

    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"a batch schema needs distinct column names, got {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def torch_dtypes(self) -> dict[str, "torch.dtype"]:
        import torch

        return {c.name: getattr(torch, c.dtype) for c in self.columns}

    def check(self, rows: Mapping[str, np.ndarray]) -> int:
        """Raise ``ValueError`` naming the column when ``rows`` do not fit; return the row count."""
        missing = [c.name for c in self.columns if c.name not in rows]
        extra = sorted(set(rows) - set(self.names))
        if missing or extra:
            raise ValueError(f"training rows: missing columns {missing}, unexpected columns {extra} "
                             f"(schema: {list(self.names)})")
        n = None
        for c in self.columns:
            a = np.asarray(rows[c.name])
            if a.dtype != np.dtype(c.dtype):
                raise ValueError(f"training rows: column {c.name!r} has dtype {a.dtype}, schema says {c.dtype}")
            if tuple(a.shape[1:]) != tuple(c.shape):
                raise ValueError(f"training rows: column {c.name!r} has row shape {tuple(a.shape[1:])}, "
                                 f"schema says {tuple(c.shape)}")
            if n is None:
                n = len(a)
            elif len(a) != n:
                raise ValueError(f"training rows: column {c.name!r} has {len(a)} rows, others {n}")
        return int(n or 0)


@dataclass(frozen=True)
class OptimRecipe:
    """How a model is optimised: the defaults of its spec, overridable per run by ``train.optim.*``."""

    optimizer: Literal["adam", "adamw"] = "adam"
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0 = none
    grad_accum: int = 1
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        if self.warmup_steps < 0 or self.grad_clip < 0 or self.grad_accum < 1:
            raise ValueError(f"recipe needs warmup_steps >= 0, grad_clip >= 0, grad_accum >= 1: {self}")

    def with_overrides(self, over: OptimConfig) -> "OptimRecipe":
        """The recipe with every ``train.optim`` value that is set."""
        changes = {f.name: getattr(over, f.name) for f in dataclasses.fields(over) if getattr(over, f.name) is not None}
        return dataclasses.replace(self, **changes)

    def lr_factor(self, step: int, total_steps: int) -> float:
        """The multiplier of the base learning rate at optimiser step ``step`` (0-based): linear warm-up
        over ``warmup_steps`` then constant, linear or cosine decay to 0 at ``total_steps``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(total_steps - self.warmup_steps, 1)
        progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
        if self.schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))


Builder = Callable[[Any, "ItemCatalogue"], "nn.Module"]
#: ``validator(model, rank, world, device) -> {"valid/<metric>": value}`` (identical on every worker)
Validator = Callable[["nn.Module", int, int, "torch.device"], dict[str, float]]
RowsFn = Callable[[Any, "pd.DataFrame", "ItemCatalogue"], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config: type[ModelConfig]
    build: Builder
    #: ``schema(cfg)``; ``None`` = nothing to train (POP, Random, content baselines)
    schema: Callable[[Any], BatchSchema] | None = None
    rows: RowsFn | None = None
    recipe: OptimRecipe = field(default_factory=OptimRecipe)
    capabilities: frozenset[str] = frozenset({"scorer"})
    validator: Callable[[Any, "ItemCatalogue"], Validator] | None = None
    #: ``resolve(cfg, experiment) -> cfg``: the model config a run uses, its ``auto`` options resolved from
    #: the experiment (e.g. UniM2Rec's objective from the stage, its flow from ``data.flow``)
    resolve: Callable[[Any, Any], Any] | None = None
    #: ``feature_views(cfg) -> [view, ...]``: the catalogue views the model reads (extracted on demand
    #: by the jobs when the run names no feature store)
    feature_views: Callable[[Any], list[str]] | None = None
    #: what ``auto`` ranking protocols mean for this model
    protocol: Literal["full", "sampled"] = "full"
    #: dotted experiment defaults (``train.batch_size=16``), applied under the user's config
    experiment_defaults: tuple[str, ...] = ()
    summary: str = ""
    #: the paper and equations the model file implements
    reference: str = ""

    def __post_init__(self) -> None:
        bad = set(self.capabilities) - set(CAPABILITIES)
        if bad:
            raise ValueError(f"{self.name}: unknown capabilities {sorted(bad)}; choose from {CAPABILITIES}")
        if (self.schema is None) != (self.rows is None):
            raise ValueError(f"{self.name}: a trainable spec needs both schema and rows")
        if not (dataclasses.is_dataclass(self.config) and issubclass(self.config, ModelConfig)):
            raise TypeError(f"{self.name}: config must be a ModelConfig dataclass")
        if self.config().name != self.name:
            raise ValueError(f"{self.name}: its config's default name is {self.config().name!r}")

    @property
    def trainable(self) -> bool:
        return self.schema is not None

    def config_fields(self) -> list[tuple[str, str, Any]]:
        """``(name, type, default)`` of every option of the model's config (``name`` excluded)."""
        hints = typing.get_type_hints(self.config)
        out = []
        for f in dataclasses.fields(self.config):
            if f.name == "name":
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out.append((f.name, _type_name(hints[f.name]), default))
        return out


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__
