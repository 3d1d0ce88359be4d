"""Non-learned baselines: Random, POP and "SBERT last item" (PreRec appendix C.2).

* ``Random``: every candidate gets the same score; :func:`raypipe.eval.evaluate` breaks ties uniformly at
  random with a seed, which is exactly a seeded random ranking.
* ``Pop``: the candidate's interaction count in the training data; with ``window_days`` (PreRec's POP:
  "popularity in the last stage, i.e. the last 15 days") its interactions in the ``window_days`` one-day
  slots before the moment of each recommendation (``score(..., time=...)``; the latest window without a
  time), from the catalogue's events, never the recommendation's own day or later.
* ``ContentLastItem``: the frozen content vector (e.g. SBERT text) of the user's last item is the user
  vector; candidates are scored by inner product with their content vectors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.models.base import SequentialRecommender, last_items
from raypipe.models.spec import ModelSpec

DAY = 86_400


def _shape(history: torch.Tensor, candidates: torch.Tensor) -> tuple[int, int]:
    return history.shape[0], candidates.shape[-1]


class Random(SequentialRecommender):
    trainable = False

    def score(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.zeros(_shape(history, candidates))


class Pop(SequentialRecommender):
    trainable = False

    def __init__(self, item_counts: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(np.asarray(item_counts), dtype=torch.float32))

    def score(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        c = self.counts[candidates]
        return c.expand(history.shape[0], -1) if candidates.dim() == 1 else c


class RecentPop(SequentialRecommender):
    """Interactions in the ``window`` slots before the moment of the recommendation."""

    trainable = False

    def __init__(self, start: int, slot_seconds: int, counts: np.ndarray) -> None:
        super().__init__()
        self.start, self.slot_seconds = int(start), int(slot_seconds)
        self.register_buffer("counts", torch.as_tensor(np.asarray(counts), dtype=torch.float32))  # [T+1, N+1]

    def score(self, history: torch.Tensor, candidates: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        n_slots = self.counts.shape[0] - 1
        if time is None:
            q = torch.full((history.shape[0],), n_slots, dtype=torch.long)
        else:
            q = torch.div(time.long() - self.start, self.slot_seconds, rounding_mode="floor").clamp(0, n_slots)
        cands = candidates if candidates.dim() == 2 else candidates[None].expand(history.shape[0], -1)
        return self.counts[q[:, None], cands]


class ContentLastItem(SequentialRecommender):
    """``item_vectors`` is ``[N+1, d]`` with row 0 (padding) all zeros."""

    trainable = False

    def __init__(self, item_vectors: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        # from the catalogue, not the weights file: a run judged on a view with missing vectors sees them
        self.register_buffer("vectors", torch.as_tensor(np.asarray(item_vectors), dtype=torch.float32),
                             persistent=False)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        state_dict.pop(prefix + "vectors", None)  # older runs saved the catalogue's vectors with the model
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def user_repr(self, history: torch.Tensor) -> torch.Tensor:
        return self.vectors[last_items(history)]

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        return self.vectors[items]


@dataclass
class RandomConfig(ModelConfig):
    name: str = "random"


@dataclass
class PopConfig(ModelConfig):
    name: str = "pop"
    #: ``None``: all training interactions; a number of days: the interactions in that many one-day slots
    #: before each recommendation (PreRec's POP: 15)
    window_days: int | None = None

    def __post_init__(self) -> None:
        if self.window_days is not None and self.window_days < 1:
            raise ValueError(f"pop window_days must be >= 1 (or null), got {self.window_days}")


@dataclass
class ContentLastItemConfig(ModelConfig):
    name: str = "content_last_item"
    #: the catalogue's feature view (e.g. SBERT text vectors)
    view: str = "text"


def _pop(cfg: PopConfig, catalogue: ItemCatalogue) -> Pop | RecentPop:
    if cfg.window_days is not None:
        start, counts, _ = catalogue.prior_popularity(DAY, cfg.window_days, (1,))
        return RecentPop(start, DAY, counts)
    if catalogue.item_counts is None:
        raise ValueError("pop needs the catalogue's training popularity (item_counts)")
    return Pop(catalogue.item_counts)


def _content(cfg: ContentLastItemConfig, catalogue: ItemCatalogue) -> ContentLastItem:
    return ContentLastItem(catalogue.view(cfg.view).vectors)


RANDOM_SPEC = ModelSpec(name="random", config=RandomConfig, build=lambda cfg, catalogue: Random(),
                        summary="seeded random ranking (ties broken by the evaluator)",
                        reference="PreRec appendix C.2 baseline")
POP_SPEC = ModelSpec(name="pop", config=PopConfig, build=_pop,
                     summary="training interaction count, or interactions in the last window_days before now",
                     reference="PreRec appendix C.2 baseline")
CONTENT_LAST_ITEM_SPEC = ModelSpec(
    name="content_last_item", config=ContentLastItemConfig, build=_content,
    capabilities=frozenset({"retrieval", "scorer"}), feature_views=lambda cfg: [cfg.view],
    summary="the last item's frozen content vector is the user vector (SBERT last item)",
    reference="PreRec appendix C.2 baseline")
