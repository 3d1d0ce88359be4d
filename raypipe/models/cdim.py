"""IDP's Cross-domain ID Matcher (CDIM, IDP §2.4): a sentence encoder tuned to match items across domains.

* eq. 4: ``t_i = Enc(text_i)`` (pooled and L2-normalised; by default the pooling the encoder's
  sentence-transformers folder declares: mean for the packaged MiniLM, ``[CLS]`` for CLS-pooled models);
* eq. 5 (text CL, SimCSE): the same text encoded twice with different dropout is a positive pair,
  the other items of the batch are negatives;
* eq. 6 (behaviour CL): an item's top-k neighbours by *pre-trained ID embedding* are its positives,
  against the same in-batch denominator.  We draw one neighbour per (item, neighbour) row and use the
  standard InfoNCE form (the positive also appears in the denominator), which keeps the loss bounded.
  In-batch rows that are among the anchor's own top-k ID neighbours are false negatives and are masked
  out of its denominator (when the model holds the neighbour table);
* eq. 7: ``L = L_behaviour + L_text``.

Efficiency on CPUs: only the top ``trainable_layers`` Transformer layers are fine-tuned.  The frozen
lower layers are run once (eval mode) and their hidden states cached; training runs the trainable
layers on the cache, so the dropout views of eq. 5 come from the trainable layers.  With
``trainable_layers`` equal to the encoder depth the whole encoder (after the embeddings) is tuned.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import pandas as pd

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.features.text import resolve_text_model, text_pooling
from raypipe.models.spec import BatchSchema, Column, ModelSpec

#: CDIM's training rows: an anchor item and one of its behaviour positives (rows of the text cache)
CDIM_SCHEMA = BatchSchema((Column("anchor", "int64", (1,), "cached item row"),
                           Column("neighbour", "int64", (1,), "a top-k ID-space neighbour of the anchor")))


@dataclass
class CDIMConfig(ModelConfig):
    name: str = "cdim"
    encoder: str | None = None  # local HF path; None = the packaged MiniLM
    #: "mean" or "cls"; "auto" = what the encoder's sentence-transformers folder declares
    pooling: str = "auto"
    temperature: float = 0.05
    max_length: int = 32
    trainable_layers: int = 1
    behaviour: bool = True  # False: SimCSE text CL only
    k_neighbours: int = 5
    #: the catalogue view holding the pre-trained ID embeddings; CDIM trains on the items it has
    id_view: str = "id"
    #: the item text template (raypipe.data.text) CDIM encodes
    text_template: str = "plain"
    #: share of the items held out for the neighbour-recall validation (at least 10 items)
    valid_share: float = 0.05
    #: behaviour positives per training item (of its k ID neighbours); 1 = one fixed pair per item
    pairs_per_item: int = 1
    seed: int = 0


def _extended_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class CDIM(nn.Module):
    """The sentence encoder plus (optionally) cached lower-layer states of the training items."""

    def __init__(self, cfg: CDIMConfig, cache_hidden: torch.Tensor | None = None,
                 cache_mask: torch.Tensor | None = None, neighbours: torch.Tensor | None = None) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.cfg = cfg
        path = resolve_text_model(cfg.encoder)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.encoder = AutoModel.from_pretrained(path, local_files_only=True)
        n_layers = len(self.encoder.encoder.layer)
        if not 1 <= cfg.trainable_layers <= n_layers:
            raise ValueError(f"trainable_layers must be in [1, {n_layers}], got {cfg.trainable_layers}")
        self.pooling = text_pooling(path) if cfg.pooling == "auto" else cfg.pooling
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls' (or 'auto'), got {self.pooling!r}"
                             + (f" (declared by {path})" if cfg.pooling == "auto" else ""))
        self.split = n_layers - cfg.trainable_layers
        for p in self.encoder.embeddings.parameters():
            p.requires_grad = False
        for layer in self.encoder.encoder.layer[: self.split]:
            for p in layer.parameters():
                p.requires_grad = False
        if cache_hidden is not None:
            self.attach(cache_hidden, cache_mask, neighbours)

    def attach(self, cache_hidden: torch.Tensor, cache_mask: torch.Tensor,
               neighbours: torch.Tensor | None = None) -> "CDIM":
        """Hold the frozen-layer states of the training items (and their ``[n, k]`` ID neighbours, whose
        in-batch occurrences the behaviour loss does not count as negatives)."""
        self.register_buffer("cache_hidden", cache_hidden, persistent=False)
        self.register_buffer("cache_mask", cache_mask, persistent=False)
        if neighbours is not None:
            self.register_buffer("neighbours", torch.as_tensor(neighbours, dtype=torch.long), persistent=False)
        return self

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.cfg.max_length,
                              return_tensors="pt")

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            v = hidden[:, 0]
        else:
            m = mask[..., None].to(hidden.dtype)
            v = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(v, dim=-1)

    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen layers (what the cache holds)."""
        h = self.encoder.embeddings(input_ids=input_ids)
        ext = _extended_mask(attention_mask, h.dtype)
        for layer in self.encoder.encoder.layer[: self.split]:
            out = layer(h, attention_mask=ext)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def upper(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ext = _extended_mask(attention_mask, hidden.dtype)
        for layer in self.encoder.encoder.layer[self.split:]:
            out = layer(hidden, attention_mask=ext)
            hidden = out[0] if isinstance(out, tuple) else out
        return self._pool(hidden, attention_mask)

    def encode_cached(self, idx: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, d]`` of cached items (dropout active in train mode: SimCSE views)."""
        mask = self.cache_mask[idx]
        width = int(mask.sum(1).max().clamp_min(1))  # trim common padding
        return self.upper(self.cache_hidden[idx][:, :width], mask[:, :width])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Full-encoder embeddings (eval mode), float32 ``[n, d]``."""
        was = self.training
        self.eval()
        out = np.zeros((len(texts), self.dim), np.float32)
        for i in range(0, len(texts), batch_size):
            enc = self.tokenize(texts[i:i + batch_size])
            dev = next(self.parameters()).device
            h = self.lower_states(enc["input_ids"].to(dev), enc["attention_mask"].to(dev))
            out[i:i + len(h)] = self.upper(h, enc["attention_mask"].to(dev)).float().cpu().numpy()
        self.train(was)
        return out

    @torch.inference_mode()
    def cache_states(self, texts: Sequence[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-layer states ``[n, max_length, d]`` and masks for ``texts`` (padded to max_length)."""
        self.eval()
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.cfg.max_length,
                             return_tensors="pt")
        hs = [self.lower_states(enc["input_ids"][i:i + batch_size], enc["attention_mask"][i:i + batch_size])
              for i in range(0, len(texts), batch_size)]
        return torch.cat(hs).contiguous(), enc["attention_mask"].contiguous()

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        anchor = batch["anchor"].reshape(-1)
        tau = self.cfg.temperature
        a1 = self.encode_cached(anchor)
        a2 = self.encode_cached(anchor)  # a second dropout view (eq. 5)
        sims = a1 @ a2.T / tau
        same = anchor[:, None] == anchor[None, :]
        same.fill_diagonal_(False)
        sims = sims.masked_fill(same, float("-inf"))  # duplicates of the anchor are not negatives
        labels = torch.arange(len(anchor), device=anchor.device)
        loss = F.cross_entropy(sims, labels)  # eq. 5
        if self.cfg.behaviour:
            nb = self.encode_cached(batch["neighbour"].reshape(-1))
            pos = (a1 * nb).sum(-1, keepdim=True) / tau
            neg = sims
            if hasattr(self, "neighbours"):  # in-batch ID neighbours of the anchor are not negatives
                false_neg = (self.neighbours[anchor][:, :, None] == anchor[None, None, :]).any(1)
                neg = sims.masked_fill(false_neg, float("-inf"))
            loss = loss + F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros_like(labels))  # eq. 6
        return loss  # eq. 7

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)


def id_neighbours(embeddings: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Top-``k`` neighbours of every row by cosine similarity of (pre-trained ID) embeddings, self
    excluded: ``[n, k]`` row indices (exact, blockwise)."""
    x = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    n = len(x)
    k = min(k, n - 1)
    out = np.zeros((n, k), dtype=np.int64)
    for lo in range(0, n, block):
        s = x[lo:lo + block] @ x.T
        s[np.arange(len(s)), np.arange(lo, lo + len(s))] = -np.inf
        part = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
        out[lo:lo + len(s)] = np.take_along_axis(part, order, 1)
    return out


@dataclass
class CDIMValidator:
    """``valid/neighbour_recall@10``: share of a held-out item's ID-space neighbours (top-k) found among
    its 10 nearest items in CDIM space (all cached items are candidates, the item itself excluded).

    With ``probe_idx`` (training items) it also reports ``fit/neighbour_recall@10``, the same on items
    whose neighbours were trained on: fit rising while valid stays flat means the behaviour CL memorises
    pairs that the text cannot predict for unseen items."""

    valid_idx: np.ndarray
    neighbours: np.ndarray  # [n_cached, k]
    probe_idx: np.ndarray | None = None

    def __call__(self, model: nn.Module, rank: int, world: int, device: torch.device) -> dict[str, float]:
        model.eval()
        with torch.inference_mode():
            n = model.cache_hidden.shape[0]
            vecs = torch.cat([model.encode_cached(torch.arange(i, min(i + 512, n), device=device))
                              for i in range(0, n, 512)])
        model.train()
        out = {"valid/neighbour_recall@10": self._recall(vecs, self.valid_idx, device)}
        if self.probe_idx is not None and len(self.probe_idx):
            out["fit/neighbour_recall@10"] = self._recall(vecs, self.probe_idx, device)
        return out

    def _recall(self, vecs: torch.Tensor, rows: np.ndarray, device: torch.device) -> float:
        with torch.inference_mode():
            q = vecs[torch.as_tensor(rows, device=device)]
            s = q @ vecs.T
            s[torch.arange(len(q)), torch.as_tensor(rows, device=device)] = float("-inf")
            top = s.topk(min(10, len(vecs) - 1), dim=1).indices.cpu().numpy()
        nb = self.neighbours[rows]
        return float(np.mean([len(set(t) & set(b)) / len(b) for t, b in zip(top, nb)]))


@dataclass
class CDIMData:
    """What CDIM trains and validates on, derived from the catalogue once (seeded): the cached rows (the
    catalogue indices of items with text and a pre-trained ID embedding), their top-k ID neighbours,
    the held-out rows, the training pairs (eq. 6 positives) and a probe of training rows."""

    items: np.ndarray  # [n] catalogue indices of the cached rows
    neighbours: np.ndarray  # [n, k] cache rows
    valid: np.ndarray  # held-out cache rows
    anchors: np.ndarray  # [p] cache rows
    positives: np.ndarray  # [p] cache rows
    probe: np.ndarray  # training cache rows, as many as held out


def cdim_data(cfg: CDIMConfig, catalogue: ItemCatalogue) -> CDIMData:
    key = f"cdim/data/{cfg.id_view}/{cfg.text_template}/{cfg.k_neighbours}/{cfg.valid_share}/{cfg.pairs_per_item}/{cfg.seed}"
    return catalogue.derived(key, lambda: _make_data(cfg, catalogue))


def _make_data(cfg: CDIMConfig, catalogue: ItemCatalogue) -> CDIMData:
    view = catalogue.view(cfg.id_view)
    texts = catalogue.texts(cfg.text_template)
    items = np.array([i for i in range(1, catalogue.num_embeddings) if view.present[i] and texts[i]], dtype=np.int64)
    if len(items) < 20:
        raise ValueError(f"CDIM needs at least 20 items with text and a {cfg.id_view!r} vector, found {len(items)}")
    if not 1 <= cfg.pairs_per_item <= cfg.k_neighbours:
        raise ValueError(f"model.pairs_per_item must be in [1, k_neighbours={cfg.k_neighbours}], got {cfg.pairs_per_item}")
    nbrs = id_neighbours(view.vectors[items], cfg.k_neighbours)
    rng = np.random.default_rng(cfg.seed)
    valid = np.sort(rng.choice(len(items), size=max(10, int(cfg.valid_share * len(items))), replace=False))
    train_mask = np.ones(len(items), bool)
    train_mask[valid] = False
    anchors = np.flatnonzero(train_mask)
    rows_a: list[int] = []
    rows_n: list[int] = []
    for a in anchors:  # behaviour positives: pairs_per_item of its top-k ID neighbours that are not held out
        cand = [j for j in nbrs[a] if train_mask[j]] or [a]
        picks = [rng.choice(cand)] if cfg.pairs_per_item == 1 else \
            rng.choice(cand, size=min(cfg.pairs_per_item, len(cand)), replace=False)
        rows_a += [int(a)] * len(picks)
        rows_n += [int(p) for p in picks]
    probe = np.sort(np.random.default_rng(cfg.seed + 1).choice(anchors, size=min(len(valid), len(anchors)),
                                                               replace=False))
    return CDIMData(items, nbrs, valid, np.asarray(rows_a, np.int64), np.asarray(rows_n, np.int64), probe)


def build_cdim(cfg: CDIMConfig, catalogue: ItemCatalogue) -> CDIM:
    """CDIM over the catalogue's items with text and a pre-trained ID embedding; the frozen-layer states of
    their texts are computed once and kept with the catalogue."""
    data = cdim_data(cfg, catalogue)
    model = CDIM(cfg)
    key = f"cdim/cache/{cfg.encoder}/{cfg.max_length}/{model.split}/{cfg.text_template}/{cfg.id_view}"
    texts = catalogue.texts(cfg.text_template)
    hidden, mask = catalogue.derived(key, lambda: model.cache_states([texts[i] for i in data.items]))
    return model.attach(hidden, mask, torch.as_tensor(data.neighbours))


def cdim_rows(cfg: CDIMConfig, train: "pd.DataFrame", catalogue: ItemCatalogue) -> dict[str, np.ndarray]:
    d = cdim_data(cfg, catalogue)
    return {"anchor": d.anchors[:, None], "neighbour": d.positives[:, None]}


def cdim_validator(cfg: CDIMConfig, catalogue: ItemCatalogue) -> "CDIMValidator":
    d = cdim_data(cfg, catalogue)
    return CDIMValidator(d.valid, d.neighbours, d.probe)


SPEC = ModelSpec(
    name="cdim", config=CDIMConfig, build=build_cdim, schema=lambda cfg: CDIM_SCHEMA, rows=cdim_rows,
    validator=cdim_validator, capabilities=frozenset(),
    summary="IDP's cross-domain ID matcher: a sentence encoder tuned with SimCSE + behaviour CL",
    reference="IDP eq. 4-7 (positives: top-k neighbours by pre-trained ID embedding)",
)
