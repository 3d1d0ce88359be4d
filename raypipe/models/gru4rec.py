"""GRU4Rec (Hidasi et al. 2016) with the cross-entropy objective over the catalogue.

Left-padded histories are packed (pads skipped) so padding never enters the recurrent state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from raypipe.data.catalogue import ItemCatalogue
from raypipe.models.layers import left_padded_gru
from raypipe.models.sequential import NextItemModel, SequenceModelConfig, sequence_rows, sequence_schema
from raypipe.models.spec import ModelSpec


@dataclass
class GRU4RecConfig(SequenceModelConfig):
    name: str = "gru4rec"
    n_layers: int = 1
    loss: Literal["ce", "bpr"] = "ce"


class GRU4Rec(NextItemModel):
    def __init__(self, cfg: GRU4RecConfig, catalogue: ItemCatalogue) -> None:
        super().__init__(cfg, catalogue, cfg.loss)
        self.cfg = cfg
        self.dropout = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, num_layers=cfg.n_layers, batch_first=True,
                          dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)

    def sequence_output(self, history: torch.Tensor) -> torch.Tensor:
        history = history[:, -self.cfg.max_len:]
        valid = history > 0
        return self.out(left_padded_gru(self.gru, self.dropout(self.items(history)), valid)) * valid[..., None]


SPEC = ModelSpec(
    name="gru4rec", config=GRU4RecConfig, build=GRU4Rec, schema=sequence_schema, rows=sequence_rows,
    capabilities=frozenset({"retrieval", "scorer"}),
    summary="GRU over the item sequence (CE or BPR)",
    reference="Hidasi et al. 2016, arXiv:1511.06939",
)
