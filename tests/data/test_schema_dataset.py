"""Row-level validation and the atomic canonical writer."""
from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.data.dataset import CanonicalDataset, CanonicalWriter
from raypipe.data.schema import DataValidationError, DatasetInfo, DomainInfo, validate_interaction, validate_item

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def info() -> DatasetInfo:
    return DatasetInfo("t", "1", [DomainInfo("shop", "target")], "hand-written", "test")


def item(**kw):
    rec = {"item_id": "shop/1", "domain": "shop", "title": "Mug", "price": 3.5}
    rec.update(kw)
    return rec


def inter(**kw):
    rec = {"user_id": "u1", "item_id": "shop/1", "domain": "shop", "timestamp": 100, "rating": 4.0}
    rec.update(kw)
    return rec


@pytest.mark.parametrize(
    "rec, field",
    [
        (item(item_id=""), "item_id"),
        (item(item_id="1"), "item_id"),  # not namespaced
        (item(domain=None), "domain"),
        (item(title=3), "title"),
        (item(price=-1.0), "price"),
        (item(price=float("nan")), "price"),
        (item(price="3.5"), "price"),
        (item(image=b"GIF89a"), "image"),
    ],
)
def test_item_validation_names_the_field(rec, field) -> None:
    problem = validate_item(rec)
    assert problem is not None and problem[0] == field


def test_valid_records_pass() -> None:
    assert validate_item(item(image=PNG)) is None
    assert validate_interaction(inter()) is None


@pytest.mark.parametrize(
    "rec, field",
    [(inter(user_id=""), "user_id"), (inter(timestamp=1.5), "timestamp"), (inter(timestamp=-3), "timestamp"),
     (inter(rating=float("inf")), "rating"), (inter(item_id="other/1"), "item_id"), (inter(review=5), "review")],
)
def test_interaction_validation_names_the_field(rec, field) -> None:
    assert validate_interaction(rec)[0] == field


def test_writer_reports_bad_rows_with_file_line_field(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with CanonicalWriter(out, info(), batch_rows=2) as w:
        ri, rx = w.report("meta.json"), w.report("ratings.csv")
        assert w.add_item(item(), ri, 1)
        assert not w.add_item(item(), ri, 2)  # duplicate id
        assert w.add_item(item(item_id="shop/2"), ri, 3)
        for line in range(1, 6):
            w.add_interaction(inter(timestamp=line), rx, line)
        w.reject(rx, 6, "timestamp", "not a number: 'abc'")
        assert not w.add_interaction(inter(rating=float("nan")), rx, 7)
    assert (ri.n_rows, ri.n_bad) == (3, 1)
    assert [(e.line, e.field) for e in ri.errors] == [(2, "item_id")]
    assert (rx.n_rows, rx.n_bad) == (7, 2)
    assert [(e.line, e.field) for e in rx.errors] == [(6, "timestamp"), (7, "rating")]
    assert "ratings.csv:6: field 'timestamp'" in str(rx.errors[0])
    ds = CanonicalDataset.open(out)
    assert ds.items().num_rows == 2 and ds.interactions().num_rows == 5
    assert ds.interactions().column("timestamp").to_pylist() == [1, 2, 3, 4, 5]
    assert (out / "validation.json").exists()


def test_mostly_bad_file_fails_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError, match="ratings.csv: 3 of 4 rows are invalid"):
        with CanonicalWriter(out, info()) as w:
            r = w.report("ratings.csv")
            w.add_interaction(inter(), r, 1)
            for line in (2, 3, 4):
                w.reject(r, line, "rating", "bad")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp leftovers either


def test_failure_midway_keeps_previous_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    with CanonicalWriter(out, info()) as w:
        w.add_interaction(inter(), w.report("a"), 1)
    with pytest.raises(RuntimeError):
        with CanonicalWriter(out, info()) as w:
            w.add_interaction(inter(user_id="u2"), w.report("a"), 1)
            raise RuntimeError("interrupted")
    assert CanonicalDataset.open(out).interactions().column("user_id").to_pylist() == ["u1"]


def test_open_rejects_non_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="items.parquet is missing"):
        CanonicalDataset.open(tmp_path)


def test_domain_role_checked() -> None:
    with pytest.raises(DataValidationError, match="role"):
        DomainInfo("x", "sink")  # type: ignore[arg-type]
