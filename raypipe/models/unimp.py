"""UniMP (Wei et al. 2024, "Towards Unified Multi-Modal Personalization", ``papers/UniMP``): a frozen
causal LM conditioned on item images through a perceiver resampler and gated cross-attention, trained
on several personalisation tasks at once.

* **Data format** (§2.1, eq. 1–2): each item is a flattened attribute chunk ``[IMG] category: C title: T
  price: P brand: B item: <item_k> [EOC]`` (values cut to ``value_tokens`` tokens each); the user
  sentence is ``[CLS] i_1 ... i_n`` over the last ``history`` items.  Every item has its own new token
  ``<item_k>``; ``k`` is a seeded random permutation of the item index (sequential ids leak answers: the
  P5 defect).  The special tokens and item tokens are new rows of the LM's (tied) embedding table.
* **Vision** (§2.2): the frozen image tower's region features (feature view ``image_grid``: packaged
  ImageNet EfficientNet-Lite0, ``grid x grid`` regions of 1280-d) → a perceiver resampler (learned
  queries, ``visual_tokens`` = C outputs per image) → gated cross-attention (``tanh`` gates initialised
  at 0, residual, eq. 3–4) before every ``cross_every``-th LM layer.  The mask M lets each text token of
  an item's chunk attend only to that item's image (``exclusive``); ``exclusive=false`` lets every token
  attend to every earlier image (the paper's "w/o exclusive attention").  ``fusion=early`` puts the C
  visual tokens in the input sequence after ``[IMG]`` instead (VIP5-style early fusion, "w/o
  fine-grained"); ``fusion=none`` drops vision ("w/o vision").
* **Tasks** (§2.3, App. A.2), each an instruction after the user sentence, answered by generation:
  ``rec`` ("Can you recommend the next item to the user?" → ``<item_k>``), ``preference`` ("Given i_h,
  can you predict the preference level of the user to the product?" → ``1``..``5``), ``explanation``
  ("Given i_h, can you explain ..." → the review), ``search`` (the target's category as the query →
  ``<item_k>``).  Every item is one token, so beam search of width 10 over item tokens equals the top 10
  item-token logits at the answer position: ``score`` ranks any candidate set (and the full catalogue)
  from one LM pass per history.  ``selection`` (App. A.2's multi-modal selection: "Given i_1, ..., i_e,
  can you select all the appropriate items for the user?") lists candidate chunks, each with its image,
  and answers with the item tokens of the 1-3 positives in candidate order; :meth:`UniMP.select`
  decodes greedily over the remaining candidates' tokens and EOS.
* **Loss** (eq. 6–8): the task answer's tokens plus, with ``context_loss``, the tokens of every history
  chunk (context reconstruction, eq. 7), each term a token mean (``l_task + context_weight * l_context``);
  token re-weighting replaces ``log p`` by ``(1 - p)^gamma log p`` (eq. 8; ``gamma=0`` is plain
  cross-entropy).
* **Trained parameters** (App. A.2): resampler, cross-attention, the new token rows and the LM's
  input/output layer (``train_lm_io``); the LM's blocks and the image tower are frozen.  ``tune=last_layer``
  trains only the LM's last block and final norm (Table 7, "efficient" per-task tuning).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.models.base import SequentialRecommender
from raypipe.models.causal_lm import load_causal_lm, load_tokenizer
from raypipe.models.spec import BatchSchema, Column, ModelSpec, OptimRecipe

TASKS = ("rec", "preference", "explanation", "search", "selection")
TASK_ID = {t: i for i, t in enumerate(TASKS)}
SPECIALS = ("[CLS]", "[IMG]", "[EOC]", "<vis>")
ATTRS = ("category", "title", "price", "brand")
INSTRUCTIONS = {
    "rec": " Can you recommend the next item to the user?",
    "preference": " can you predict the preference level of the user to the product?",
    "explanation": " can you explain to the user why the product might be suitable or unsuitable?",
    "search": " Can you retrieve the items that aligns with both the user's history and the given query?",
    "selection": " can you select all the appropriate items for the user?",
}
ANSWER = " Answer:"


@dataclass
class UniMPConfig(ModelConfig):
    name: str = "unimp"
    #: ``smollm2`` (offline default, de-quantised from the packaged 4-bit GGUF), ``llama-random`` or a
    #: local Hugging Face causal-LM folder
    backbone: str = "smollm2"
    #: keep only the LM's first ``lm_layers`` blocks (a smaller LM: an extra row, never the default)
    lm_layers: int | None = None
    #: ``cross`` (gated cross-attention, the paper), ``early`` (visual tokens in the input), ``none``
    fusion: Literal["cross", "early", "none"] = "cross"
    #: per-item mask M (eq. 3): a chunk's tokens see only its own image
    exclusive: bool = True
    image_view: str = "image_grid"
    image_grid: int = 3
    cross_every: int = 2
    visual_tokens: int = 8
    resampler_depth: int = 2
    heads: int = 8
    ff_mult: int = 2
    #: items of history in the user sentence (paper: the last five)
    history: int = 5
    value_tokens: int = 12
    answer_tokens: int = 32
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    #: selection: candidates per prompt, of which 1..``select_positives`` are the user's next items
    select_candidates: int = 6
    select_positives: int = 3
    #: training targets per sequence (its last ones) and a seeded cap on training sequences (None = all)
    rows_per_user: int = 1
    max_users: int | None = None
    context_loss: bool = True
    context_weight: float = 1.0
    #: token re-weighting exponent (eq. 8; 0 = cross-entropy)
    gamma: float = 2.0
    train_lm_io: bool = True
    tune: Literal["multitask", "last_layer"] = "multitask"
    #: each new item token's first embedding: ``mean`` (the LM's mean token embedding plus a little
    #: noise: the paper's new tokens) or ``content`` (the mean embedding of the item's own attribute
    #: tokens plus the same noise, so an item never trained on, e.g. of a new domain, starts from what
    #: its text says; an extension, not the paper's)
    item_init: Literal["mean", "content"] = "mean"
    seed: int = 0
    #: histories per LM pass when scoring
    score_batch: int = 16
    #: llama-random sizes
    hidden: int = 64
    layers: int = 2
    random_heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"model.tasks must be a non-empty subset of {list(TASKS)}, got {self.tasks}")
        if self.history < 1 or self.value_tokens < 1 or self.answer_tokens < 2 or self.visual_tokens < 1:
            raise ValueError("model.history, value_tokens, visual_tokens >= 1 and answer_tokens >= 2")
        if self.cross_every < 1 or self.resampler_depth < 0 or self.rows_per_user < 1 or self.gamma < 0:
            raise ValueError("model.cross_every >= 1, resampler_depth >= 0, rows_per_user >= 1, gamma >= 0")
        if not 1 <= self.select_positives < self.select_candidates:
            raise ValueError("model.select_positives must be >= 1 and below model.select_candidates")
        if self.lm_layers is not None and self.lm_layers < 1:
            raise ValueError("model.lm_layers must be >= 1 (or null: every layer)")


def reweighted(logp: torch.Tensor, gamma: float) -> torch.Tensor:
    """Token re-weighting (eq. 8): ``(1 - p)^gamma log p`` of token log-probabilities (``gamma=0``:
    ``log p``); easy tokens (p near 1) count less."""
    if gamma == 0:
        return logp
    return (1.0 - logp.exp()).clamp_min(0).pow(gamma) * logp


# -- vision --------------------------------------------------------------------------------------------


class _Block(nn.Module):
    """Pre-norm attention of ``x`` over ``kv`` plus a feed-forward, both residual (tanh-gated when
    ``gated``: the gates start at 0, so a new block leaves the frozen LM unchanged)."""

    def __init__(self, dim: int, heads: int, ff_mult: int, gated: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.heads={heads} must divide the width {dim}")
        self.heads = heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.out = nn.Linear(dim, dim, bias=False), nn.Linear(dim, 2 * dim, bias=False), \
            nn.Linear(dim, dim, bias=False)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult), nn.GELU(),
                                nn.Linear(dim * ff_mult, dim))
        self.gated = gated
        self.attn_gate = nn.Parameter(torch.zeros(1)) if gated else None
        self.ff_gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, x: torch.Tensor, kv: torch.Tensor, allow: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        h = self.heads
        q = self.q(self.norm_q(x)).view(B, N, h, D // h).transpose(1, 2)
        k, v = self.kv(self.norm_kv(kv)).view(B, kv.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        mask = None
        has = None
        if allow is not None:
            has = allow.any(-1)  # [B, N]: tokens with at least one visible image
            mask = (allow | ~has[..., None])[:, None]  # rows without keys attend anywhere, then zeroed
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, N, D)
        a = self.out(a)
        if has is not None:
            a = a * has[..., None].to(a.dtype)
        if self.gated:
            x = x + torch.tanh(self.attn_gate) * a
            return x + torch.tanh(self.ff_gate) * self.ff(x)
        x = x + a
        return x + self.ff(x)


class PerceiverResampler(nn.Module):
    """Learned queries attend to one image's region features (and themselves): ``[n, P, in] → [n, C, d]``."""

    def __init__(self, in_dim: int, dim: int, regions: int, n_latents: int, depth: int, heads: int,
                 ff_mult: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.pos = nn.Parameter(torch.zeros(regions, dim))
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, ff_mult, gated=False) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        media = self.proj(regions) + self.pos
        lat = self.latents.expand(len(regions), -1, -1)
        for blk in self.blocks:
            lat = blk(lat, torch.cat([media, lat], dim=1))
        return self.norm(lat)


