"""Domains added while serving: a brand-new market, category or platform, served zero-shot.

A content model (``onboarding=content``: PreRec, UniM2Rec, UniSRec) scores items by their contents, so a
domain it was never trained on can be served from its catalogue alone: ``POST /domains`` registers the
name, ``POST /items`` onboards its items, ``POST /events`` counts its interactions, and ``/recommend``
ranks within it.  The registry is an append-only JSON-lines log under the app's state directory
(:class:`raypipe.serve.jsonlog.JsonLinesLog`), read by every deployment that checks or indexes domains, so
all replicas (and restarted ones) agree on the domains.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable

from raypipe.serve.jsonlog import JsonLinesLog

DOMAINS_FILE = "domains.jsonl"


class DuplicateDomainError(ValueError):
    def __init__(self, domain: str) -> None:
        super().__init__(f"domain {domain!r} already exists")
        self.domain = domain


class DomainRegistry(JsonLinesLog):
    """The served model's domains plus those registered since (``domains.jsonl``)."""

    def __init__(self, path: str | Path, trained: Iterable[str]) -> None:
        super().__init__(path)
        self.trained = frozenset(trained)
        self.added: list[str] = []

    def poll(self) -> list[str]:
        """Domains registered (by anyone) since the last poll, oldest first; one ``stat`` when idle."""
        new = [r["domain"] for r in self.read_new()
               if isinstance(r.get("domain"), str) and r["domain"] not in self.trained and r["domain"] not in self.added]
        new = list(dict.fromkeys(new))
        self.added += new
        return new

    def known(self, domain: str) -> bool:
        if domain in self.trained or domain in self.added:
            return True
        self.poll()
        return domain in self.added

    def names(self) -> list[str]:
        self.poll()
        return sorted(self.trained | set(self.added))

    def register(self, domain: str) -> None:
        """Add ``domain``; :class:`DuplicateDomainError` when it exists (checked under the log's lock)."""
        def check() -> None:
            self.poll()
            if domain in self.trained or domain in self.added:
                raise DuplicateDomainError(domain)

        self.append_locked([{"domain": domain, "created": time.time()}], check)
        self.poll()
