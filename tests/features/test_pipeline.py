"""The Ray Data extraction on the tiny benchmark (+ bad rows): shapes, manifest, bad input, resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.data.schema import ITEMS_FILE
from raypipe.data.text import render
from raypipe.features.pipeline import (
    CORRUPT,
    MISSING,
    OK,
    SimulatedInterruption,
    _scan_done,
    extract_features,
    prepare_batch,
)
from raypipe.features.encoders import ImagePreprocess
from raypipe.features.store import FeatureStore

from ..scripts import load_script
from .conftest import CORRUPT_PNG, extraction_config


def _item_ids(dataset: Path) -> list[str]:
    return pq.read_table(dataset / ITEMS_FILE, columns=["item_id"]).column(0).to_pylist()


# ------------------------------------------------------------------------------ no Ray needed
def test_prepare_batch_statuses(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "x.png")
    batch = pa.table({
        "item_id": ["d/1", "d/2", "d/3", "d/4"],
        "title": ["A title", None, None, None],
        "category": ["Cat", "Only category", None, None],
        "image": [None, CORRUPT_PNG, None, None],
        "image_path": [None, None, "x.png", "gone.png"],
    })
    out = prepare_batch(batch, template="plain", uses_text=True, preprocess=ImagePreprocess(16),
                        base_dir=str(tmp_path))
    assert out["text"].tolist() == ["A title", "Only category", "", ""]
    assert out["text_status"].tolist() == [OK, OK, MISSING, MISSING]
    assert out["image_status"].tolist() == [MISSING, CORRUPT, OK, CORRUPT]
    assert out["error"][1] and "absent" not in out["error"][1]
    assert out["pixels"].shape == (4, 16, 16, 3)
    assert tuple(out["pixels"][2, 0, 0]) == (1, 2, 3)


def test_unreadable_part_files_are_discarded(tmp_path):
    pq.write_table(pa.table({"item_id": ["d/1", "d/2"]}), tmp_path / "good.parquet")
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 cut short")
    (tmp_path / ".tmp-write").write_bytes(b"")
    assert _scan_done(tmp_path) == {"d/1", "d/2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.parquet"]


# ------------------------------------------------------------------------------ with Ray
def test_views_shapes_and_manifest(feature_store, features_dataset, bad_rows):
    out, results = feature_store
    ids = _item_ids(features_dataset)
    n = len(ids)
    assert [r.status for r in results] == ["computed"] * 3
    store = FeatureStore.open(out)
    m = store.manifest
    assert m["n_items"] == n and m["format"] == "raypipe.features/1"
    assert {v: store.dim(v) for v in store.views} == {"cross": 32, "image": 512, "text": 384}
    for view in store.views:
        info = store.info(view)
        vecs, present = store.aligned(view, ids)
        assert vecs.shape == (n, store.dim(view)) and vecs.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vecs[present], axis=1), 1.0, rtol=1e-4)
        assert not vecs[~present].any()
        assert info["n_items"] == n and info["n_with_vector"] == int(present.sum())
        assert info["without_vector"]["count"] == n - int(present.sum())
        assert info["fingerprint"] and info["dtype"] == "float32" and info["run"]["encoded"] == n
    assert store.info("text")["weights"] != "random" and store.info("text")["template"] == "plain"
    for view in ("image", "cross"):  # no checkpoint: random init, loudly recorded
        assert store.info(view)["weights"] == "random" and store.info(view)["random_init"] is True
        assert store.info(view)["seed"] == 0 and store.info(view)["image_size"] == 32
    assert store.info("image")["encoder"] == "torchvision:resnet18"


def test_missing_and_corrupt_items_are_reported_not_zero_filled(feature_store, bad_rows):
    out, _ = feature_store
    store = FeatureStore.open(out)
    b = bad_rows
    ids = [b["corrupt"], b["empty"], b["path_ok"], b["path_missing"]]
    present = {v: dict(zip(ids, store.aligned(v, ids)[1].tolist())) for v in store.views}
    # text: "plain" = title, else category; the empty item has neither
    assert present["text"] == {b["corrupt"]: True, b["empty"]: False, b["path_ok"]: True, b["path_missing"]: True}
    assert present["image"] == {b["corrupt"]: False, b["empty"]: False, b["path_ok"]: True,
                                b["path_missing"]: False}
    # cross-modal: present whenever text or image exists; only the empty item has no vector
    assert present["cross"] == {b["corrupt"]: True, b["empty"]: False, b["path_ok"]: True, b["path_missing"]: True}
    img = store.info("image")["image"]
    corrupt = {c["item_id"]: c["error"] for c in img["corrupt"]["items"]}
    assert set(corrupt) == {b["corrupt"], b["path_missing"]} == set(
        c["item_id"] for c in store.info("cross")["image"]["corrupt"]["items"])
    assert all(corrupt.values())
    assert b["empty"] in img["missing"]["item_ids"]
    assert store.info("text")["text"]["missing"] == {"count": 1, "item_ids": [b["empty"]]}
    assert store.info("cross")["without_vector"] == {"count": 1, "item_ids": [b["empty"]]}
    rows = store.table("cross").to_pandas().set_index("item_id")
    assert rows.loc[b["corrupt"], "image_status"] == CORRUPT and rows.loc[b["corrupt"], "present"]
    assert rows.loc[b["empty"], "vector"] is None  # null, not zeros


def test_text_vectors_equal_the_encoder_applied_directly(feature_store, features_dataset):
    from raypipe.features.text import TextEncoder

    out, _ = feature_store
    items = pq.read_table(features_dataset / ITEMS_FILE).slice(0, 24).to_pylist()
    direct = TextEncoder().encode([render("plain", it) for it in items])
    vecs, present = FeatureStore.open(out).aligned("text", [it["item_id"] for it in items])
    assert present.all()
    np.testing.assert_allclose(vecs, direct, atol=2e-5)


def test_rerun_with_same_settings_skips(feature_store, features_dataset, tiny_clip_dir):
    out, _ = feature_store
    before = (out / "manifest.json").read_text()
    results = extract_features(extraction_config(features_dataset, out, tiny_clip_dir))
    assert [r.status for r in results] == ["skipped"] * 3
    assert all(r.encoded_this_run == 0 for r in results)
    assert json.loads((out / "manifest.json").read_text())["views"] == json.loads(before)["views"]


def test_resume_after_interruption_equals_uninterrupted_run(feature_store, features_dataset, tiny_clip_dir,
                                                            tmp_path):
    ref_dir, _ = feature_store
    out = tmp_path / "features"
    # rows_per_file (resume granularity) is not part of the fingerprint
    cfg = extraction_config(features_dataset, out, tiny_clip_dir, views=["text", "image"], rows_per_file=16)
    with pytest.raises(SimulatedInterruption):
        extract_features(cfg, _interrupt_after={"image": 100})
    # the store shows only the finished view; the interrupted one waits in its work directory
    partial = FeatureStore.open(out)
    assert partial.views == ["text"]
    work = next((out / ".work").glob("image-*"))
    parts = sorted(work.glob("*.parquet"))
    assert len(parts) >= 2
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in parts) == 100
    # a part file cut short by a crash is discarded and its items encoded again
    cut = parts[0]
    lost = pq.ParquetFile(cut).metadata.num_rows
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    n = len(_item_ids(features_dataset))
    results = {r.view: r for r in extract_features(cfg)}
    assert results["text"].status == "skipped"
    assert results["image"].status == "resumed" and results["image"].encoded_this_run == n - 100 + lost
    assert not (out / ".work").exists()
    # determinism: a separate (interrupted, resumed) run gives the reference vectors and manifest counts
    ref, got = FeatureStore.open(ref_dir), FeatureStore.open(out)
    ids = _item_ids(features_dataset)
    for view in ("text", "image"):
        a, ma = ref.aligned(view, ids)
        b, mb = got.aligned(view, ids)
        assert (ma == mb).all()
        np.testing.assert_allclose(a, b, atol=2e-5)
        for key in ("fingerprint", "n_with_vector", "without_vector", "dim", "weights"):
            assert ref.info(view)[key] == got.info(view)[key]
    assert got.info("image")["run"]["resumed_from"] == 100 - lost


def test_job_cli_recomputes_only_the_changed_view(feature_store, features_dataset, tiny_clip_dir, tmp_path,
                                                  capsys):
    ref_dir, _ = feature_store
    out = tmp_path / "features"
    shutil.copytree(ref_dir, out)
    job = load_script("jobs/extract_features.py")
    argv = ["--dataset", str(features_dataset), "--out", str(out), "--image-size", "32", "--batch-size", "32",
            "--cross-model", f"local-dir:{tiny_clip_dir}", "--num-actors", "1", "--seed", "1"]
    assert job.main(argv + ["--views", "text,cross"]) == 0
    table = capsys.readouterr().out
    assert "| text | skipped |" in table and "| cross | computed |" in table and "random" in table
    ref, got = FeatureStore.open(ref_dir), FeatureStore.open(out)
    assert got.info("cross")["seed"] == 1 and got.info("cross")["fingerprint"] != ref.info("cross")["fingerprint"]
    assert got.info("image") == ref.info("image")  # not requested: untouched
    ids = _item_ids(features_dataset)
    assert not np.allclose(ref.aligned("cross", ids)[0], got.aligned("cross", ids)[0])
    assert job.main(["--dataset", str(features_dataset), "--out", str(out), "--views", "text,bogus"]) == 2


@pytest.mark.parametrize("image_model", ["efficientnet_lite0", "resnet18", "timm:convnext_atto:CKPT",
                                         "open_clip:ViT-B-32"])
def test_the_encoder_actors_get_the_spec_the_plan_was_made_from(image_model, tmp_path):
    from raypipe.features.encoders import parse_image_model
    from raypipe.features.pipeline import FeatureConfig, _plan_view, _spec_string

    (tmp_path / "c.pth").write_bytes(b"")  # a named checkpoint must exist to be planned
    image_model = image_model.replace("CKPT", str(tmp_path / "c.pth"))
    cfg = FeatureConfig(dataset=str(tmp_path), out=str(tmp_path / "out"), views=["image"], image_model=image_model)
    plan = _plan_view("image", cfg, {"size": 1, "mtime_ns": 1}, {"item_id", "image"})
    assert parse_image_model(_spec_string(plan)) == parse_image_model(image_model)


def test_image_grid_view_holds_region_features(ray_local, features_dataset, tiny_clip_dir, tmp_path, bad_rows):
    from raypipe.features.encoders import ImageEncoder
    from raypipe.features.pipeline import extract_features

    model = "timm:convnext_atto"  # random init (seeded): small and fast at 32 px
    cfg = extraction_config(features_dataset, tmp_path / "grid", tiny_clip_dir, views=["image_grid"],
                            image_model=model, image_grid=2)
    extract_features(cfg)
    store = FeatureStore.open(tmp_path / "grid")
    items = pq.read_table(features_dataset / ITEMS_FILE).to_pylist()
    ids = [it["item_id"] for it in items[:16]] + [bad_rows["corrupt"], bad_rows["empty"]]
    vecs, present = store.aligned("image_grid", ids)
    enc = ImageEncoder(model, device="cpu", image_size=32, grid=2)
    assert vecs.shape == (18, 4 * 320) and enc.dim == 4 * 320
    assert not present[-2:].any()
    ok = [i for i in range(16) if present[i]]
    pixels = np.stack([enc.preprocess(data=items[i]["image"]) for i in ok])
    np.testing.assert_allclose(vecs[ok], enc.encode(pixels), atol=1e-4)
    with pytest.raises(ValueError, match="timm image model"):
        extract_features(extraction_config(features_dataset, tmp_path / "bad", tiny_clip_dir, views=["image_grid"]))
