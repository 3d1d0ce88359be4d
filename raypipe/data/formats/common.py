"""What every real-format reader needs: streaming lines, parsing values, and one conversion run.

A reader opens a :class:`Conversion` through :func:`convert`, streams its source files line by line
(:meth:`Conversion.lines` — ``gzip`` is opened transparently when a name ends in ``.gz``; nothing is
ever loaded whole), turns each line into canonical records and hands them to
:meth:`Conversion.add_interaction` / :meth:`Conversion.add_item`, which namespace the ids
(``"<domain>/<raw_id>"``) and pass them on to :class:`raypipe.data.dataset.CanonicalWriter`.

Conventions shared by all readers
---------------------------------
* **Line numbers** are 1-based physical lines of the (decompressed) source file.  Blank lines are not
  rows and are not counted.  A record never spans lines: a quoted CSV field holding a newline shows up
  as malformed lines, which are rejected, not glued together.
* **Rejections.**  A line that cannot become a record is rejected with ``(file, line, field, reason)``.
  When the reader rejects it, ``field`` is the *source* field (``"overall"``, ``"CustomerID"``, …) or
  ``"row"`` when the line as a whole is unusable (not JSON, wrong column count, undecodable bytes).
  When the canonical validator rejects a parsed record, ``field`` is the canonical field
  (``"user_id"``, ``"timestamp"``, …).  Nothing is dropped silently: filters that are not errors (items
  without interactions, see ``items=``) are counted in :class:`ReadResult`.
* **Items.**  By default (``items="interacted"``) interactions are read first and only items that some
  interaction refers to are written; the other metadata rows are counted in
  ``ReadResult.n_items_filtered``.  An item that interactions refer to but that has no usable metadata row
  is still written, with only ``item_id`` and ``domain`` (counted in ``n_bare_items``; its report is
  ``"<interactions file>#items-without-metadata"`` and its line is the first interaction naming it).
* **Images.**  Readers never download.  An image reference is stored in ``image_path`` only when it
  names a local file that exists (a plain or ``file://`` path, or — with ``image_dir`` — a file in that
  directory named like the URL's last path segment or like the raw item id plus ``.jpg/.jpeg/.png``).
  Items whose image references were only remote URLs are counted in ``n_image_urls_skipped``.
* **Unusable optional values** (a price that is not a price, e.g. CSS junk in Amazon 2018 ``price``)
  leave the canonical field null and are counted in ``ReadResult.notes``; the row itself is kept.
"""
from __future__ import annotations

import ast
import calendar
import contextlib
import csv
import gzip
import json
import logging
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar
from urllib.parse import unquote, urlparse

from raypipe.data.dataset import CanonicalWriter
from raypipe.data.formats.tracking import TalliedReport, bytes_callback
from raypipe.data.schema import DataValidationError, DatasetInfo, DomainInfo, ValidationReport

log = logging.getLogger(__name__)

ItemMode = Literal["interacted", "all"]
Role = Literal["source", "target"]

ROW = "row"  # the ``field`` of a rejection that concerns the whole line
BARE_ITEMS_SUFFIX = "#items-without-metadata"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
T = TypeVar("T")


