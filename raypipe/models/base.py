"""The common model surface every raypipe model keeps (DESIGN.md "Models, training, evaluation").

* ``loss(batch) -> Tensor``: the training loss of one batch (trainable models only);
* ``user_repr(history) -> Tensor[B, d]``: the representation of left-padded histories ``[B, L]``;
* ``score(history, candidates) -> Tensor[B, C]``: scores of candidate items, ``candidates`` either a
  1-d tensor shared by every row (e.g. a domain catalogue) or a 2-d per-row tensor (sampled
  candidates).  Higher is better.  :func:`raypipe.eval.evaluate` and the training loop only use these.

Item indices are ``1..N`` with ``0`` as padding (see :mod:`raypipe.data.sequences`).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def last_items(history: torch.Tensor) -> torch.Tensor:
    """The most recent item of each left-padded history (0 when the history is empty)."""
    return history[:, -1]


def score_candidates(user: torch.Tensor, lookup: Callable[[torch.Tensor], torch.Tensor],
                     candidates: torch.Tensor) -> torch.Tensor:
    """Dot-product scores of user vectors ``[B, d]`` against candidate vectors ``lookup(candidates)``.

    ``candidates`` 1-d → ``[B, C]`` by one matrix product; 2-d ``[B, C]`` → batched dot products.
    This is the one candidate scorer shared by every dot-product model.
    """
    if candidates.dim() == 1:
        return user @ lookup(candidates).T
    if candidates.dim() == 2:
        return torch.einsum("bd,bcd->bc", user, lookup(candidates))
    raise ValueError(f"candidates must be 1-d or 2-d, got shape {tuple(candidates.shape)}")


class SequentialRecommender(nn.Module):
    """Base class: subclasses implement ``user_repr`` and ``item_repr`` (or override ``score``)."""

    #: whether the model has parameters to fit with :mod:`raypipe.train` (POP/Random/content-only do not)
    trainable: bool = True

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no training loss")

    def user_repr(self, history: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return score_candidates(self.user_repr(history), self.item_repr, candidates)


def extend_embedding(emb: nn.Embedding, n: int) -> nn.Embedding:
    """``emb`` with ``n`` zero rows appended (items added after training have no learned row)."""
    out = nn.Embedding(emb.num_embeddings + n, emb.embedding_dim, padding_idx=emb.padding_idx,
                       device=emb.weight.device, dtype=emb.weight.dtype)
    with torch.no_grad():
        out.weight.zero_()
        out.weight[: emb.num_embeddings] = emb.weight
    out.weight.requires_grad_(emb.weight.requires_grad)
    return out
