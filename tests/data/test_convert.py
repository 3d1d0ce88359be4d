"""``raypipe convert`` (raypipe.data.convert.main) over the format readers' hand-written fixtures."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest

from raypipe.data.convert import REJECTED_FILE, default_domain, main
from raypipe.data.dataset import CanonicalDataset
from raypipe.data.formats import read_amazon2018
from raypipe.data.formats.tracking import MAX_KINDS, OTHER_KIND, TalliedReport, on_bytes_read, reason_kind

from .formats.helpers import leftovers

FX = Path(__file__).parent / "formats" / "fixtures"
A14, A18, A23 = FX / "amazon2014", FX / "amazon2018", FX / "amazon2023"


def _movielens_dir(tmp_path: Path) -> Path:
    """The RecBole toy fixture under MovieLens-100K's file names (what --data-dir expects)."""
    d = tmp_path / "ml"
    d.mkdir()
    for ext in ("inter", "item"):
        shutil.copy(FX / "recbole" / "toy" / f"toy.{ext}", d / f"ml-100k.{ext}")
    return d


# format -> (input arguments, domains with roles, users, items, interactions, rejected rows);
# counts checked by hand against the fixture files (see tests/data/formats/test_*.py for the rows)
CASES = {
    "amazon2014": (lambda t: ["--reviews", A14 / "reviews_Toys_5.json", "--meta", A14 / "meta_Toys.json",
                              "--source", "toys"],
                   [("toys", "source")], 4, 3, 5, 6),
    "amazon2018": (lambda t: ["--reviews", A18 / "Beauty.csv", "--meta", A18 / "meta_Beauty.json"],
                   [("beauty", "target")], 3, 4, 5, 7),
    "amazon2023": (lambda t: ["--root", A23, "--category", "All_Beauty"],
                   [("all_beauty", "target")], 2, 2, 4, 4),
    "recbole": (lambda t: ["--inter", FX / "recbole" / "toy" / "toy.inter",
                           "--item", FX / "recbole" / "toy" / "toy.item"],
                [("toy", "target")], 3, 3, 4, 4),
    "xmarket": (lambda t: ["--root", FX / "xmarket", "--pair", "de/Electronics", "--pair", "uk/Electronics",
                           "--source", "uk_electronics"],
                [("de_electronics", "target"), ("uk_electronics", "source")], 4, 5, 6, 4),
    "online_retail": (lambda t: ["--csv", FX / "online_retail" / "online_retail.csv"],
                      [("online_retail", "target")], 3, 5, 9, 7),
    "movielens": (lambda t: ["--which", "ml-100k", "--data-dir", _movielens_dir(t)],
                  [("ml-100k", "target")], 3, 3, 4, 4),
}


