"""BERT4Rec (Sun et al. 2019): bidirectional self-attention trained with the cloze objective.

Training masks each item with probability ``mask_prob`` (and always the last item with probability
``mask_prob`` so that training matches inference) and predicts the masked items; inference appends
``[MASK]`` (index N+1) to the history and reads its output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raypipe.models.base import SequentialRecommender
from raypipe.models.layers import ItemEmbedding, ModelContext, TransformerEncoder


@dataclass
class BERT4RecConfig:
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    max_len: int = 50
    mask_prob: float = 0.2
    item_input: str = "id"
    content_projection: str = "linear"


class BERT4Rec(SequentialRecommender):
    def __init__(self, cfg: BERT4RecConfig, ctx: ModelContext) -> None:
        super().__init__()
        self.cfg = cfg
        self.mask_token = ctx.num_embeddings  # N + 1
        self.items = ItemEmbedding(ctx, cfg.hidden, cfg.item_input, extra_tokens=1, projection=cfg.content_projection)
        self.encoder = TransformerEncoder(cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.dropout, cfg.max_len,
                                          causal=False)

    def _encode(self, seq: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.items(seq), seq > 0)

    def user_repr(self, history: torch.Tensor) -> torch.Tensor:
        L = self.cfg.max_len
        h = history[:, -(L - 1):]
        mask = torch.full((h.shape[0], 1), self.mask_token, dtype=h.dtype, device=h.device)
        return self._encode(torch.cat([h, mask], 1))[:, -1]

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        return self.items(items)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq = batch["seq"][:, -self.cfg.max_len:]
        real = seq > 0
        masked = (torch.rand(seq.shape, device=seq.device) < self.cfg.mask_prob) & real
        masked[:, -1] |= (torch.rand(seq.shape[0], device=seq.device) < self.cfg.mask_prob) & real[:, -1]
        if not masked.any():
            masked[:, -1] = real[:, -1]
        inp = torch.where(masked, torch.full_like(seq, self.mask_token), seq)
        out = self._encode(inp)[masked]
        logits = out @ self.items.all_items().T
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, seq[masked])
