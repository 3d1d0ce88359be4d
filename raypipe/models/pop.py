"""Non-learned baselines: Random, POP and "SBERT last item" (PreRec appendix C.2).

* ``Random``: every candidate gets the same score; :func:`raypipe.eval.evaluate` breaks ties uniformly at
  random with a seed, which is exactly a seeded random ranking.
* ``Pop``: the candidate's interaction count in the training data.
* ``ContentLastItem``: the frozen content vector (e.g. SBERT text) of the user's last item is the user
  vector; candidates are scored by inner product with their content vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.models.base import SequentialRecommender, last_items
from raypipe.models.spec import ModelSpec


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


class ContentLastItem(SequentialRecommender):
    """``item_vectors`` is ``[N+1, d]`` with row 0 (padding) all zeros."""

    trainable = False

    def __init__(self, item_vectors: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("vectors", torch.as_tensor(np.asarray(item_vectors), dtype=torch.float32))

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


@dataclass
class ContentLastItemConfig(ModelConfig):
    name: str = "content_last_item"
    #: the catalogue's feature view (e.g. SBERT text vectors)
    view: str = "text"


def _pop(cfg: PopConfig, catalogue: ItemCatalogue) -> Pop:
    if catalogue.item_counts is None:
        raise ValueError("pop needs the catalogue's training popularity (item_counts)")
    return Pop(catalogue.item_counts)


def _content(cfg: ContentLastItemConfig, catalogue: ItemCatalogue) -> ContentLastItem:
    return ContentLastItem(catalogue.view(cfg.view).vectors)


RANDOM_SPEC = ModelSpec(name="random", config=RandomConfig, build=lambda cfg, catalogue: Random(),
                        summary="seeded random ranking (ties broken by the evaluator)",
                        reference="PreRec appendix C.2 baseline")
POP_SPEC = ModelSpec(name="pop", config=PopConfig, build=_pop, summary="training interaction count",
                     reference="PreRec appendix C.2 baseline")
CONTENT_LAST_ITEM_SPEC = ModelSpec(
    name="content_last_item", config=ContentLastItemConfig, build=_content,
    capabilities=frozenset({"retrieval", "scorer"}),
    summary="the last item's frozen content vector is the user vector (SBERT last item)",
    reference="PreRec appendix C.2 baseline")
