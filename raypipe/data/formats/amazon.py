"""Amazon product reviews — the 2014, 2018 and 2023 releases — into the canonical form.

Each Amazon category becomes one domain; :func:`read_amazon` merges any number of categories (of any
release) into one canonical dataset.  Item ids are ``"<domain>/<asin>"`` (2023: ``parent_asin``).

2014 (McAuley et al., SIGIR 2015; http://jmcauley.ucsd.edu/data/amazon/)
    * reviews ``reviews_<Cat>_5.json.gz`` — JSON lines::

        {"reviewerID": "A2SUAM1J3GNN3B", "asin": "0000013714", "overall": 5.0,
         "summary": "Heavenly Highway Hymns", "reviewText": "I bought this for ...",
         "unixReviewTime": 1252800000, "reviewTime": "09 13, 2009", "helpful": [2, 3]}

      or the ratings-only ``ratings_<Cat>.csv`` (no header): ``user,item,rating,timestamp``.
    * metadata ``meta_<Cat>.json.gz`` — one **Python literal** per line (read with
      :func:`ast.literal_eval`, never ``eval``)::

        {'asin': '0000031852', 'title': 'Girls Ballet Tutu Zebra Hot Pink', 'price': 3.17,
         'imUrl': 'http://ecx.images-amazon.com/images/I/51fAmVkTbyL._SY300_.jpg',
         'categories': [['Sports & Outdoors', 'Other Sports', 'Dance']], 'brand': 'Coxlures'}

2018 (Ni, Li & McAuley, EMNLP 2019; https://nijianmo.github.io/amazon/)
    * ratings-only ``<Cat>.csv`` (no header): ``item,user,rating,timestamp`` — note the order differs
      from 2014 — e.g. ``0001713353,A1C6M8LCIX4M6M,5.0,1123804800``; or the review files
      ``<Cat>.json.gz`` / ``<Cat>_5.json.gz`` (JSON lines with the 2014 review fields).
    * metadata ``meta_<Cat>.json.gz`` — JSON lines::

        {"asin": "B00004T1WX", "title": "Nerf Vortex", "brand": "Nerf",
         "category": ["Toys & Games", "Sports & Outdoor Play"], "description": ["Throws far."],
         "feature": ["Whistles in flight"], "price": "$12.99", "main_cat": "Toys & Games",
         "imageURL": ["https://images-na.ssl-images-amazon.com/images/I/41x._SS40_.jpg"],
         "imageURLHighRes": ["https://images-na.ssl-images-amazon.com/images/I/41x.jpg"]}

2023 (Hou et al., 2024; https://amazon-reviews-2023.github.io/)
    * reviews ``<Cat>.jsonl[.gz]`` — JSON lines, ``timestamp`` in **milliseconds**::

        {"rating": 5.0, "title": "Great", "text": "Works well.", "images": [], "asin": "B01N0TQ0OH",
         "parent_asin": "B01N0TQ0OH", "user_id": "AGKHLEW2SOWHNMFQIJGBECAF7INQ",
         "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": true}

    * metadata ``meta_<Cat>.jsonl[.gz]`` — JSON lines::

        {"main_category": "All Beauty", "title": "Howard LC0008 Leather Conditioner", "features": [],
         "description": ["..."], "price": 17.99, "store": "Howard Products", "categories": [],
         "images": [{"thumb": "https://...jpg", "large": "https://...jpg", "hi_res": null,
                     "variant": "MAIN"}], "details": {}, "parent_asin": "B01CUPMQZE"}

Canonical mapping
    * ``review`` = review summary/title and text joined by a newline (either may be absent).
    * ``category`` = the category path joined with ``" > "`` (2014: the first path of ``categories``;
      2018: ``category``, else ``main_cat`` unless it is markup; 2023: ``categories``, else
      ``main_category``).
    * ``brand`` = ``brand`` (2023: ``store``, else ``details["Brand"]``).
    * ``description`` = the description (lists joined by spaces); when it is empty, the feature bullets.
    * ``price`` via :func:`raypipe.data.formats.common.parse_price` (``"$12.99 - $15.99"`` → 12.99).
    * images: see :mod:`raypipe.data.formats.common` — URLs are never downloaded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

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
    parse_json_object,
    parse_optional_number,
    parse_python_literal,
    parse_unix_time,
    parsed,
    require_file,
    split_csv_line,
)
from raypipe.data.schema import ValidationReport

log = logging.getLogger(__name__)

Version = Literal["2014", "2018", "2023"]
VERSIONS: tuple[str, ...] = ("2014", "2018", "2023")

PROVENANCE = {
    "2014": "Amazon product data 2014 (McAuley et al., SIGIR 2015), http://jmcauley.ucsd.edu/data/amazon/",
    "2018": "Amazon review data 2018 (Ni, Li & McAuley, EMNLP 2019), https://nijianmo.github.io/amazon/",
    "2023": "Amazon Reviews 2023 (Hou et al., 2024), https://amazon-reviews-2023.github.io/",
}
LICENCE = ("Amazon review data are distributed by their authors for research use; check the terms of "
           "the release you downloaded before redistributing anything derived from it.")


@dataclass(frozen=True)
class AmazonDomain:
    """One Amazon category to convert as one domain.

    ``interactions`` is the reviews or ratings file, ``meta`` the product metadata (optional: without
    it every item is written with id and domain only).
    """

    domain: str
    interactions: str | Path
    meta: str | Path | None = None
    version: Version = "2018"
    role: Role = "target"


def amazon_domain(root: str | Path, category: str, version: Version = "2018", *, role: Role = "target",
                  domain: str | None = None, five_core: bool = True) -> AmazonDomain:
    """Find a category's files under ``root`` by the release's file names (domain = category lower-cased).

    2014: ``reviews_<Cat>_5.json.gz`` (or ``ratings_<Cat>.csv``) + ``meta_<Cat>.json.gz``;
    2018: ``<Cat>.csv`` (or ``<Cat>_5.json.gz`` / ``<Cat>.json.gz``) + ``meta_<Cat>.json.gz``;
    2023: ``<Cat>.jsonl[.gz]`` + ``meta_<Cat>.jsonl[.gz]``.  Each name is also tried without/with ``.gz``.
    """
    root = Path(root)
    if version == "2014":
        inter = [f"reviews_{category}_5.json", f"ratings_{category}.csv"]
        if not five_core:
            inter = [f"reviews_{category}.json"] + inter
        meta = [f"meta_{category}.json"]
    elif version == "2018":
        inter = [f"{category}.csv", f"{category}_5.json" if five_core else f"{category}.json"]
        meta = [f"meta_{category}.json"]
    elif version == "2023":
        inter, meta = [f"{category}.jsonl"], [f"meta_{category}.jsonl"]
    else:
        raise ValueError(f"unknown Amazon release {version!r}; expected one of {VERSIONS}")

    def find(names: list[str], what: str, required: bool) -> Path | None:
        tried = [root / (n + gz) for n in names for gz in ("", ".gz")]
        for p in tried:
            if p.is_file():
                return p
        if required:
            raise FileNotFoundError(f"Amazon {version} {what} file for {category!r} not found; tried "
                                    + ", ".join(str(p) for p in tried))
        return None

    inter_path = find(inter, "interactions", True)
    assert inter_path is not None
    return AmazonDomain(domain or category.lower(), inter_path, find(meta, "metadata", False), version, role)


# --------------------------------------------------------------------------------------------------
# interactions
# --------------------------------------------------------------------------------------------------
def _review_text(summary: Any, text: Any) -> str | None:
    parts = [p for p in (clean_text(summary), clean_text(text)) if p]
    return "\n".join(parts) if parts else None


def _read_ratings_csv(conv: Conversion, spec: AmazonDomain, path: Path) -> None:
    """``user,item,rating,timestamp`` (2014) or ``item,user,rating,timestamp`` (2018), no header."""
    rep = conv.report(path)
    item_first = spec.version == "2018"
    for line, text in conv.lines(rep, path):
        with conv.rejecting(rep, line):
            try:
                cols = split_csv_line(text)
            except Exception as e:  # csv.Error
                raise Rejected(ROW, f"not a CSV line: {e}") from e
            if len(cols) != 4:
                raise Rejected(ROW, f"expected 4 comma-separated columns "
                               f"({'item,user' if item_first else 'user,item'},rating,timestamp), got {len(cols)}")
            item, user = (cols[0], cols[1]) if item_first else (cols[1], cols[0])
            rating = parsed("rating", parse_optional_number, cols[2], "rating")
            ts = parsed("timestamp", parse_unix_time, cols[3], "s", "timestamp")
            conv.add_interaction(rep, line, domain=spec.domain, user_id=user, raw_item_id=item,
                                 timestamp=ts, rating=rating)


def _read_reviews_json(conv: Conversion, spec: AmazonDomain, path: Path) -> None:
    """2014/2018 review JSON lines (``reviewerID, asin, overall, unixReviewTime, summary, reviewText``)."""
    rep = conv.report(path)
    for line, text in conv.lines(rep, path):
        with conv.rejecting(rep, line):
            r = parsed(ROW, parse_json_object, text, prefix="invalid JSON: ")
            rating = parsed("overall", parse_optional_number, r.get("overall"), "overall")
            ts = parsed("unixReviewTime", parse_unix_time, r.get("unixReviewTime"), "s", "unixReviewTime")
            conv.add_interaction(rep, line, domain=spec.domain, user_id=r.get("reviewerID"),
                                 raw_item_id=r.get("asin"), timestamp=ts, rating=rating,
                                 review=_review_text(r.get("summary"), r.get("reviewText")))


def _read_reviews_2023(conv: Conversion, spec: AmazonDomain, path: Path) -> None:
    """2023 review JSON lines (``user_id, parent_asin, rating, timestamp`` in ms, ``title, text``)."""
    rep = conv.report(path)
    for line, text in conv.lines(rep, path):
        with conv.rejecting(rep, line):
            r = parsed(ROW, parse_json_object, text, prefix="invalid JSON: ")
            item = clean_text(r.get("parent_asin"))
            if item is None:
                raise Rejected("parent_asin", "missing or empty (the 2023 item id)")
            rating = parsed("rating", parse_optional_number, r.get("rating"), "rating")
            ts = parsed("timestamp", parse_unix_time, r.get("timestamp"), "ms", "timestamp")
            conv.add_interaction(rep, line, domain=spec.domain, user_id=r.get("user_id"), raw_item_id=item,
                                 timestamp=ts, rating=rating, review=_review_text(r.get("title"), r.get("text")))


def _is_csv(path: Path) -> bool:
    return path.name.endswith((".csv", ".csv.gz"))


# --------------------------------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------------------------------
def _meta_2014(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "raw_item_id": m.get("asin"),
        "title": clean_text(m.get("title")),
        "category": category_path(m.get("categories")),
        "brand": clean_text(m.get("brand")),
        "description": join_text(m.get("description")),
        "price": m.get("price"),
        "image_refs": [m.get("imUrl")],
    }


def _str_list(v: Any) -> list[Any]:
    if isinstance(v, list):
        return v
    return [v] if v is not None else []


def _meta_2018(m: dict[str, Any]) -> dict[str, Any]:
    category = category_path(m.get("category"))
    if category is None:
        main = clean_text(m.get("main_cat"))
        category = main if main and "<" not in main else None
    return {
        "raw_item_id": m.get("asin"),
        "title": clean_text(m.get("title")),
        "category": category,
        "brand": clean_text(m.get("brand")),
        "description": join_text(m.get("description")) or join_text(m.get("feature")),
        "price": m.get("price"),
        "image_refs": _str_list(m.get("imageURLHighRes")) + _str_list(m.get("imageURL")),
    }


def _meta_2023(m: dict[str, Any]) -> dict[str, Any]:
    images = [im for im in _str_list(m.get("images")) if isinstance(im, dict)]
    images.sort(key=lambda im: im.get("variant") != "MAIN")  # the main picture first
    refs = [im.get(k) for im in images for k in ("hi_res", "large", "thumb")]
    details = m.get("details") if isinstance(m.get("details"), dict) else {}
    return {
        "raw_item_id": m.get("parent_asin"),
        "title": clean_text(m.get("title")),
        "category": category_path(m.get("categories")) or clean_text(m.get("main_category")),
        "brand": clean_text(m.get("store")) or clean_text(details.get("Brand")),
        "description": join_text(m.get("description")) or join_text(m.get("features")),
        "price": m.get("price"),
        "image_refs": refs,
    }


_META: dict[str, tuple[Callable[[str], dict[str, Any]], Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "2014": (parse_python_literal, _meta_2014, "asin"),
    "2018": (parse_json_object, _meta_2018, "asin"),
    "2023": (parse_json_object, _meta_2023, "parent_asin"),
}


def _read_meta(conv: Conversion, spec: AmazonDomain, path: Path) -> None:
    parse, to_item, id_field = _META[spec.version]
    rep: ValidationReport = conv.report(path)
    what = "Python literal" if spec.version == "2014" else "JSON"
    for line, text in conv.lines(rep, path):
        with conv.rejecting(rep, line):
            fields = to_item(parsed(ROW, parse, text, prefix=f"invalid {what}: "))
            raw = clean_text(fields["raw_item_id"]) if isinstance(fields["raw_item_id"], str) else None
            if raw is None:
                raise Rejected(id_field, "missing or empty (the item id)")
            fields["raw_item_id"] = raw
            conv.add_item(rep, line, domain=spec.domain, **fields)


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------
def read_amazon(domains: Sequence[AmazonDomain], out_dir: str | Path, *, name: str | None = None,
                items: ItemMode = "interacted", image_dir: str | Path | None = None,
                max_bad_fraction: float = 0.5) -> ReadResult:
    """Convert one or more Amazon categories (any mix of releases) into ONE canonical dataset.

    Each :class:`AmazonDomain` becomes a domain with its role.  Interactions are read before metadata
    so that, with ``items="interacted"`` (default), only metadata of interacted items is kept.
    Raises :class:`FileNotFoundError` for a missing file (before anything is written) and
    :class:`raypipe.data.schema.DataValidationError` when a file is mostly unusable; ``out_dir`` is
    then left untouched.
    """
    if not domains:
        raise ValueError("read_amazon needs at least one AmazonDomain")
    for spec in domains:
        if spec.version not in VERSIONS:
            raise ValueError(f"domain {spec.domain!r}: unknown Amazon release {spec.version!r}; expected one of {VERSIONS}")
        require_file(spec.interactions, f"Amazon {spec.version} interactions")
        if spec.meta is not None:
            require_file(spec.meta, f"Amazon {spec.version} metadata")
    versions = sorted({s.version for s in domains})
    info = dataset_info(
        name or "amazon" + "+".join(versions) + "-" + "+".join(s.domain for s in domains),
        "amazon-" + "+".join(versions),
        [(s.domain, s.role) for s in domains],
        "; ".join(PROVENANCE[v] for v in versions),
        LICENCE,
        {"files": {s.domain: {"version": s.version, "interactions": str(s.interactions),
                              "meta": None if s.meta is None else str(s.meta)} for s in domains}},
    )

    def body(conv: Conversion) -> None:
        for spec in domains:
            inter = Path(spec.interactions)
            if spec.version == "2023":
                _read_reviews_2023(conv, spec, inter)
            elif _is_csv(inter):
                _read_ratings_csv(conv, spec, inter)
            else:
                _read_reviews_json(conv, spec, inter)
            if spec.meta is not None:
                _read_meta(conv, spec, Path(spec.meta))

    return convert(out_dir, info, body, fmt="amazon", items=items, image_dir=image_dir,
                   max_bad_fraction=max_bad_fraction)


def read_amazon2014(reviews: str | Path, meta: str | Path | None, out_dir: str | Path, *, domain: str,
                    role: Role = "target", name: str | None = None, **kwargs: Any) -> ReadResult:
    """One 2014 category: ``reviews_<Cat>_5.json.gz`` (or ``ratings_<Cat>.csv``) + ``meta_<Cat>.json.gz``.

    ``kwargs`` go to :func:`read_amazon` (``items``, ``image_dir``, ``max_bad_fraction``).
    """
    return read_amazon([AmazonDomain(domain, reviews, meta, "2014", role)], out_dir, name=name, **kwargs)


def read_amazon2018(ratings_csv: str | Path, meta_json: str | Path | None, out_dir: str | Path, *,
                    domain: str, role: Role = "target", name: str | None = None, **kwargs: Any) -> ReadResult:
    """One 2018 category: ``<Cat>.csv`` (``item,user,rating,timestamp``; or a review JSON file) + ``meta_<Cat>.json.gz``."""
    return read_amazon([AmazonDomain(domain, ratings_csv, meta_json, "2018", role)], out_dir, name=name, **kwargs)


def read_amazon2023(reviews_jsonl: str | Path, meta_jsonl: str | Path | None, out_dir: str | Path, *,
                    domain: str, role: Role = "target", name: str | None = None, **kwargs: Any) -> ReadResult:
    """One 2023 category: ``<Cat>.jsonl[.gz]`` + ``meta_<Cat>.jsonl[.gz]``; items are ``parent_asin``."""
    return read_amazon([AmazonDomain(domain, reviews_jsonl, meta_jsonl, "2023", role)], out_dir, name=name, **kwargs)
