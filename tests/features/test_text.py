"""The text encoder honours a sentence-transformers folder's own pooling (CLS or mean), not a fixed one."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raypipe.features.text import TextEncoder, resolve_text_model, text_pooling

TEXTS = ["a red wooden toy train", "stainless steel kitchen knife set", "trail running shoes"]


def _hf_states(path: str, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).last_hidden_state, enc["attention_mask"]


def _with_pooling(tmp_path: Path, cfg: dict) -> str:
    """The packaged MiniLM folder with another pooling declaration (weights linked, not copied)."""
    src = Path(resolve_text_model(None))
    dst = tmp_path / "minilm-variant"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "1_Pooling":
            (dst / f.name).symlink_to(f)
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **cfg}))
    return str(dst)


def test_packaged_minilm_is_mean_pooled() -> None:
    path = resolve_text_model(None)
    assert text_pooling(path) == "mean"
    hidden, mask = _hf_states(path, TEXTS)
    m = mask[..., None].float()
    expected = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    got = TextEncoder(path, device="cpu").encode(TEXTS)
    assert got.shape == (3, 384) and got.dtype == np.float32
    assert np.allclose(got, expected, atol=1e-5)


def test_a_cls_pooled_folder_is_encoded_with_its_cls_token(tmp_path: Path) -> None:
    path = _with_pooling(tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    assert text_pooling(path) == "cls"
    hidden, _ = _hf_states(path, TEXTS)
    expected = torch.nn.functional.normalize(hidden[:, 0], dim=-1).numpy()
    got = TextEncoder(path, device="cpu").encode(TEXTS)
    assert np.allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, TextEncoder(None, device="cpu").encode(TEXTS), atol=1e-2)  # not mean pooling


def test_an_ambiguous_pooling_declaration_is_an_error(tmp_path: Path) -> None:
    path = _with_pooling(tmp_path, {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True})
    with pytest.raises(ValueError, match=r"1_Pooling/config.json: expected exactly one pooling mode"):
        text_pooling(path)
    assert TextEncoder(None, device="cpu").encode([]).shape == (0, 384)
