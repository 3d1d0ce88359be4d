"""GRU4Rec (Hidasi et al. 2016) with the cross-entropy objective over the catalogue.

Left-padded histories are packed (pads skipped) so padding never enters the recurrent state.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from raypipe.models.layers import ModelContext
from raypipe.models.sequential import NextItemModel


@dataclass
class GRU4RecConfig:
    hidden: int = 64
    n_layers: int = 1
    dropout: float = 0.2
    max_len: int = 50
    loss: str = "ce"
    item_input: str = "id"
    content_projection: str = "linear"


class GRU4Rec(NextItemModel):
    def __init__(self, cfg: GRU4RecConfig, ctx: ModelContext) -> None:
        super().__init__(ctx, cfg.hidden, cfg.item_input, cfg.loss, projection=cfg.content_projection)
        self.cfg = cfg
        self.dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, num_layers=cfg.n_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)

    def sequence_output(self, history: torch.Tensor) -> torch.Tensor:
        history = history[:, -self.cfg.max_len:]
        B, L = history.shape
        lengths = (history > 0).sum(1)
        # left-padded -> right-padded: row b starts at column L - len_b
        cols = (torch.arange(L, device=history.device)[None] + (L - lengths)[:, None]) % L
        right = history.gather(1, cols)
        x = self.dropout(self.items(right))
        packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=L)
        # back to left-padded positions
        inv = (torch.arange(L, device=history.device)[None] - (L - lengths)[:, None]) % L
        y = y.gather(1, inv[..., None].expand(-1, -1, y.shape[-1]))
        return self.out(y) * (history > 0)[..., None]
