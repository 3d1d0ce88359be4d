"""Shared helpers of the format readers: value parsing, line streaming, images, failure atomicity."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from raypipe.data.dataset import CanonicalWriter
from raypipe.data.formats.common import (
    Conversion,
    Rejected,
    category_path,
    dataset_info,
    join_text,
    local_image,
    parse_datetime,
    parse_number,
    parse_price,
    parse_python_literal,
    parse_unix_time,
    parsed,
    split_csv_line,
)

from .helpers import leftovers


@pytest.mark.parametrize("text, expected", [
    ("$12.99", 12.99),
    ("$1,299.00", 1299.0),
    ("$12.99 - $15.99", 12.99),          # a range gives its lower bound
    ("", None),
    (None, None),
    ("Currently unavailable", None),
    (3.17, 3.17),
    (17, 17.0),
    ("12,86 €", 12.86),                  # decimal comma (XMarket de/fr/it/es)
    ("1.299,00 €", 1299.0),
    ("1 299,00 €", 1299.0),
    ("￥1,299", 1299.0),
    ("$ 15.99", 15.99),
])
def test_parse_price(text, expected):
    assert parse_price(text) == expected


@pytest.mark.parametrize("junk", [
    ".a-box-inner{background-color:#fff}#x .selected{box-shadow:0 0 3px rgba(228,121,17,.5)}",
    "1,2,3",
    float("nan"),
])
def test_parse_price_rejects_non_prices(junk):
    with pytest.raises(ValueError):
        parse_price(junk)


def test_parse_unix_time_units():
    assert parse_unix_time(1588687728923, "ms") == 1588687728
    assert parse_unix_time("881250949") == 881250949
    assert parse_unix_time("978300761.9") == 978300761
    assert parse_unix_time(1.5e9) == 1500000000
    for bad in ("yesterday", None, True, ""):
        with pytest.raises(ValueError):
            parse_unix_time(bad)


def test_parse_datetime_is_utc():
    assert parse_datetime("12/1/2010 8:26", ["%m/%d/%Y %H:%M"]) == 1291191960
    assert parse_datetime("2019-03-12", ["%Y-%m-%d"]) == 1552348800
    with pytest.raises(ValueError, match="does not match"):
        parse_datetime("13/45/2010 9:45", ["%m/%d/%Y %H:%M"])


def test_text_helpers():
    assert category_path([["Toys & Games", "Trains"], ["Toys & Games"]]) == "Toys & Games > Trains"
    assert category_path(["Beauty", "Hair Care"]) == "Beauty > Hair Care"
    assert category_path([]) is None and category_path([[]]) is None
    assert join_text(["a", "", ["b", " c "]]) == "a b c"
    assert join_text("  ") is None
    assert split_csv_line('1,"HAND WARMER, RED",3') == ["1", "HAND WARMER, RED", "3"]


def test_python_literal_is_never_evaluated(tmp_path: Path):
    target = tmp_path / "pwned"
    with pytest.raises(ValueError, match="malformed node"):
        parse_python_literal(f"{{'asin': open({str(target)!r}, 'w')}}")
    assert not target.exists()
    assert parse_python_literal("{'asin': 'T1', 'price': 3.5, 'c': [['a']]}") == {"asin": "T1", "price": 3.5, "c": [["a"]]}


def test_local_image_never_downloads(tmp_path: Path):
    img = tmp_path / "41c.jpg"
    img.write_bytes(b"\xff\xd8\xff\xe0fake")
    assert local_image(str(img), None) == (str(img.resolve()), False)
    assert local_image(img.as_uri(), None) == (str(img.resolve()), False)
    assert local_image("https://images-na.ssl-images-amazon.com/images/I/41c.jpg", None) == (None, True)
    assert local_image("https://images-na.ssl-images-amazon.com/images/I/41c.jpg", tmp_path) == (str(img.resolve()), True)
    assert local_image(str(tmp_path / "missing.jpg"), None) == (None, False)


def test_dataset_info_checks_domain_names():
    with pytest.raises(ValueError, match="twice"):
        dataset_info("x", "1", [("a", "target"), ("a", "source")], "", "")
    with pytest.raises(ValueError, match="without '/'"):
        dataset_info("x", "1", [("a/b", "target")], "", "")


def test_lines_crlf_bom_blank_undecodable_and_gzip(tmp_path: Path):
    raw = "\ufeffa\tb\r\n\r\n   \nc\td\n".encode() + b"caf\xe9\n" + b"e\tf"
    plain = tmp_path / "x.inter"
    plain.write_bytes(raw)
    packed = tmp_path / "x.inter.gz"
    packed.write_bytes(gzip.compress(raw))
    out = tmp_path / "out"
    w = CanonicalWriter(out, dataset_info("t", "1", [("d", "target")], "", ""))
    conv = Conversion(w)
    for path in (plain, packed):
        rep = conv.report(path)
        assert list(conv.lines(rep, path)) == [(1, "a\tb"), (4, "c\td"), (6, "e\tf")]
        assert [(e.line, e.field) for e in rep.errors] == [(5, "row")]
        assert "not valid utf-8" in rep.errors[0].reason
    w.abort(RuntimeError("test over"))
    assert not out.exists() and leftovers(tmp_path) == []


def test_a_rejected_field_is_reported_and_the_next_line_is_read(tmp_path: Path):
    out = tmp_path / "out"
    w = CanonicalWriter(out, dataset_info("t", "1", [("d", "target")], "", ""))
    conv = Conversion(w)
    rep = conv.report(tmp_path / "src.csv")
    kept = []
    for line, text in [(1, "5"), (2, "x"), (3, "7")]:
        with conv.rejecting(rep, line):
            kept.append(parsed("rating", parse_number, text, "rating", prefix="bad: "))
    assert kept == [5.0, 7.0]
    assert [(e.line, e.field) for e in rep.errors] == [(2, "rating")]
    assert rep.errors[0].reason.startswith("bad: ") and "rating" in rep.errors[0].reason
    with pytest.raises(KeyError):  # anything but a rejection still stops the reader
        with conv.rejecting(rep, 4):
            raise KeyError("a bug, not bad data")
    assert isinstance(Rejected("f", "why"), ValueError) and str(Rejected("f", "why")) == "f: why"
    w.abort(RuntimeError("test over"))
