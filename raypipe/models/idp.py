"""IDP (ID-centric pre-training): generated ID embeddings for new-domain items (IDP §2.5–2.6).

* eq. 8: the top-``m`` pre-training items of a new item by CDIM similarity (an ANN index over the
  pre-training items' CDIM vectors);
* eq. 9: ``score_ij = sim_ij / Σ_k sim_ik`` and ``e_i^T = Σ_j score_ij e_j^S``.  Similarities are
  clipped at 0 before normalising (a negative cosine would flip an embedding); a new item whose
  neighbours are all dissimilar (Σ ≤ 0) gets the plain mean of its top-``m``.
* :func:`transplant` builds the initial state of a downstream model: pre-trained weights, with the
  item-ID table rebuilt for the downstream item index from generated rows (new items), pre-trained
  rows (items that already existed) or fresh random rows (no text, ablation ``w/o M``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

ITEM_TABLE_KEY = "items.id.weight"


class SimilarityIndex(Protocol):
    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids [q, k], similarities [q, k])``, most similar first."""


@dataclass
class GeneratedEmbeddings:
    item_ids: list[str]  # new items that received a generated embedding
    embeddings: np.ndarray  # [n, h]
    neighbours: np.ndarray  # [n, m] pre-training item ids
    weights: np.ndarray  # [n, m] eq. 9 scores

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.item_ids, self.embeddings))

    @classmethod
    def concat(cls, parts: Sequence["GeneratedEmbeddings"]) -> "GeneratedEmbeddings":
        """One result from several (e.g. one per domain); all must have the same m."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls([i for p in parts for i in p.item_ids], np.concatenate([p.embeddings for p in parts]),
                   np.concatenate([p.neighbours for p in parts]), np.concatenate([p.weights for p in parts]))


def eq9_weights(sims: np.ndarray) -> np.ndarray:
    """Normalised similarities of eq. 9 (clipped at 0; uniform when none is positive)."""
    pos = np.clip(sims, 0.0, None)
    total = pos.sum(axis=1, keepdims=True)
    uniform = np.full_like(sims, 1.0 / sims.shape[1])
    return np.where(total > 0, pos / np.where(total > 0, total, 1.0), uniform)


def generate_id_embeddings(new_ids: Sequence[str], new_vectors: np.ndarray, index: SimilarityIndex,
                           source_embeddings: Mapping[str, np.ndarray], m: int) -> GeneratedEmbeddings:
    """eq. 8–9 for every new item: ``index`` searches the pre-training items' CDIM vectors and
    ``source_embeddings`` maps a pre-training item id to its pre-trained ID embedding."""
    if len(new_ids) != len(new_vectors):
        raise ValueError(f"{len(new_ids)} ids but {len(new_vectors)} vectors")
    nb, sims = index.query(new_vectors, m)
    w = eq9_weights(np.asarray(sims, dtype=np.float64))
    table = np.stack([np.stack([source_embeddings[j] for j in row]) for row in nb])  # [n, m, h]
    emb = np.einsum("nm,nmh->nh", w, table).astype(np.float32)
    return GeneratedEmbeddings(list(new_ids), emb, np.asarray(nb), w)


def transplant(pre_state: Mapping[str, torch.Tensor], pre_item_ids: Sequence[str], target_item_ids: Sequence[str],
               generated: Mapping[str, np.ndarray], keep_encoder: bool = True, seed: int = 0,
               extra_rows: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Initial state for a downstream model whose item index is ``target_item_ids`` (index i+1).

    Row sources, in order: a generated embedding; the pre-trained row of the same item; a random row
    (normal, the ID table's own scale).  ``keep_encoder=False`` keeps only the item table (IDP w/o PS:
    the sequential encoder trains from scratch).  ``extra_rows`` appends random rows for special tokens
    (BERT4Rec's [MASK]).  Returns the state and counts per row source.
    """
    old = pre_state[ITEM_TABLE_KEY]
    hidden = old.shape[1]
    pos = {iid: i + 1 for i, iid in enumerate(pre_item_ids)}
    if old.shape[0] < len(pos) + 1:
        raise ValueError(f"pre-trained item table has {old.shape[0]} rows for {len(pos)} items")
    gen = torch.Generator().manual_seed(seed)
    scale = float(old[1:].std())
    table = torch.randn(len(target_item_ids) + 1 + extra_rows, hidden, generator=gen) * scale
    table[0] = 0.0
    counts = {"generated": 0, "pretrained": 0, "random": 0}
    for i, iid in enumerate(target_item_ids, start=1):
        if iid in generated:
            table[i] = torch.as_tensor(generated[iid])
            counts["generated"] += 1
        elif iid in pos:
            table[i] = old[pos[iid]]
            counts["pretrained"] += 1
        else:
            counts["random"] += 1
    state = {k: v.clone() for k, v in pre_state.items() if keep_encoder and k != ITEM_TABLE_KEY}
    state[ITEM_TABLE_KEY] = table
    log.info("transplanted item table: %s", counts)
    return state, counts
