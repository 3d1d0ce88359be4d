"""UniM2Rec (multi-modal, multi-domain pre-trained sequential recommender) and UniSRec, its text-only case.

Item side (UniM2Rec §3.3, eq. 1-9): every feature view ``v`` of an item (text, image, cross-modal vectors of
frozen encoders, from the :class:`~raypipe.data.catalogue.ItemCatalogue`) goes through its own projector, a
mixture of ``G`` parametric-whitening experts ``(e - b_k) W_k`` mixed by a softmax router on the raw
vector (UniSRec adds trainable gate noise while training), with dropout on the input.  An ablation
switch per view replaces its MoE by one linear layer (w/o TP / VP / CP; w/o VT, CVT: several).  The
projected views are concatenated (``len(views) * hidden``); a view an item lacks is a zero slot (its
presence mask), never a made-up vector.

Sequence side (§3.4, eq. 10-12): a causal Transformer over the projected items plus learned positions.
``flow="mixed"`` reads the user's mixed cross-domain flow (every earlier event in any domain,
``data.flow=mixed``); ``flow="single"`` reads only the target domain's own sequence (UniSRec; w/o MIX);
``flow="both"`` (UniM2Rec) has one encoder of each and fuses their predictions.

Objectives (``objective``, resolved from the run stage when ``auto``):

* ``contrastive`` (pre-training, §3.5, eq. 13-15): sequence-item in-batch contrast at every position
  whose target is a training-domain item (cosine / ``temperature``), the other positions' targets as
  negatives (those that are the same item masked), plus ``css_weight`` (λ) times the sequence-sequence
  contrast of each row against an item-drop augmentation of it (eq. 14: the other rows' sequences are
  the negatives).  Item contents only; no IDs.  With several Ray Train workers the in-batch negatives
  are gathered from every worker.
* ``fused_ce`` (fine-tuning, eq. 16-17): cross-entropy over the target domain's items of the
  equal-weight fusion of the mixed-flow prediction (contents) and the single-domain prediction (contents
  plus target item-ID embeddings, zero-initialised, when ``item_input="id+content"``).  The fusion
  averages the two heads' logits, so a user vector ``[u_m; u_s] / 2τ`` against an item vector
  ``[ê; ê + e_id]`` (both halves L2-normalised) gives the score exactly: served through the ANN index.

Fine-tuning modes come from ``run.mode``: ``zero-shot`` (no target training; IDs are zero), ``inductive``
(item-ID table frozen at zero: contents only, works for items never trained on), ``transductive``.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.config import ConfigError, ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.data.sequences import pad_left, sequence_windows
from raypipe.models.base import SequentialRecommender, extend_embedding
from raypipe.models.layers import TransformerEncoder
from raypipe.models.spec import BatchSchema, Column, ModelSpec

#: the row attribute (``train.attrs``) through which the trainer names the domains whose targets train
TRAIN_DOMAINS_ATTR = "train_domains"


@dataclass
class UniM2RecConfig(ModelConfig):
    name: str = "unim2rec"
    #: the catalogue's feature views, each with its own projector (text, image, cross-modal)
    views: list[str] = field(default_factory=lambda: ["text", "image", "cross"])
    #: projected width per view (d); the sequence encoder's width is ``len(views) * hidden``
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    #: dropout on a projector's input vector
    adaptor_dropout: float = 0.2
    #: the history window; ``None`` = ``data.max_len``
    max_len: int | None = None
    #: G: parametric-whitening experts per view
    n_experts: int = 8
    #: views whose MoE projector is replaced by one linear layer (ablations w/o TP, VP, CP, VT, CVT)
    linear_views: list[str] = field(default_factory=list)
    #: UniSRec's trainable gate noise while training (UniM2Rec eq. 7-9 have none)
    gate_noise: bool = False
    #: ``mixed`` flow encoder, ``single``-domain encoder, or ``both`` fused (``mixed``/``both`` read
    #: ``data.flow=mixed``); ``auto``: ``both`` on mixed flows, else ``single``
    flow: Literal["auto", "single", "mixed", "both"] = "auto"
    #: ``id+content``: the single-domain head adds target item-ID embeddings (eq. 17); ``content``: w/o ID
    item_input: Literal["content", "id+content"] = "id+content"
    #: ``auto``: ``contrastive`` when pre-training, ``fused_ce`` otherwise
    objective: Literal["auto", "contrastive", "fused_ce"] = "auto"
    temperature: float = 0.07
    #: λ, the weight of the sequence-sequence contrast (eq. 15)
    css_weight: float = 1e-3
    #: share of a sequence's items dropped to make its augmentation (eq. 14)
    item_drop: float = 0.2
    #: at most this many sequence-item pairs per batch and worker in the contrast (seeded subsample)
    csi_max_pairs: int = 4096
    #: fine-tuning trains the projectors (and ID embeddings) only
    freeze_encoder: bool = False
    train_windows: Literal["all", "last"] = "all"


@dataclass
class UniSRecConfig(UniM2RecConfig):
    """UniSRec: the text view only, the single-domain flow, noisy gating."""

    name: str = "unisrec"
    views: list[str] = field(default_factory=lambda: ["text"])
    flow: Literal["auto", "single", "mixed", "both"] = "single"
    gate_noise: bool = True


def resolve(cfg: UniM2RecConfig, experiment) -> UniM2RecConfig:  # noqa: ANN001 - an ExperimentConfig
    """``objective=auto``: contrastive when pre-training, fused CE otherwise; ``flow=auto``: ``both`` on
    mixed flows (``data.flow=mixed``), else ``single``."""
    changes = {}
    if cfg.objective == "auto":
        changes["objective"] = "contrastive" if experiment.run.stage == "pretrain" else "fused_ce"
    if cfg.flow == "auto":
        changes["flow"] = "both" if experiment.data.flow == "mixed" else "single"
    return dataclasses.replace(cfg, **changes)


def check_config(cfg: UniM2RecConfig) -> None:
    if not cfg.views or len(set(cfg.views)) != len(cfg.views):
        raise ConfigError(f"model.views: give distinct feature views, got {cfg.views}")
    bad = sorted(set(cfg.linear_views) - set(cfg.views))
    if bad:
        raise ConfigError(f"model.linear_views: {bad} are not in model.views {cfg.views}")
    if cfg.n_experts < 1 or cfg.hidden < 1 or cfg.temperature <= 0 or not 0 <= cfg.item_drop < 1:
        raise ConfigError("model: n_experts and hidden must be >= 1, temperature > 0, 0 <= item_drop < 1")
    if (len(cfg.views) * cfg.hidden) % cfg.n_heads:
        raise ConfigError(f"model.n_heads={cfg.n_heads} must divide len(views) * hidden = "
                          f"{len(cfg.views) * cfg.hidden}")


# ------------------------------------------------------------------------------------------ item side
class WhiteningMoE(nn.Module):
    """``sum_k g_k (e - b_k) W_k`` with ``g = softmax(e W_g + b_g)`` (eq. 1-9); one linear layer when
    ``linear``.  Dropout acts on the input of the experts (UniSRec's adaptor)."""

    def __init__(self, d_in: int, d_out: int, n_experts: int, dropout: float, linear: bool = False,
                 noisy: bool = False) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(d_in, d_out) if linear else None
        if not linear:
            self.bias = nn.Parameter(torch.zeros(n_experts, d_in))
            self.weight = nn.Parameter(torch.empty(n_experts, d_in, d_out))
            nn.init.normal_(self.weight, std=0.02)
            self.gate = nn.Linear(d_in, n_experts)
            self.noise = nn.Linear(d_in, n_experts) if noisy else None

    def gates(self, e: torch.Tensor) -> torch.Tensor:
        logits = self.gate(e)
        if self.noise is not None and self.training:
            logits = logits + torch.randn_like(logits) * (F.softplus(self.noise(e)) + 1e-2)
        return logits.softmax(-1)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        x = self.dropout(e)
        if self.linear is not None:
            return self.linear(x)
        experts = torch.einsum("ngi,gio->ngo", x[:, None, :] - self.bias, self.weight)  # [n, G, d_out]
        return (self.gates(e)[..., None] * experts).sum(1)


class MultiViewItems(nn.Module):
    """Projected, concatenated item contents ``ê = [ê_t; ê_p; ê_c]`` (+ optional ID embeddings)."""

    def __init__(self, cfg: UniM2RecConfig, catalogue: ItemCatalogue) -> None:
        super().__init__()
        self.views = list(cfg.views)
        self.proj = nn.ModuleDict()
        for v in self.views:
            view = catalogue.view(v)
            with warnings.catch_warnings():  # object-store arrays are read-only: shared, never written here
                warnings.simplefilter("ignore", UserWarning)
                feat = torch.as_tensor(view.vectors, dtype=torch.float32)
            self.register_buffer(f"feat_{v}", feat, persistent=False)
            self.register_buffer(f"present_{v}", torch.as_tensor(view.present, dtype=torch.bool), persistent=False)
            self.proj[v] = WhiteningMoE(view.dim, cfg.hidden, cfg.n_experts, cfg.adaptor_dropout,
                                        linear=v in cfg.linear_views, noisy=cfg.gate_noise)
        self.width = len(self.views) * cfg.hidden
        self.id = nn.Embedding(catalogue.num_embeddings, self.width, padding_idx=0)
        nn.init.zeros_(self.id.weight)  # zero-shot = contents only; fine-tuning learns the offsets
        self.use_id = cfg.item_input == "id+content"

    def project(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """``ê`` ``[n, len(views) * hidden]`` of raw view vectors ``feats[v]`` ``[n, d_v]``; a view an item
        lacks (``present[v]`` False) is a zero slot."""
        parts = []
        for v in self.views:
            out = self.proj[v](feats[v])
            parts.append(out * present[v][:, None].to(out.dtype))
        return torch.cat(parts, -1)

    def extend(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> None:
        """Append items (raw view vectors and presence, in index order after the last) with zero ID rows."""
        for v in self.views:
            for name, new in ((f"feat_{v}", feats[v]), (f"present_{v}", present[v])):
                old = getattr(self, name)
                setattr(self, name, torch.cat([old, new.to(old.device, old.dtype)]))
        self.id = extend_embedding(self.id, len(feats[self.views[0]]))

    def content(self, items: torch.Tensor) -> torch.Tensor:
        """``ê`` of item indices of any shape ``[...]`` → ``[..., len(views) * hidden]``."""
        flat = items.reshape(-1)
        uniq, inv = torch.unique(flat, return_inverse=True)
        out = self.project({v: getattr(self, f"feat_{v}")[uniq] for v in self.views},
                           {v: getattr(self, f"present_{v}")[uniq] for v in self.views})
        return out[inv].reshape(*items.shape, self.width)

    def with_id(self, items: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        return content + self.id(items) if self.use_id else content


# -------------------------------------------------------------------------------------- sequence side
def compact(history: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The items of each row where ``keep``, order kept, left-padded again."""
    keep = keep & (history > 0)
    pos = torch.arange(history.shape[1], device=history.device).expand_as(history)
    key, order = torch.where(keep, pos, -1).sort(dim=1, stable=True)
    return history.gather(1, order) * (key >= 0)


def to_domain(history: torch.Tensor, item_domain: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """Each row's items of one domain (``domain[b]``): the single-domain sequence hidden in a mixed flow."""
    return compact(history, item_domain[history] == domain[:, None])


def _gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` of every Ray Train worker, concatenated (gradients flow back to each worker's part), and the
    offset of this worker's rows."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(x)], device=x.device))
    n_max = int(max(s.item() for s in sizes))
    padded = torch.cat([x, x.new_zeros(n_max - len(x), *x.shape[1:])]) if len(x) < n_max else x
    parts = all_gather(padded)
    rank = dist.get_rank()
    out = torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])
    return out, int(sum(s.item() for s in sizes[:rank]))


def info_nce(query: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, temperature: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``-log softmax(q·k / τ)[label]`` over normalised vectors; ``mask`` (True = not a negative)
    removes entries other than the label from the denominators (logsumexp, so no overflow)."""
    logits = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T / temperature
    if mask is not None:
        hide = mask.clone()
        hide[torch.arange(len(labels), device=labels.device), labels] = False
        logits = logits.masked_fill(hide, float("-inf"))
    return (torch.logsumexp(logits, 1) - logits.gather(1, labels[:, None])[:, 0]).mean()


class UniM2Rec(SequentialRecommender):
    #: a batch may leave a head without a valid position: DDP must tolerate parameters without gradients
    ddp_kwargs = {"find_unused_parameters": True}
    #: state entries tied to one catalogue (the item ID offsets), left out when a pre-trained model starts
    #: a run on another dataset (:func:`raypipe.train.finetune.cross_catalogue_state`)
    catalogue_state = ("items.id.",)

    def __init__(self, cfg: UniM2RecConfig, catalogue: ItemCatalogue) -> None:
        super().__init__()
        check_config(cfg)
        if cfg.flow == "auto":
            raise ValueError("model.flow is 'auto': resolve it from the experiment first (unim2rec.resolve)")
        if cfg.max_len is None:
            raise ValueError("model.max_len is unset (it defaults to data.max_len when loaded from a config)")
        self.cfg = cfg
        self.items = MultiViewItems(cfg, catalogue)
        width = self.items.width
        make = lambda: TransformerEncoder(width, cfg.n_layers, cfg.n_heads, cfg.dropout, cfg.max_len,  # noqa: E731
                                          causal=True, activation="relu")
        self.mixed = make() if cfg.flow in ("mixed", "both") else None
        self.single = make() if cfg.flow in ("single", "both") else None
        self.register_buffer("item_domain", torch.as_tensor(catalogue.item_domain, dtype=torch.long), persistent=False)
        self.register_buffer("domain_ranges", torch.as_tensor(catalogue.domain_ranges, dtype=torch.long),
                             persistent=False)
        if cfg.objective == "contrastive" or cfg.item_input == "content":
            self.items.id.requires_grad_(False)  # pre-training reads contents only; w/o ID has no ID table
        if cfg.freeze_encoder:
            for enc in (self.mixed, self.single):
                if enc is not None:
                    enc.requires_grad_(False)

    # -- encoders ------------------------------------------------------------------------------------
    def _encode(self, enc: TransformerEncoder, history: torch.Tensor, with_id: bool) -> torch.Tensor:
        history = history[:, -self.cfg.max_len:]
        x = self.items.content(history)
        if with_id:
            x = self.items.with_id(history, x)
        return enc(x, history > 0)

    def _single_ctx(self, history: torch.Tensor, domain: torch.Tensor, with_id: bool) -> torch.Tensor:
        """The single-domain encoder's last output over each row's ``domain`` items ``[B, D]``."""
        return self._encode(self.single, to_domain(history, self.item_domain, domain), with_id)[:, -1]

    def _single_positions(self, inp: torch.Tensor, tgt_dom: torch.Tensor, ok: torch.Tensor, with_id: bool
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-domain contexts at every position ``j`` (the items before ``j+1`` of the target's
        domain), computed once per (row, domain); returns ``([B, L, D], has_context [B, L])``."""
        B, L = inp.shape
        out = inp.new_zeros(B, L, self.items.width, dtype=torch.float32)
        has = torch.zeros(B, L, dtype=torch.bool, device=inp.device)
        for d in torch.unique(tgt_dom[ok]).tolist():
            at = ok & (tgt_dom == d)
            rows = at.any(1).nonzero()[:, 0]
            sub_in = inp[rows]
            keep = (sub_in > 0) & (self.item_domain[sub_in] == d)
            o = self._encode(self.single, to_domain(sub_in, self.item_domain, torch.full_like(rows, d)), with_id)
            n_before = keep.cumsum(1)  # items of domain d at positions <= j
            col = (L - keep.sum(1, keepdim=True) + n_before - 1).clamp_min(0)
            sel = at[rows] & (n_before > 0)
            picked = o.gather(1, col[..., None].expand(-1, -1, o.shape[-1]))
            out[rows] = torch.where(sel[..., None], picked, out[rows])
            has[rows] = has[rows] | sel
        return out, has

    # -- serving surface -----------------------------------------------------------------------------
    def _user(self, history: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.mixed is not None:
            parts.append(F.normalize(self._encode(self.mixed, history, False)[:, -1], dim=-1))
        if self.single is not None:
            parts.append(F.normalize(self._single_ctx(history, domain, True), dim=-1))
        return torch.cat(parts, -1) / (len(parts) * self.cfg.temperature)

    def user_repr(self, history: torch.Tensor, domain: torch.Tensor | None = None) -> torch.Tensor:
        """``[u_m; u_s] / (2τ)``; the single-domain part reads ``domain`` (default: each row's last item's)."""
        if domain is None:
            domain = self.item_domain[history[:, -1]].clamp_min(0)
        return self._user(history, domain)

    def _item_heads(self, items: torch.Tensor) -> list[torch.Tensor]:
        """Per head, the L2-normalised item vectors: ``ê`` (mixed head), ``ê + e_id`` (single-domain head)."""
        content = self.items.content(items)
        return self._heads(content, self.items.with_id(items, content))

    def _heads(self, content: torch.Tensor, with_id: torch.Tensor) -> list[torch.Tensor]:
        parts = []
        if self.mixed is not None:
            parts.append(F.normalize(content, dim=-1))
        if self.single is not None:
            parts.append(F.normalize(with_id, dim=-1))
        return parts

    def item_repr(self, items: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._item_heads(items), -1)

    def content_dims(self) -> dict[str, int]:
        """The raw feature views :meth:`content_item_repr` reads, with their widths."""
        return {v: int(getattr(self.items, f"feat_{v}").shape[1]) for v in self.items.views}

    def extend_items(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                     domains: torch.Tensor) -> torch.Tensor:
        """Add items never trained on (their raw views, presence and domain indices) so that histories may
        hold them; returns their new indices.  Their vectors equal :meth:`content_item_repr`'s."""
        n0 = self.items.id.num_embeddings
        self.items.extend(feats, present)
        self.item_domain = torch.cat([self.item_domain, domains.to(self.item_domain)])
        return torch.arange(n0, n0 + len(domains))

    def content_item_repr(self, feats: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        """The retrieval vector of items never trained on, from their raw view vectors alone (``feats[v]``
        ``[n, d_v]``, ``present[v]`` ``[n]``): their ID offset is zero, as in the inductive setting."""
        missing = [v for v in self.items.views if v not in feats or v not in present]
        if missing:
            raise ValueError(f"content_item_repr needs the views {self.items.views}; missing {missing}")
        content = self.items.project(feats, present)
        return torch.cat(self._heads(content, content), -1)

    def score(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        # the target domain is the candidates' (a domain catalogue, or each row's sampled candidates)
        first = candidates[0] if candidates.dim() == 1 else candidates[:, 0]
        domain = self.item_domain[first].clamp_min(0)
        if domain.dim() == 0:
            domain = domain.expand(len(history))
        user = self._user(history, domain)
        items = self.item_repr(candidates)
        if candidates.dim() == 1:
            return user @ items.T
        return torch.einsum("bd,bcd->bc", user, items)

    # -- training ------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, target_ok = batch["seq"], batch["target_ok"]
        inp, tgt = seq[:, :-1], seq[:, 1:]
        ok = target_ok & (tgt > 0) & (inp > 0)
        tgt_dom = self.item_domain[tgt].clamp_min(0)
        if self.cfg.objective == "fused_ce":
            return self._fused_ce(inp, tgt, tgt_dom, ok)
        if self.cfg.objective != "contrastive":
            raise ValueError("model.objective is 'auto': resolve it from the experiment first (unim2rec.resolve)")
        return self._contrastive(inp, tgt, tgt_dom, ok)

    def _contexts(self, inp, tgt_dom, ok, with_id: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per encoder: the context vectors at every position and where they are valid."""
        out = []
        if self.mixed is not None:
            out.append((self._encode(self.mixed, inp, False), ok))
        if self.single is not None:
            ctx, has = self._single_positions(inp, tgt_dom, ok, with_id)
            out.append((ctx, ok & has))
        return out

    def _contrastive(self, inp, tgt, tgt_dom, ok) -> torch.Tensor:
        cfg = self.cfg
        total = inp.new_zeros((), dtype=torch.float32)
        for ctx, valid in self._contexts(inp, tgt_dom, ok, with_id=False):
            u, t = ctx[valid], tgt[valid]
            if len(t) > cfg.csi_max_pairs:
                keep = torch.randperm(len(t), device=t.device)[: cfg.csi_max_pairs]
                u, t = u[keep], t[keep]
            if len(t) == 0:
                continue
            keys, offset = _gather_rows(self.items.content(t))
            all_t, _ = _gather_rows(t)
            labels = torch.arange(len(t), device=t.device) + offset
            total = total + info_nce(u, keys, labels, cfg.temperature, mask=t[:, None] == all_t[None, :])
        if cfg.css_weight > 0:
            total = total + cfg.css_weight * self._css(inp, tgt_dom, ok)
        return total

    def _css(self, inp, tgt_dom, ok) -> torch.Tensor:
        """Eq. 14: a row's sequence vs. its item-drop augmentation; the other rows' sequences are the
        negatives.  The sequence is the row's input window (mixed encoder) or, for the single-domain
        encoder alone, its items of the last target's domain."""
        rows = ok.any(1)
        inp, tgt_dom, ok = inp[rows], tgt_dom[rows], ok[rows]
        if len(inp) < 2:
            return inp.new_zeros((), dtype=torch.float32)
        last = (ok.cumsum(1) == ok.sum(1, keepdim=True)) & ok
        dom = (tgt_dom * last).sum(1)
        enc = self.mixed if self.mixed is not None else self.single
        base = inp if self.mixed is not None else to_domain(inp, self.item_domain, dom)
        drop = (torch.rand(base.shape, device=base.device) < self.cfg.item_drop) & (base > 0)
        lone = (base > 0).sum(1, keepdim=True) - drop.sum(1, keepdim=True) < 1  # keep at least one item
        drop = drop & ~lone
        aug = compact(base, ~drop)
        u = self._encode(enc, base, False)[:, -1]
        u_aug = self._encode(enc, aug, False)[:, -1]
        u_all, offset = _gather_rows(u)
        # keys: the augmentation at its own row, the other rows' sequences elsewhere
        n = len(u)
        labels = torch.arange(n, device=u.device) + offset
        keys = u_all.clone()
        keys[offset:offset + n] = u_aug
        return info_nce(u, keys, labels, self.cfg.temperature)

    def _fused_ce(self, inp, tgt, tgt_dom, ok) -> torch.Tensor:
        cfg = self.cfg
        ctxs = self._contexts(inp, tgt_dom, ok, with_id=True)
        valid = ok
        for _, v in ctxs:
            valid = valid & v
        n_heads = len(ctxs)
        loss = inp.new_zeros((), dtype=torch.float32)
        n_total = int(valid.sum())
        if n_total == 0:
            return loss + sum(p.sum() * 0 for p in self.parameters() if p.requires_grad)
        for d in torch.unique(tgt_dom[valid]).tolist():
            at = valid & (tgt_dom == d)
            lo, hi = (int(x) for x in self.domain_ranges[d])
            tables = self._item_heads(torch.arange(lo, hi, device=inp.device))
            logits = sum(F.normalize(ctx[at], dim=-1) @ table.T for (ctx, _), table in zip(ctxs, tables))
            logits = logits / (n_heads * cfg.temperature)
            loss = loss + F.cross_entropy(logits, tgt[at] - lo, reduction="sum")
        return loss / n_total


# ----------------------------------------------------------------------------------------------- rows
def schema(cfg: UniM2RecConfig) -> BatchSchema:
    L = _window(cfg)
    return BatchSchema((
        Column("seq", "int64", (L + 1,), "a window of max_len+1 consecutive events of a training flow, left-padded"),
        Column("target_ok", "bool", (L,), "whether seq[j+1] is a target of a training domain"),
    ))


def rows(cfg: UniM2RecConfig, train: pd.DataFrame, catalogue: ItemCatalogue) -> dict[str, np.ndarray]:
    """Windows over every training flow (sequence) and which of their targets train: those of the
    domains the trainer names in ``train.attrs["train_domains"]`` (all, when it names none)."""
    mixed = "domains" in train.columns
    if cfg.flow in ("mixed", "both") and not mixed:
        raise ConfigError(f"model.flow={cfg.flow} reads mixed cross-domain flows: set data.flow=mixed "
                          "(or model.flow=single)")
    seqs = [np.asarray(s, dtype=np.int64) for s in train["items"] if len(s) >= 2]
    if not seqs:
        raise ValueError("no training sequences of length >= 2")
    width = _window(cfg) + 1
    if cfg.train_windows == "all":
        seqs = sequence_windows(seqs, width)
    seq = pad_left(seqs, width)
    names = train.attrs.get(TRAIN_DOMAINS_ATTR)
    if names is None:
        target_ok = seq[:, 1:] > 0
    else:
        wanted = np.array([d in set(names) for d in catalogue.domain_names] + [False])  # index -1 → False
        target_ok = (seq[:, 1:] > 0) & wanted[catalogue.item_domain[seq[:, 1:]]]
    keep = target_ok.any(1)
    if not keep.any():
        raise ValueError(f"no training targets in domains {names}")
    return {"seq": seq[keep], "target_ok": target_ok[keep]}


def _window(cfg: UniM2RecConfig) -> int:
    if cfg.max_len is None or cfg.max_len < 1:
        raise ValueError(f"model.max_len must be >= 1, got {cfg.max_len}")
    return cfg.max_len


def build(cfg: UniM2RecConfig, catalogue: ItemCatalogue) -> UniM2Rec:
    return UniM2Rec(cfg, catalogue)


_COMMON = dict(build=build, schema=schema, rows=rows, capabilities=frozenset({"retrieval", "scorer", "content_items"}),
               resolve=resolve, feature_views=lambda cfg: list(cfg.views))
SPEC = ModelSpec(
    name="unim2rec", config=UniM2RecConfig, **_COMMON,
    summary="per-view whitening-MoE projectors of text/image/cross-modal vectors, mixed-flow + single-domain "
            "Transformers; contrastive pre-training, fused fine-tuning",
    reference="UniM2Rec (Universal multi-modal multi-domain pre-trained recommendation), eq. 1-17",
)
UNISREC_SPEC = ModelSpec(
    name="unisrec", config=UniSRecConfig, **_COMMON,
    summary="UniSRec: text whitening-MoE adaptor (noisy gating) + Transformer, contrastive pre-training",
    reference="Hou et al. 2022, Towards Universal Sequence Representation Learning for Recommender Systems, "
              "arXiv:2206.05941",
)
