"""BERT4Rec (Sun et al. 2019): bidirectional self-attention trained with the cloze objective.

Training masks each item with probability ``mask_prob`` (and always the last item with probability
``mask_prob`` so that training matches inference) and predicts the masked items; inference appends
``[MASK]`` (index N+1) to the history and reads its output.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raypipe.data.catalogue import ItemCatalogue
from raypipe.models.base import SequentialRecommender
from raypipe.models.layers import TransformerEncoder
from raypipe.models.sequential import SequenceModelConfig, item_embedding, sequence_rows, sequence_schema
from raypipe.models.spec import ModelSpec


@dataclass
class BERT4RecConfig(SequenceModelConfig):
    name: str = "bert4rec"
    n_heads: int = 2
    #: cloze masking probability
    mask_prob: float = 0.2


class BERT4Rec(SequentialRecommender):
    def __init__(self, cfg: BERT4RecConfig, catalogue: ItemCatalogue) -> None:
        super().__init__()
        self.cfg = cfg
        self.mask_token = catalogue.num_embeddings  # N + 1
        self.items = item_embedding(cfg, catalogue, extra_tokens=1)
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


SPEC = ModelSpec(
    name="bert4rec", config=BERT4RecConfig, build=BERT4Rec, schema=sequence_schema, rows=sequence_rows,
    capabilities=frozenset({"retrieval", "scorer"}),
    summary="bidirectional self-attention trained with the cloze objective",
    reference="Sun et al. 2019, arXiv:1904.06690",
)