def _run(fmt: str, args: list, out: Path, *extra: str) -> int:
    return main(["--format", fmt, *map(str, args), "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_each_format_converts_its_fixture(fmt: str, tmp_path: Path, capsys):
    make_args, domains, n_users, n_items, n_inter, n_rejected = CASES[fmt]
    args = make_args(tmp_path)
    out = tmp_path / "out" / "ds"
    assert _run(fmt, args, out) == 0
    ds = CanonicalDataset.open(out)
    inter = ds.interactions()
    assert [(d.name, d.role) for d in ds.info.domains] == domains
    assert (len(pc.unique(inter["user_id"])), ds.items().num_rows, inter.num_rows) == (n_users, n_items, n_inter)
    report = json.loads((out / REJECTED_FILE).read_text())
    assert report["format"] == fmt and report["n_rejected"] == n_rejected
    assert (report["n_items"], report["n_interactions"]) == (n_items, n_inter)
    # every byte of every input was counted by the progress bar
    assert report["bytes_read"] == sum(i["bytes"] for i in report["inputs"]) > 0
    assert f"rejected rows: {n_rejected} of" in capsys.readouterr().out
    assert leftovers(out.parent) == []


def test_rejected_report_names_file_line_and_reason(tmp_path: Path, capsys):
    reviews = tmp_path / "Toys.json"
    good = {"reviewerID": "A1", "asin": "T1", "overall": 5.0, "unixReviewTime": 1388534400}
    lines = [json.dumps(good), '{"reviewerID": "A2", "asin": "T1", "overall": 4.0, "unixRev',  # cut short
             json.dumps(good | {"reviewerID": "A3"}), json.dumps(good | {"reviewerID": "A4", "overall": "five"}),
             json.dumps(good | {"reviewerID": "A5", "overall": "ten"}), json.dumps(good | {"reviewerID": "A6"})]
    reviews.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ds"
    assert _run("amazon2018", ["--reviews", reviews], out) == 0
    report = json.loads((out / REJECTED_FILE).read_text())
    (f,) = [f for f in report["files"] if f["file"] == str(reviews)]
    assert (f["n_rows"], f["n_rejected"], f["reasons_complete"]) == (6, 3, True)
    by_field = {r["field"]: r for r in f["reasons"]}
    assert by_field["overall"]["count"] == 2  # 'five' and 'ten': one reason, two rows
    assert by_field["overall"]["reason"] == "overall: expected a number, got '…'"
    assert [(e["file"], e["line"]) for e in by_field["overall"]["examples"]] == [(str(reviews), 4), (str(reviews), 5)]
    assert by_field["row"]["count"] == 1 and by_field["row"]["examples"][0]["line"] == 2
    assert "invalid JSON" in by_field["row"]["examples"][0]["reason"]
    printed = capsys.readouterr().out
    assert "rejected rows: 3 of" in printed and "Toys.json:4, Toys.json:5" in printed and "Toys.json:2" in printed
    assert CanonicalDataset.open(out).interactions().num_rows == 3


def test_convert_writes_what_the_reader_writes(tmp_path: Path):
    """The command adds only rejected.json: items and interactions are the reader's, row for row."""
    ratings, meta = A18 / "Beauty.csv", A18 / "meta_Beauty.json"
    read_amazon2018(ratings, meta, tmp_path / "direct", domain="beauty")
    assert _run("amazon2018", ["--reviews", ratings, "--meta", meta], tmp_path / "cli") == 0
    direct, cli = CanonicalDataset.open(tmp_path / "direct"), CanonicalDataset.open(tmp_path / "cli")
    assert cli.items().equals(direct.items()) and cli.interactions().equals(direct.interactions())
    assert cli.info == direct.info
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(
        [p.name for p in (tmp_path / "direct").iterdir()] + [REJECTED_FILE])


def test_gzip_inputs_count_compressed_bytes(tmp_path: Path):
    meta = tmp_path / "meta_Beauty.json.gz"
    with gzip.open(meta, "wb") as g:
        g.write((A18 / "meta_Beauty.json").read_bytes() * 200)  # repeats: rejected as duplicates, fine
    seen: dict[str, int] = {}
    with on_bytes_read(lambda f, n: seen.__setitem__(f, seen.get(f, 0) + n)):
        read_amazon2018(A18 / "Beauty.csv", meta, tmp_path / "ds", domain="beauty", max_bad_fraction=1.0)
    assert seen == {str(A18 / "Beauty.csv"): (A18 / "Beauty.csv").stat().st_size, str(meta): meta.stat().st_size}
    # outside the block nothing is reported
    read_amazon2018(A18 / "Beauty.csv", None, tmp_path / "ds2", domain="beauty")
    assert len(seen) == 2


def test_existing_empty_out_is_accepted(tmp_path: Path):
    out = tmp_path / "ds"
    out.mkdir()
    assert _run("amazon2018", ["--reviews", A18 / "Beauty.csv"], out) == 0
    assert CanonicalDataset.open(out).interactions().num_rows == 5


def test_finished_dataset_is_replaced_only_with_force(tmp_path: Path, capsys):
    out = tmp_path / "ds"
    assert _run("amazon2018", ["--reviews", A18 / "Beauty.csv"], out) == 0
    capsys.readouterr()
    assert _run("recbole", ["--inter", FX / "recbole" / "toy" / "toy.inter"], out) == 2
    assert f"--out {out}: already holds a dataset; pass --force" in capsys.readouterr().err
    assert _run("recbole", ["--inter", FX / "recbole" / "toy" / "toy.inter"], out, "--force") == 0
    assert CanonicalDataset.open(out).info.domains[0].name == "toy"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("argv, message", [
    (["--format", "amazon2019", "--out", "{t}/o"], "invalid choice: 'amazon2019'"),
    (["--format", "amazon2018", "--out", "{t}/o"], "needs --reviews or --root"),
    (["--format", "amazon2018", "--reviews", "{t}/nope.csv", "--out", "{t}/o"],
     "--reviews: file not found: {t}/nope.csv"),
    (["--format", "amazon2018", "--reviews", f"{A18}/Beauty.csv", "--meta", "{t}/meta.json.gz", "--out", "{t}/o"],
     "--meta: file not found: {t}/meta.json.gz"),
    (["--format", "amazon2023", "--root", str(A23), "--category", "Toys", "--out", "{t}/o"],
     "--category Toys: Amazon 2023 interactions file for 'Toys' not found"),
    (["--format", "amazon2018", "--inter", f"{A18}/Beauty.csv", "--out", "{t}/o"],
     "--inter does not apply to --format amazon2018"),
    (["--format", "xmarket", "--root", str(FX / "xmarket"), "--pair", "de", "--out", "{t}/o"],
     "--pair 'de': expected MARKET/CATEGORY"),
    (["--format", "recbole", "--dataset-dir", "{t}/missing", "--out", "{t}/o"], "--dataset-dir: directory not found"),
    (["--format", "online_retail", "--csv", "{t}/nope.csv", "--out", "{t}/o"], "--csv: file not found: {t}/nope.csv"),
    (["--format", "movielens", "--out", "{t}/o"], "--format movielens needs --which"),
    (["--format", "amazon2018", "--reviews", f"{A18}/Beauty.csv", "--source", "toys", "--out", "{t}/o"],
     "--source toys: no such domain; the domains are beauty"),
    (["--format", "amazon2018", "--reviews", f"{A18}/Beauty.csv", "--out", "{t}/junk"],
     "--out {t}/junk: a non-empty directory that is not a raypipe dataset"),
    (["--format", "amazon2018", "--reviews", f"{A18}/Beauty.csv", "--out", "{t}/afile"],
     "--out {t}/afile: exists and is not a directory"),
    (["--format", "amazon2018", "--reviews", f"{A18}/Beauty.csv", "--max-bad-fraction", "2", "--out", "{t}/o"],
     "--max-bad-fraction must be between 0 and 1"),
])
def test_bad_command_lines_exit_2_naming_the_option(argv: list[str], message: str, tmp_path: Path, capsys):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("keep me")
    (tmp_path / "afile").write_text("x")
    assert main([a.format(t=tmp_path) for a in argv]) == 2
    assert message.format(t=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and (tmp_path / "junk" / "notes.txt").read_text() == "keep me"
    assert leftovers(tmp_path) == []


def test_unconvertible_data_exits_1_and_keeps_the_previous_dataset(tmp_path: Path, capsys):
    out = tmp_path / "ds"
    assert _run("amazon2018", ["--reviews", A18 / "Beauty.csv"], out) == 0
    assert _run("amazon2018", ["--reviews", A18 / "mostly_bad.csv"], out, "--force") == 1
    err = capsys.readouterr().err
    assert "mostly_bad.csv: 3 of 4 rows are invalid" in err
    assert CanonicalDataset.open(out).interactions().num_rows == 5
    assert leftovers(tmp_path) == []


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "raypipe convert" in capsys.readouterr().out


def test_default_domain_from_release_file_names():
    assert [default_domain(Path(n)) for n in ("reviews_Toys_5.json.gz", "All_Beauty.jsonl", "Beauty.csv",
                                              "ratings_Books.csv", "toy.inter", "Clothing Shoes.json")] == [
        "toys", "all_beauty", "beauty", "books", "toy", "clothing_shoes"]


def test_tallied_report_counts_every_row_by_reason():
    rep = TalliedReport("f.csv", max_kept=2)
    for i in range(5):
        rep.add_error(10 + i, "rating", f"rating: expected a number, got 'x{i}'")
    rep.add_error(20, "row", "expected 4 columns, got 3")
    assert (rep.n_bad, len(rep.errors)) == (6, 2)  # verbatim errors capped; the tallies are not
    (rating, row) = rep.reasons()
    assert (rating.field, rating.kind, rating.count) == ("rating", "rating: expected a number, got '…'", 5)
    assert [line for line, _ in rating.examples] == [10, 11, 12]
    assert (row.kind, row.count) == ("expected N columns, got N", 1)
    # memory stays bounded: past MAX_KINDS distinct reasons, the rest share one bucket per field
    many = TalliedReport("g.csv")
    for i in range(MAX_KINDS + 10):
        many.add_error(i, "title", f"reason number {'x' * i}")
    assert len(many.tallies) == MAX_KINDS + 1
    assert many.tallies[("title", OTHER_KIND)].count == 10
    assert reason_kind("duplicate item_id 'a/b' (first occurrence kept)") == (
        "duplicate item_id '…' (first occurrence kept)")
