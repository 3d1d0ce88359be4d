"""The packaged SmolLM2's one-time conversion into a plain Hugging Face folder."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from raypipe.models.causal_lm import FOLDER_NAME, SOURCE_FILE, smollm2_folder


def test_first_use_conversion_leaves_the_global_torch_rng_alone(tmp_path: Path) -> None:
    # A worker that converts the GGUF on first use and then initialises a model's new layers must draw
    # the same initial weights as one that finds the folder ready (building the plain model consumes
    # random numbers; a UniMP seed-0 re-run once moved by up to 0.024 NDCG@10 because of this).
    torch.manual_seed(0)
    expected = torch.rand(8)
    torch.manual_seed(0)
    folder = smollm2_folder(tmp_path)
    got = torch.rand(8)
    assert folder == tmp_path / FOLDER_NAME
    assert json.loads((folder / SOURCE_FILE).read_text())["model"] == "SmolLM2-135M-Instruct"
    assert torch.equal(got, expected)
    torch.manual_seed(0)
    assert smollm2_folder(tmp_path) == folder  # found, not converted again
    assert torch.equal(torch.rand(8), expected)
