"""The embedded benchmark: deterministic, canonical, and carrying the promised structure."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raypipe.data import builtin
from raypipe.data.dataset import CanonicalDataset
from raypipe.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, validate_interaction, validate_item
from raypipe.data.stats import dataset_stats, format_stats


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deterministic_for_a_seed_and_different_across_seeds(tmp_path: Path) -> None:
    a = builtin.write(tmp_path / "a", "tiny", seed=3)
    b = builtin.write(tmp_path / "b", "tiny", seed=3)
    c = builtin.write(tmp_path / "c", "tiny", seed=4)
    for name in ("items.parquet", "interactions.parquet"):
        assert _digest(a / name) == _digest(b / name)
        assert _digest(a / name) != _digest(c / name)


def test_canonical_schema_and_every_row_valid(tiny_dataset: Path) -> None:
    ds = CanonicalDataset.open(tiny_dataset)
    items, inter = ds.items(), ds.interactions()
    assert items.schema.equals(ITEMS_SCHEMA)
    assert inter.schema.equals(INTERACTIONS_SCHEMA)
    assert all(validate_item(r) is None for r in items.to_pylist())
    assert all(validate_interaction(r) is None for r in inter.to_pylist())
    assert pc.count_distinct(items.column("item_id")).as_py() == items.num_rows
    known = set(items.column("item_id").to_pylist())
    assert set(inter.column("item_id").to_pylist()) <= known


def test_domains_roles_and_cross_domain_users(tiny_dataset: Path) -> None:
    ds = CanonicalDataset.open(tiny_dataset)
    assert len(ds.info.source_domains) >= 3 and len(ds.info.target_domains) >= 3
    df = ds.interactions(columns=["user_id", "domain", "timestamp"]).to_pandas()
    roles = {d.name: d.role for d in ds.info.domains}
    per_user = df.assign(role=df.domain.map(roles)).groupby("user_id")["role"].nunique()
    assert (per_user == 2).mean() > 0.2, "many users must be active in both source and target domains"
    assert df.groupby("user_id")["domain"].nunique().max() >= 3
    assert df["timestamp"].is_monotonic_increasing  # written chronologically


def test_images_are_png_and_modalities_go_missing_at_the_configured_rate(tmp_path: Path) -> None:
    cfg = builtin.BenchmarkConfig(n_items_per_domain=400, n_users=50, mean_events=6,
                                  p_missing_text=0.2, p_missing_image=0.3)
    b = builtin.generate(cfg)
    rows = b.items.to_pylist()
    no_text = np.mean([r["title"] is None for r in rows])
    no_image = np.mean([r["image"] is None for r in rows])
    assert 0.15 < no_text < 0.25
    assert 0.18 < no_image < 0.30  # 0.3 of the items that kept their text
    assert not any(r["title"] is None and r["image"] is None for r in rows), "never both missing"
    img = Image.open(__import__("io").BytesIO(next(r["image"] for r in rows if r["image"])))
    assert img.format == "PNG" and img.size == (32, 32)


def test_shared_themes_surface_in_text_and_image_colour() -> None:
    b = builtin.generate("tiny")
    themes = b.item_themes.to_pandas().set_index("item_id")
    n_checked = 0
    for r in b.items.to_pylist():
        t = builtin.THEMES[themes.loc[r["item_id"], "theme"]]
        if r["title"] is not None:
            assert any(w.lower() in r["title"].lower() for w in t.words)
        if r["image"] is not None:
            px = np.asarray(Image.open(__import__("io").BytesIO(r["image"])).convert("RGB"))[0, 0]
            assert np.abs(px.astype(int) - np.array(t.colour)).max() <= 25  # background = theme colour
            n_checked += 1
    assert n_checked > 100


def test_ids_do_not_encode_themes() -> None:
    b = builtin.generate("tiny")
    themes = b.item_themes.to_pandas()
    raw = themes["item_id"].str.split("/").str[1]
    # the first random character of the id is independent of the theme: no theme owns a character
    table = themes.assign(c=raw.str[2]).groupby("c")["theme"].nunique()
    assert table.max() > 1 and raw.str.len().nunique() == 1


def test_target_domains_sparser_than_sources_and_stats_table(tiny_dataset: Path) -> None:
    rows = {r.domain: r for r in dataset_stats(tiny_dataset)}
    ds = CanonicalDataset.open(tiny_dataset)
    src = min(rows[d].interactions for d in ds.info.source_domains)
    tgt = max(rows[d].interactions for d in ds.info.target_domains)
    assert tgt < src
    assert rows["all"].interactions == pq.read_metadata(tiny_dataset / "interactions.parquet").num_rows
    r = rows["books"]
    assert r.avg_length == pytest.approx(r.interactions / r.users)
    assert r.sparsity == pytest.approx(1 - r.interactions / (r.users * r.items))
    text = format_stats(list(rows.values()))
    assert text.splitlines()[0].startswith("| Domain | Role | #Users | #Items")
    assert len(text.splitlines()) == 2 + len(rows)


def test_popularity_drifts_over_time(tiny_dataset: Path) -> None:
    df = CanonicalDataset.open(tiny_dataset).interactions(columns=["item_id", "timestamp"]).to_pandas()
    half = df["timestamp"].median()
    early = df[df.timestamp < half]["item_id"].value_counts()
    late = df[df.timestamp >= half]["item_id"].value_counts()
    top_early = set(early.index[:20])
    top_late = set(late.index[:20])
    assert len(top_early & top_late) < 15  # the most popular items change over time


def test_cli_prints_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    builtin.main(["--size", "tiny", "--out", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert "| books | source |" in out and "| all |" in out
