"""Writing and reading canonical dataset directories.

:class:`CanonicalWriter` is the one way readers produce a dataset: they stream source rows in as
dicts with their source file and line; each row is validated (``schema.validate_*``), counted, and
either buffered into a Parquet batch or recorded as a :class:`RowError`.  The whole directory appears
atomically when :meth:`CanonicalWriter.finish` succeeds, with ``dataset.json`` and
``validation.json`` (every report) beside the data.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.data.schema import (
    DATASET_FILE,
    INTERACTIONS_FILE,
    ITEMS_FILE,
    SCHEMAS,
    VALIDATORS,
    DataValidationError,
    DatasetInfo,
    Kind,
    ValidationReport,
    check_table_schema,
)
from raypipe.io import AtomicParquetWriter, atomic_dir, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

VALIDATION_FILE = "validation.json"


class _TableSink:
    """Validated, batched rows of one kind, streamed to a Parquet file."""

    def __init__(self, path: Path, kind: Kind, batch_rows: int) -> None:
        self.kind = kind
        self.schema = SCHEMAS[kind]
        self.validate = VALIDATORS[kind]
        self.batch_rows = batch_rows
        self.buffer: list[dict[str, Any]] = []
        self.writer = AtomicParquetWriter(path, self.schema)
        self.seen_ids: set[str] | None = set() if kind == "items" else None

    def add(self, rec: Mapping[str, Any], report: ValidationReport, line: int) -> bool:
        report.n_rows += 1
        problem = self.validate(rec)
        if problem is None and self.seen_ids is not None:
            if rec["item_id"] in self.seen_ids:
                problem = ("item_id", f"duplicate item_id {rec['item_id']!r} (first occurrence kept)")
            else:
                self.seen_ids.add(rec["item_id"])
        if problem is not None:
            report.add_error(line, *problem)
            return False
        self.buffer.append({f.name: rec.get(f.name) for f in self.schema})
        if len(self.buffer) >= self.batch_rows:
            self.flush()
        return True

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_batch(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.buffer = []


class CanonicalWriter:
    """Build a canonical dataset directory from streamed source rows.

    >>> with CanonicalWriter(out_dir, info) as w:          # doctest: +SKIP
    ...     rep = w.report("ratings.csv")
    ...     w.add_interaction({...}, rep, line=2)
    """

    def __init__(self, out_dir: str | Path, info: DatasetInfo, batch_rows: int = 50_000,
                 max_bad_fraction: float = 0.5) -> None:
        self.out_dir = Path(out_dir)
        self.info = info
        self.max_bad_fraction = max_bad_fraction
        self._dir_ctx = atomic_dir(self.out_dir)
        self._tmp = self._dir_ctx.__enter__()
        self.items = _TableSink(self._tmp / ITEMS_FILE, "items", batch_rows)
        self.interactions = _TableSink(self._tmp / INTERACTIONS_FILE, "interactions", batch_rows)
        self.reports: dict[str, ValidationReport] = {}
        self._finished = False

    def report(self, file: str | Path) -> ValidationReport:
        key = str(file)
        if key not in self.reports:
            self.reports[key] = ValidationReport(key)
        return self.reports[key]

    def add_item(self, rec: Mapping[str, Any], report: ValidationReport, line: int) -> bool:
        return self.items.add(rec, report, line)

    def add_interaction(self, rec: Mapping[str, Any], report: ValidationReport, line: int) -> bool:
        return self.interactions.add(rec, report, line)

    def reject(self, report: ValidationReport, line: int, field: str, reason: str) -> None:
        """Count a source row that could not even be parsed into a record."""
        report.n_rows += 1
        report.add_error(line, field, reason)

    def finish(self) -> dict[str, ValidationReport]:
        """Check every report, close the files and move the directory into place (or remove it all)."""
        try:
            return self._finish()
        except BaseException as e:
            self.abort(e)
            raise

    def _finish(self) -> dict[str, ValidationReport]:
        for rep in self.reports.values():
            rep.check(self.max_bad_fraction)
        self.items.flush()
        self.interactions.flush()
        self.items.writer.close()
        self.interactions.writer.close()
        n_items = self.items.writer.rows_written
        n_inter = self.interactions.writer.rows_written
        if n_inter == 0:
            raise DataValidationError(f"{self.out_dir}: no valid interactions were read")
        write_text_atomic(self._tmp / DATASET_FILE, self.info.to_json() + "\n")
        write_json_atomic(
            self._tmp / VALIDATION_FILE,
            {"items": n_items, "interactions": n_inter,
             "reports": [r.to_dict() for r in self.reports.values()]},
        )
        self._dir_ctx.__exit__(None, None, None)
        self._finished = True
        for rep in self.reports.values():
            (log.warning if rep.n_bad else log.info)(rep.summary())
        return self.reports

    def abort(self, exc: BaseException) -> None:
        for sink in (self.items, self.interactions):
            sink.writer.abort(exc)
        self._dir_ctx.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> "CanonicalWriter":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.abort(exc)
        elif not self._finished:
            self.finish()


@dataclass
class CanonicalDataset:
    """A canonical dataset directory, opened lazily (nothing is loaded until asked)."""

    path: Path
    info: DatasetInfo

    @classmethod
    def open(cls, path: str | Path) -> "CanonicalDataset":
        path = Path(path)
        for name in (ITEMS_FILE, INTERACTIONS_FILE, DATASET_FILE):
            if not (path / name).exists():
                raise DataValidationError(f"{path}: not a canonical dataset ({name} is missing)")
        ds = cls(path, DatasetInfo.load(path / DATASET_FILE))
        for kind, name in (("items", ITEMS_FILE), ("interactions", INTERACTIONS_FILE)):
            schema = pq.read_schema(path / name)
            check_table_schema(schema.empty_table(), kind, str(path / name))  # type: ignore[arg-type]
        return ds

    @property
    def items_path(self) -> Path:
        return self.path / ITEMS_FILE

    @property
    def interactions_path(self) -> Path:
        return self.path / INTERACTIONS_FILE

    def items(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.items_path, columns=columns)

    def interactions(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.interactions_path, columns=columns)

    def iter_batches(self, kind: Kind, batch_size: int = 65_536,
                     columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        path = self.items_path if kind == "items" else self.interactions_path
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
