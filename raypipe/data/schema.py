"""Canonical data contract (DESIGN.md "Data contract") and row-level validation.

A dataset is a directory holding ``items.parquet``, ``interactions.parquet`` and ``dataset.json``.
Readers of real formats turn each source row into a plain ``dict`` and hand it to
:class:`raypipe.data.io.CanonicalWriter`, which validates it here.  A bad row never disappears
silently: it becomes a :class:`RowError` (file, line, field, reason) in a :class:`ValidationReport`,
and a file that is mostly bad fails as a whole with :class:`DataValidationError`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import pyarrow as pa

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
DATASET_FILE = "dataset.json"

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("description", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("image", pa.binary()),
        pa.field("image_path", pa.string()),
    ]
)

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("rating", pa.float32()),
        pa.field("review", pa.string()),
    ]
)

Kind = Literal["items", "interactions"]
SCHEMAS: dict[str, pa.Schema] = {"items": ITEMS_SCHEMA, "interactions": INTERACTIONS_SCHEMA}

# Magic numbers of the image encodings the contract accepts in ``image``.
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"


class DataValidationError(ValueError):
    """A source file (or a whole dataset) cannot be turned into the canonical form."""


@dataclass(frozen=True)
class RowError:
    """One rejected source row: where it is and what is wrong with it."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: field '{self.field}': {self.reason}"


@dataclass
class ValidationReport:
    """Counts every row read from one source file; keeps the first ``max_kept`` errors verbatim."""

    file: str
    n_rows: int = 0
    n_bad: int = 0
    errors: list[RowError] = field(default_factory=list)
    max_kept: int = 1000

    @property
    def n_good(self) -> int:
        return self.n_rows - self.n_bad

    def add_error(self, line: int, field_name: str, reason: str) -> None:
        self.n_bad += 1
        if len(self.errors) < self.max_kept:
            self.errors.append(RowError(self.file, line, field_name, reason))

    def check(self, max_bad_fraction: float = 0.5) -> None:
        """Fail loudly when most of the file was unusable (a wrong format, not a few dirty rows)."""
        if self.n_rows == 0:
            raise DataValidationError(f"{self.file}: no rows were read")
        if self.n_bad / self.n_rows > max_bad_fraction:
            first = "; ".join(str(e) for e in self.errors[:3])
            raise DataValidationError(
                f"{self.file}: {self.n_bad} of {self.n_rows} rows are invalid "
                f"(more than {max_bad_fraction:.0%}); is this the right format? First errors: {first}"
            )

    def summary(self) -> str:
        return f"{self.file}: {self.n_good} rows kept, {self.n_bad} rejected of {self.n_rows}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "n_rows": self.n_rows,
            "n_bad": self.n_bad,
            "errors": [dataclasses.asdict(e) for e in self.errors],
        }


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _check_optional_str(rec: Mapping[str, Any], name: str) -> str | None:
    v = rec.get(name)
    if v is None or isinstance(v, str):
        return None
    return f"expected a string or null, got {type(v).__name__}"


def validate_item(rec: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return ``(field, reason)`` for the first problem in an item record, or ``None`` if it is valid."""
    for name in ("item_id", "domain"):
        v = rec.get(name)
        if not _is_str(v) or not v.strip():
            return name, "required non-empty string is missing"
    item_id, domain = rec["item_id"], rec["domain"]
    if not item_id.startswith(domain + "/") or len(item_id) == len(domain) + 1:
        return "item_id", f"must be namespaced as '{domain}/<raw_id>', got {item_id!r}"
    for name in ("title", "category", "brand", "description", "image_path"):
        problem = _check_optional_str(rec, name)
        if problem:
            return name, problem
    price = rec.get("price")
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, (int, float)):
            return "price", f"expected a number or null, got {type(price).__name__}"
        if not math.isfinite(price) or price < 0:
            return "price", f"must be a finite non-negative number, got {price!r}"
    image = rec.get("image")
    if image is not None:
        if not isinstance(image, (bytes, bytearray)):
            return "image", f"expected PNG/JPEG bytes or null, got {type(image).__name__}"
        if not (image.startswith(_PNG_MAGIC) or image.startswith(_JPEG_MAGIC)):
            return "image", "bytes are neither PNG nor JPEG"
    return None


def validate_interaction(rec: Mapping[str, Any]) -> tuple[str, str] | None:
    """Return ``(field, reason)`` for the first problem in an interaction record, or ``None``."""
    for name in ("user_id", "item_id", "domain"):
        v = rec.get(name)
        if not _is_str(v) or not v.strip():
            return name, "required non-empty string is missing"
    if not rec["item_id"].startswith(rec["domain"] + "/"):
        return "item_id", f"must be namespaced as '{rec['domain']}/<raw_id>', got {rec['item_id']!r}"
    ts = rec.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int):
        return "timestamp", f"expected integer seconds, got {ts!r}"
    if ts < 0 or ts > 2**40:
        return "timestamp", f"out of range: {ts}"
    rating = rec.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, (int, float)) or not math.isfinite(rating):
            return "rating", f"expected a finite number or null, got {rating!r}"
    problem = _check_optional_str(rec, "review")
    if problem:
        return "review", problem
    return None


VALIDATORS = {"items": validate_item, "interactions": validate_interaction}


@dataclass
class DomainInfo:
    name: str
    role: Literal["source", "target"]

    def __post_init__(self) -> None:
        if self.role not in ("source", "target"):
            raise DataValidationError(f"domain {self.name!r}: role must be 'source' or 'target', got {self.role!r}")


@dataclass
class DatasetInfo:
    """The ``dataset.json`` beside the two Parquet files."""

    name: str
    version: str
    domains: list[DomainInfo]
    provenance: str
    licence: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source_domains(self) -> list[str]:
        return [d.name for d in self.domains if d.role == "source"]

    @property
    def target_domains(self) -> list[str]:
        return [d.name for d in self.domains if d.role == "target"]

    def role_of(self, domain: str) -> str | None:
        """The declared role of a domain (``None`` when ``dataset.json`` does not list it)."""
        return next((d.role for d in self.domains if d.name == domain), None)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = DATASET_FILE) -> "DatasetInfo":
        try:
            domains = [DomainInfo(x["name"], x["role"]) for x in d["domains"]]
            return cls(
                name=str(d["name"]),
                version=str(d["version"]),
                domains=domains,
                provenance=str(d.get("provenance", "")),
                licence=str(d.get("licence", "")),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError) as e:
            raise DataValidationError(f"{where}: missing or malformed key {e}") from e

    @classmethod
    def load(cls, path: str | Path) -> "DatasetInfo":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataValidationError(f"{path}: cannot read dataset description: {e}") from e
        return cls.from_dict(raw, where=str(path))


def check_table_schema(table: pa.Table, kind: Kind, where: str) -> None:
    """Check that a Parquet table read back has every canonical column with the canonical type."""
    expected = SCHEMAS[kind]
    for f in expected:
        if f.name not in table.schema.names:
            if kind == "items" and f.name in ("image", "image_path"):
                continue  # either image form may be absent
            raise DataValidationError(f"{where}: column '{f.name}' is missing")
        got = table.schema.field(f.name).type
        if got != f.type and not (pa.types.is_large_string(got) and f.type == pa.string()):
            raise DataValidationError(f"{where}: column '{f.name}' has type {got}, expected {f.type}")


def domains_of(infos: Iterable[DomainInfo], role: str) -> list[str]:
    return [d.name for d in infos if d.role == role]
