"""An append-only JSON-lines file shared by Serve replicas through the file system.

Appends hold an exclusive ``flock`` and write each batch with a single ``write`` on an ``O_APPEND``
descriptor (then ``fsync``); readers only consume complete lines, so they never see half a record, and a
torn last line (a crash mid-write) is skipped, never glued to the next record.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class JsonLinesLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._offset = 0

    def read_new(self) -> list[dict[str, Any]]:
        """Complete records appended (by anyone) since the last read.  Costs one ``stat`` when idle."""
        size = self.path.stat().st_size
        if size <= self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            raw = f.read(size - self._offset)
        end = raw.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        out = []
        for line in raw[:end].split(b"\n"):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line (%d bytes)", self.path, len(line))
        return out

    def append_locked(self, records: Sequence[dict[str, Any]], check: Callable[[], None] = lambda: None) -> None:
        """Append ``records`` in one write under the lock; ``check()`` runs under the lock first and may
        raise to refuse the batch (nothing is written then)."""
        payload = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            check()
            size = os.fstat(fd).st_size
            if size:  # a torn last line (crash mid-write) must not swallow our first record
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        payload = b"\n" + payload
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
