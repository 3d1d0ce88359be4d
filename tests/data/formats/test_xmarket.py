"""XMarket ratings + metadata (hand fixtures in the release layout <market>/<Category>/...)."""
from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.formats.xmarket import XMarketDomain, read_xmarket, read_xmarket_market, xmarket_domain
from raypipe.data.schema import DataValidationError

from .helpers import errors_of, leftovers


def test_xmarket_one_market(fx: Path, tmp_path: Path, gzipped):
    d = fx / "xmarket" / "de" / "Electronics"
    ratings = gzipped(d / "ratings_de_Electronics.txt", "ratings_de_Electronics.txt.gz")
    meta = d / "metadata_de_Electronics.json"
    out = tmp_path / "ds"
    res = read_xmarket_market(ratings, meta, out, market="de", category="Electronics")
    assert errors_of(res, ratings) == [(4, "date"), (5, "row"), (7, "rating")]
    assert errors_of(res, meta) == [(4, "row")]
    assert (res.n_interactions, res.n_items, res.n_bare_items, res.n_items_filtered) == (4, 3, 1, 1)
    assert res.n_image_urls_skipped == 1

    ds = CanonicalDataset.open(out)
    assert [(d.name, d.role) for d in ds.info.domains] == [("de_electronics", "target")]
    items = {r["item_id"]: r for r in ds.items().to_pylist()}
    assert items["de_electronics/B000023VW2"] == {
        "item_id": "de_electronics/B000023VW2", "domain": "de_electronics",
        "title": "Sangean ANT-60 Kurzwellenantenne", "category": "Elektronik & Foto > Zubehör > Antennen",
        "brand": "Sangean", "description": "Verbessert den Empfang.", "price": 12.86, "image": None,
        "image_path": None}
    cable = items["de_electronics/B00ABCDEF1"]  # a Python-literal line
    assert (cable["title"], cable["brand"], cable["description"], cable["price"], cable["category"]) == (
        "USB-Kabel", "KabelCo", "1 m schwarz", None, None)
    assert items["de_electronics/B0NOMETA01"]["title"] is None
    rows = [(r["user_id"], r["item_id"], r["timestamp"], r["rating"]) for r in ds.interactions().to_pylist()]
    assert rows == [
        ("AFXKARXBL3X3LO5GNN4XAXC7XMPQ", "de_electronics/B000023VW2", 1552348800, 5.0),  # 2019-03-12 UTC
        ("AH3Z5FFVAQYVQNDBUG2M23ZZBCGA", "de_electronics/B000023VW2", 1577836800, 4.0),
        ("AH3Z5FFVAQYVQNDBUG2M23ZZBCGA", "de_electronics/B00ABCDEF1", 1530662400, 3.0),  # tab-separated line
        ("AE5KNHUMUIHXU3FCRBDMTTZT7UYA", "de_electronics/B0NOMETA01", 1488240000, 2.0),
    ]


def test_xmarket_markets_as_domains_of_one_dataset(fx: Path, tmp_path: Path):
    de = xmarket_domain(fx / "xmarket", "de", "Electronics")
    uk = xmarket_domain(fx / "xmarket", "uk", "Electronics", role="source")
    assert de.metadata == fx / "xmarket" / "de" / "Electronics" / "metadata_de_Electronics.json"
    assert uk.metadata is None and uk.name == "uk_electronics"
    out = tmp_path / "ds"
    res = read_xmarket([de, uk], out)
    ds = CanonicalDataset.open(out)
    assert ds.info.target_domains == ["de_electronics"] and ds.info.source_domains == ["uk_electronics"]
    items = {r["item_id"] for r in ds.items().to_pylist()}
    # the same asin in two markets is two items
    assert {"de_electronics/B000023VW2", "uk_electronics/B000023VW2", "uk_electronics/B00UKONLY1"} <= items
    assert (res.n_interactions, res.n_items) == (6, 5)


def test_xmarket_mostly_bad_and_missing(tmp_path: Path):
    bad = tmp_path / "ratings_fr_Books.txt"
    bad.write_text("U1 B1 5 2020-01-01\nU1,B2,5,2020-01-02\nU2 B3 4 01.02.2020\n")
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError, match=r"ratings_fr_Books\.txt: 2 of 3 rows are invalid"):
        read_xmarket([XMarketDomain("fr", "Books", bad)], out)
    assert not out.exists() and leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="ratings_fr_Toys.txt"):
        xmarket_domain(tmp_path, "fr", "Toys")
