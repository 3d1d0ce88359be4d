"""Items deleted from the served catalogue (``<state_dir>/deleted.jsonl``), shared by every replica.

A retriever replica applies the log before its next answer (:meth:`raypipe.serve.catalogue.Catalogue.sync`):
the item leaves its domain's ANN graph (an hnswlib tombstone), the popular fallback, ``/rank``,
``/similar`` and item look-ups; a replica that starts later replays the whole log.  A deleted id stays
reserved: it cannot be onboarded again (a new id can).  Histories that name a deleted item still use it:
the user did interact with it.
"""
from __future__ import annotations

import time
from pathlib import Path

from raypipe.serve.jsonlog import JsonLinesLog

DELETIONS_FILE = "deleted.jsonl"


class AlreadyDeletedError(ValueError):
    def __init__(self, item_id: str) -> None:
        super().__init__(f"item {item_id!r} is already deleted")
        self.item_id = item_id


class DeletionLog(JsonLinesLog):
    """The ids deleted so far (by anyone), in the order they were deleted."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.ids: set[str] = set()

    def poll(self) -> list[str]:
        """Ids deleted (by anyone) since the last poll, oldest first; one ``stat`` when idle."""
        new = [r["item_id"] for r in self.read_new() if isinstance(r.get("item_id"), str)]
        new = [i for i in dict.fromkeys(new) if i not in self.ids]
        self.ids.update(new)
        return new

    def delete(self, item_id: str) -> None:
        """Log the deletion of ``item_id``; :class:`AlreadyDeletedError` when it is (checked under the lock)."""
        def check() -> None:
            self.poll()
            if item_id in self.ids:
                raise AlreadyDeletedError(item_id)

        self.append_locked([{"item_id": item_id, "deleted": time.time()}], check)
        self.poll()
