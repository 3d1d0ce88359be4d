"""The IDP pipeline end to end on the tiny benchmark."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.models.cdim import CDIMConfig
from raypipe.config import load_config
from raypipe.config import ConfigError
from raypipe.pipelines.idp import (IDPConfig, VARIANTS, plot_curves, run_idp, share_stages, shared_source,
                                   training_summary)

FAST = ["train.epochs=2", "train.patience=2"]


def test_zero_shot_transfer_generates_every_target_item(idp_tiny: tuple[Path, dict]) -> None:
    root, res = idp_tiny  # run_idp on tiny: see tests/conftest.py
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
    # w/o BCL: the same transfer from the untuned encoder's neighbours; CDIM's training moved them
    raw = pd.read_parquet(root / "transfer_raw" / "generated.parquet")
    assert list(raw["item_id"]) == list(gen["item_id"])
    assert any(list(a) != list(b) for a, b in zip(raw["neighbours"], gen["neighbours"]))
    assert set(res["results"]["idp_wo_bcl_zero_shot"]) == {"toys", "kitchen", "sports"}
    cdim = json.loads((root / "cdim" / "summary.json").read_text())
    assert 0.0 <= cdim["untuned_neighbour_recall@10"] <= 1.0 and cdim["config"]["trainable_layers"] == 1
    n_held_out = max(10, int(0.05 * cdim["n_items"]))
    # two behaviour positives per training item (one where 4 of its 5 ID neighbours are held out)
    n_train = cdim["n_items"] - n_held_out
    assert 1.9 * n_train <= cdim["pairs"] <= 2 * n_train
    run = json.loads((root / "cdim" / "metrics.json").read_text())  # CDIM is a registry model's run
    assert {"valid/neighbour_recall@10", "fit/neighbour_recall@10"} <= set(run["history"][0])
    assert run["train_rows"] == cdim["pairs"] and run["test"] == {}  # a matcher: no ranking metrics
    # the two zero-shot variants are compared per user (tiny: full ranking only, 99 negatives do not fit)
    pair = res["paired"]["idp_zero_shot vs idp_wo_bcl_zero_shot"]
    assert set(pair) == {"toys", "kitchen", "sports"} and set(pair["toys"]) == {"full_ndcg@10"}
    r = pair["toys"]["full_ndcg@10"]
    assert r["mean_a"] == pytest.approx(m["toys"]["full_ndcg@10"]) and r["ci_low"] <= r["diff"] <= r["ci_high"]
    assert "Paired bootstrap" in (root / "results.md").read_text()
    assert json.loads((root / "results.json").read_text())["variants"] == {
        v: VARIANTS[v].description for v in ("idp_zero_shot", "idp_wo_bcl_zero_shot")}
    assert (root / "results.png").exists() and (root / "results.md").read_text().startswith("| Domain |")


def test_a_pipeline_shares_the_stages_of_a_finished_one(idp_tiny: tuple[Path, dict], tiny_dataset: Path) -> None:
    root, res = idp_tiny

    def cfg(name: str = "seed1", top_m: int = 3, pretrain: tuple[str, ...] = ("train.epochs=2", "train.patience=2"),
            shared_from: str | None = "idp", finetune: tuple[str, ...] = ()) -> IDPConfig:
        return IDPConfig(dataset=str(tiny_dataset), storage_path=str(root.parent), name=name,
                         variants=["idp_zero_shot"], top_m=top_m, shared_from=shared_from).with_overrides(
            pretrain=list(pretrain), finetune=list(finetune), cdim=["pairs_per_item=2"])

    # refused, naming what differs, before anything is copied
    for bad, match in ((cfg(top_m=4), "its top_m differs"), (cfg(pretrain=("train.epochs=3",)), "its pretrain differs"),
                       (cfg(shared_from="nope"), "has not finished")):
        with pytest.raises(ValueError, match=match):
            share_stages(bad)
    assert not (root.parent / "seed1").exists()
    with pytest.raises(ValueError, match="itself"):
        cfg(name="idp")
    assert shared_source(cfg(finetune=("train.seed=1",))) == root  # fine-tuning settings may differ
    before = (root / "pretrain" / "model.pt").read_bytes()
    out = run_idp(cfg())
    mine = root.parent / "seed1"
    # nothing trained again: pre-training, CDIM and the transfer are the shared pipeline's, byte for byte
    assert set(out["timings_s"]) == {"features", "idp_zero_shot", "report"}
    assert (mine / "pretrain" / "model.pt").read_bytes() == before == (root / "pretrain" / "model.pt").read_bytes()
    for f in ("cdim/model.pt", "transfer_cdim/generated.parquet", "transfer_raw/generated.parquet"):
        assert (mine / f).read_bytes() == (root / f).read_bytes()
    assert not list(mine.glob(".*.copying"))
    full = [{d: {k: v for k, v in m.items() if k.startswith("full_")} for d, m in r["results"]["idp_zero_shot"].items()}
            for r in (out, res)]  # tiny: the sampled-99 metrics are NaN (99 negatives do not fit)
    assert full[0] == full[1] and full[0]["toys"]["full_n_users"] > 0
    assert out["config"]["shared_from"] == "idp" and share_stages(cfg()) == []  # already there: nothing copied


@pytest.mark.slow
def test_every_variant_runs(ray_local, tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = IDPConfig(dataset=str(tiny_dataset), storage_path=str(tmp_path), name="all", variants=list(VARIANTS),
                    top_m=3).with_overrides(both=FAST)
    res = run_idp(cfg)
    assert set(res["results"]) == set(VARIANTS)
    # resumable: a second call reuses every stage
    again = run_idp(cfg)
    assert set(again["timings_s"]) == {"features", "report"}


def test_stage_and_cdim_overrides_are_typed_and_checked() -> None:
    cfg = IDPConfig().with_overrides(cdim=["trainable_layers=2", "behaviour=false", "temperature=0.1",
                                           "encoder=null", "pooling=cls"], finetune=["train.lr=3e-4"])
    assert cfg.cdim == CDIMConfig(trainable_layers=2, behaviour=False, temperature=0.1, encoder=None, pooling="cls")
    assert cfg.finetune.train.lr == 3e-4 and cfg.pretrain.train.lr == 1e-3
    with pytest.raises(ConfigError, match=r"cdim\.layers"):
        IDPConfig().with_overrides(cdim=["layers=2"])
    with pytest.raises(ConfigError, match="cdim.trainable_layers: expected an integer"):
        IDPConfig().with_overrides(cdim=["trainable_layers=two"])
    with pytest.raises(ConfigError, match="expected true/false"):
        IDPConfig().with_overrides(cdim=["behaviour=maybe"])
    with pytest.raises(ConfigError, match=r"model\.mask_prob"):
        IDPConfig().with_overrides(pretrain=["model.mask_prob=0.1"])
    with pytest.raises(ValueError, match="must equal pretrain model.hidden"):
        IDPConfig().with_overrides(finetune=["model.hidden=32"])
    with pytest.raises(ValueError, match="unknown IDP variants"):
        IDPConfig(variants=["idp_magic"])


def test_variant_table_drives_each_run() -> None:
    from raypipe.pipelines.idp import retarget

    assert VARIANTS["idp_wo_bcl"].ids == "raw" and VARIANTS["idp_wo_m"].ids == "random"
    assert VARIANTS["idp_bert4rec"].model == "bert4rec" and not VARIANTS["idp_bert4rec"].pretrained_encoder
    assert {v.name for v in VARIANTS.values() if v.mode == "zero-shot"} == {
        "idp_zero_shot", "idp_wo_bcl_zero_shot", "idp_id_t_zero_shot"}
    ft = IDPConfig().with_overrides(finetune=["model.dropout=0.1"]).finetune.model
    bert = retarget(ft, "bert4rec")
    assert (bert.name, bert.hidden, bert.dropout, bert.max_len) == ("bert4rec", 64, 0.1, ft.max_len)


def test_training_summary_tells_converged_runs_from_budget_capped_ones(tmp_path: Path) -> None:
    def run(name: str, curve: list[float], epochs: int) -> Path:
        d = tmp_path / name
        d.mkdir()
        load_config(None, [f"train.epochs={epochs}", "train.patience=2"]).save(d / "config.yaml")
        hist = [{"epoch": e, "valid/ndcg@10": v} for e, v in enumerate(curve)]
        (d / "metrics.json").write_text(json.dumps({"history": hist}))
        return d

    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "metrics.json").write_text(json.dumps({"history": []}))
    s = training_summary({"stopped": run("stopped", [0.1, 0.3, 0.2, 0.25], 10),
                          "capped": run("capped", [0.1, 0.2, 0.3], 3), "zero_shot": zero})
    assert set(s) == {"stopped", "capped"}  # nothing trained in a zero-shot run
    assert s["stopped"]["best_epoch"] == 1 and s["stopped"]["best_valid_ndcg@10"] == 0.3
    assert s["stopped"]["early_stopped"] and s["stopped"]["epochs"] == 4 and s["stopped"]["patience"] == 2
    assert not s["capped"]["early_stopped"] and s["capped"]["best_epoch"] == 2
    plot_curves(s, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
