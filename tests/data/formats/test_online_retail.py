"""UCI Online Retail CSV (hand fixture with cancelled, guest, zero-quantity and malformed lines)."""
from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.formats.online_retail import read_online_retail
from raypipe.data.schema import DataValidationError

from .helpers import errors_of, leftovers


def test_online_retail(fx: Path, tmp_path: Path):
    src = fx / "online_retail" / "online_retail.csv"
    out = tmp_path / "ds"
    res = read_online_retail(src, out)
    assert errors_of(res, src) == [
        (5, "CustomerID"), (6, "InvoiceNo"), (7, "Quantity"), (8, "Quantity"), (9, "InvoiceDate"),
        (10, "row"), (13, "UnitPrice")]
    reasons = {e.line: e.reason for e in res.reports[str(src)].errors}
    assert reasons[6] == "cancelled invoice 'C536379'"
    assert "quantity 0 <= 0" in reasons[7]
    assert res.reports[str(src)].n_rows == 16  # header excluded
    assert (res.n_interactions, res.n_items, res.n_rejected) == (9, 5, 7)

    ds = CanonicalDataset.open(out)
    assert [(d.name, d.role) for d in ds.info.domains] == [("online_retail", "target")]
    items = {r["item_id"]: r for r in ds.items().to_pylist()}
    assert items["online_retail/85123A"] == {
        "item_id": "online_retail/85123A", "domain": "online_retail",
        "title": "WHITE HANGING HEART T-LIGHT HOLDER", "category": None, "brand": None, "description": None,
        "price": 2.55, "image": None, "image_path": None}
    assert items["online_retail/22633"]["title"] == "HAND WARMER UNION JACK, RED"  # quoted comma
    # 21730: first kept line has price 0.00, the next one (no description) gives the price
    assert (items["online_retail/21730"]["title"], items["online_retail/21730"]["price"]) == (
        "GLASS STAR FROSTED T-LIGHT HOLDER", 4.25)
    assert items["online_retail/POST"]["price"] == 18.0
    assert "online_retail/84879" not in items and "online_retail/D" not in items  # only on rejected lines

    inter = ds.interactions().to_pylist()
    assert inter[0] == {"user_id": "17850", "item_id": "online_retail/85123A", "domain": "online_retail",
                        "timestamp": 1291191960, "rating": None, "review": None}  # 12/1/2010 8:26 UTC
    assert inter[2]["user_id"] == "17850"  # "17850.0" from a spreadsheet export
    assert sorted({r["user_id"] for r in inter}) == ["12583", "13047", "17850"]
    assert res.reports[f"{src}#items"].n_rows == 5


def test_online_retail_ii_header_and_domain(tmp_path: Path):
    src = tmp_path / "online_retail_II.csv"
    src.write_text("Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
                   "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom\n")
    res = read_online_retail(src, tmp_path / "ds", domain="retail_ii", role="source")
    row = CanonicalDataset.open(tmp_path / "ds").interactions().to_pylist()[0]
    assert (row["user_id"], row["item_id"], row["timestamp"]) == ("13085", "retail_ii/85048", 1259653500)
    assert res.n_items == 1


def test_online_retail_errors(tmp_path: Path):
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("user,item,rating\n1,2,3\n")
    with pytest.raises(DataValidationError, match=r"wrong\.csv:1: header .* lacks column"):
        read_online_retail(wrong, tmp_path / "ds")
    guests = tmp_path / "guests.csv"
    guests.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                      "1,A,a,1,12/1/2010 8:26,1.0,,UK\n1,B,b,1,12/1/2010 8:26,1.0,,UK\n"
                      "2,C,c,1,12/1/2010 8:26,1.0,17850,UK\n")
    with pytest.raises(DataValidationError, match=r"guests\.csv: 2 of 3 rows are invalid"):
        read_online_retail(guests, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="only CSV"):
        xlsx = tmp_path / "Online Retail.xlsx"
        xlsx.write_bytes(b"PK\x03\x04")
        read_online_retail(xlsx, tmp_path / "ds")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_online_retail(tmp_path / "nope.csv", tmp_path / "ds")
