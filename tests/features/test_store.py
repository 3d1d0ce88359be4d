"""FeatureStore without Ray: a hand-written store, alignment, masks, memory maps, model tables."""
from __future__ import annotations

import json

import numpy as np
import pytest

from raypipe.data.sequences import ItemIndex
from raypipe.features.pipeline import to_output_table
from raypipe.features.store import FeatureStore, FeatureStoreError
from raypipe.io import write_json_atomic, write_parquet_atomic

DIM = 4


@pytest.fixture()
def store_dir(tmp_path):
    """Two part files; ``d/c`` has a null vector (no input), ``d/z`` is not in the store at all."""
    vecs = np.arange(4 * DIM, dtype=np.float32).reshape(4, DIM) + 1
    present = np.array([True, True, False, True])
    parts = [to_output_table(["d/a", "d/b"], vecs[:2], present[:2], ["ok", "ok"], None, None),
             to_output_table(["d/c", "d/e"], vecs[2:], present[2:], ["missing", "ok"], None, None)]
    (tmp_path / "text").mkdir()
    for i, t in enumerate(parts):
        write_parquet_atomic(tmp_path / "text" / f"part-{i}.parquet", t)
    entry = {"view": "text", "path": "text", "dim": DIM, "weights": "abc", "fingerprint": "f1", "encoder": "x"}
    write_json_atomic(tmp_path / "text" / "view.json", entry)
    write_json_atomic(tmp_path / "manifest.json", {"views": {"text": entry}})
    return tmp_path, vecs


def test_aligned_order_and_mask(store_dir):
    root, vecs = store_dir
    store = FeatureStore.open(root)
    assert store.views == ["text"] and store.dim("text") == DIM and not store.is_random("text")
    got, present = store.aligned("text", ["d/e", "d/z", "d/a", "d/c", "d/b"])
    assert got.dtype == np.float32 and got.shape == (5, DIM)
    assert present.tolist() == [True, False, True, False, True]
    np.testing.assert_array_equal(got[[0, 2, 4]], vecs[[3, 0, 1]])
    assert not got[[1, 3]].any()  # absent rows are zero AND flagged
    assert store.missing_items("text") == ["d/c"]


def test_aligned_duplicates_and_empty(store_dir):
    root, vecs = store_dir
    store = FeatureStore.open(root)
    got, present = store.aligned("text", ["d/a", "d/a", "d/c"])
    np.testing.assert_array_equal(got[:2], vecs[[0, 0]])
    assert present.tolist() == [True, True, False]
    got, present = store.aligned("text", [])
    assert got.shape == (0, DIM) and present.shape == (0,)


def test_memmap(store_dir, tmp_path):
    root, vecs = store_dir
    mm, present = FeatureStore.open(root).aligned_memmap("text", ["d/b", "d/c"], tmp_path / "text.npy")
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(np.load(tmp_path / "text.npy")[0], vecs[1])
    assert present.tolist() == [True, False]
    assert np.load(tmp_path / "text.npy.mask.npy").tolist() == [True, False]


def test_embedding_table_for_item_index(store_dir):
    root, vecs = store_dir
    index = ItemIndex(np.array(["d/a", "d/c", "d/z"], dtype=object), np.array(["d", "d", "d"], dtype=object))
    table, mask = FeatureStore.open(root).embedding_table("text", index)
    assert tuple(table.shape) == (4, DIM) and mask.tolist() == [False, True, False, False]
    assert not table[0].any()  # padding
    np.testing.assert_array_equal(table[1].numpy(), vecs[0])


def test_inconsistent_or_missing_store(store_dir, tmp_path):
    root, _ = store_dir
    with pytest.raises(FeatureStoreError, match="no view"):
        FeatureStore.open(root).aligned("image", ["d/a"])
    with pytest.raises(FeatureStoreError, match="manifest"):
        FeatureStore.open(tmp_path / "nowhere")
    info = json.loads((root / "text" / "view.json").read_text())
    (root / "text" / "view.json").write_text(json.dumps({**info, "fingerprint": "other"}))
    with pytest.raises(FeatureStoreError, match="does not match"):
        FeatureStore.open(root)
