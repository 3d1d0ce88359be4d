"""Shared training objectives of next-item models over ``seq`` rows.

A training row is ``seq``: the last ``max_len + 1`` items of a training sequence, left-padded.  Causal
models read ``input = seq[:, :-1]`` and predict ``target = seq[:, 1:]`` at every position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from raypipe.models.base import SequentialRecommender
from raypipe.models.layers import ItemEmbedding, ModelContext


class NextItemModel(SequentialRecommender):
    """Base for causal next-item models: subclasses give ``sequence_output(input) -> [B, L, d]``.

    ``loss="ce"``: softmax cross-entropy over the whole item table (SASRec/GRU4Rec as in RecBole);
    ``loss="bpr"``: one negative per position drawn uniformly from the *target's domain* (IDP eq. 3).
    """

    def __init__(self, ctx: ModelContext, hidden: int, item_input: str, loss: str, extra_tokens: int = 0,
                 projection: str = "linear") -> None:
        super().__init__()
        if loss not in ("ce", "bpr"):
            raise ValueError(f"loss must be 'ce' or 'bpr', got {loss!r}")
        self.loss_type = loss
        self.items = ItemEmbedding(ctx, hidden, item_input, extra_tokens, projection)
        dom = torch.as_tensor(ctx.item_domain, dtype=torch.long).clamp_min(0)
        ranges = torch.as_tensor(ctx.domain_ranges, dtype=torch.long)
        self.register_buffer("neg_lo", ranges[dom, 0], persistent=False)
        self.register_buffer("neg_span", ranges[dom, 1] - ranges[dom, 0], persistent=False)

    def sequence_output(self, history: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def user_repr(self, history: torch.Tensor) -> torch.Tensor:
        return self.sequence_output(history)[:, -1]

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        return self.items(items)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq = batch["seq"]
        inp, tgt = seq[:, :-1], seq[:, 1:]
        out = self.sequence_output(inp)
        valid = (tgt > 0) & (inp > 0)
        h, t = out[valid], tgt[valid]
        if self.loss_type == "ce":
            logits = h @ self.items.all_items().T
            logits[:, 0] = float("-inf")
            return F.cross_entropy(logits, t)
        neg = self.neg_lo[t] + (torch.rand(t.shape, device=t.device) * self.neg_span[t]).long()
        pos_s = (h * self.items(t)).sum(-1)
        neg_s = (h * self.items(neg)).sum(-1)
        return -F.logsigmoid(pos_s - neg_s).mean()
