"""The ANN retriever and item catalogue behind ``/recommend`` and ``GET /items/{id}``.

* One hnswlib graph per domain (:class:`raypipe.index.HNSWIndex`, inner-product space, because the
  sequential models score ``user · item``), so a domain-filtered query is a plain graph search with no
  per-candidate filter callback; a query without a domain merges the per-domain top-k.
* ``exclude`` (e.g. the user's history) is honoured by over-fetching ``k + |exclude|`` and dropping.
* Popularity fallback: a domain's items by interaction count (ties: item index order), for histories
  the model knows nothing about.  Without live popularity, onboarded items have no interactions and
  never appear there.
* Live popularity (:meth:`Catalogue.apply_popularity`, models with a popularity coordinate such as
  PreRec's ``[V, Z]``): the items whose popularity term changed get their vectors replaced in the graphs
  (hnswlib updates a point in place), onboarded items included (their terms come from their own live
  counts; before any, the term of an item without interactions), and the fallback ranks trained and
  onboarded items by recent interactions (then trained items by all of them, then onboarded ones).
* Domains can be added while serving (:meth:`Catalogue.add_domain`, a brand-new market or category):
  an empty graph that onboarded items fill.
* Onboarded items arrive through :class:`raypipe.serve.onboarding.OnboardingLog`; :meth:`Catalogue.sync`
  applies new records (one ``stat`` when there are none) and is called before every read.
* The graphs of the trained items are cached on disk, keyed by the model weights and HNSW settings,
  so a restarted or added replica loads instead of rebuilding them.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from raypipe.index import HNSWIndex
from raypipe.serve.deletions import DeletionLog
from raypipe.serve.onboarding import OnboardingLog, record_vector

log = logging.getLogger(__name__)


class UnknownDomainError(ValueError):
    pass


def _clean(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (np.floating,)):
        return None if np.isnan(v) else float(v)
    return v


class Catalogue:
    def __init__(self, item_ids: Sequence[str], domains: Sequence[str], vectors: np.ndarray,
                 counts: np.ndarray | None = None, attributes: pd.DataFrame | None = None,
                 onboarding_log: OnboardingLog | None = None, *, ef_search: int = 128, M: int = 16,
                 ef_construction: int = 100, num_threads: int = 1, cache_dir: str | Path | None = None,
                 deletion_log: DeletionLog | None = None) -> None:
        """``vectors[i]`` scores item ``item_ids[i]``; ``counts[i]`` is its popularity (default 0); items in
        ``deletion_log`` are left out of every answer (:mod:`raypipe.serve.deletions`)."""
        n = len(item_ids)
        if vectors.shape[0] != n or len(domains) != n:
            raise ValueError(f"{n} ids, {len(domains)} domains, {vectors.shape[0]} vectors")
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.domain_arr = np.asarray(domains, dtype=object)
        self.position = {iid: i for i, iid in enumerate(self.item_ids)}
        self.counts = np.zeros(n, np.int64) if counts is None else np.asarray(counts, np.int64)
        self.attributes = attributes
        self.log = onboarding_log
        self.deletion_log = deletion_log
        #: ids deleted and applied here (out of the graphs, the fallback, look-ups)
        self.deleted: set[str] = set()
        self.dim = int(vectors.shape[1])
        #: the trained items' vectors; copied on the first :meth:`apply_popularity` (which rewrites their last
        #: column), so a catalogue without live popularity holds no second copy
        self.vectors = np.asarray(vectors, np.float32)
        self._own_vectors = False
        #: with live popularity: recent interactions per item, and the term of an item without any
        self.recent: np.ndarray | None = None
        self.zero_term: float | None = None
        self.domains = sorted(set(self.domain_arr))
        self.onboarded: dict[str, dict[str, Any]] = {}
        #: with live popularity: onboarded items' terms as applied to the graphs, and their recent counts
        self.onboarded_term: dict[str, float] = {}
        self.onboarded_recent: dict[str, int] = {}
        self._popular_onboarded: dict[str | None, list[tuple[str, str, int]]] = {}
        self.indexes: dict[str, HNSWIndex] = {}
        self.popular: dict[str, np.ndarray] = {}
        t0 = time.time()
        for d in self.domains:
            rows = np.flatnonzero(self.domain_arr == d)
            # popularity order: count desc, index order among ties (stable sort)
            self.popular[d] = rows[np.argsort(-self.counts[rows], kind="stable")]
            path = Path(cache_dir) / _safe(d) if cache_dir is not None else None
            if path is not None and (path / "meta.json").is_file():
                idx = HNSWIndex.load(path, verify_checksums=False, num_threads=num_threads)
                if len(idx) != len(rows):
                    raise ValueError(f"{path}: cached index has {len(idx)} items, the domain {len(rows)}")
            else:
                idx = HNSWIndex.build(vectors[rows], list(self.item_ids[rows]), space="ip", M=M,
                                      ef_construction=ef_construction, ef_search=ef_search,
                                      num_threads=num_threads)
                if path is not None:
                    idx.save(path)
            self.indexes[d] = idx
        all_rows = np.argsort(-self.counts, kind="stable")
        self.popular_all = all_rows
        log.info("catalogue of %d items in %d domains ready in %.1fs", n, len(self.domains), time.time() - t0)
        self.sync()

    # ------------------------------------------------------------------------------------ updates
    def sync(self) -> int:
        """Insert onboarded items logged since the last call, then drop items deleted since; returns how
        many have been onboarded."""
        if self.log is not None:
            new = self.log.poll()
            for d in {r["domain"] for r in new}:
                recs = [r for r in new if r["domain"] == d]
                self.add_domain(d)  # a domain known to the app but absent from the model's catalogue
                self.indexes[d].add_items(self._onboarded_vectors(recs), [r["item_id"] for r in recs])
                for r in recs:
                    self.onboarded[r["item_id"]] = r
        if self.deletion_log is not None:
            self.deletion_log.poll()  # its own deletes poll too: apply every id logged, not only the poll's news
            if len(self.deletion_log.ids) > len(self.deleted):  # (a set difference only when there is news)
                self._apply_deletions(sorted(self.deletion_log.ids - self.deleted))
        return 0 if self.log is None else self.log.count

    def _apply_deletions(self, item_ids: list[str]) -> None:
        """Deleted items leave their graphs (hnswlib tombstones) and every read (:attr:`deleted`)."""
        for item_id in item_ids:
            found = self._vector_of(item_id)
            if found is not None and item_id in self.indexes[found[1]]:
                self.indexes[found[1]].mark_deleted([item_id])
            self.deleted.add(item_id)

    def add_domain(self, domain: str) -> bool:
        """An empty graph for a domain the model was not trained on (filled by onboarded items); False when
        the domain exists."""
        if domain in self.indexes:
            return False
        self.indexes[domain] = HNSWIndex(space="ip", dim=self.dim, ef_search=64)
        self.domains = sorted(set(self.domains) | {domain})
        return True

    def _onboarded_vectors(self, recs: list[dict[str, Any]]) -> np.ndarray:
        v = np.asarray([record_vector(r) for r in recs], np.float32).reshape(len(recs), self.dim)
        if self.zero_term is not None:  # its live term; before any counts, the term of a count of 0
            v[:, -1] = [self.onboarded_term.get(r["item_id"], self.zero_term) for r in recs]
        return v

    def apply_popularity(self, term: np.ndarray, recent: np.ndarray, zero_term: float,
                         onboarded: Mapping[str, tuple[float, int]] | None = None) -> int:
        """Set the popularity coordinate (the vectors' last) of every trained item to ``term`` and rank the
        fallback by ``recent`` interactions; ``onboarded``: ``item_id -> (term, recent)`` of onboarded items
        (the others get ``zero_term`` and 0).  Returns how many trained and onboarded item vectors changed."""
        term, recent = np.asarray(term, np.float32), np.asarray(recent, np.int64)
        if term.shape != (len(self.item_ids),) or recent.shape != term.shape:
            raise ValueError(f"need {len(self.item_ids)} popularity terms and counts, got {term.shape}, {recent.shape}")
        self.sync()
        onboarded = dict(onboarded or {})
        unknown = set(onboarded) - set(self.onboarded)
        if unknown:
            raise ValueError(f"popularity for items that are not onboarded: {sorted(unknown)[:5]}")
        if not self._own_vectors:
            self.vectors, self._own_vectors = self.vectors.copy(), True
        changed = np.flatnonzero(self.vectors[:, -1] != term)
        self.vectors[changed, -1] = term[changed]
        # a re-added id would be un-deleted: deleted items keep their new term out of the graphs
        live = changed[[i not in self.deleted for i in self.item_ids[changed]]] if self.deleted else changed
        for d in self.domains:
            rows = live[self.domain_arr[live] == d]
            if len(rows):
                self.indexes[d].add_items(self.vectors[rows], list(self.item_ids[rows]))
        old_zero, self.zero_term = self.zero_term, float(zero_term)
        new_term = {i: float(np.float32(onboarded.get(i, (zero_term, 0))[0])) for i in self.onboarded}
        moved = [i for i in self.onboarded if i not in self.deleted
                 and (old_zero is None or new_term[i] != self.onboarded_term.get(i, old_zero))]
        self.onboarded_term = new_term
        self.onboarded_recent = {i: int(onboarded.get(i, (0.0, 0))[1]) for i in self.onboarded}
        for d in {self.onboarded[i]["domain"] for i in moved}:
            recs = [self.onboarded[i] for i in moved if self.onboarded[i]["domain"] == d]
            self.indexes[d].add_items(self._onboarded_vectors(recs), [r["item_id"] for r in recs])
        self.recent = recent
        for d in self.domains:
            rows = np.flatnonzero(self.domain_arr == d)
            self.popular[d] = rows[np.lexsort((-self.counts[rows], -recent[rows]))]
        self.popular_all = np.lexsort((-self.counts, -recent))
        # onboarded items by recent interactions, onboarding order among ties (a stable sort)
        ranked = sorted(((i, self.onboarded[i]["domain"], n) for i, n in self.onboarded_recent.items()),
                        key=lambda t: -t[2])
        self._popular_onboarded = {None: ranked, **{d: [t for t in ranked if t[1] == d] for d in self.domains}}
        return len(changed) + len(moved)

    # ------------------------------------------------------------------------------------ reads
    def check_domain(self, domain: str | None) -> None:
        if domain is not None and domain not in self.indexes:
            raise UnknownDomainError(f"unknown domain {domain!r}; known: {self.domains}")

    def search(self, vector: np.ndarray, domain: str | None, k: int,
               exclude: Collection[str] = ()) -> list[tuple[str, str, float]]:
        """Top-``k`` ``(item_id, domain, score)`` by inner product, ``exclude`` left out, best first."""
        self.sync()
        self.check_domain(domain)
        excl = set(exclude)
        want = k + len(excl)
        q = np.asarray(vector, np.float32)[None, :]
        hits: list[tuple[str, str, float]] = []
        for d in ([domain] if domain is not None else self.domains):
            idx = self.indexes[d]
            if not len(idx):
                continue
            ids, scores = idx.query(q, min(want, len(idx)))
            hits += [(str(i), d, float(s)) for i, s in zip(ids[0], scores[0]) if i not in excl]
        hits.sort(key=lambda h: -h[2])
        return hits[:k]

    def popular_items(self, domain: str | None, k: int, exclude: Collection[str] = ()) -> list[tuple[str, str, float]]:
        """The fallback: top-``k`` ``(item_id, domain, count)`` by popularity, ``exclude`` left out (with
        live popularity: by recent interactions, the count returned)."""
        self.sync()
        self.check_domain(domain)
        rows = self.popular.get(domain, np.zeros(0, np.int64)) if domain is not None else self.popular_all
        excl = set(exclude)
        counts = self.counts if self.recent is None else self.recent
        trained = ((str(self.item_ids[r]), str(self.domain_arr[r]), int(counts[r])) for r in rows)
        extra = iter(self._popular_onboarded.get(domain, []) if self.recent is not None else [])
        out: list[tuple[str, str, float]] = []
        a, b = next(trained, None), next(extra, None)
        while (a is not None or b is not None) and len(out) < k:
            # merge two lists sorted by count: a trained item first among ties
            if b is None or (a is not None and a[2] >= b[2]):
                hit, a = a, next(trained, None)
            else:
                hit, b = b, next(extra, None)
            if hit[0] not in excl and hit[0] not in self.deleted:
                out.append((hit[0], hit[1], float(hit[2])))
        return out

    def item_vector(self, item_id: str) -> tuple[np.ndarray, str] | None:
        """An item's vector as its graph holds it (trained or onboarded) and its domain; ``None``: unknown."""
        self.sync()
        return self._vector_of(item_id)

    def _vector_of(self, item_id: str) -> tuple[np.ndarray, str] | None:
        if item_id in self.deleted:
            return None
        pos = self.position.get(item_id)
        if pos is not None:
            return self.vectors[pos], str(self.domain_arr[pos])
        rec = self.onboarded.get(item_id)
        return None if rec is None else (self._onboarded_vectors([rec])[0], rec["domain"])

    def score_items(self, vector: np.ndarray | None, item_ids: Sequence[str]
                    ) -> tuple[list[tuple[str, str, float]], list[str]]:
        """The given items scored, best first (a stable sort: ties keep the given order), and the unknown
        ids: by inner product with ``vector``, or with ``vector=None`` by popularity (the fallback's count:
        the dataset's interactions, or recent ones with live popularity; an onboarded item's own)."""
        self.sync()
        scored: list[tuple[str, str, float]] = []
        unknown: list[str] = []
        q = None if vector is None else np.asarray(vector, np.float32)
        for i in item_ids:
            found = self._vector_of(i)
            if found is None:
                unknown.append(i)
                continue
            v, d = found
            if q is not None:
                scored.append((i, d, float(v @ q)))
                continue
            pos = self.position.get(i)
            if pos is None:
                count = self.onboarded_recent.get(i, 0) if self.recent is not None else 0
            else:
                count = int((self.counts if self.recent is None else self.recent)[pos])
            scored.append((i, d, float(count)))
        scored.sort(key=lambda h: -h[2])
        return scored, unknown

    def similar(self, item_id: str, k: int) -> tuple[str, list[tuple[str, str, float]]] | None:
        """The item's domain and the top-``k`` ``(item_id, domain, score)`` there by inner product with its
        vector, the item left out; ``None``: unknown item."""
        found = self.item_vector(item_id)
        if found is None:
            return None
        vector, domain = found
        return domain, self.search(vector, domain, k, exclude=[item_id])

    def get(self, item_id: str) -> dict[str, Any] | None:
        self.sync()
        if item_id in self.deleted:
            return None
        pos = self.position.get(item_id)
        if pos is not None:
            out: dict[str, Any] = {"item_id": item_id, "domain": str(self.domain_arr[pos]), "onboarded": False,
                                   "popularity": int(self.counts[pos])}
            if self.recent is not None:
                out["recent_interactions"] = int(self.recent[pos])
            if self.attributes is not None and item_id in self.attributes.index:
                out.update({k: _clean(v) for k, v in self.attributes.loc[item_id].items()})
            return out
        rec = self.onboarded.get(item_id)
        if rec is None:
            return None
        recent = self.onboarded_recent.get(item_id, 0)
        return {"item_id": item_id, "domain": rec["domain"], "onboarded": True, "popularity": 0,
                **({"recent_interactions": recent} if self.recent is not None else {}),
                **{k: _clean(v) for k, v in rec.get("attributes", {}).items()}}

    def stats(self) -> dict[str, Any]:
        self.sync()
        return {"items": int(len(self.item_ids)) + len(self.onboarded) - len(self.deleted),
                "trained_items": int(len(self.item_ids)), "onboarded_items": len(self.onboarded),
                "deleted_items": len(self.deleted), "domains": self.domains,
                "per_domain": {d: len(i) for d, i in self.indexes.items()}}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
