"""PreRec (Lin et al. 2023, "Pre-trained Recommender Systems: A Causal Perspective", ``papers/PreRec``).

The causal graph (Fig. 1) and its neural implementation (Fig. 2), eq. 1-6:

* item ``j``: ``V_j = f_e(X_j) + r_j`` -- ``f_e`` a linear map (or an MLP) of the frozen SBERT text
  vector ``X_j`` (the catalogue's ``text`` view: the packaged MiniLM by default), ``r_j`` a per-item
  residual with the Gaussian prior ``N(0, λ_v^-1)`` of eq. 3 (``item_residual``; zero-initialised, as the
  official code's ``init_item``, so an item never trained on is exactly ``f_e(X_j)``);
* domain confounder ``D_k`` (one vector per domain, prior ``N(0, λ_d^-1)``, zero-initialised): it enters
  the user side, ``U_i = f_seq(H_i + D_k)`` (added to every history item, as the official code does).
  On the item side (and as eq. 2's ``D_k W_d``) it would add one constant to every same-domain
  candidate, which the same-domain softmax cancels, so it is not spent there;
* popularity confounder ``Z_j = f_pop(F_j)`` with ``F_j = [c_j/s_1, ..., c_j/s_4]``, ``c_j`` item j's
  interactions in the ``pop_window`` time slots *before* the slot of the event (no look-ahead: an event
  never counts towards its own factors) and ``s_w = (Σ_{i∈J_k} c_i^w / |J_k|)^{1/w}`` over the domain's
  catalogue (appendix E); ``f_pop`` is a GELU MLP to one scalar, i.e. eq. 2's ``Z_j W_z``;
* eq. 2/4: ``softmax(U_iᵀV_j + Z_j)`` over the positive and ``n_neg`` negatives drawn uniformly from the
  positive's own domain (appendix F), cross-entropy; the Gaussian priors are weight decay per parameter
  group (``lambda_d`` on D, ``lambda_v`` on the residuals, ``lambda_u`` on f_seq, ``lambda_z`` on f_pop,
  ``train.weight_decay`` on f_e) -- Adam's L2 on the mean batch loss, as the official code does.  U and Z
  have no free per-user or per-(item, slot) variables here (test users and slots are new), so their priors
  reduce to decay on the functions that produce them.

Zero-shot (eq. 5): ``do(D = 0)`` -- a domain whose confounder was never trained (``domain_trained``) is
read as 0 -- and Z from the target domain's *own* counts, computed when the model is built on the target
catalogue (popularity statistics are data, not weights: they are non-persistent buffers).  Fine-tuning
(eq. 6) trains every parameter on the target domain, its own D_k included.  Ablations: ``PreRec_n``
(``domain_confounder=false popularity=false``), w/o D, w/o Z.

Scoring reads the moment of the recommendation: ``score(history, candidates, time=...)`` (the protocols
pass each target event's time); without a time it uses the latest window ("now").  The retrieval vectors
fold the popularity term in: ``user_repr = [U, 1]``, ``item_repr = [V, Z(now)]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue, group_norms, query_slot
from raypipe.data.sequences import pad_left
from raypipe.models.base import SequentialRecommender, extend_embedding, score_candidates
from raypipe.models.layers import TransformerEncoder, left_padded_gru
from raypipe.models.spec import BatchSchema, Column, ModelSpec, OptimRecipe

DAY = 86_400


@dataclass
class PreRecConfig(ModelConfig):
    name: str = "prerec"
    #: the user/item embedding size B (paper: 256)
    hidden: int = 256
    #: f_seq: a causal ``transformer`` (paper) or a ``gru``
    encoder: Literal["transformer", "gru"] = "transformer"
    #: transformer layers and heads of f_seq
    n_layers: int = 2
    n_heads: int = 2
    #: GRU layers of f_seq with ``encoder=gru`` (Table 4: 2)
    gru_layers: int = 2
    dropout: float = 0.1
    #: the history window; ``None`` = ``data.max_len``
    max_len: int | None = None
    #: the catalogue view holding the SBERT text vectors X_j
    text_view: str = "text"
    #: f_e: ``linear`` (no bias, as the official code) or a two-layer ``mlp``
    item_encoder: Literal["linear", "mlp"] = "linear"
    #: negatives per positive, uniform over the positive's domain (Table 4: 256)
    n_neg: int = 256
    #: the domain confounder D_k (off: w/o D; off together with ``popularity``: PreRec_n)
    domain_confounder: bool = True
    #: the popularity confounder Z_j (off: w/o Z)
    popularity: bool = True
    #: the per-item residual r_j of V_j (its prior is λ_v)
    item_residual: bool = True
    #: the orders w of the popularity norms s_w (appendix E: 1..4)
    pop_orders: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    #: the length of a popularity time slot, in days
    pop_slot_days: float = 1.0
    #: the slots before an event whose interactions make its popularity (15 one-day slots: the paper's
    #: POP "last 15 days")
    pop_window: int = 15
    #: f_pop's hidden width (the official code: 512)
    pop_hidden: int = 512
    #: Gaussian-prior precisions as weight decay (Table 4: domain bias 0.3, item bias 100)
    lambda_d: float = 0.3
    lambda_v: float = 100.0
    lambda_u: float = 0.0
    lambda_z: float = 0.0

    def __post_init__(self) -> None:
        if self.n_neg < 1 or self.pop_window < 1 or self.pop_slot_days <= 0 or not self.pop_orders:
            raise ValueError("prerec needs n_neg >= 1, pop_window >= 1, pop_slot_days > 0 and pop_orders")
        if any(w < 1 for w in self.pop_orders):
            raise ValueError(f"pop_orders must be >= 1, got {self.pop_orders}")
        if min(self.lambda_d, self.lambda_v, self.lambda_u, self.lambda_z) < 0:
            raise ValueError("the prior precisions lambda_* must be >= 0")

    @property
    def slot_seconds(self) -> int:
        return max(1, int(round(self.pop_slot_days * DAY)))


class PreRec(SequentialRecommender):
    #: state entries tied to one catalogue (item residuals, the domains' confounders), left out when a
    #: pre-trained model starts a run on another dataset: its domains start untrained, do(D = 0)
    catalogue_state = ("residual.", "domain.", "domain_trained")

    def __init__(self, cfg: PreRecConfig, catalogue: ItemCatalogue) -> None:
        super().__init__()
        if cfg.max_len is None:
            raise ValueError("model.max_len must be set (it defaults to data.max_len)")
        self.cfg = cfg
        H = cfg.hidden
        view = catalogue.view(cfg.text_view)
        self.register_buffer("text", torch.as_tensor(view.vectors, dtype=torch.float32), persistent=False)
        d = view.dim
        self.f_e = (nn.Linear(d, H, bias=False) if cfg.item_encoder == "linear"
                    else nn.Sequential(nn.Linear(d, H), nn.GELU(), nn.Linear(H, H)))
        self.residual = nn.Embedding(catalogue.num_embeddings, H) if cfg.item_residual else None
        n_dom = len(catalogue.domain_names)
        self.domain = nn.Embedding(n_dom, H) if cfg.domain_confounder else None
        for emb in (self.residual, self.domain):
            if emb is not None:
                nn.init.zeros_(emb.weight)
        #: which domains' confounders were trained (the others are do(D=0)); saved with the weights
        self.register_buffer("domain_trained", torch.zeros(n_dom, dtype=torch.bool))
        dom = torch.as_tensor(catalogue.item_domain, dtype=torch.long)
        self.register_buffer("item_domain", dom.clamp_min(0), persistent=False)
        ranges = torch.as_tensor(catalogue.domain_ranges, dtype=torch.long)
        self.register_buffer("neg_lo", ranges[dom.clamp_min(0), 0], persistent=False)
        self.register_buffer("neg_span", ranges[dom.clamp_min(0), 1] - ranges[dom.clamp_min(0), 0], persistent=False)
        if cfg.encoder == "transformer":
            self.encoder: nn.Module = TransformerEncoder(H, cfg.n_layers, cfg.n_heads, cfg.dropout, cfg.max_len,
                                                         causal=True)
        else:
            self.encoder = nn.GRU(H, H, num_layers=cfg.gru_layers, batch_first=True,
                                  dropout=cfg.dropout if cfg.gru_layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.f_pop = None
        if cfg.popularity:
            self.f_pop = nn.Sequential(nn.Linear(len(cfg.pop_orders), cfg.pop_hidden), nn.GELU(),
                                       nn.Linear(cfg.pop_hidden, 1))
            self.set_popularity(catalogue)
        self.weight_decays = {"domain.": cfg.lambda_d, "residual.": cfg.lambda_v, "encoder.": cfg.lambda_u,
                              "f_pop.": cfg.lambda_z}

    # -- popularity ------------------------------------------------------------------------------------
    def set_popularity(self, catalogue: ItemCatalogue) -> None:
        """(Re)read the popularity statistics from a catalogue's events (e.g. a target domain's own).

        A catalogue without events (a serving replica that only encodes histories) gets one empty slot:
        every item's factors are 0 until :meth:`live_pop_scores` is given counts."""
        if catalogue.events is None:
            start = 0
            counts = np.zeros((1, catalogue.num_embeddings), np.float32)
            norms = np.zeros((1, len(catalogue.domain_names), len(self.cfg.pop_orders)), np.float32)
        else:
            start, counts, norms = catalogue.prior_popularity(self.cfg.slot_seconds, self.cfg.pop_window,
                                                              tuple(self.cfg.pop_orders))
        self.pop_start = int(start)
        self.domain_ranges = np.asarray(catalogue.domain_ranges)
        device = self.neg_lo.device
        self.register_buffer("pop_counts", torch.as_tensor(counts, device=device), persistent=False)
        self.register_buffer("pop_norms", torch.as_tensor(norms, device=device), persistent=False)

    @property
    def n_slots(self) -> int:
        return int(self.pop_counts.shape[0]) - 1

    def query_slots(self, time: torch.Tensor | None, n: int) -> torch.Tensor:
        """The popularity slot of each row's moment (``None``: after all the data, i.e. now)."""
        if time is None:
            return torch.full((n,), self.n_slots, dtype=torch.long, device=self.pop_counts.device)
        q = torch.div(time.long() - self.pop_start, self.cfg.slot_seconds, rounding_mode="floor")
        return q.clamp(0, self.n_slots)

    def factors(self, items: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """F_j ``[..., W]`` of ``items`` at ``slots`` (broadcast against each other)."""
        slots, items = torch.broadcast_tensors(slots, items)
        c = self.pop_counts[slots, items]
        s = self.pop_norms[slots, self.item_domain[items]]  # [..., W]
        return torch.where(s > 0, c[..., None] / s.clamp_min(1e-12), torch.zeros_like(s))

    def pop_score(self, items: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Z_j (eq. 2's ``Z_j W_z``): ``f_pop(F_j)``, 0 for padding; zeros without the confounder."""
        if self.f_pop is None:
            return torch.zeros(torch.broadcast_shapes(items.shape, slots.shape), device=items.device)
        slots, items = torch.broadcast_tensors(slots, items)
        n_dom, n_w = self.pop_norms.shape[1], self.pop_norms.shape[2]
        return self._z(self.pop_counts[slots, items], slots * n_dom + self.item_domain[items],
                       self.pop_norms.reshape(-1, n_w)) * (items > 0)

    def _z(self, counts: torch.Tensor, group: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """``f_pop(c / norms[group])`` elementwise (0 factors where a norm is 0).

        F_j is a function of (norm row, count) alone and most items share a few counts (most are 0), so
        f_pop runs once per distinct pair and is gathered back: the same values, about 10x less work than
        running it on every (row, candidate) pair."""
        c = counts.long()
        top = int(c.max()) + 1 if c.numel() else 1
        uniq, inv = torch.unique((group * top + c).reshape(-1), return_inverse=True)
        s = norms[torch.div(uniq, top, rounding_mode="floor")]  # [U, W]
        f = torch.where(s > 0, (uniq % top).to(s.dtype)[:, None] / s.clamp_min(1e-12), torch.zeros_like(s))
        return self.f_pop(f).squeeze(-1)[inv].reshape(counts.shape)  # type: ignore[misc]

    @torch.inference_mode()
    def live_pop_scores(self, counts: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
        """Z of every entry of ``counts`` (float32, entry 0 = the padding row = 0), window counts ``c_j``
        observed at serving time (e.g. :class:`raypipe.serve.popularity.LivePopularity`): the same factors
        and f_pop as training, each domain's norms s_w recomputed from these counts.

        ``groups[j]`` is entry j's domain index; the default is the model's item domains (one count per
        item index).  Serving passes longer arrays when items were onboarded after training (their own
        domain's J_k grows) or whole domains are new (indices past the model's: their own norms, eq. 5)."""
        if self.f_pop is None:
            raise ValueError("this PreRec has no popularity confounder (popularity=false)")
        counts = np.asarray(counts, dtype=np.float32)
        groups = self.item_domain.cpu().numpy() if groups is None else np.asarray(groups, np.int64)
        if counts.shape != groups.shape or counts.ndim != 1 or not len(counts):
            raise ValueError(f"counts must have one entry per item index and group ({groups.shape[0]}), "
                             f"got shape {counts.shape}")
        groups = groups.copy()
        groups[0] = -1  # the padding row belongs to no domain
        norms = group_norms(counts, groups, self.cfg.pop_orders)
        dev = self.pop_counts.device
        z = self._z(torch.as_tensor(counts, device=dev), torch.as_tensor(groups.clip(0), device=dev),
                    torch.as_tensor(norms, device=dev))
        z[0] = 0.0
        return z.float().cpu().numpy()

    # -- representations -------------------------------------------------------------------------------
    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """V_j = f_e(X_j) + r_j (zeros for padding)."""
        v = self.f_e(self.text[items])
        if self.residual is not None:
            v = v + self.residual(items)
        return v * (items > 0)[..., None]

    def domain_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """D_k of each item's domain, 0 for a domain whose confounder was never trained (do(D = 0))."""
        if self.domain is None:
            return torch.zeros(*items.shape, self.cfg.hidden, device=items.device)
        k = self.item_domain[items]
        n = self.domain_trained.shape[0]
        known = k < n  # a domain added at serving time (extend_items) has no confounder: do(D = 0)
        k = k.clamp_max(n - 1)
        return self.domain(k) * (self.domain_trained[k] & known & (items > 0))[..., None]

    def user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """U_i = f_seq(H_i + D_k): the encoder's output at the most recent position."""
        history = history[:, -self.cfg.max_len:].long()
        valid = history > 0
        x = self.dropout(self.item_vectors(history) + self.domain_vectors(history))
        if isinstance(self.encoder, TransformerEncoder):
            out = self.encoder(x, valid)
        else:
            out = left_padded_gru(self.encoder, x, valid)
        return out[:, -1]

    def user_repr(self, history: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(history)
        return torch.cat([u, torch.ones_like(u[:, :1])], dim=1)

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        if self.f_pop is None:
            z = torch.zeros(items.shape, device=items.device)
        else:
            z = self.pop_score(items, self.query_slots(None, 1).reshape((1,) * items.dim()))
        return torch.cat([self.item_vectors(items), z[..., None]], dim=-1)

    def content_dims(self) -> dict[str, int]:
        """The raw feature view :meth:`content_item_repr` reads, with its width."""
        return {self.cfg.text_view: int(self.text.shape[1])}

    def extend_items(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                     domains: torch.Tensor) -> torch.Tensor:
        """Add items never trained on (text vectors, presence, domain indices) so that histories may hold
        them (``r_j = 0``, no interactions yet); returns their new indices."""
        view = self.cfg.text_view
        x = feats[view].to(self.text) * present[view].to(self.text)[:, None]
        n0, n = self.text.shape[0], len(x)
        self.text = torch.cat([self.text, x])
        self.item_domain = torch.cat([self.item_domain, domains.to(self.item_domain)])
        if self.residual is not None:
            self.residual = extend_embedding(self.residual, n)
        if self.f_pop is not None:  # no interactions in any slot yet
            self.pop_counts = torch.cat([self.pop_counts, self.pop_counts.new_zeros(self.pop_counts.shape[0], n)], 1)
        return torch.arange(n0, n0 + n)

    def content_item_repr(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[f_e(X_j), Z]`` of items never trained on, from their text vectors alone: no residual (r_j = 0)
        and the popularity term of an item without interactions (serving replaces it as counts arrive)."""
        view = self.cfg.text_view
        if view not in feats or view not in present:
            raise ValueError(f"content_item_repr needs the {view!r} view")
        x = feats[view].to(self.text.dtype)
        v = self.f_e(x) * present[view].to(x.dtype)[:, None]
        z = torch.zeros(len(x), 1, device=x.device, dtype=v.dtype)
        if self.f_pop is not None:
            z = z + self.f_pop(torch.zeros(1, len(self.cfg.pop_orders), device=x.device, dtype=v.dtype))
        return torch.cat([v, z], dim=-1)

    def score(self, history: torch.Tensor, candidates: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        u = self.user_vectors(history)
        s = score_candidates(u, self.item_vectors, candidates)
        if self.f_pop is not None:
            q = self.query_slots(time, history.shape[0])[:, None]
            s = s + self.pop_score(candidates if candidates.dim() == 2 else candidates[None], q)
        return s

    # -- training --------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        history, target, slot = batch["history"].long(), batch["target"].long(), batch["slot"].long()
        if self.training and self.domain is not None:
            with torch.no_grad():
                self.domain_trained[self.item_domain[target].unique()] = True
        B = target.shape[0]
        neg = self.neg_lo[target][:, None] + (torch.rand(B, self.cfg.n_neg, device=target.device)
                                              * self.neg_span[target][:, None]).long()
        cands = torch.cat([target[:, None], neg], dim=1)
        uniq, inv = torch.unique(cands, return_inverse=True)  # f_e once per distinct candidate
        logits = torch.einsum("bd,bcd->bc", self.user_vectors(history), self.item_vectors(uniq)[inv])
        logits = logits + self.pop_score(cands, slot[:, None])
        hit = torch.cat([torch.zeros_like(target[:, None], dtype=torch.bool), neg == target[:, None]], dim=1)
        logits = logits.masked_fill(hit, float("-inf"))  # a negative that is the positive is no negative
        return F.cross_entropy(logits, torch.zeros(B, dtype=torch.long, device=logits.device))


def prerec_schema(cfg: PreRecConfig) -> BatchSchema:
    return BatchSchema((
        Column("history", "int32", (int(cfg.max_len or 0),), "the items before the target, left-padded"),
        Column("target", "int64", (), "the next item"),
        Column("slot", "int64", (), "the popularity query slot of the target event's time"),
    ))


def prerec_rows(cfg: PreRecConfig, train: pd.DataFrame, catalogue: ItemCatalogue) -> dict[str, np.ndarray]:
    """One row per training event after a sequence's first whose target lies in a training domain: its
    history (the ``max_len`` items before it), the item, and the popularity slot of its time."""
    start, counts, _ = catalogue.prior_popularity(cfg.slot_seconds, cfg.pop_window, tuple(cfg.pop_orders))
    domains = set(train.attrs.get("train_domains", catalogue.domain_names))
    allowed = np.isin(np.arange(len(catalogue.domain_names)),
                      [i for i, d in enumerate(catalogue.domain_names) if d in domains])
    L = int(cfg.max_len or 0)
    hist: list[np.ndarray] = []
    tgt: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for items, ts in zip(train["items"], train["timestamps"]):
        items = np.asarray(items, dtype=np.int64)
        keep = np.flatnonzero(allowed[catalogue.item_domain[items[1:]]]) + 1
        for p in keep:
            hist.append(items[max(0, p - L):p])
        tgt.append(items[keep])
        times.append(np.asarray(ts, dtype=np.int64)[keep])
    if not hist:
        raise ValueError(f"no training events to predict in domains {sorted(domains)}")
    slot = query_slot(np.concatenate(times), start, cfg.slot_seconds, len(counts) - 1)
    return {"history": pad_left(hist, L).astype(np.int32), "target": np.concatenate(tgt), "slot": slot}


SPEC = ModelSpec(
    name="prerec", config=PreRecConfig, build=PreRec, schema=prerec_schema, rows=prerec_rows,
    recipe=OptimRecipe(optimizer="adam"),
    capabilities=frozenset({"retrieval", "scorer", "live_popularity", "content_items"}),
    feature_views=lambda cfg: [cfg.text_view],
    summary="causal pre-training with domain and popularity confounders; zero-shot by do(D=0)",
    reference="Lin et al. 2023, PreRec eq. 1-6, appendix E (popularity factors), appendix F (negatives)",
)
