"""Small assertions helpers shared by the format-reader tests."""
from __future__ import annotations

from pathlib import Path

from raypipe.data.formats.common import ReadResult


def errors_of(result: ReadResult, file: str | Path) -> list[tuple[int, str]]:
    """``(line, field)`` of every rejected row of one source file, in file order."""
    return [(e.line, e.field) for e in result.reports[str(file)].errors]


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary entries an interrupted atomic write would leave beside its target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))
