"""SASRec (Kang & McAuley 2018): causal self-attention over the item sequence.

Used by IDP as its pre-trained backbone with the BPR objective (IDP eq. 2–3), and by PreRec's
baselines over frozen SBERT item vectors (``item_input="content"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from raypipe.data.catalogue import ItemCatalogue
from raypipe.models.layers import TransformerEncoder, scaled
from raypipe.models.sequential import NextItemModel, SequenceModelConfig, sequence_rows, sequence_schema
from raypipe.models.spec import ModelSpec


@dataclass
class SASRecConfig(SequenceModelConfig):
    name: str = "sasrec"
    n_heads: int = 2
    #: ``ce`` (softmax over the catalogue) or ``bpr`` (one sampled same-domain negative per position)
    loss: Literal["ce", "bpr"] = "ce"


class SASRec(NextItemModel):
    def __init__(self, cfg: SASRecConfig, catalogue: ItemCatalogue) -> None:
        super().__init__(cfg, catalogue, cfg.loss)
        self.cfg = cfg
        self.encoder = TransformerEncoder(cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.dropout, cfg.max_len,
                                          causal=True, activation="relu")

    def sequence_output(self, history: torch.Tensor) -> torch.Tensor:
        history = history[:, -self.cfg.max_len:]
        return self.encoder(scaled(self.items(history)), history > 0)


SPEC = ModelSpec(
    name="sasrec", config=SASRecConfig, build=SASRec, schema=sequence_schema, rows=sequence_rows,
    capabilities=frozenset({"retrieval", "scorer"}),
    summary="causal self-attention over the item sequence (CE or BPR)",
    reference="Kang & McAuley 2018, arXiv:1808.09781; IDP eq. 2-3 with loss=bpr",
)
