"""The IDP pipeline end to end on the tiny benchmark."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.pipelines.idp import IDPConfig, VARIANTS, run_idp

FAST = ["train.epochs=2", "train.patience=2"]


def test_zero_shot_transfer_generates_every_target_item(ray_local, tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = IDPConfig(dataset=str(tiny_dataset), storage_path=str(tmp_path), name="idp", variants=["idp_zero_shot"],
                    pretrain=IDPConfig().pretrain + FAST, top_m=3)
    res = run_idp(cfg)
    root = tmp_path / "idp"
    gen = pd.read_parquet(root / "transfer_cdim" / "generated.parquet")
    idx = pd.read_parquet(root / "pretrain" / "item_index.parquet")
    target_items = set(idx[idx["domain"].isin(["toys", "kitchen", "sports"])]["item_id"])
    # every target item with text got an embedding from 3 *source* items, weights summing to 1
    assert set(gen["item_id"]) <= target_items and len(gen) >= 0.9 * len(target_items)
    assert all(n.split("/")[0] in ("books", "movies", "electronics") for ns in gen["neighbours"] for n in ns)
    assert np.allclose([np.sum(w) for w in gen["weights"]], 1.0)
    assert (root / "cdim" / "model.pt").exists() and (root / "transfer_cdim" / "index" / "meta.json").exists()
    m = res["results"]["idp_zero_shot"]
    assert set(m) == {"toys", "kitchen", "sports"}
    assert all(0.0 <= v["full_ndcg@10"] <= 1.0 for v in m.values())
    assert json.loads((root / "results.json").read_text())["variants"] == {"idp_zero_shot": VARIANTS["idp_zero_shot"]}
    assert (root / "results.png").exists() and (root / "results.md").read_text().startswith("| Domain |")


@pytest.mark.slow
def test_every_variant_runs(ray_local, tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = IDPConfig(dataset=str(tiny_dataset), storage_path=str(tmp_path), name="all", variants=list(VARIANTS),
                    pretrain=IDPConfig().pretrain + FAST, finetune=IDPConfig().finetune + FAST, top_m=3)
    res = run_idp(cfg)
    assert set(res["results"]) == set(VARIANTS)
    # resumable: a second call reuses every stage
    again = run_idp(cfg)
    assert set(again["timings_s"]) == {"features", "report"}