class Rejected(ValueError):
    """A line that cannot become a record: ``field`` and ``reason`` go to the report
    (:meth:`Conversion.rejecting`)."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field_name, self.reason = field_name, reason


def parsed(field_name: str, parse: Callable[..., T], *args: Any, prefix: str = "") -> T:
    """``parse(*args)``; its ``ValueError`` becomes :class:`Rejected` naming ``field_name`` (the reason is
    ``prefix`` + the error's message)."""
    try:
        return parse(*args)
    except ValueError as e:
        raise Rejected(field_name, f"{prefix}{e}") from e


# --------------------------------------------------------------------------------------------------
# files and lines
# --------------------------------------------------------------------------------------------------
def require_file(path: str | Path, what: str = "input") -> Path:
    """Return ``path`` as a :class:`Path`, or raise :class:`FileNotFoundError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    return p


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing on the fly when its name ends in ``.gz``."""
    p = require_file(path)
    if p.name.endswith(".gz"):
        return gzip.open(p, "rb")  # type: ignore[return-value]
    return open(p, "rb")


PROGRESS_EVERY_LINES = 256  # how often :meth:`Conversion.lines` reports bytes read to a callback


@contextlib.contextmanager
def open_counted(path: str | Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """``(stream, disk_file)``: ``stream`` as :func:`open_binary` gives it, ``disk_file`` the file on
    disk under it, whose ``tell()`` is the number of bytes read from disk so far (compressed bytes
    for a ``.gz``)."""
    p = require_file(path)
    with open(p, "rb") as disk:
        if p.name.endswith(".gz"):
            with gzip.GzipFile(fileobj=disk, mode="rb") as g:
                yield g, disk  # type: ignore[misc]
        else:
            yield disk, disk


def split_csv_line(text: str, delimiter: str = ",") -> list[str]:
    """Split one physical CSV line (RFC 4180 quoting) into fields."""
    return next(csv.reader([text], delimiter=delimiter, strict=True))


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse one JSON-lines record; raise :class:`ValueError` unless it is a JSON object."""
    obj = json.loads(text)  # json.JSONDecodeError is a ValueError
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_python_literal(text: str) -> dict[str, Any]:
    """Parse one Python-literal record (``{'asin': '...'}``) with :func:`ast.literal_eval` — never ``eval``."""
    try:
        obj = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        # "malformed node or string ...: <ast.Call object at 0x...>" -> "...: ast.Call"
        msg = re.sub(r"<(ast\.\w+) object at 0x[0-9a-fA-F]+>", r"\1", str(e))
        raise ValueError(f"{e.__class__.__name__}: {msg}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"expected a dict literal, got {type(obj).__name__}")
    return obj


def parse_json_or_literal(text: str) -> dict[str, Any]:
    """Parse a record that is JSON in some dumps and a Python literal in others."""
    try:
        return parse_json_object(text)
    except ValueError:
        return parse_python_literal(text)


# --------------------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------------------
def clean_text(value: Any) -> str | None:
    """A stripped string, or ``None`` for missing/empty values; numbers become their string form."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and not math.isfinite(value) else str(value)
    if isinstance(value, str):
        s = value.strip()
        return s or None
    return None


def join_text(value: Any, sep: str = " ") -> str | None:
    """Join a string or a (nested) list of strings into one string; empty pieces are skipped."""
    if isinstance(value, (list, tuple)):
        parts = [p for p in (join_text(v, sep) for v in value) if p]
        return sep.join(parts) if parts else None
    return clean_text(value)


def category_path(value: Any, sep: str = " > ") -> str | None:
    """A category hierarchy as one string: ``["A", "B"]`` → ``"A > B"``; a list of lists uses its first path."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple)) for v in value):
        for path in value:
            s = category_path(path, sep)
            if s:
                return s
        return None
    return join_text(value, sep)


_PRICE_TOKEN = re.compile(r"\d[\d.,'\s\u00a0\u202f]*")
_PRICE_JUNK = re.compile(r"[{};<>=]")


def parse_price(value: Any) -> float | None:
    """Parse a price as printed in product dumps.

    ``12.99`` → 12.99; ``"$12.99"`` → 12.99; ``"$1,299.00"`` → 1299.0; ``"12,86 €"`` → 12.86;
    ``"1.299,00 €"`` → 1299.0; ``"$12.99 - $15.99"`` → 12.99 (a range gives its lower bound, the first
    number); ``""``, ``None`` or text without digits (``"Currently unavailable"``) → ``None``.
    A comma followed by exactly three digits is a thousands separator (``"1,299"`` → 1299.0), otherwise
    a decimal comma.  Raises :class:`ValueError` for text that has digits but is not a price (markup
    or CSS that some Amazon dumps carry in ``price``).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a price: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"not a finite price: {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"not a price: {type(value).__name__}")
    s = value.strip()
    if not s or not any(c.isdigit() for c in s):
        return None
    if len(s) > 60 or _PRICE_JUNK.search(s):
        raise ValueError(f"not a price: {s[:40]!r}")
    m = _PRICE_TOKEN.search(s)
    assert m is not None
    tok = re.sub(r"[\s'\u00a0\u202f]", "", m.group(0)).rstrip(".,")
    if "," in tok and "." in tok:
        dec = "," if tok.rfind(",") > tok.rfind(".") else "."
        tok = tok.replace("." if dec == "," else ",", "").replace(",", ".")
    elif "," in tok:
        if re.fullmatch(r"\d{1,3}(,\d{3})+", tok):
            tok = tok.replace(",", "")
        elif tok.count(",") == 1:
            tok = tok.replace(",", ".")
        else:
            raise ValueError(f"not a price: {s!r}")
    elif tok.count(".") > 1:
        if not re.fullmatch(r"\d{1,3}(\.\d{3})+", tok):
            raise ValueError(f"not a price: {s!r}")
        tok = tok.replace(".", "")
    return float(tok)


def parse_number(value: Any, what: str = "value") -> float:
    """A finite float from a number or numeric string; :class:`ValueError` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{what}: expected a finite number, got {value!r}")
    return x


def parse_optional_number(value: Any, what: str = "value") -> float | None:
    """Like :func:`parse_number` but ``None`` and ``""`` give ``None``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_number(value, what)


def parse_unix_time(value: Any, unit: Literal["s", "ms"] = "s", what: str = "timestamp") -> int:
    """Integer seconds from a Unix time in seconds or milliseconds (int, float or numeric string).

    Fractions of a second are truncated.  Raises :class:`ValueError` for anything else.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what}: expected a Unix time, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        n = int(value)
    else:
        x = parse_number(value, what)
        return math.floor(x / 1000) if unit == "ms" else math.floor(x)
    return n // 1000 if unit == "ms" else n


def parse_datetime(text: str, formats: Sequence[str], what: str = "date") -> int:
    """Seconds since the epoch for a date/time string in one of ``formats``, read as UTC."""
    s = text.strip()
    for fmt in formats:
        try:
            dt = datetime.strptime(s, fmt)
        except ValueError:
            continue
        return calendar.timegm(dt.timetuple())
    raise ValueError(f"{what}: {text!r} does not match {' or '.join(formats)}")


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def local_image(ref: Any, image_dir: Path | None) -> tuple[str | None, bool]:
    """Resolve an image reference to an existing local file, never touching the network.

    Returns ``(absolute path or None, was_remote)`` where ``was_remote`` says the reference was an
    ``http(s)``/other-scheme URL (so it is worth counting as skipped when nothing local was found).
    """
    if not isinstance(ref, str) or not ref.strip():
        return None, False
    ref = ref.strip()
    parsed = urlparse(ref)
    remote = parsed.scheme not in ("", "file")
    candidates: list[Path] = []
    if not remote:
        candidates.append(Path(unquote(parsed.path) if parsed.scheme == "file" else ref))
    if image_dir is not None:
        name = Path(unquote(parsed.path)).name
        if name:
            candidates.append(image_dir / name)
    for c in candidates:
        if c.is_file():
            return str(c.resolve()), remote
    return None, remote


# --------------------------------------------------------------------------------------------------
# one conversion run
# --------------------------------------------------------------------------------------------------
@dataclass
class ReadResult:
    """What a reader did: the per-file validation reports plus counts of everything not written."""

    out_dir: Path
    reports: dict[str, ValidationReport]
    n_items: int = 0
    n_interactions: int = 0
    n_bare_items: int = 0
    """items referenced by interactions that had no usable metadata row (written with id + domain only)"""
    n_items_filtered: int = 0
    """metadata rows of items no interaction refers to, left out because ``items="interacted"``"""
    n_images_local: int = 0
    """items whose ``image_path`` points to an existing local file"""
    n_image_urls_skipped: int = 0
    """items that had image URLs but no local copy: ``image``/``image_path`` left null (never downloaded)"""
    notes: dict[str, int] = field(default_factory=dict)
    """counted value-level issues that left an optional field null, e.g. ``"price: not a price"``"""

    @property
    def n_rejected(self) -> int:
        return sum(r.n_bad for r in self.reports.values())

    def summary(self) -> str:
        s = (f"{self.out_dir}: {self.n_items} items ({self.n_bare_items} without metadata), "
             f"{self.n_interactions} interactions; {self.n_rejected} rows rejected; "
             f"{self.n_items_filtered} metadata rows of never-interacted items left out; "
             f"images: {self.n_images_local} local, {self.n_image_urls_skipped} URL-only skipped")
        if self.notes:
            s += "; " + ", ".join(f"{k}: {v}" for k, v in sorted(self.notes.items()))
        return s

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items, "n_interactions": self.n_interactions,
            "n_bare_items": self.n_bare_items, "n_items_filtered": self.n_items_filtered,
            "n_images_local": self.n_images_local, "n_image_urls_skipped": self.n_image_urls_skipped,
            "n_rejected": self.n_rejected, "notes": dict(self.notes),
        }


class _DomainItems:
    __slots__ = ("interacted", "described")

    def __init__(self) -> None:
        self.interacted: dict[str, tuple[str, int]] = {}  # raw item id -> (interactions file, first line)
        self.described: set[str] = set()


class Conversion:
    """The state of one reader run: the writer, the per-domain item bookkeeping and the counts."""

    def __init__(self, writer: CanonicalWriter, *, items: ItemMode = "interacted",
                 image_dir: str | Path | None = None) -> None:
        if items not in ("interacted", "all"):
            raise ValueError(f"items must be 'interacted' or 'all', got {items!r}")
        self.writer = writer
        self.items_mode = items
        self.image_dir = Path(image_dir) if image_dir is not None else None
        if self.image_dir is not None and not self.image_dir.is_dir():
            raise FileNotFoundError(f"image directory not found: {self.image_dir}")
        self._domains: dict[str, _DomainItems] = {}
        self.n_items = self.n_interactions = self.n_bare_items = self.n_items_filtered = 0
        self.n_images_local = self.n_image_urls_skipped = 0
        self.notes: Counter[str] = Counter()

    # --- sources ----------------------------------------------------------------------------------
    def report(self, path: str | Path) -> ValidationReport:
        """The report of one source, a :class:`TalliedReport` (rejections counted by reason)."""
        key = str(path)
        rep = self.writer.reports.get(key)
        if rep is None:
            rep = self.writer.reports[key] = TalliedReport(key)
        return rep

    def reject(self, rep: ValidationReport, line: int, field_name: str, reason: str) -> None:
        self.writer.reject(rep, line, field_name, reason)

    @contextlib.contextmanager
    def rejecting(self, rep: ValidationReport, line: int) -> Iterator[None]:
        """Reject ``line`` when its body raises :class:`Rejected` (and go on with the next line): the
        body of a reader's loop reads its fields with :func:`parsed` inside ``with conv.rejecting(...)``."""
        try:
            yield
        except Rejected as e:
            self.reject(rep, line, e.field_name, e.reason)

    def lines(self, rep: ValidationReport, path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
        """Stream ``(line number, text without line ending)`` of a (possibly gzipped) file.

        Lines are split on ``\\n`` only (``\\r\\n`` endings are stripped); blank lines are skipped;
        a line whose bytes are not valid ``encoding`` is rejected (field ``"row"``) and skipped.
        A corrupt or truncated ``.gz`` raises :class:`DataValidationError` naming the file.

        With a callback installed by :func:`raypipe.data.formats.tracking.on_bytes_read`, the bytes read
        from disk are reported every :data:`PROGRESS_EVERY_LINES` lines and when the file is done.
        """
        n = 0
        on_bytes = bytes_callback()
        key, reported = str(path), 0
        try:
            with open_counted(path) as (f, disk):
                try:
                    for n, raw in enumerate(f, 1):
                        if on_bytes is not None and n % PROGRESS_EVERY_LINES == 0:
                            pos = disk.tell()
                            on_bytes(key, pos - reported)
                            reported = pos
                        try:
                            text = raw.decode(encoding)
                        except UnicodeDecodeError as e:
                            self.reject(rep, n, ROW, f"not valid {encoding} ({e.reason} at byte {e.start})")
                            continue
                        if n == 1:
                            text = text.lstrip("\ufeff")
                        text = text.rstrip("\r\n")
                        if text.strip():
                            yield n, text
                finally:
                    if on_bytes is not None and not disk.closed:
                        on_bytes(key, disk.tell() - reported)
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise DataValidationError(f"{path}: cannot read compressed data after line {n}: {e}") from e

    # --- records ----------------------------------------------------------------------------------
    def _domain(self, domain: str) -> _DomainItems:
        d = self._domains.get(domain)
        if d is None:
            d = self._domains[domain] = _DomainItems()
        return d

    def add_interaction(self, rep: ValidationReport, line: int, *, domain: str, user_id: Any,
                        raw_item_id: Any, timestamp: Any, rating: float | None = None,
                        review: str | None = None) -> bool:
        raw = raw_item_id.strip() if isinstance(raw_item_id, str) else raw_item_id
        rec = {
            "user_id": user_id.strip() if isinstance(user_id, str) else user_id,
            "item_id": f"{domain}/{raw}" if isinstance(raw, str) else raw,
            "domain": domain,
            "timestamp": timestamp,
            "rating": rating,
            "review": review,
        }
        ok = self.writer.add_interaction(rec, rep, line)
        if ok:
            self.n_interactions += 1
            self._domain(domain).interacted.setdefault(raw, (rep.file, line))
        return ok

    def wants_item(self, domain: str, raw_item_id: str) -> bool:
        """Whether metadata for this item should be written (always, unless ``items="interacted"``)."""
        return self.items_mode == "all" or raw_item_id.strip() in self._domain(domain).interacted

    def skip_item(self, rep: ValidationReport) -> None:
        """Count a well-formed metadata row left out because no interaction refers to its item."""
        rep.n_rows += 1
        self.n_items_filtered += 1

    def add_item(self, rep: ValidationReport, line: int, *, domain: str, raw_item_id: Any,
                 title: str | None = None, category: str | None = None, brand: str | None = None,
                 description: str | None = None, price: Any = None,
                 image_refs: Iterable[Any] = ()) -> bool:
        """Write one item from its metadata row (``price`` may be raw text; see :func:`parse_price`)."""
        raw = raw_item_id.strip() if isinstance(raw_item_id, str) else raw_item_id
        if isinstance(raw, str) and not self.wants_item(domain, raw):
            self.skip_item(rep)
            return False
        try:
            price_v = parse_price(price)
        except ValueError:
            price_v = None
            self.notes["price: not a price, left null"] += 1
        image_path, any_remote = None, False
        refs = [r for r in image_refs if isinstance(r, str) and r.strip()]
        for ref in refs:
            image_path, remote = local_image(ref, self.image_dir)
            any_remote |= remote
            if image_path:
                break
        if image_path is None and self.image_dir is not None and isinstance(raw, str) and "/" not in raw:
            for suffix in IMAGE_SUFFIXES:
                p = self.image_dir / f"{raw}{suffix}"
                if p.is_file():
                    image_path = str(p.resolve())
                    break
        rec = {
            "item_id": f"{domain}/{raw}" if isinstance(raw, str) else raw,
            "domain": domain,
            "title": title, "category": category, "brand": brand, "description": description,
            "price": price_v, "image": None, "image_path": image_path,
        }
        ok = self.writer.add_item(rec, rep, line)
        if ok:
            self.n_items += 1
            self._domain(domain).described.add(raw)
            if image_path is not None:
                self.n_images_local += 1
            elif any_remote:
                self.n_image_urls_skipped += 1
        return ok

    def add_bare_items(self, domain: str) -> int:
        """Write every item of ``domain`` that interactions refer to but no metadata row described."""
        d = self._domain(domain)
        n = 0
        for raw, (src, line) in d.interacted.items():
            if raw in d.described:
                continue
            rep = self.report(src + BARE_ITEMS_SUFFIX)
            if self.writer.add_item({"item_id": f"{domain}/{raw}", "domain": domain}, rep, line):
                d.described.add(raw)
                n += 1
        self.n_items += n
        self.n_bare_items += n
        if n:
            log.info("%s: %d interacted items have no metadata row; written with id and domain only", domain, n)
        return n

    def result(self, out_dir: Path, reports: dict[str, ValidationReport]) -> ReadResult:
        return ReadResult(
            out_dir=out_dir, reports=reports, n_items=self.n_items, n_interactions=self.n_interactions,
            n_bare_items=self.n_bare_items, n_items_filtered=self.n_items_filtered,
            n_images_local=self.n_images_local, n_image_urls_skipped=self.n_image_urls_skipped,
            notes=dict(self.notes),
        )


def dataset_info(name: str, version: str, domains: Sequence[tuple[str, str]], provenance: str,
                 licence: str, extra: Mapping[str, Any] | None = None) -> DatasetInfo:
    """Build ``dataset.json``'s content, checking the domain names (unique, non-empty, no ``/``)."""
    seen: set[str] = set()
    for dom, _ in domains:
        if not isinstance(dom, str) or not dom.strip() or "/" in dom or dom != dom.strip():
            raise ValueError(f"invalid domain name {dom!r}: must be a non-empty string without '/'")
        if dom in seen:
            raise ValueError(f"domain {dom!r} is given twice")
        seen.add(dom)
    if not domains:
        raise ValueError("at least one domain is needed")
    return DatasetInfo(name=name, version=version, domains=[DomainInfo(d, r) for d, r in domains],  # type: ignore[arg-type]
                       provenance=provenance, licence=licence, extra=dict(extra or {}))


def convert(out_dir: str | Path, info: DatasetInfo, body: Callable[[Conversion], None], *,
            fmt: str, items: ItemMode = "interacted", image_dir: str | Path | None = None,
            max_bad_fraction: float = 0.5) -> ReadResult:
    """Run ``body`` against a fresh :class:`Conversion` and publish the dataset atomically.

    ``body`` streams the sources into the conversion; afterwards every domain gets its bare items,
    the reader's counts are recorded in ``dataset.json`` (``extra["reader"]``) and the writer
    finishes — which raises :class:`DataValidationError` naming a file that is mostly bad.  On any
    error ``out_dir`` is left as it was (absent, or the previous complete dataset).
    """
    out = Path(out_dir)
    with CanonicalWriter(out, info, max_bad_fraction=max_bad_fraction) as w:
        conv = Conversion(w, items=items, image_dir=image_dir)
        body(conv)
        for d in info.domains:
            conv.add_bare_items(d.name)
        info.extra["format"] = fmt
        info.extra["reader"] = conv.result(out, {}).to_dict() | {
            "n_rejected": sum(r.n_bad for r in w.reports.values())}
        reports = w.finish()
    result = conv.result(out, reports)
    log.info("%s: %s", fmt, result.summary())
    return result
