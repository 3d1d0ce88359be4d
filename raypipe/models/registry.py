"""Build any model by name from the typed :class:`raypipe.config.ModelConfig` and a ModelContext."""
from __future__ import annotations

import dataclasses
from typing import Callable

from raypipe.config import ModelConfig
from raypipe.models.base import SequentialRecommender
from raypipe.models.bert4rec import BERT4Rec, BERT4RecConfig
from raypipe.models.gru4rec import GRU4Rec, GRU4RecConfig
from raypipe.models.layers import ModelContext
from raypipe.models.pop import ContentLastItem, Pop, Random
from raypipe.models.sasrec import SASRec, SASRecConfig


def _fill(cls: type, cfg: ModelConfig, max_len: int):
    """Map the shared ModelConfig onto a model's own config dataclass (plus ``extra`` keys)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k in names}
    values["max_len"] = max_len
    unknown = set(cfg.extra) - names
    if unknown:
        raise ValueError(f"model {cfg.name!r} has no option(s) {sorted(unknown)}; valid: {sorted(names)}")
    values.update(cfg.extra)
    return cls(**values)


def _content(ctx: ModelContext):
    if ctx.item_features is None:
        raise ValueError("content_last_item needs item features (set data.features)")
    return ContentLastItem(ctx.item_features)


BUILDERS: dict[str, Callable[[ModelConfig, ModelContext, int], SequentialRecommender]] = {
    "sasrec": lambda c, ctx, L: SASRec(_fill(SASRecConfig, c, L), ctx),
    "gru4rec": lambda c, ctx, L: GRU4Rec(_fill(GRU4RecConfig, c, L), ctx),
    "bert4rec": lambda c, ctx, L: BERT4Rec(_fill(BERT4RecConfig, c, L), ctx),
    "pop": lambda c, ctx, L: Pop(ctx.item_counts),
    "random": lambda c, ctx, L: Random(),
    "content_last_item": lambda c, ctx, L: _content(ctx),
}


def build_model(cfg: ModelConfig, ctx: ModelContext, max_len: int) -> SequentialRecommender:
    try:
        builder = BUILDERS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown model {cfg.name!r}; available: {sorted(BUILDERS)}") from None
    return builder(cfg, ctx, max_len)
