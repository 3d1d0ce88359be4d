"""UPSR (Qu et al. 2023, "Thoroughly Modeling Multi-domain Pre-trained Recommendation as Language",
``papers/UPSR``): sequential recommendation as text generation with a behaviour-tuned seq2seq LM.

* item text (§3.3.1): pre-training ``(category: C) T`` (``upsr_pretrain``), fine-tuning
  ``(category: C) T (brand: B) (price: P) (description: D)`` (``upsr_finetune``); ``template=auto``
  picks by stage.  Each item text is cut to ``item_tokens`` (40) tokens;
* text sequence (§3.3.2): ``Given the following purchase history of user: t1, ..., tn, <extra_id_0>,
  predict masked item purchased by the user?`` -- cut to ``max_tokens`` (512) by dropping the oldest
  items first (whole items);
* MITP (§3.4.1, eq. 1): per training row either the last item alone (``last_item_ratio`` = 1/10 of rows:
  the paper's random : last = 9 : 1) or a random ``mask_ratio`` (10%) of the items (at least one) is
  replaced by sentinels ``<extra_id_i>`` in order; the target is ``<extra_id_0> text_0 <extra_id_1>
  text_1 ... </s>`` (T5 span-corruption style); loss = the mean token cross-entropy of the targets.
  Masks are drawn anew every time a row is seen (dynamic, as BERT4Rec's cloze);
* inference (§3.4.2, eq. 2): the last position masked; candidates ranked by perplexity
  ``PP(c) = P(w_1..w_N)^{-1/N}`` of their text given the history, i.e. ``score = mean log P(w_k)``
  (higher is better).  ``w_1..w_N`` are the candidate's text tokens and its end token ``</s>`` (the end
  token is how a text that is a prefix of another differs from it; it is what an HF T5 ``labels=``
  perplexity counts too).

Batched scoring (``score``): each history is encoded once; the decoder runs the shared prefix
``<start> <extra_id_0>`` once per history and keeps its key/value cache (self-attention of the prefix,
cross-attention keys/values of the encoder output); the cache is repeated for the candidates, whose
texts are teacher-forced in one decoder pass; the LM head runs only at positions with a label.
``score_per_candidate`` is the naive reference (one encoder + decoder pass per (history, candidate)),
kept for the equality test and the speed benchmark.

Backbones (``model.backbone``, :mod:`raypipe.models.seq2seq`): ``minilm`` (offline default: MiniLM
warm-started encoder–decoder, a recorded deviation from T5), ``t5-random`` (random small T5 with a
tokenizer trained on the catalogue) or a local T5/FLAN-T5 folder.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.data.sequences import pad_left, sequence_windows
from raypipe.data.text import UPSR_PROMPT_HEAD, UPSR_PROMPT_TAIL, upsr_order
from raypipe.models.base import SequentialRecommender
from raypipe.models.seq2seq import N_SENTINELS, build_seq2seq
from raypipe.models.spec import BatchSchema, Column, ModelSpec, OptimRecipe

TEMPLATES = ("upsr_pretrain", "upsr_finetune")


@dataclass
class UPSRConfig(ModelConfig):
    name: str = "upsr"
    #: ``minilm`` (offline default), ``t5-random`` or a local T5 / FLAN-T5 folder
    backbone: str = "minilm"
    #: item text: ``upsr_pretrain`` (C→T), ``upsr_finetune`` (C→T→DPT), ``auto`` (by stage), or
    #: ``upsr:<order>`` (§4.5's attribute sets and orders: letters C, T, D, e.g. ``upsr:T``, ``upsr:DCT``)
    template: str = "auto"
    #: tokens per item text (paper: 40) and per text sequence (paper: 512)
    item_tokens: int = 40
    max_tokens: int = 512
    #: items of a history read (the text is then cut to max_tokens); ``None`` = ``data.max_len``
    max_len: int | None = None
    #: MITP: share of masked items in a random-masking row, and share of rows masking the last item only
    mask_ratio: float = 0.1
    last_item_ratio: float = 0.1
    #: MITP: decoder target budget in tokens (masked items past it stay unmasked)
    max_target_tokens: int = 256
    #: scoring: (history, candidate) pairs per decoder pass and histories per encoder pass
    score_pairs: int = 256
    score_histories: int = 8
    #: t5-random sizes
    vocab_size: int = 8000
    d_model: int = 256
    d_ff: int = 1024
    num_layers: int = 4
    num_heads: int = 4

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES + ("auto",) and not self.template.startswith("upsr:"):
            raise ValueError(f"model.template must be one of {TEMPLATES + ('auto',)} or upsr:<order> "
                             f"(attributes C, T, D in order, e.g. upsr:TCD), got {self.template!r}")
        if self.template.startswith("upsr:"):
            try:
                upsr_order(self.template.removeprefix("upsr:"))
            except ValueError as e:
                raise ValueError(f"model.template: {e}") from None
        if not 0 < self.mask_ratio <= 1 or not 0 <= self.last_item_ratio <= 1:
            raise ValueError("model.mask_ratio must be in (0, 1] and model.last_item_ratio in [0, 1]")
        if self.item_tokens < 1 or self.max_tokens < 16 or self.max_target_tokens < 2:
            raise ValueError("model.item_tokens >= 1, model.max_tokens >= 16, model.max_target_tokens >= 2")
        if self.score_pairs < 1 or self.score_histories < 1:
            raise ValueError("model.score_pairs and model.score_histories must be >= 1")


class UPSR(SequentialRecommender):
    #: no state entry is tied to one catalogue: items are their texts, tokenised from the catalogue at
    #: build time, and the whole state is the language model (with the t5-random tokenizer), so a model
    #: pre-trained on one dataset starts a run on another whole (:func:`raypipe.train.finetune.cross_catalogue_state`)
    catalogue_state: tuple[str, ...] = ()

    def __init__(self, cfg: UPSRConfig, catalogue: ItemCatalogue) -> None:
        super().__init__()
        if cfg.max_len is None:
            raise ValueError("model.max_len must be set (it defaults to data.max_len)")
        if cfg.template == "auto":
            raise ValueError("model.template=auto is resolved by the run's stage; name a template")
        self.cfg = cfg
        self.texts = catalogue.texts(cfg.template)
        corpus = self.texts[1:] + catalogue.texts("upsr_finetune")[1:] + [UPSR_PROMPT_HEAD + UPSR_PROMPT_TAIL]
        self.lm = build_seq2seq(cfg.backbone, corpus, {k: getattr(cfg, k) for k in
                                                       ("vocab_size", "d_model", "d_ff", "num_layers", "num_heads")})
        self._tokenize()
        # a t5-random tokenizer arrives with the weights: re-tokenise after every load
        self.register_load_state_dict_post_hook(lambda module, _keys: module._tokenize())

    # -- text -> tokens --------------------------------------------------------------------------------
    def _tokenize(self) -> None:
        tok = self.lm.tokenizer
        enc = tok(self.texts[1:], add_special_tokens=False, truncation=True, max_length=self.cfg.item_tokens)
        self.item_tokens: list[list[int]] = [[]] + [list(map(int, ids)) for ids in enc["input_ids"]]

        def ids(text: str) -> list[int]:
            return list(map(int, tok(text, add_special_tokens=False)["input_ids"]))

        self.head = ([self.lm.bos_id] if self.lm.bos_id is not None else []) + ids(UPSR_PROMPT_HEAD.strip())
        self.sep = ids(",")
        self.tail = ids(UPSR_PROMPT_TAIL.strip()) + [self.lm.eos_id]

    def _keep_from(self, lens: list[int]) -> int:
        """The first item position kept when item texts of ``lens`` tokens must fit ``max_tokens`` with the
        prompt around them (the oldest items go first, whole; the last item always stays)."""
        start = 0
        total = len(self.head) + len(self.tail) + sum(lens) + len(self.sep) * max(len(lens) - 1, 0)
        while total > self.cfg.max_tokens and start < len(lens) - 1:
            total -= lens[start] + len(self.sep)
            start += 1
        return start

    def encoder_input(self, items: list[int], masked: set[int] | None = None) -> tuple[list[int], int]:
        """The token ids of the prompt over ``items`` (item indices, oldest first) with the positions in
        ``masked`` replaced by sentinels in order, cut to ``max_tokens`` by dropping the oldest items.
        Returns ``(ids, first kept position)``."""
        masked = masked or set()
        start = self._keep_from([1 if p in masked else len(self.item_tokens[i]) for p, i in enumerate(items)])
        out = list(self.head)
        k = 0
        for p in range(start, len(items)):
            if p > start:
                out += self.sep
            if p in masked:
                out.append(self.lm.sentinel_ids[k])
                k += 1
            else:
                out += self.item_tokens[items[p]]
        out += self.tail
        return out[: self.cfg.max_tokens], start

    def _pad(self, rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), value, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        dev = self.lm.lm_head_weight().device
        return ids.to(dev), mask.to(dev)

    # -- MITP (eq. 1) ----------------------------------------------------------------------------------
    def mitp_example(self, items: list[int], rng: np.random.Generator) -> tuple[list[int], list[int]]:
        """One MITP example of a sequence: (encoder ids, target ids)."""
        items = items[self._keep_from([len(self.item_tokens[i]) for i in items]):]
        n = len(items)
        if n == 1 or rng.random() < self.cfg.last_item_ratio:
            chosen = [n - 1]
        else:
            chosen = list(np.flatnonzero(rng.random(n) < self.cfg.mask_ratio))
            if not chosen:
                chosen = [int(rng.integers(n))]
        target: list[int] = []
        kept: list[int] = []
        for p in chosen[:N_SENTINELS]:
            piece = [self.lm.sentinel_ids[len(kept)]] + self.item_tokens[items[p]]
            if kept and len(target) + len(piece) + 1 > self.cfg.max_target_tokens:
                break
            target += piece
            kept.append(int(p))
        target = target[: self.cfg.max_target_tokens - 1] + [self.lm.eos_id]
        ids, _ = self.encoder_input(items, set(kept))
        return ids, target

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(batch)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seqs = batch["seq"].cpu().numpy()
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,))))  # follows the loop's torch seed
        examples = [self.mitp_example([int(i) for i in s[s > 0]], rng) for s in seqs if (s > 0).any()]
        enc_ids, enc_mask = self._pad([e[0] for e in examples], self.lm.pad_id)
        tgt, tgt_mask = self._pad([e[1] for e in examples], self.lm.pad_id)
        dec_in = torch.cat([torch.full_like(tgt[:, :1], self.lm.start_id), tgt[:, :-1]], dim=1)
        enc = self.lm.encode(enc_ids, enc_mask)
        states, _ = self.lm.decode(dec_in, tgt_mask, enc, enc_mask)
        real = tgt_mask.bool()
        return F.cross_entropy(self.lm.lm_logits(states[real]).float(), tgt[real])

    # -- perplexity scoring (eq. 2) --------------------------------------------------------------------
    def _history_inputs(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = []
        for h in history[:, -self.cfg.max_len:].cpu().numpy():
            items = [int(i) for i in h[h > 0]]
            ids, _ = self.encoder_input(items + [0], {len(items)})  # the next item is <extra_id_0>
            rows.append(ids)
        return self._pad(rows, self.lm.pad_id)

    def _candidate_tokens(self, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate's text tokens + ``</s>``, right-padded: ``[n, T]`` ids and mask."""
        return self._pad([self.item_tokens[int(c)] + [self.lm.eos_id] for c in cands.reshape(-1).tolist()],
                         self.lm.pad_id)

    def score(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Mean log-probability of each candidate's text given the history (``-log PP``), ``[B, C]``."""
        B = history.shape[0]
        if candidates.dim() == 1:
            candidates = candidates[None].expand(B, -1)
        out = []
        for b0 in range(0, B, self.cfg.score_histories):
            out.append(self._score_block(history[b0: b0 + self.cfg.score_histories],
                                         candidates[b0: b0 + self.cfg.score_histories]))
        return torch.cat(out, dim=0)

    def _score_block(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        B, C = candidates.shape
        enc_ids, enc_mask = self._history_inputs(history)
        enc = self.lm.encode(enc_ids, enc_mask)
        prefix = torch.tensor([[self.lm.start_id, self.lm.sentinel_ids[0]]] * B, device=enc.device)
        states, cache = self.lm.decode(prefix, torch.ones_like(prefix), enc, enc_mask, use_cache=True)
        first = F.log_softmax(self.lm.lm_logits(states[:, -1]).float(), dim=-1)  # [B, V]: predicts w_1
        scores = torch.empty(B, C, device=enc.device)
        step = max(1, self.cfg.score_pairs // B)
        for c0 in range(0, C, step):
            cand = candidates[:, c0: c0 + step]
            c = cand.shape[1]
            ids, mask = self._candidate_tokens(cand)  # [B*c, T]
            rows = torch.arange(B, device=enc.device).repeat_interleave(c)
            logp = first[rows, ids[:, 0]]  # log P(w_1)
            if ids.shape[1] > 1:
                rep = self.lm.repeat_cache(cache, c)
                # the encoder output is not read again (its cross-attention keys/values are cached);
                # a zero-stride view gives the decoder the shape it builds masks from
                enc_view = enc.new_zeros(()).expand(B * c, enc.shape[1], enc.shape[2])
                st, _ = self.lm.decode(ids[:, :-1], mask[:, :-1], enc_view, enc_mask.repeat_interleave(c, dim=0),
                                       cache=rep)
                real = mask[:, 1:].bool()
                lp = F.log_softmax(self.lm.lm_logits(st[real]).float(), dim=-1)
                tail = torch.zeros(real.shape, device=enc.device)
                tail[real] = lp.gather(1, ids[:, 1:][real][:, None]).squeeze(1)
                logp = logp + tail.sum(1)
            scores[:, c0: c0 + c] = (logp / mask.sum(1)).reshape(B, c)
        return scores

    def score_per_candidate(self, history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The naive reference of :meth:`score`: each (history, candidate) pair re-encodes its history and
        teacher-forces ``<start> <extra_id_0> w_1..w_N`` in a decoder pass of its own."""
        B = history.shape[0]
        if candidates.dim() == 1:
            candidates = candidates[None].expand(B, -1)
        out = torch.empty(candidates.shape)
        for b in range(B):
            enc_ids, enc_mask = self._history_inputs(history[b: b + 1])
            for j, cand in enumerate(candidates[b].tolist()):
                enc = self.lm.encode(enc_ids, enc_mask)
                words = self.item_tokens[int(cand)] + [self.lm.eos_id]
                dec = torch.tensor([[self.lm.start_id, self.lm.sentinel_ids[0]] + words[:-1]], device=enc.device)
                st, _ = self.lm.decode(dec, torch.ones_like(dec), enc, enc_mask)
                lp = F.log_softmax(self.lm.lm_logits(st[0, 1:]).float(), dim=-1)
                out[b, j] = lp.gather(1, torch.tensor(words, device=enc.device)[:, None]).mean()
        return out

    # -- generation (capability "generative") ----------------------------------------------------------
    @torch.inference_mode()
    def generate_text(self, history: torch.Tensor, max_new_tokens: int | None = None) -> list[str]:
        """Greedy decoding of the masked next item's text for each history."""
        enc_ids, enc_mask = self._history_inputs(history)
        enc = self.lm.encode(enc_ids, enc_mask)
        B = enc.shape[0]
        tokens = torch.tensor([[self.lm.start_id, self.lm.sentinel_ids[0]]] * B, device=enc.device)
        states, cache = self.lm.decode(tokens, torch.ones_like(tokens), enc, enc_mask, use_cache=True)
        done = torch.zeros(B, dtype=torch.bool, device=enc.device)
        out: list[list[int]] = [[] for _ in range(B)]
        for _ in range(max_new_tokens or self.cfg.item_tokens):
            nxt = self.lm.lm_logits(states[:, -1]).argmax(-1)
            done |= (nxt == self.lm.eos_id) | torch.isin(nxt, torch.tensor(self.lm.sentinel_ids, device=enc.device))
            if bool(done.all()):
                break
            for b in range(B):
                if not done[b]:
                    out[b].append(int(nxt[b]))
            states, cache = self.lm.decode(nxt[:, None], torch.ones_like(nxt[:, None]), enc, enc_mask, cache=cache)
        return [self.lm.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]


# -- spec ----------------------------------------------------------------------------------------------


def upsr_schema(cfg: UPSRConfig) -> BatchSchema:
    return BatchSchema((Column("seq", "int64", (int(cfg.max_len or 0),),
                               "a window of max_len consecutive items of a training sequence, left-padded"),))


def upsr_rows(cfg: UPSRConfig, train: pd.DataFrame, catalogue: ItemCatalogue) -> dict[str, np.ndarray]:
    """Windows of ``max_len`` items covering every training sequence of at least two items (each item is
    in the last position of one window, so last-item masking sees every target)."""
    seqs = [s for s in train["items"] if len(s) >= 2]
    if not seqs:
        raise ValueError(f"no training sequences of length >= 2 in domains {sorted(set(train['domain']))}")
    width = int(cfg.max_len or 0)
    return {"seq": pad_left(sequence_windows(seqs, width), width).astype(np.int64)}


def upsr_resolve(cfg: UPSRConfig, experiment: Any) -> UPSRConfig:
    """``template=auto``: C→T when pre-training, C→T→DPT when fine-tuning or evaluating (§3.3.1)."""
    if cfg.template != "auto":
        return cfg
    return dataclasses.replace(cfg, template="upsr_pretrain" if experiment.run.stage == "pretrain"
                               else "upsr_finetune")


SPEC = ModelSpec(
    name="upsr", config=UPSRConfig, build=UPSR, schema=upsr_schema, rows=upsr_rows,
    # AdamW 3e-4 with linear warm-up and decay, clipping; bf16 autocast on GPU workers
    recipe=OptimRecipe(optimizer="adamw", schedule="linear", warmup_steps=20, grad_clip=1.0, precision="bf16"),
    capabilities=frozenset({"scorer", "generative"}),
    resolve=upsr_resolve, protocol="sampled",
    # the published batch of 128 as 16 rows x 8 accumulated micro-batches (what fits on a CPU worker)
    experiment_defaults=("train.lr=3e-4", "train.batch_size=16", "train.optim.grad_accum=8",
                         "train.valid_users=500", "train.patience=3", "train.epochs=20"),
    summary="next item as text generation: MITP on a seq2seq LM, candidates ranked by perplexity",
    reference="Qu et al. 2023, UPSR §3.3 (text), §3.4.1 MITP (eq. 1), §3.4.2 perplexity ranking (eq. 2)",
)
