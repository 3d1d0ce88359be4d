"""What a conversion tells its caller while it runs: bytes read, and rejected rows tallied by reason.

* **Bytes read.**  :func:`on_bytes_read` installs a callback for the conversions run inside the
  ``with`` block; :meth:`raypipe.data.formats.common.Conversion.lines` calls it with
  ``(file, n_bytes)`` as it consumes a source file.  The bytes are those read from the file on disk,
  so for a ``.gz`` file they are *compressed* bytes and the total equals the file's size.  The readers'
  signatures do not change: the callback travels in a :class:`contextvars.ContextVar`.
* **Rejections by reason.**  :class:`TalliedReport` is the :class:`ValidationReport` every reader's
  source file gets.  Besides the first ``max_kept`` errors verbatim it counts *every* rejected row by
  ``(field, reason kind)`` — the reason with its quoted values and numbers masked, so
  ``"overall: expected a number, got 'five'"`` and ``"... got 'x'"`` are one kind — and keeps the first
  few rows of each kind as examples.  Memory stays bounded: at most :data:`MAX_KINDS` kinds per file,
  later kinds are counted under :data:`OTHER_KIND`.
"""
from __future__ import annotations

import contextlib
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from raypipe.data.schema import ValidationReport

BytesCallback = Callable[[str, int], None]
"""``callback(file, n_bytes)``: ``n_bytes`` more bytes of ``file`` were read from disk."""

MAX_KINDS = 50
OTHER_KIND = "(other reasons)"
EXAMPLES_PER_KIND = 3

_ON_BYTES: ContextVar[BytesCallback | None] = ContextVar("raypipe_formats_on_bytes", default=None)

_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")


@contextlib.contextmanager
def on_bytes_read(callback: BytesCallback) -> Iterator[None]:
    """Report the bytes every conversion inside this block reads from its source files."""
    token = _ON_BYTES.set(callback)
    try:
        yield
    finally:
        _ON_BYTES.reset(token)


def bytes_callback() -> BytesCallback | None:
    """The callback installed by the innermost :func:`on_bytes_read`, if any."""
    return _ON_BYTES.get()


def reason_kind(reason: str) -> str:
    """A rejection reason with its varying parts masked: quoted values → ``'…'``, numbers → ``N``."""
    return _NUMBER.sub("N", _QUOTED.sub("'…'", reason))


@dataclass
class ReasonTally:
    """Every rejected row of one ``(field, reason kind)`` in one file: the count and the first rows."""

    field: str
    kind: str
    count: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    """``(line, reason verbatim)`` of the first :data:`EXAMPLES_PER_KIND` rows"""

    def to_dict(self, file: str) -> dict[str, Any]:
        return {"field": self.field, "reason": self.kind, "count": self.count,
                "examples": [{"file": file, "line": line, "reason": reason} for line, reason in self.examples]}


@dataclass
class TalliedReport(ValidationReport):
    """A :class:`ValidationReport` that also counts every rejected row by ``(field, reason kind)``."""

    tallies: dict[tuple[str, str], ReasonTally] = field(default_factory=dict)

    def add_error(self, line: int, field_name: str, reason: str) -> None:
        super().add_error(line, field_name, reason)
        key = (field_name, reason_kind(reason))
        tally = self.tallies.get(key)
        if tally is None:
            if len(self.tallies) >= MAX_KINDS:
                key = (field_name, OTHER_KIND)
                tally = self.tallies.get(key)
            if tally is None:
                tally = self.tallies[key] = ReasonTally(*key)
        tally.count += 1
        if len(tally.examples) < EXAMPLES_PER_KIND:
            tally.examples.append((line, reason))

    def reasons(self) -> list[ReasonTally]:
        """The tallies, most frequent first (ties in the order first seen)."""
        return sorted(self.tallies.values(), key=lambda t: -t.count)
