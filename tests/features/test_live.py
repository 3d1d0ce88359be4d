"""Live encoding of items that are not in the store reproduces the batch extraction (same encoders,
template and image decoding); the derived cross view comes from the run's aligner; bad input is named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raypipe.data.catalogue import FeatureView
from raypipe.data.schema import ITEMS_FILE
from raypipe.features.aligned import AlignConfig, fit_cross_aligner
from raypipe.features.live import ImageInputError, LiveItemEncoder
from raypipe.features.store import FeatureStore


@pytest.fixture(scope="module")
def items(tiny_dataset: Path) -> list[dict]:
    rows = pq.read_table(tiny_dataset / ITEMS_FILE).to_pylist()
    with_img = [r for r in rows if r["image"] is not None][:24]
    without = [r for r in rows if r["image"] is None][:4]
    assert len(without) >= 2
    return with_img + without


def _stored(store: Path, view: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return FeatureStore.open(store).aligned(view, ids)


def test_live_vectors_equal_the_stores(tiny_store: Path, items: list[dict]) -> None:
    enc = LiveItemEncoder(tiny_store, ["text", "image"])
    out = enc.encode(items)
    ids = [r["item_id"] for r in items]
    for view in ("text", "image"):
        vecs, present = _stored(tiny_store, view, ids)
        assert out[view][0].shape == vecs.shape and (out[view][1] == present).all()
        np.testing.assert_allclose(out[view][0], vecs, atol=2e-5)
    assert not out["image"][1][-4:].any() and out["image"][1][:24].all()


def test_derived_cross_view_comes_from_the_runs_aligner(tiny_store: Path, items: list[dict]) -> None:
    with pytest.raises(ValueError, match="CrossAligner"):
        LiveItemEncoder(tiny_store, ["text", "cross"])
    ids = [r["item_id"] for r in items]
    t, tp = _stored(tiny_store, "text", ids)
    i, ip = _stored(tiny_store, "image", ids)
    aligner = fit_cross_aligner(FeatureView(t, tp), FeatureView(i, ip), AlignConfig(dim=16, epochs=3))
    out = LiveItemEncoder(tiny_store, ["text", "cross"], aligner).encode(items)
    assert set(out) == {"text", "cross"}
    want, present = aligner.cross(t, tp, i, ip)
    np.testing.assert_allclose(out["cross"][0], want, atol=1e-4)
    assert (out["cross"][1] == present).all() and present.all()  # text alone keeps the cross view present


def test_bad_images_are_named_and_a_changed_encoder_is_refused(tiny_store: Path, items: list[dict], tmp_path) -> None:
    enc = LiveItemEncoder(tiny_store, ["image"])
    bad = [items[0], {**items[1], "image": b"\x89PNG\r\n\x1a\n not a picture"}]
    with pytest.raises(ImageInputError) as e:
        enc.encode(bad)
    assert list(e.value.problems) == [1] and "items[1].image" in str(e.value)
    # a store whose image view was computed with other weights is not served by this encoder
    other = tmp_path / "store"
    other.mkdir()
    manifest = json.loads((tiny_store / "manifest.json").read_text())
    manifest["views"]["image"]["weights"] = "0123456789abcdef"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="weights 0123456789abcdef"):
        LiveItemEncoder(other, ["image"])
    with pytest.raises(ValueError, match="no view"):
        LiveItemEncoder(tiny_store, ["image_grid"])
