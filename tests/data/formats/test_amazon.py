"""Amazon 2014 / 2018 / 2023 readers against hand-written fixtures in each release's real format."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.formats.amazon import (
    AmazonDomain,
    amazon_domain,
    read_amazon,
    read_amazon2014,
    read_amazon2018,
    read_amazon2023,
)
from raypipe.data.formats.common import BARE_ITEMS_SUFFIX
from raypipe.data.schema import DataValidationError

from .helpers import errors_of, leftovers


def _rows(out: Path, kind: str) -> dict[str, dict]:
    ds = CanonicalDataset.open(out)
    table = ds.items() if kind == "items" else ds.interactions()
    key = "item_id" if kind == "items" else None
    rows = table.to_pylist()
    if key:
        return {r[key]: r for r in rows}
    return {f"{r['user_id']}|{r['item_id']}|{r['timestamp']}": r for r in rows}


# ---------------------------------------------------------------------------------------------- 2018
def test_amazon2018_ratings_csv_and_gzipped_meta(fx: Path, tmp_path: Path, gzipped):
    ratings = fx / "amazon2018" / "Beauty.csv"
    meta = gzipped(fx / "amazon2018" / "meta_Beauty.json", "meta_Beauty.json.gz")
    out = tmp_path / "ds"
    res = read_amazon2018(ratings, meta, out, domain="beauty")

    # ratings: lines 1-4 and 8 kept; 7 is blank (not a row)
    assert res.reports[str(ratings)].n_rows == 9
    assert errors_of(res, ratings) == [(5, "rating"), (6, "row"), (9, "user_id"), (10, "timestamp")]
    # meta: 1-3 written, 4 and 8 describe never-interacted items (filtered, counted), 5 duplicates 1
    assert res.reports[str(meta)].n_rows == 8
    assert errors_of(res, meta) == [(5, "item_id"), (6, "row"), (7, "asin")]
    assert "duplicate item_id 'beauty/B0001'" in res.reports[str(meta)].errors[0].reason
    # B0006 is rated on line 8 but has no metadata: written bare, reported under the ratings file
    assert errors_of(res, f"{ratings}{BARE_ITEMS_SUFFIX}") == []
    assert res.reports[f"{ratings}{BARE_ITEMS_SUFFIX}"].n_rows == 1
    assert (res.n_interactions, res.n_items, res.n_bare_items, res.n_items_filtered) == (5, 4, 1, 2)
    assert res.n_rejected == 7
    assert (res.n_images_local, res.n_image_urls_skipped) == (0, 2)  # B0001 and B0003 had only URLs

    items = _rows(out, "items")
    assert set(items) == {"beauty/B0001", "beauty/B0002", "beauty/B0003", "beauty/B0006"}
    assert items["beauty/B0001"] == {
        "item_id": "beauty/B0001", "domain": "beauty", "title": "Rose Lip Balm",
        "category": "Beauty > Skin Care > Lips", "brand": "Acme", "description": "Soft lips. All day.",
        "price": 12.99, "image": None, "image_path": None}
    b2 = items["beauty/B0002"]
    assert (b2["brand"], b2["category"], b2["description"], b2["price"]) == (None, None, "Gentle.", 1299.0)
    b3 = items["beauty/B0003"]
    assert (b3["category"], b3["description"], b3["price"]) == ("Beauty > Hair Care", "Argan oil 100 ml", None)
    assert items["beauty/B0006"]["title"] is None

    inter = _rows(out, "interactions")
    assert inter["U1|beauty/B0001|1500000000"] == {
        "user_id": "U1", "item_id": "beauty/B0001", "domain": "beauty", "timestamp": 1500000000,
        "rating": 5.0, "review": None}
    assert sorted(inter) == sorted([
        "U1|beauty/B0001|1500000000", "U1|beauty/B0002|1500000100", "U2|beauty/B0001|1500000200",
        "U2|beauty/B0003|1500000300", "U3|beauty/B0006|1500000500"])

    info = json.loads((out / "dataset.json").read_text())
    assert info["domains"] == [{"name": "beauty", "role": "target"}]
    assert info["extra"]["reader"]["n_image_urls_skipped"] == 2
    assert info["extra"]["format"] == "amazon"
    validation = json.loads((out / "validation.json").read_text())
    assert (validation["items"], validation["interactions"]) == (4, 5)


def test_amazon2018_local_images_and_all_items(fx: Path, tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "41c.jpg").write_bytes(b"\xff\xd8\xff\xe0not-really-a-jpeg")
    out = tmp_path / "ds"
    res = read_amazon2018(fx / "amazon2018" / "Beauty.csv", fx / "amazon2018" / "meta_Beauty.json", out,
                          domain="beauty", items="all", image_dir=images)
    items = _rows(out, "items")
    assert items["beauty/B0003"]["image_path"] == str((images / "41c.jpg").resolve())
    assert items["beauty/B0001"]["image_path"] is None
    assert (res.n_images_local, res.n_image_urls_skipped) == (1, 1)
    # items="all": the never-interacted B0004 and B0009 are written too
    assert set(items) == {f"beauty/B000{i}" for i in (1, 2, 3, 4, 6, 9)}
    assert items["beauty/B0004"]["price"] == 3.5
    assert items["beauty/B0009"]["price"] is None  # CSS junk in 'price': left null and counted
    assert res.notes == {"price: not a price, left null": 1}
    assert res.n_items_filtered == 0


def test_amazon2018_review_json_instead_of_ratings(fx: Path, tmp_path: Path):
    # 2018 review files (<Cat>_5.json.gz) carry the same fields as 2014 reviews
    res = read_amazon2018(fx / "amazon2014" / "reviews_Toys_5.json", None, tmp_path / "ds", domain="toys")
    assert res.n_interactions == 5 and res.n_items == 3 and res.n_bare_items == 3


# ---------------------------------------------------------------------------------------------- 2014
def test_amazon2014_reviews_and_literal_meta(fx: Path, tmp_path: Path):
    reviews, meta = fx / "amazon2014" / "reviews_Toys_5.json", fx / "amazon2014" / "meta_Toys.json"
    out = tmp_path / "ds"
    res = read_amazon2014(reviews, meta, out, domain="toys", role="source")
    assert errors_of(res, reviews) == [(3, "overall"), (4, "unixReviewTime"), (6, "row"), (7, "row")]
    assert "expected a JSON object, got list" in res.reports[str(reviews)].errors[3].reason
    # line 3 is an expression (__import__...), refused by literal_eval; line 4 has a negative price
    assert errors_of(res, meta) == [(3, "row"), (4, "price")]
    assert (res.n_interactions, res.n_items, res.n_bare_items, res.n_items_filtered) == (5, 3, 1, 1)

    items = _rows(out, "items")
    assert items["toys/T001"] == {
        "item_id": "toys/T001", "domain": "toys", "title": "Wooden Train", "category": "Toys & Games > Trains",
        "brand": "Brio", "description": "A child's first train set", "price": 24.5, "image": None,
        "image_path": None}
    assert items["toys/T002"]["category"] == "Toys & Games > Puzzles > Jigsaw"
    assert items["toys/B0001"]["title"] is None  # its metadata row was rejected: bare item

    inter = _rows(out, "interactions")
    assert inter["A1|toys/T001|1388534400"]["review"] == "Great toy\nMy son loves it."
    assert inter["A1|toys/T001|1388534400"]["rating"] == 5.0
    assert inter["A2|toys/T001|1388620800"]["review"] == "Fine."  # empty summary
    assert inter["A3|toys/T002|1388793600"]["review"] == "Meh"  # empty text
    assert json.loads((out / "dataset.json").read_text())["domains"] == [{"name": "toys", "role": "source"}]


# ---------------------------------------------------------------------------------------------- 2023
def test_amazon2023_parent_asin_and_milliseconds(fx: Path, tmp_path: Path, gzipped):
    reviews = gzipped(fx / "amazon2023" / "All_Beauty.jsonl", "All_Beauty.jsonl.gz")
    meta = fx / "amazon2023" / "meta_All_Beauty.jsonl"
    out = tmp_path / "ds"
    res = read_amazon2023(reviews, meta, out, domain="all_beauty")
    assert errors_of(res, reviews) == [(3, "parent_asin"), (4, "timestamp"), (6, "row")]
    assert errors_of(res, meta) == [(4, "parent_asin")]
    assert (res.n_interactions, res.n_items, res.n_bare_items, res.n_items_filtered) == (4, 2, 0, 1)
    assert res.n_image_urls_skipped == 2

    inter = _rows(out, "interactions")
    first = inter["AGKHLEW2SOWHNMFQIJGBECAF7INQ|all_beauty/B00YQ6X8EO|1588687728"]  # 1588687728923 ms
    assert first["review"] == "Such a lovely scent\nThis spray is really nice." and first["rating"] == 5.0
    # asin B081TJ8YS3 is a variant of parent_asin B08BZ63GMJ: the parent is the item
    assert inter["AGKHLEW2SOWHNMFQIJGBECAF7INQ|all_beauty/B08BZ63GMJ|1588615855"]["review"] == "Works"
    assert "AE2|all_beauty/B08BZ63GMJ|1600000001" in inter

    items = _rows(out, "items")
    assert items["all_beauty/B00YQ6X8EO"] == {
        "item_id": "all_beauty/B00YQ6X8EO", "domain": "all_beauty",
        "title": "Howard LC0008 Leather Conditioner, 8-Ounce (4-Pack)", "category": "All Beauty",
        "brand": "Howard Products", "description": None, "price": None, "image": None, "image_path": None}
    clips = items["all_beauty/B08BZ63GMJ"]
    assert (clips["category"], clips["brand"], clips["description"], clips["price"]) == (
        "Beauty & Personal Care > Hair Care > Accessories", "ClipCo", "Metal clips.", 12.5)


# ------------------------------------------------------------------------------------- multi-domain
def test_read_amazon_merges_categories_of_any_release(fx: Path, tmp_path: Path):
    out = tmp_path / "ds"
    res = read_amazon([
        AmazonDomain("beauty", fx / "amazon2018" / "Beauty.csv", fx / "amazon2018" / "meta_Beauty.json", "2018"),
        AmazonDomain("toys", fx / "amazon2014" / "reviews_Toys_5.json", fx / "amazon2014" / "meta_Toys.json",
                     "2014", "source"),
        AmazonDomain("all_beauty", fx / "amazon2023" / "All_Beauty.jsonl",
                     fx / "amazon2023" / "meta_All_Beauty.jsonl", "2023", "source"),
    ], out, name="amazon-mix")
    assert (res.n_items, res.n_interactions, res.n_rejected) == (9, 14, 17)
    ds = CanonicalDataset.open(out)
    assert ds.info.name == "amazon-mix"
    assert ds.info.source_domains == ["toys", "all_beauty"] and ds.info.target_domains == ["beauty"]
    items = _rows(out, "items")
    # the same raw asin in two categories is two items
    assert items["beauty/B0001"]["title"] == "Rose Lip Balm" and items["toys/B0001"]["title"] is None
    per_domain = {d: sum(1 for r in items.values() if r["domain"] == d) for d in ("beauty", "toys", "all_beauty")}
    assert per_domain == {"beauty": 4, "toys": 3, "all_beauty": 2}


def test_amazon_domain_finds_release_file_names(fx: Path, tmp_path: Path, gzipped):
    shutil.copy(fx / "amazon2018" / "Beauty.csv", tmp_path / "Beauty.csv")
    gzipped(fx / "amazon2018" / "meta_Beauty.json", "meta_Beauty.json.gz")
    spec = amazon_domain(tmp_path, "Beauty", "2018", role="source")
    assert spec == AmazonDomain("beauty", tmp_path / "Beauty.csv", tmp_path / "meta_Beauty.json.gz", "2018", "source")
    with pytest.raises(FileNotFoundError, match="Toys"):
        amazon_domain(tmp_path, "Toys", "2023")


# ------------------------------------------------------------------------------------------- errors
def test_mostly_bad_file_raises_and_writes_nothing(fx: Path, tmp_path: Path):
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError, match=r"mostly_bad\.csv: 3 of 4 rows are invalid"):
        read_amazon2018(fx / "amazon2018" / "mostly_bad.csv", None, out, domain="beauty")
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_failure_keeps_the_previous_dataset(fx: Path, tmp_path: Path):
    out = tmp_path / "ds"
    read_amazon2018(fx / "amazon2018" / "Beauty.csv", None, out, domain="beauty")
    with pytest.raises(DataValidationError):
        read_amazon2018(fx / "amazon2018" / "mostly_bad.csv", None, out, domain="beauty")
    assert CanonicalDataset.open(out).interactions().num_rows == 5
    assert leftovers(tmp_path) == []


def test_missing_file_is_named(fx: Path, tmp_path: Path):
    out = tmp_path / "ds"
    missing = tmp_path / "meta_Nope.json.gz"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_amazon2018(fx / "amazon2018" / "Beauty.csv", missing, out, domain="beauty")
    assert not out.exists()


def test_truncated_gzip_is_a_named_error(fx: Path, tmp_path: Path):
    data = gzip.compress((fx / "amazon2018" / "Beauty.csv").read_bytes() * 50)
    broken = tmp_path / "Beauty.csv.gz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataValidationError, match=r"Beauty\.csv\.gz: cannot read compressed data"):
        read_amazon2018(broken, None, tmp_path / "ds", domain="beauty")
    assert not (tmp_path / "ds").exists()


def test_unknown_release_is_refused(fx: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="2019"):
        read_amazon([AmazonDomain("b", fx / "amazon2018" / "Beauty.csv", None, "2019")], tmp_path / "ds")  # type: ignore[arg-type]
