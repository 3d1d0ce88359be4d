"""Shared pieces of the item-sequence models: their common config, training rows and objectives.

A training row is ``seq``: a window of at most ``max_len + 1`` consecutive items of a training sequence,
left-padded.  With ``train_windows="all"`` (default) a long sequence gives several windows, so every
item of it is a target once (:func:`raypipe.data.sequences.sequence_windows`); ``"last"`` keeps only
its most recent window.  Causal models read ``input = seq[:, :-1]`` and predict ``target = seq[:, 1:]``
at every position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.data.sequences import pad_left, sequence_windows
from raypipe.models.base import SequentialRecommender
from raypipe.models.layers import ItemEmbedding
from raypipe.models.spec import BatchSchema, Column


@dataclass
class SequenceModelConfig(ModelConfig):
    """Options every item-sequence model shares (each model's config extends it)."""

    hidden: int = 64
    n_layers: int = 2
    dropout: float = 0.2
    #: the model's history window; ``None`` = ``data.max_len``
    max_len: int | None = None
    #: item input: trainable ``id`` embeddings, frozen ``content`` vectors (projected), or ``id+content``
    item_input: Literal["id", "content", "id+content"] = "id"
    #: how content vectors enter: a trainable ``linear`` projection or ``identity`` (IDP_ID+t adds
    #: PCA-reduced text vectors as they are)
    content_projection: Literal["linear", "identity"] = "linear"
    #: the catalogue's feature view content input reads
    content_view: str = "text"
    #: training rows: windows covering ``all`` of each training sequence, or only its ``last`` window
    train_windows: Literal["all", "last"] = "all"


def item_embedding(cfg: SequenceModelConfig, catalogue: ItemCatalogue, extra_tokens: int = 0) -> ItemEmbedding:
    features = catalogue.view(cfg.content_view).vectors if "content" in cfg.item_input else None
    return ItemEmbedding(catalogue.num_embeddings, cfg.hidden, cfg.item_input, extra_tokens,
                         cfg.content_projection, features)


def sequence_schema(cfg: SequenceModelConfig) -> BatchSchema:
    return BatchSchema((Column("seq", "int64", (_window(cfg) + 1,),
                               "the last max_len+1 items of a training sequence, left-padded"),))


def sequence_rows(cfg: SequenceModelConfig, train: pd.DataFrame, catalogue: ItemCatalogue) -> dict[str, np.ndarray]:
    """``seq`` rows of every training sequence of at least two items (windows over long ones)."""
    seqs = [s for s in train["items"] if len(s) >= 2]
    if not seqs:
        raise ValueError(f"no training sequences of length >= 2 in domains {sorted(set(train['domain']))}")
    width = _window(cfg) + 1
    if cfg.train_windows == "all":
        seqs = sequence_windows(seqs, width)
    return {"seq": pad_left(seqs, width)}


def _window(cfg: SequenceModelConfig) -> int:
    if cfg.max_len is None or cfg.max_len < 1:
        raise ValueError(f"model.max_len must be >= 1, got {cfg.max_len}")
    return cfg.max_len


class NextItemModel(SequentialRecommender):
    """Base for causal next-item models: subclasses give ``sequence_output(input) -> [B, L, d]``.

    ``loss="ce"``: softmax cross-entropy over the whole item table (SASRec/GRU4Rec as in RecBole);
    ``loss="bpr"``: one negative per position drawn uniformly from the *target's domain* (IDP eq. 3).
    """

    def __init__(self, cfg: SequenceModelConfig, catalogue: ItemCatalogue, loss: str) -> None:
        super().__init__()
        if loss not in ("ce", "bpr"):
            raise ValueError(f"loss must be 'ce' or 'bpr', got {loss!r}")
        self.loss_type = loss
        self.items = item_embedding(cfg, catalogue)
        dom = torch.as_tensor(catalogue.item_domain, dtype=torch.long).clamp_min(0)
        ranges = torch.as_tensor(catalogue.domain_ranges, dtype=torch.long)
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
