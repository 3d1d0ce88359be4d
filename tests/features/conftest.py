"""Fixtures of the feature tests: a tiny random CLIP, the tiny benchmark with bad rows added, one store."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raypipe.data.schema import ITEMS_FILE, ITEMS_SCHEMA

CORRUPT_PNG = b"\x89PNG\r\n\x1a\n garbage"
TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {},
}


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """An open_clip ``local-dir:`` model without weights: a 2-layer CLIP, randomly initialised."""
    d = tmp_path_factory.mktemp("tinyclip")
    (d / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    return d


@pytest.fixture(scope="session")
def bad_rows() -> dict[str, str]:
    """Which item of the modified dataset carries which defect (ids are fixed by the test)."""
    return {"corrupt": "books/CORRUPTIMG", "empty": "books/NOTHING", "path_ok": "toys/IMGPATH",
            "path_missing": "toys/NOFILE"}


@pytest.fixture(scope="session")
def features_dataset(tiny_dataset: Path, tmp_path_factory, bad_rows) -> Path:
    """The tiny benchmark plus four items: a corrupt PNG, one with neither text nor image, one whose
    image is a relative ``image_path`` and one whose ``image_path`` does not exist."""
    d = tmp_path_factory.mktemp("features-ds") / "tiny-bad"
    shutil.copytree(tiny_dataset, d)
    items = pq.read_table(d / ITEMS_FILE).to_pylist()
    (d / "img").mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), (200, 30, 30)).save(buf, format="PNG")
    (d / "img" / "red.png").write_bytes(buf.getvalue())
    base = {k: None for k in ITEMS_SCHEMA.names}
    items += [
        {**base, "item_id": bad_rows["corrupt"], "domain": "books", "title": "Broken Picture Book",
         "category": "Fiction", "image": CORRUPT_PNG},
        {**base, "item_id": bad_rows["empty"], "domain": "books"},
        {**base, "item_id": bad_rows["path_ok"], "domain": "toys", "title": "Red Kite", "category": "Outdoor Play",
         "image_path": "img/red.png"},
        {**base, "item_id": bad_rows["path_missing"], "domain": "toys", "category": "Puzzles",
         "image_path": "img/absent.png"},
    ]
    pq.write_table(pa.Table.from_pylist(items, schema=ITEMS_SCHEMA), d / ITEMS_FILE, row_group_size=128)
    return d


def extraction_config(dataset: Path, out: Path, clip_dir: Path, **overrides):
    """The small, fast settings every pipeline test uses (random-init ResNet-18 at 32 px, tiny CLIP)."""
    from raypipe.features.pipeline import FeatureConfig

    kw = dict(dataset=str(dataset), out=str(out), image_model="resnet18", image_size=32,
              cross_model=f"local-dir:{clip_dir}", batch_size=32, block_rows=64, num_actors=1, rows_per_file=64)
    kw.update(overrides)
    return FeatureConfig(**kw)


@pytest.fixture(scope="session")
def feature_store(ray_local, features_dataset, tiny_clip_dir, tmp_path_factory):
    """One uninterrupted extraction of all three views (the reference the other tests compare with)."""
    from raypipe.features.pipeline import extract_features

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    out = tmp_path_factory.mktemp("store") / "features"
    results = extract_features(extraction_config(features_dataset, out, tiny_clip_dir))
    return out, results
