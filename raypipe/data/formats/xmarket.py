"""XMarket (cross-market Amazon data; Bonab et al., CIKM 2021; https://xmrec.github.io) into the canonical form.

Each (market, category) pair becomes one domain named ``"<market>_<category>"`` lower-cased, e.g.
``"de_electronics"``; :func:`read_xmarket` merges several into one dataset.  The release's layout is
``<market>/<Category>/{ratings,reviews,metadata}_<market>_<Category>.{txt,json}.gz``.

* ratings ``ratings_<market>_<Category>.txt.gz`` — no header, space-separated
  ``userId itemId rating date`` with the date as ``YYYY-MM-DD`` (tabs/multiple spaces are accepted)::

      AFXKARXBL3X3LO5GNN4XAXC7XMPQ 0061806765 3 2012-08-20

  The date becomes the timestamp of 00:00 UTC of that day.
* metadata ``metadata_<market>_<Category>.json.gz`` — one record per line.  The release's own
  example reads it with ``eval``; this reader accepts a JSON object or, failing that, a Python
  literal (:func:`ast.literal_eval`, never ``eval``)::

      {"asin": "B000023VW2", "title": "Sangean ANT-60 Short Wave Antenna", "price": "$12.86",
       "imgUrl": "{\\"https://images-na.ssl-images-amazon.com/images/I/71-X.jpg\\":[369,569]}",
       "categories": ["Electronics", "Accessories & Supplies"], "description": "From the Manufacturer ...",
       "features": ["Improves reception"], "productDetails": {"Manufacturer": "Sangean"}}

  ``imgUrl`` is a JSON-encoded ``{url: [height, width]}`` map in the release (a plain URL or a list
  is accepted too).  ``brand`` is ``brand`` if present, else ``productDetails["Brand"]``, else
  ``productDetails["Manufacturer"]``.  ``description`` falls back to the joined ``features``.
  ``price`` is parsed with :func:`raypipe.data.formats.common.parse_price` (``"12,86 €"`` → 12.86).
* The review files (``reviews_<market>_<Category>.json.gz``) are not read: ratings carry the same
  (user, item, rating, date) and the review text is not needed by the canonical contract.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from raypipe.data.formats.common import (
    ROW,
    Conversion,
    ItemMode,
    ReadResult,
    Rejected,
    Role,
    category_path,
    clean_text,
    convert,
    dataset_info,
    join_text,
    parse_datetime,
    parse_json_or_literal,
    parse_number,
    parsed,
    require_file,
)

log = logging.getLogger(__name__)

PROVENANCE = "XMarket cross-market recommendation data (Bonab et al., CIKM 2021), https://xmrec.github.io"
LICENCE = "XMarket is released by its authors for research; check https://xmrec.github.io before redistributing."


@dataclass(frozen=True)
class XMarketDomain:
    """One market/category pair; the domain is ``"<market>_<category>"`` lower-cased unless ``domain`` is set."""

    market: str
    category: str
    ratings: str | Path
    metadata: str | Path | None = None
    role: Role = "target"
    domain: str | None = None

    @property
    def name(self) -> str:
        return self.domain or f"{self.market}_{self.category}".lower()


def xmarket_domain(root: str | Path, market: str, category: str, *, role: Role = "target",
                   domain: str | None = None) -> XMarketDomain:
    """Find ``ratings_<market>_<Category>.txt[.gz]`` and ``metadata_<market>_<Category>.json[.gz]``.

    Looked for in ``root/<market>/<Category>/``, ``root/<market>/`` and ``root/``.
    """
    root = Path(root)
    dirs = [root / market / category, root / market, root]

    def find(stem: str, required: bool) -> Path | None:
        tried = [d / f"{stem}{gz}" for d in dirs for gz in (".gz", "")]
        for p in tried:
            if p.is_file():
                return p
        if required:
            raise FileNotFoundError(f"XMarket file {stem}[.gz] not found; tried " + ", ".join(map(str, tried)))
        return None

    ratings = find(f"ratings_{market}_{category}.txt", True)
    assert ratings is not None
    return XMarketDomain(market, category, ratings, find(f"metadata_{market}_{category}.json", False),
                         role, domain)


def _image_refs(v: Any) -> list[Any]:
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("{"):
            try:
                v = json.loads(s)
            except ValueError:
                return []
        else:
            return [s]
    if isinstance(v, dict):
        return list(v.keys())
    if isinstance(v, list):
        return v
    return []


def _read_ratings(conv: Conversion, spec: XMarketDomain) -> None:
    path = Path(spec.ratings)
    rep = conv.report(path)
    for line, text in conv.lines(rep, path):
        with conv.rejecting(rep, line):
            cols = text.split()
            if len(cols) != 4:
                raise Rejected(ROW, f"expected 4 whitespace-separated fields (userId itemId rating date), "
                               f"got {len(cols)}")
            user, item, rating_s, date_s = cols
            rating = parsed("rating", parse_number, rating_s, "rating")
            ts = parsed("date", parse_datetime, date_s, ["%Y-%m-%d"], "date")
            conv.add_interaction(rep, line, domain=spec.name, user_id=user, raw_item_id=item, timestamp=ts,
                                 rating=rating)


def _read_metadata(conv: Conversion, spec: XMarketDomain) -> None:
    assert spec.metadata is not None
    path = Path(spec.metadata)
    rep = conv.report(path)
    for line, text in conv.lines(rep, path):
        with conv.rejecting(rep, line):
            m = parsed(ROW, parse_json_or_literal, text, prefix="neither a JSON object nor a Python dict literal: ")
            asin = clean_text(m.get("asin")) if isinstance(m.get("asin"), str) else None
            if asin is None:
                raise Rejected("asin", "missing or empty (the item id)")
            details = m.get("productDetails") if isinstance(m.get("productDetails"), dict) else {}
            conv.add_item(
                rep, line, domain=spec.name, raw_item_id=asin,
                title=clean_text(m.get("title")),
                category=category_path(m.get("categories")),
                brand=clean_text(m.get("brand")) or clean_text(details.get("Brand"))
                or clean_text(details.get("Manufacturer")),
                description=join_text(m.get("description")) or join_text(m.get("features")),
                price=m.get("price"),
                image_refs=_image_refs(m.get("imgUrl")),
            )


def read_xmarket(domains: Sequence[XMarketDomain], out_dir: str | Path, *, name: str | None = None,
                 items: ItemMode = "interacted", image_dir: str | Path | None = None,
                 max_bad_fraction: float = 0.5) -> ReadResult:
    """Convert XMarket market/category pairs, one domain each, into ONE canonical dataset."""
    if not domains:
        raise ValueError("read_xmarket needs at least one XMarketDomain")
    for spec in domains:
        require_file(spec.ratings, "XMarket ratings")
        if spec.metadata is not None:
            require_file(spec.metadata, "XMarket metadata")
    info = dataset_info(
        name or "xmarket-" + "+".join(s.name for s in domains), "xmarket-2021",
        [(s.name, s.role) for s in domains], PROVENANCE, LICENCE,
        {"files": {s.name: {"market": s.market, "category": s.category, "ratings": str(s.ratings),
                            "metadata": None if s.metadata is None else str(s.metadata)} for s in domains}},
    )

    def body(conv: Conversion) -> None:
        for spec in domains:
            _read_ratings(conv, spec)
            if spec.metadata is not None:
                _read_metadata(conv, spec)

    return convert(out_dir, info, body, fmt="xmarket", items=items, image_dir=image_dir,
                   max_bad_fraction=max_bad_fraction)


def read_xmarket_market(ratings: str | Path, metadata: str | Path | None, out_dir: str | Path, *, market: str,
                        category: str, role: Role = "target", name: str | None = None,
                        domain: str | None = None, **kwargs: Any) -> ReadResult:
    """Convert one market/category pair (domain ``"<market>_<category>"``); ``kwargs`` go to :func:`read_xmarket`."""
    return read_xmarket([XMarketDomain(market, category, ratings, metadata, role, domain)], out_dir,
                        name=name, **kwargs)