class _Conditioned(nn.Module):
    """An LM block with a gated cross-attention block before it; the visual tokens and mask of the
    current batch are set on it by :class:`UniMP` before each LM pass (``state``)."""

    def __init__(self, layer: nn.Module, xattn: _Block) -> None:
        super().__init__()
        self.layer = layer
        self.xattn = xattn
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.state is not None:
            vis, allow = self.state
            hidden_states = self.xattn(hidden_states, vis.to(hidden_states.dtype), allow)
        return self.layer(hidden_states, *args, **kwargs)


# -- the model -----------------------------------------------------------------------------------------


@dataclass
class _Row:
    ids: list[int]
    media: list[int]  # per token: the image slot it may see (-1: none)
    slots: list[int]  # item index of each image slot
    labels: list[int]  # per token: 0 none, 1 context, 2 answer (the token is predicted)
    vis_at: list[int]  # early fusion: token positions of <vis> placeholders, C per slot in order


class UniMP(SequentialRecommender):
    def __init__(self, cfg: UniMPConfig, catalogue: ItemCatalogue) -> None:
        super().__init__()
        self.cfg = cfg
        lm, tok, source = load_causal_lm(cfg.backbone, {"hidden": cfg.hidden, "layers": cfg.layers,
                                                        "heads": cfg.random_heads, "kv_heads": cfg.kv_heads,
                                                        "intermediate": cfg.intermediate})
        self.source = source
        self.tok = tok
        if cfg.lm_layers is not None:
            keep = min(cfg.lm_layers, len(lm.model.layers))
            lm.model.layers = lm.model.layers[:keep]
            lm.config.num_hidden_layers = keep
        for p in lm.parameters():
            p.requires_grad_(False)
        self.base_vocab = len(tok)
        n_items = catalogue.num_items
        lm.resize_token_embeddings(self.base_vocab + len(SPECIALS) + n_items, mean_resizing=False)
        emb = lm.get_input_embeddings().weight
        with torch.no_grad():  # new rows start at the mean embedding (plus a little noise to tell them apart)
            g = torch.Generator().manual_seed(cfg.seed)
            mean, std = emb[: self.base_vocab].mean(0), emb[: self.base_vocab].std(0)
            emb[self.base_vocab:] = mean + 0.1 * std * torch.randn(emb.shape[0] - self.base_vocab, emb.shape[1],
                                                                    generator=g)
        self.lm = lm
        self.special = {s: self.base_vocab + i for i, s in enumerate(SPECIALS)}
        perm = np.random.default_rng(cfg.seed).permutation(n_items)
        self.item_base = self.base_vocab + len(SPECIALS)
        #: token id of each item index (0 = padding → unused)
        self.register_buffer("item_token", torch.as_tensor(np.concatenate([[0], self.item_base + perm]),
                                                           dtype=torch.long), persistent=False)
        self.eos = int(tok.eos_token_id)
        self.pad = int(tok.pad_token_id)
        self.digits = [self._ids(str(r))[0] for r in range(1, 6)]
        d = lm.config.hidden_size
        self.vision = cfg.fusion != "none" and bool(cfg.image_view)
        self.cross_layers: list[int] = []
        if self.vision:
            view = catalogue.view(cfg.image_view)
            regions = cfg.image_grid ** 2
            if view.dim % regions:
                raise ValueError(f"feature view {cfg.image_view!r} has width {view.dim}, not a multiple of "
                                 f"model.image_grid²={regions}")
            with warnings.catch_warnings():  # the object store's arrays are read-only; they are never written
                warnings.simplefilter("ignore", UserWarning)
                grid = torch.as_tensor(view.vectors).view(len(view.vectors), regions, -1)
            self.register_buffer("regions", grid, persistent=False)
            self.register_buffer("has_image", torch.as_tensor(view.present), persistent=False)
            self.resampler = PerceiverResampler(view.dim // regions, d, regions, cfg.visual_tokens,
                                                cfg.resampler_depth, cfg.heads, cfg.ff_mult)
            if cfg.fusion == "cross":
                layers = lm.model.layers
                for i in range(len(layers)):
                    if i % cfg.cross_every == 0:
                        layers[i] = _Conditioned(layers[i], _Block(d, cfg.heads, cfg.ff_mult, gated=True))
                        self.cross_layers.append(i)
        else:
            self.register_buffer("has_image", torch.zeros(catalogue.num_embeddings, dtype=torch.bool),
                                 persistent=False)
        self._set_trainable()
        self._texts(catalogue)
        if cfg.item_init == "content":
            self._content_item_tokens()
        # a batch may hold no image (or no context tokens): its unused blocks get no gradient under DDP
        self.ddp_kwargs = {"find_unused_parameters": True}

    # -- parameters ----------------------------------------------------------------------------------
    def _set_trainable(self) -> None:
        emb = self.lm.get_input_embeddings().weight
        if self.cfg.tune == "last_layer":
            for p in self.parameters():
                p.requires_grad_(False)
            last = self.lm.model.layers[-1]
            for p in list(last.parameters()) + list(self.lm.model.norm.parameters()):
                p.requires_grad_(True)
            return
        emb.requires_grad_(True)
        if not self.cfg.train_lm_io:  # only the new rows learn: the others' gradients are masked
            keep = torch.zeros(emb.shape[0], 1)
            keep[self.base_vocab:] = 1
            emb.register_hook(lambda g: g * keep.to(g.device, g.dtype))
        out = self.lm.get_output_embeddings().weight
        if out is not emb:
            out.requires_grad_(True)

    # -- text -> tokens ------------------------------------------------------------------------------
    def _ids(self, text: str) -> list[int]:
        return list(map(int, self.tok(text, add_special_tokens=False)["input_ids"]))

    def _content_item_tokens(self) -> None:
        """``item_init=content``: each item token's row, in the input embeddings and (when not tied to
        them) the output embeddings, becomes the mean of the item's attribute-token rows plus noise of
        0.1 x the vocabulary's per-dimension sd (seeded)."""
        emb, out = self.lm.get_input_embeddings().weight, self.lm.get_output_embeddings().weight
        g = torch.Generator().manual_seed(self.cfg.seed + 1)
        for w in ([emb] if out is emb else [emb, out]):
            with torch.no_grad():
                std = w[: self.base_vocab].std(0)
                for item in range(1, len(self.attr_ids)):
                    content = w[torch.as_tensor(self.attr_ids[item])].mean(0)
                    noise = torch.randn(w.shape[1], generator=g).to(w.dtype)
                    w[int(self.item_token[item])] = content + 0.1 * std * noise

    def _texts(self, catalogue: ItemCatalogue) -> None:
        cut = self.cfg.value_tokens
        self.attr_ids: list[list[int]] = [[]]
        self.query_ids: list[list[int]] = [[]]
        for rec in catalogue.records()[1:]:
            toks: list[int] = []
            for k in ATTRS:
                if k in rec:
                    v = f"{rec[k]:.2f}" if isinstance(rec[k], float) else str(rec[k])
                    toks += self._ids(f" {k}:") + self._ids(" " + v)[:cut]
            self.attr_ids.append(toks + self._ids(" item:"))
            self.query_ids.append(self._ids(" " + str(rec.get("category", rec.get("title", ""))))[:cut])
        self.instr = {t: self._ids(s) for t, s in INSTRUCTIONS.items()}
        self.given = self._ids(" Given")
        self.comma = self._ids(",")
        self.answer = self._ids(ANSWER)

    def _chunk(self, item: int, slot: int, row: _Row, label: int) -> None:
        """Append item ``item``'s chunk; its tokens may see image ``slot`` (when the item has one)."""
        img = self.vision and bool(self.has_image[item])
        seen = slot if img else -1
        head: list[int] = []
        if img:
            head.append(self.special["[IMG]"])
            if self.cfg.fusion == "early":
                row.vis_at += list(range(len(row.ids) + 1, len(row.ids) + 1 + self.cfg.visual_tokens))
                head += [self.special["<vis>"]] * self.cfg.visual_tokens
        body = self.attr_ids[item] + [int(self.item_token[item])]  # what context reconstruction predicts
        toks = head + body + [self.special["[EOC]"]]
        row.ids += toks
        row.media += [seen] * len(toks)
        row.labels += [0] * len(head) + [label] * len(body) + [0]
        if img:
            row.slots.append(item)

    def build_row(self, history: list[int], task: str, item: int, answer: list[int] | None,
                  cands: list[int] | None = None) -> _Row:
        """The token row of one example: ``[CLS]`` + history chunks + instruction (+ the queried item's
        chunk, or the candidates' chunks) + ``Answer:`` (+ ``answer`` tokens, labelled, then EOS)."""
        row = _Row([self.special["[CLS]"]], [-1], [], [0], [])
        ctx = 1 if self.cfg.context_loss else 0
        for it in history[-self.cfg.history:]:
            self._chunk(it, len(row.slots), row, ctx)
        if task in ("preference", "explanation"):
            self._extend(row, self.given)
            self._chunk(item, len(row.slots), row, 0)
            self._extend(row, self.comma)
        elif task == "search":
            self._extend(row, self.query_ids[item] + self.comma)
        elif task == "selection":
            self._extend(row, self.given)
            for c in [c for c in (cands or []) if c > 0]:
                self._chunk(c, len(row.slots), row, 0)
                self._extend(row, self.comma)
        self._extend(row, self.instr[task] + self.answer)
        if answer is not None:
            row.ids += answer + [self.eos]
            row.media += [-1] * (len(answer) + 1)
            row.labels += [2] * (len(answer) + 1)
        if not self.cfg.exclusive:  # media = the last image begun: the token sees it and every earlier one
            seen, cur = [], -1
            for m in row.media:
                cur = max(cur, m)
                seen.append(cur)
            row.media = seen
        return row

    @staticmethod
    def _extend(row: _Row, toks: list[int]) -> None:
        row.ids += toks
        row.media += [-1] * len(toks)
        row.labels += [0] * len(toks)

    def answer_tokens(self, task: str, item: int, rating: float, review: list[int],
                      picked: list[int] | None = None) -> list[int] | None:
        """The labelled answer of a row (None: the row has no answer for ``task``); ``picked``: the
        selection task's positive candidates, in candidate order."""
        if task in ("rec", "search"):
            return [int(self.item_token[item])]
        if task == "selection":
            return [int(self.item_token[c]) for c in picked] if picked else None
        if task == "preference":
            return None if not math.isfinite(rating) else [self.digits[int(min(max(round(rating), 1), 5)) - 1]]
        return review[: self.cfg.answer_tokens - 1] if review else None

    # -- one LM pass ---------------------------------------------------------------------------------
    def _allow(self, media: torch.Tensor, n_keys: int) -> torch.Tensor:
        """Which visual tokens each text token may attend to: ``[B, T, n_keys]`` (eq. 3's mask M)."""
        key_slot = torch.arange(n_keys, device=media.device) // self.cfg.visual_tokens
        if self.cfg.exclusive:
            return media[:, :, None] == key_slot[None, None, :]
        return (media[:, :, None] >= key_slot[None, None, :]) & (media[:, :, None] >= 0)

    def _hidden(self, rows: list[_Row], use_cache: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Final hidden states ``[B, T, d]`` (right-padded) and the attention mask of ``rows``
        (with ``use_cache``, also the LM's key/value cache and the visual tokens: ``self._gen``)."""
        dev = self.item_token.device
        T = max(len(r.ids) for r in rows)
        ids = torch.full((len(rows), T), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        media = torch.full((len(rows), T), -1, dtype=torch.long)
        for b, r in enumerate(rows):
            ids[b, : len(r.ids)] = torch.as_tensor(r.ids)
            mask[b, : len(r.ids)] = 1
            media[b, : len(r.ids)] = torch.as_tensor(r.media)
        ids, mask, media = ids.to(dev), mask.to(dev), media.to(dev)
        embeds = self.lm.get_input_embeddings()(ids)
        vis, allow = None, None
        if self.vision:
            S = max(1, max(len(r.slots) for r in rows))
            slots = torch.zeros((len(rows), S), dtype=torch.long)
            for b, r in enumerate(rows):
                slots[b, : len(r.slots)] = torch.as_tensor(r.slots, dtype=torch.long)
            slots = slots.to(dev)
            C = self.cfg.visual_tokens
            vis = self.resampler(self.regions[slots.reshape(-1)].float()).view(len(rows), S * C, -1)
            if self.cfg.fusion == "early":
                embeds = embeds.clone()
                for b, r in enumerate(rows):
                    if r.vis_at:
                        embeds[b, r.vis_at] = vis[b, : len(r.vis_at)].to(embeds.dtype)
            else:
                allow = self._allow(media, S * C)
        out = self._run_lm(embeds, mask, vis, allow, use_cache=use_cache)
        if use_cache:
            self._gen = (out.cache, vis if allow is not None else None)
        return out.last_hidden_state, mask

    def _run_lm(self, embeds: torch.Tensor, mask: torch.Tensor, vis: torch.Tensor | None,
                allow: torch.Tensor | None, **kwargs: Any) -> Any:
        """One LM pass; the cross-attention blocks see ``vis`` under ``allow`` (none when ``allow`` is
        None) for this pass only."""
        conditioned = [self.lm.model.layers[i] for i in self.cross_layers] if allow is not None else []
        for layer in conditioned:
            layer.state = (vis, allow)
        try:
            return self.lm.model(inputs_embeds=embeds, attention_mask=mask, **kwargs)
        finally:
            for layer in conditioned:
                layer.state = None

    def _step(self, token: torch.Tensor, media: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One cached decoding step of ``token`` ``[B]`` (its image slot ``media`` ``[B]``) after
        :meth:`_hidden` ``(use_cache=True)``; ``mask`` covers the cache and the token."""
        cache, vis = self._gen
        embeds = self.lm.get_input_embeddings()(token[:, None])
        allow = self._allow(media[:, None], vis.shape[1]) if vis is not None else None
        out = self._run_lm(embeds, mask, vis, allow, cache=cache, use_cache=True)
        self._gen = (out.cache, vis)
        return out.last_hidden_state[:, -1]

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm.get_output_embeddings()(h).float()

    # -- training ------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = []
        hist, task, item = batch["hist"].cpu().numpy(), batch["task"].cpu().numpy(), batch["item"].cpu().numpy()
        rating, answer = batch["rating"].cpu().numpy(), batch["answer"].cpu().numpy()
        cands, picked = batch["cands"].cpu().numpy(), batch["picked"].cpu().numpy()
        for b in range(len(task)):
            t = TASKS[int(task[b])]
            cb = [int(c) for c in cands[b]]
            pos = [c for c, k in zip(cb, picked[b]) if k and c > 0]
            ans = self.answer_tokens(t, int(item[b]), float(rating[b]), [int(x) for x in answer[b] if x >= 0], pos)
            if ans is None:
                continue
            rows.append(self.build_row([int(i) for i in hist[b] if i > 0], t, int(item[b]), ans, cb))
        if not rows:
            return self.item_token.new_zeros((), dtype=torch.float32) + 0.0 * self.lm.get_input_embeddings().weight.sum()
        h, _ = self._hidden(rows)
        total = h.new_zeros((), dtype=torch.float32)
        kinds = ((2, 1.0),) + (((1, self.cfg.context_weight),) if self.cfg.context_loss else ())
        for kind, weight in kinds:
            pos_b, pos_t, tgt = [], [], []
            for b, r in enumerate(rows):
                for t in range(1, len(r.ids)):
                    if r.labels[t] == kind:
                        pos_b.append(b)
                        pos_t.append(t - 1)  # the state before the token predicts it
                        tgt.append(r.ids[t])
            if not tgt:
                continue
            logp = F.log_softmax(self._logits(h[pos_b, pos_t]), dim=-1)
            lp = logp.gather(1, torch.as_tensor(tgt, device=h.device)[:, None]).squeeze(1)
            total = total + weight * (-reweighted(lp, self.cfg.gamma).mean())
        return total

    # -- inference -----------------------------------------------------------------------------------
    def _answer_states(self, histories: list[list[int]], task: str, items: list[int]) -> torch.Tensor:
        """The hidden state after ``Answer:`` for each prompt: it predicts the first answer token."""
        out = []
        for b0 in range(0, len(histories), self.cfg.score_batch):
            rows = [self.build_row(h, task, it, None) for h, it in
                    zip(histories[b0: b0 + self.cfg.score_batch], items[b0: b0 + self.cfg.score_batch])]
            h, mask = self._hidden(rows)
            last = mask.sum(1) - 1
            out.append(h[torch.arange(len(rows), device=h.device), last])
        return torch.cat(out)

    def _item_scores(self, states: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        w = self.lm.get_output_embeddings().weight[self.item_token[candidates.to(self.item_token.device)]]
        if candidates.dim() == 1:  # one catalogue for every row: a matrix product, no [B, C, d] gather
            return states.float() @ w.float().T
        return torch.einsum("bd,bcd->bc", states.float(), w.float())

    @staticmethod
    def _histories(history: torch.Tensor) -> list[list[int]]:
        return [[int(i) for i in h[h > 0]] for h in history.cpu().numpy()]

    def score(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Next-item scores ``[B, C]``: the logits of the candidates' item tokens after the ``rec``
        instruction (one LM pass per history, any number of candidates)."""
        hs = self._histories(history)
        return self._item_scores(self._answer_states(hs, "rec", [0] * len(hs)), candidates)

    def search_scores(self, history: torch.Tensor, query_items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Personalised search: the query is the category of ``query_items``; scores of ``candidates``."""
        hs = self._histories(history)
        return self._item_scores(self._answer_states(hs, "search", [int(i) for i in query_items.tolist()]), candidates)

    @torch.inference_mode()
    def predict_rating(self, history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The preference task: the most likely of the answers ``1``..``5`` (float ``[B]``)."""
        st = self._answer_states(self._histories(history), "preference", [int(i) for i in items.tolist()])
        logits = self._logits(st)[:, self.digits]
        return (logits.argmax(-1) + 1).float()

    @torch.inference_mode()
    def select(self, history: torch.Tensor, cands: torch.Tensor) -> list[list[int]]:
        """The selection task: the candidates (item indices ``[B, E]``, 0 = none) chosen for each
        history, by greedy decoding restricted to the item tokens of the candidates after the last one
        chosen (answers list them in candidate order) and EOS; possibly none."""
        out: list[list[int]] = []
        for h, cb in zip(self._histories(history), cands.cpu().numpy()):
            cb = [int(c) for c in cb if c > 0]
            row = self.build_row(h, "selection", 0, None, cb)
            hs, mask = self._hidden([row], use_cache=True)
            state = hs[:, -1]
            media = torch.tensor([row.media[-1]], device=hs.device)
            chosen: list[int] = []
            start = 0
            while start < len(cb):
                allowed = torch.as_tensor([int(self.item_token[c]) for c in cb[start:]] + [self.eos],
                                          device=hs.device)
                j = int(self._logits(state)[0, allowed].argmax())
                if j == len(allowed) - 1:  # EOS
                    break
                chosen.append(cb[start + j])
                start += j + 1
                if start < len(cb):
                    mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
                    state = self._step(allowed[j:j + 1], media, mask)
            self._gen = None
            out.append(chosen)
        return out

    @torch.inference_mode()
    def explain(self, history: torch.Tensor, items: torch.Tensor, max_new_tokens: int | None = None) -> list[str]:
        """The explanation task: greedy decoding (no item or special tokens) of at most ``max_new_tokens``."""
        hs = self._histories(history)
        out: list[str] = []
        steps = max_new_tokens or self.cfg.answer_tokens
        for b, it in zip(hs, items.tolist()):  # one history at a time: prompts differ in length
            row = self.build_row(b, "explanation", int(it), None)
            h, mask = self._hidden([row], use_cache=True)
            state = h[:, -1]
            media = torch.tensor([row.media[-1]], device=h.device)  # generated tokens see what "Answer:" sees
            gen: list[int] = []
            for _ in range(steps):
                logits = self._logits(state)[0]
                logits[self.base_vocab:] = float("-inf")  # words only: no item or special tokens
                nxt = int(logits.argmax())
                if nxt == self.eos:
                    break
                gen.append(nxt)
                mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
                state = self._step(torch.tensor([nxt], device=h.device), media, mask)
            self._gen = None
            out.append(self.tok.decode(gen, skip_special_tokens=True).strip())
        return out


# -- spec ----------------------------------------------------------------------------------------------


def unimp_schema(cfg: UniMPConfig) -> BatchSchema:
    return BatchSchema((
        Column("hist", "int64", (cfg.history,), "the last `history` items before the target, left-padded"),
        Column("task", "int64", (), f"task id: {dict(TASK_ID)}"),
        Column("item", "int64", (), "the target (rec, search) or queried (preference, explanation) item"),
        Column("rating", "float32", (), "the event's rating (NaN: none)"),
        Column("answer", "int64", (cfg.answer_tokens,), "the review's LM tokens (explanation), -1-padded"),
        Column("cands", "int64", (cfg.select_candidates,), "selection: the candidate items (0 elsewhere)"),
        Column("picked", "int64", (cfg.select_candidates,), "selection: 1 for a positive candidate"),
    ))


def selection_instance(seq: np.ndarray, history: int, n_candidates: int, max_positives: int, lo: int, hi: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A selection prompt from a sequence (its items up to the target, >= 2): the last ``p`` items (p
    uniform in 1..``max_positives``, leaving one item of history) are the positives, the ``history`` items
    before them the user sentence, and items of ``[lo, hi)`` (the domain) the user never took the
    negatives up to ``n_candidates``; candidates shuffled, each once (a repeated item is one positive).
    Returns ``(hist [history] left-padded, cands [n_candidates], picked [n_candidates])`` (0-padded when
    the domain has too few other items)."""
    seq = np.asarray(seq, dtype=np.int64)
    if len(seq) < 2:
        raise ValueError("a selection prompt needs a sequence of at least 2 items")
    p = int(rng.integers(1, min(max_positives, len(seq) - 1) + 1))
    pos, before = pd.unique(seq[-p:]), seq[:-p][-history:]  # a repeated item is one positive
    pool = np.setdiff1d(np.arange(lo, hi), seq)
    neg = rng.choice(pool, size=min(n_candidates - len(pos), len(pool)), replace=False)
    items = np.concatenate([pos, neg])
    flag = np.r_[np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]
    order = rng.permutation(len(items))
    cands = np.zeros(n_candidates, np.int64)
    picked = np.zeros(n_candidates, np.int64)
    cands[: len(items)], picked[: len(items)] = items[order], flag[order]
    hist = np.zeros(history, np.int64)
    hist[history - len(before):] = before
    return hist, cands, picked


def unimp_rows(cfg: UniMPConfig, train: pd.DataFrame, catalogue: ItemCatalogue) -> dict[str, np.ndarray]:
    """Per training sequence, its last ``rows_per_user`` events (with at least one earlier item) as
    targets, one row per task that has data for the event (a rating, a review)."""
    seqs = train[train["items"].map(len) >= 2]
    if cfg.max_users is not None and len(seqs) > cfg.max_users:
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(seqs), cfg.max_users, replace=False))
        seqs = seqs.iloc[keep]
    if not len(seqs):
        raise ValueError(f"no training sequences of length >= 2 in domains {sorted(set(train['domain']))}")
    tok = load_tokenizer(cfg.backbone) if "explanation" in cfg.tasks else None
    has_r, has_v = "ratings" in seqs.columns, "reviews" in seqs.columns
    out: dict[str, list[Any]] = {k: [] for k in ("hist", "task", "item", "rating", "answer", "cands", "picked")}
    empty = np.full(cfg.answer_tokens, -1, dtype=np.int64)
    none = np.zeros(cfg.select_candidates, dtype=np.int64)
    select_rng = np.random.default_rng(cfg.seed + 1)
    for i, items in enumerate(seqs["items"]):
        ratings = seqs["ratings"].iat[i] if has_r else None
        reviews = seqs["reviews"].iat[i] if has_v else None
        for t in range(max(1, len(items) - cfg.rows_per_user), len(items)):
            hist = np.zeros(cfg.history, dtype=np.int64)
            h = np.asarray(items[max(0, t - cfg.history): t], dtype=np.int64)
            hist[cfg.history - len(h):] = h
            r = float(ratings[t]) if ratings is not None else float("nan")
            for task in cfg.tasks:
                ans, row_hist, cands, picked = empty, hist, none, none
                if task == "preference" and not math.isfinite(r):
                    continue
                if task == "selection":
                    lo, hi = catalogue.domain_ranges[int(catalogue.item_domain[items[t]])]
                    row_hist, cands, picked = selection_instance(
                        items[: t + 1], cfg.history, cfg.select_candidates, cfg.select_positives, int(lo), int(hi),
                        select_rng)
                if task == "explanation":
                    text = reviews[t] if reviews is not None else None
                    if not text:
                        continue
                    ids = tok(" " + text, add_special_tokens=False)["input_ids"][: cfg.answer_tokens - 1]
                    ans = empty.copy()
                    ans[: len(ids)] = ids
                out["hist"].append(row_hist)
                out["task"].append(TASK_ID[task])
                out["item"].append(int(items[t]))
                out["rating"].append(r)
                out["answer"].append(ans)
                out["cands"].append(cands)
                out["picked"].append(picked)
    if not out["task"]:
        raise ValueError(f"unimp: no training rows for tasks {cfg.tasks} (preference needs data.event_attrs "
                         "with ratings, explanation with reviews)")
    return {"hist": np.stack(out["hist"]), "task": np.asarray(out["task"], dtype=np.int64),
            "item": np.asarray(out["item"], dtype=np.int64), "rating": np.asarray(out["rating"], dtype=np.float32),
            "answer": np.stack(out["answer"]).astype(np.int64), "cands": np.stack(out["cands"]),
            "picked": np.stack(out["picked"])}


def unimp_views(cfg: UniMPConfig) -> list[str]:
    return [cfg.image_view] if cfg.fusion != "none" and cfg.image_view else []


SPEC = ModelSpec(
    name="unimp", config=UniMPConfig, build=UniMP, schema=unimp_schema, rows=unimp_rows,
    # AdamW with warm-up and a cosine schedule, accumulation 2 (App. A.2); bf16 autocast on GPU workers
    recipe=OptimRecipe(optimizer="adamw", schedule="cosine", warmup_steps=5, grad_clip=1.0, grad_accum=2,
                       precision="bf16"),
    capabilities=frozenset({"scorer", "generative"}),
    feature_views=unimp_views,
    experiment_defaults=("train.lr=2e-4", "train.batch_size=8", "train.epochs=10", "train.valid_users=200",
                         "data.event_attrs=[ratings, reviews]"),
    summary="multi-task generation on a frozen LM with per-item gated cross-attention to item images",
    reference="Wei et al. 2024, UniMP §2.1 (eq. 1-2), §2.2 (eq. 3-4), §2.3 (eq. 6-8), App. A.2",
)


def with_tasks(cfg: UniMPConfig, tasks: list[str]) -> UniMPConfig:
    return dataclasses.replace(cfg, tasks=list(tasks))
