"""Non-learned baselines: Random, POP and "SBERT last item" (PreRec appendix C.2).

* ``Random``: every candidate gets the same score; :func:`raypipe.eval.evaluate` breaks ties uniformly at
  random with a seed, which is exactly a seeded random ranking.
* ``Pop``: the candidate's interaction count in the training data.
* ``ContentLastItem``: the frozen content vector (e.g. SBERT text) of the user's last item is the user
  vector; candidates are scored by inner product with their content vectors.
"""
from __future__ import annotations

import numpy as np
import torch

from raypipe.models.base import SequentialRecommender, last_items


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
