"""SASRec (Kang & McAuley 2018): causal self-attention over the item sequence.

Used by IDP as its pre-trained backbone with the BPR objective (IDP eq. 2–3), and by PreRec's
baselines over frozen SBERT item vectors (``item_input="content"``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from raypipe.models.layers import ModelContext, TransformerEncoder, scaled
from raypipe.models.sequential import NextItemModel


@dataclass
class SASRecConfig:
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    max_len: int = 50
    loss: str = "ce"
    item_input: str = "id"
    content_projection: str = "linear"


class SASRec(NextItemModel):
    def __init__(self, cfg: SASRecConfig, ctx: ModelContext) -> None:
        super().__init__(ctx, cfg.hidden, cfg.item_input, cfg.loss, projection=cfg.content_projection)
        self.cfg = cfg
        self.encoder = TransformerEncoder(cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.dropout, cfg.max_len,
                                          causal=True, activation="relu")

    def sequence_output(self, history: torch.Tensor) -> torch.Tensor:
        history = history[:, -self.cfg.max_len:]
        return self.encoder(scaled(self.items(history)), history > 0)
