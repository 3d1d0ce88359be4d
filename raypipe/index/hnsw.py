"""An hnswlib approximate-nearest-neighbour index keyed by string item ids.

IDP (eq. 8–9) finds each target item's top-m source items with hnswlib, and the Serve app's ANN
retriever answers "top-k items for this user vector, only in domain X" from the same index while the
CDIM matcher live-inserts newly generated item embeddings.  :class:`HNSWIndex` is that shared piece.

Scores
------
:meth:`HNSWIndex.query` and :func:`exact_search` return **similarities: higher is better**, sorted
descending along each row:

==========  ====================================  ===========================================
space       hnswlib distance ``d``                score returned here
==========  ====================================  ===========================================
``cosine``  ``1 - cos(q, x)``                     ``1 - d = cos(q, x)``  (in [-1, 1])
``ip``      ``1 - <q, x>``                        ``1 - d = <q, x>``  (the raw inner product)
``l2``      ``||q - x||²`` (squared, no sqrt)     ``-d = -||q - x||²``  (negative *squared* L2)
==========  ====================================  ===========================================

For ``cosine``, hnswlib L2-normalises vectors when they are added and queries when they are searched,
so :meth:`HNSWIndex.get_vectors` returns the *normalised* stored vectors.  A zero vector has no
direction and is rejected in the cosine space.

k larger than what can be returned
----------------------------------
``k`` is **clamped**: each query returns ``min(k, number of eligible live items)`` columns, where
"eligible" means not deleted and passing the filters (``filter_ids`` / ``domain``).  An empty index
(or an empty filter) gives arrays of shape ``[q, 0]``.  ``k < 1`` raises ``ValueError``.

Filtering
---------
``query(..., domain="books")`` keeps only items of that domain (a label → domain-code list is kept
beside the graph); ``filter_ids`` is either a collection of allowed item ids or a predicate
``Callable[[str], bool]`` on item ids.  Filters combine with AND and are passed to hnswlib's
``filter=`` callable, so the graph search itself skips the other items (no over-fetch-then-drop).
When the eligible set is small (``<= exact_filter_threshold`` items) or hnswlib cannot find ``k``
eligible items in the graph (its "contiguous 2D array" error: very selective filter, many deletions),
the query falls back to exact search over the eligible items, so a filtered result is never short.

Updates
-------
Every item id owns one hnswlib integer label for its lifetime (labels are 0, 1, 2, … in order of first
insertion).  :meth:`HNSWIndex.add_items` with an id that already exists *replaces* its vector in place:
hnswlib's ``addPoint`` on an existing label runs ``updatePoint``, which rewrites the vector and repairs
the neighbour lists around it; if that id had been deleted it is un-deleted.  :meth:`mark_deleted`
sets hnswlib's tombstone, which search skips; the slot is kept, so re-adding the id is cheap, and
memory held by deleted items is only reclaimed by rebuilding the index.  When ``max_elements`` is
``None`` the capacity grows (doubling, ``resize_index``) as items arrive; a given ``max_elements`` is a
hard cap.

Thread safety
-------------
hnswlib searches may run concurrently with each other but not with inserts, updates, deletions or
resizes.  A reader–writer lock guards the index: :meth:`query`, :meth:`get_vectors` and :meth:`save`
share it (knn_query releases the GIL, so queries from several Serve threads run in parallel), while
:meth:`add_items`, :meth:`mark_deleted` and :meth:`set_ef` take it exclusively.  Both sides are
re-entrant for the holding thread.  Filter predicates run inside the read side and must not call
``add_items``/``mark_deleted`` on the same index.

On disk (:meth:`HNSWIndex.save`, written into a temporary directory that is renamed into place)
----------------------------------------------------------------------------------------------
``index.bin``       hnswlib's own binary (graph + vectors + tombstones)
``labels.parquet``  ``label`` (int64) → ``item_id`` (str), ``domain`` (str, nullable), ``deleted`` (bool)
``meta.json``       format name/version, space, dim, count, live_count, max_elements/growable, M,
                    ef_construction, ef_search, the size and SHA-256 of the two files, user metadata
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import hnswlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.io import atomic_dir, sha256_file

logger = logging.getLogger(__name__)

Space = Literal["cosine", "ip", "l2"]
SPACES: tuple[str, ...] = ("cosine", "ip", "l2")
FORMAT_NAME = "raypipe.hnsw"
FORMAT_VERSION = 1
INDEX_FILE = "index.bin"
LABELS_FILE = "labels.parquet"
META_FILE = "meta.json"
_NO_DOMAIN = -1
_MIN_CAPACITY = 16

IdFilter = Collection[str] | Callable[[str], bool]


class IndexFormatError(ValueError):
    """A saved index directory is incomplete, corrupted, or inconsistent with its ``meta.json``."""


class IndexFullError(ValueError):
    """An insert would exceed the fixed ``max_elements`` the index was built with."""


# --------------------------------------------------------------------------------------------------
# exact reference search
# --------------------------------------------------------------------------------------------------
def _as_matrix(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a [n, d] or [d] array, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _normalise(x: np.ndarray) -> np.ndarray:
    # the same formula hnswlib uses: x / (||x|| + 1e-30)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + np.float32(1e-30))


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, space: Space = "cosine",
                 num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by brute force with hnswlib's own ``BFIndex`` (the reference for :class:`HNSWIndex`
    and its fallback for very selective filters).

    Scores follow the module's convention (similarities, higher is better: cosine, raw inner product,
    or negative squared L2).  hnswlib's ``BFIndex`` does not normalise in the cosine space, so vectors and
    queries are normalised here exactly as ``Index`` does it.

    Args:
        vectors: ``[n, d]`` database vectors.
        queries: ``[q, d]`` (or ``[d]``) query vectors.
        k: neighbours per query; clamped to ``n``.
        space: ``"cosine"``, ``"ip"`` or ``"l2"``.

    Returns:
        ``(indices, scores)``: ``int64 [q, min(k, n)]`` row indices into ``vectors`` and ``float32``
        scores, best first.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = _as_matrix(vectors, "vectors")
    q = _as_matrix(queries, "queries")
    if x.shape[1] != q.shape[1] and x.shape[0]:
        raise ValueError(f"dimension mismatch: vectors have d={x.shape[1]}, queries have d={q.shape[1]}")
    n = x.shape[0]
    k = min(k, n)
    if k == 0 or q.shape[0] == 0:
        return np.empty((q.shape[0], k), dtype=np.int64), np.empty((q.shape[0], k), dtype=np.float32)
    if space == "cosine":
        x, q = _normalise(x), _normalise(q)
    bf = hnswlib.BFIndex(space="ip" if space == "cosine" else space, dim=x.shape[1])
    bf.init_index(max_elements=n)
    bf.add_items(x, np.arange(n))
    labels, dist = bf.knn_query(q, k=k, num_threads=num_threads)
    scores = -dist if space == "l2" else 1.0 - dist  # BFIndex returns each row best first
    return labels.astype(np.int64), scores.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# locking
# --------------------------------------------------------------------------------------------------
class _ReadWriteLock:
    """Many readers or one writer; waiting writers block new readers; re-entrant per thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._write_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        depth = getattr(self._local, "read_depth", 0)
        with self._cond:
            if self._writer != me and depth == 0:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
            self._readers += 1
        self._local.read_depth = depth + 1
        try:
            yield
        finally:
            self._local.read_depth = depth
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
            else:
                if getattr(self._local, "read_depth", 0):
                    raise RuntimeError("cannot modify the index while this thread is querying it")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._write_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._write_depth -= 1
                if self._write_depth == 0:
                    self._writer = None
                    self._cond.notify_all()


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return sha256_file(path)


def _write_labels(path: Path, ids: Sequence[str], domains: Sequence[str | None], deleted: np.ndarray) -> None:
    table = pa.table(
        {
            "label": pa.array(np.arange(len(ids), dtype=np.int64)),
            "item_id": pa.array(list(ids), type=pa.string()),
            "domain": pa.array(list(domains), type=pa.string()).dictionary_encode(),
            "deleted": pa.array(deleted, type=pa.bool_()),
        }
    )
    pq.write_table(table, path)


def _write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _hnswlib_version() -> str:
    try:
        return importlib.metadata.version("hnswlib")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - e.g. a source build
        return "unknown"


def _check_json(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata must be JSON-serialisable: {e}") from e


@dataclasses.dataclass
class _Filter:
    """Label predicates (AND-ed), an upper bound on eligible live items, and optionally a (lazy) array
    of candidate labels: a superset of the eligible ones, found without calling the predicates."""

    bound: int
    checks: list[Callable[[int], bool]] = dataclasses.field(default_factory=list)
    candidates: Callable[[], np.ndarray] | None = None

    def predicate(self) -> Callable[[int], bool] | None:
        if not self.checks:
            return None
        if len(self.checks) == 1:
            return self.checks[0]
        checks = tuple(self.checks)
        return lambda label: all(c(label) for c in checks)


# --------------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------------
class HNSWIndex:
    """hnswlib HNSW graph over float32 vectors with string item ids, domains, live updates and atomic save.

    Build with :meth:`build` (or construct empty and :meth:`add_items`), reload with :meth:`load`.
    See the module docstring for the score convention, ``k`` clamping, filtering, updates and locking.

    Attributes:
        space: ``"cosine"``, ``"ip"`` or ``"l2"``.
        dim: vector dimension.
        num_threads: threads hnswlib uses for inserts and unfiltered batch queries.
        exact_filter_threshold: filtered queries whose eligible set has at most this many items are
            answered by exact search over those items instead of the graph.
        metadata: free-form JSON-serialisable dict saved in ``meta.json`` (e.g. encoder, source run).
    """

    def __init__(
        self,
        space: Space,
        dim: int,
        *,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        max_elements: int | None = None,
        num_threads: int = 1,
        metadata: Mapping[str, Any] | None = None,
        random_seed: int = 100,
        exact_filter_threshold: int = 2048,
        initial_capacity: int | None = None,
        _hnsw: hnswlib.Index | None = None,
    ) -> None:
        """Create an empty index; the arguments are those of :meth:`build`.

        ``initial_capacity`` pre-allocates slots of a growable index (ignored with ``max_elements``);
        ``_hnsw`` is internal (an already loaded hnswlib graph).
        """
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        for name, v in (("M", M), ("ef_construction", ef_construction), ("ef_search", ef_search),
                        ("num_threads", num_threads)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if max_elements is not None and (not isinstance(max_elements, (int, np.integer)) or max_elements < 1):
            raise ValueError(f"max_elements must be a positive int or None, got {max_elements!r}")
        self.space: str = space
        self.dim = int(dim)
        self.num_threads = int(num_threads)
        self.exact_filter_threshold = int(exact_filter_threshold)
        self.metadata: dict[str, Any] = _check_json(metadata)
        self._fixed_capacity = max_elements is not None
        self._lock = _ReadWriteLock()
        # label -> id / domain code; id -> label; tombstones; live items per domain code
        self._ids: list[str] = []
        self._label: dict[str, int] = {}
        self._domain_code: list[int] = []
        self._domain_names: list[str] = []
        self._domain_index: dict[str, int] = {}
        self._deleted: set[int] = set()
        self._live_per_domain: Counter[int] = Counter()
        # numpy mirrors of label -> id / domain code, grown by doubling (labels never change their id)
        self._ids_array = np.empty(0, dtype=object)
        self._codes_array = np.empty(0, dtype=np.int32)
        if _hnsw is None:
            _hnsw = hnswlib.Index(space=space, dim=self.dim)
            _hnsw.init_index(
                max_elements=int(max_elements or max(initial_capacity or 0, _MIN_CAPACITY)),
                M=int(M),
                ef_construction=int(ef_construction),
                random_seed=int(random_seed),
            )
        self._hnsw = _hnsw
        self._hnsw.set_ef(int(ef_search))
        self._hnsw.set_num_threads(self.num_threads)
        self._ef_search = int(ef_search)

    # ---------------------------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        space: Space = "cosine",
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        max_elements: int | None = None,
        num_threads: int = 1,
        metadata: Mapping[str, Any] | None = None,
        *,
        domains: Sequence[str] | None = None,
        random_seed: int = 100,
        exact_filter_threshold: int = 2048,
    ) -> "HNSWIndex":
        """Build an index over ``vectors [n, d]`` (float32) named by ``ids``.

        Args:
            vectors: ``[n, d]`` array; cast to float32.
            ids: ``n`` unique, non-empty item ids (``ValueError`` naming the offending id otherwise).
            space: ``"cosine"`` (default), ``"ip"`` or ``"l2"``.
            M: graph degree (hnswlib keeps ``2*M`` links on layer 0).
            ef_construction: candidate list size while inserting.
            ef_search: candidate list size while querying (``set_ef`` changes it later).
            max_elements: ``None`` = capacity grows on demand; an int = fixed capacity (hard cap).
            num_threads: hnswlib threads for building, later inserts and unfiltered queries.
            metadata: JSON-serialisable dict stored with the index.
            domains: optional ``n`` domain names, enabling ``query(..., domain=...)``.
            random_seed: hnswlib's level-generator seed (single-threaded builds are deterministic).
            exact_filter_threshold: see the class attributes.

        Raises:
            ValueError: duplicate/empty ids, non-finite vectors (the row's id is named), a zero vector
                in the cosine space, wrong shapes, ``n > max_elements``.
        """
        x = np.asarray(vectors)
        if x.ndim != 2:
            raise ValueError(f"vectors must be a [n, d] array, got shape {x.shape}")
        if max_elements is not None and x.shape[0] > max_elements:
            raise IndexFullError(f"{x.shape[0]} vectors exceed max_elements={max_elements}")
        index = cls(
            space,
            x.shape[1],
            M=M,
            ef_construction=ef_construction,
            ef_search=ef_search,
            max_elements=max_elements,
            num_threads=num_threads,
            metadata=metadata,
            random_seed=random_seed,
            exact_filter_threshold=exact_filter_threshold,
            initial_capacity=x.shape[0],
        )
        if x.shape[0]:
            index.add_items(x, ids, domains=domains)
        elif len(ids):
            raise ValueError(f"got {len(ids)} ids for 0 vectors")
        return index

    # ---------------------------------------------------------------------------------- properties
    @property
    def ids(self) -> list[str]:
        """Live (not deleted) item ids, in order of first insertion."""
        with self._lock.read():
            if not self._deleted:
                return list(self._ids)
            return [i for label, i in enumerate(self._ids) if label not in self._deleted]

    @property
    def domains(self) -> list[str]:
        """Domain names known to the index, in order of first appearance."""
        return list(self._domain_names)

    @property
    def M(self) -> int:  # noqa: N802 (the papers' and hnswlib's name)
        return int(self._hnsw.M)

    @property
    def ef_construction(self) -> int:
        return int(self._hnsw.ef_construction)

    @property
    def ef_search(self) -> int:
        return self._ef_search

    @property
    def capacity(self) -> int:
        """Slots allocated in the hnswlib graph (deleted items still hold theirs)."""
        return int(self._hnsw.max_elements)

    def __len__(self) -> int:
        """Number of live items (deleted ones are not counted)."""
        return len(self._ids) - len(self._deleted)

    def __contains__(self, item_id: object) -> bool:
        """``True`` if ``item_id`` is in the index and not deleted."""
        label = self._label.get(item_id) if isinstance(item_id, str) else None
        return label is not None and label not in self._deleted

    def __repr__(self) -> str:
        return (
            f"HNSWIndex(space={self.space!r}, dim={self.dim}, live={len(self)}, deleted={len(self._deleted)}, "
            f"M={self.M}, ef_construction={self.ef_construction}, ef_search={self.ef_search}, "
            f"domains={len(self._domain_names)})"
        )

    def domain_of(self, item_id: str) -> str | None:
        """The domain an item was added with (``None`` if it has none); ``KeyError`` if unknown."""
        label = self._require_label(item_id, allow_deleted=True)
        code = self._domain_code[label]
        return None if code == _NO_DOMAIN else self._domain_names[code]

    def set_ef(self, ef: int) -> None:
        """Set the query-time candidate list size (recall/speed knob; hnswlib uses ``max(ef, k)``)."""
        if not isinstance(ef, (int, np.integer)) or ef < 1:
            raise ValueError(f"ef must be a positive int, got {ef!r}")
        with self._lock.write():
            self._hnsw.set_ef(int(ef))
            self._ef_search = int(ef)

    # ---------------------------------------------------------------------------------- validation
    def _check_vectors(self, vectors: Any, ids: Sequence[str] | None, what: str) -> np.ndarray:
        x = np.asarray(vectors)
        if x.ndim == 1 and (ids is None or len(ids) == 1):
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"{what} must be a [n, {self.dim}] array, got shape {x.shape}")
        if x.shape[1] != self.dim:
            raise ValueError(f"dimension mismatch: the index has dim={self.dim}, {what} have d={x.shape[1]}")
        if ids is not None and len(ids) != x.shape[0]:
            raise ValueError(f"got {x.shape[0]} {what} but {len(ids)} ids")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"{what} must be real numbers, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            who = f"id {ids[row]!r}" if ids is not None else f"query row {row}"
            raise ValueError(
                f"{what} for {who} contain NaN or inf (after float32 cast); "
                f"{int((~finite).sum())} bad row(s) in total"
            )
        if self.space == "cosine":
            zero = ~np.any(x != 0, axis=1)
            if zero.any():
                row = int(np.flatnonzero(zero)[0])
                who = f"id {ids[row]!r}" if ids is not None else f"query row {row}"
                raise ValueError(f"{what} for {who} is the zero vector, which has no cosine direction")
        return x

    @staticmethod
    def _check_ids(ids: Sequence[str]) -> list[str]:
        if isinstance(ids, str):
            raise TypeError("ids must be a sequence of str, not a single str")
        ids = list(ids)
        seen: set[str] = set()
        for row, item_id in enumerate(ids):
            if not isinstance(item_id, str):
                raise ValueError(f"item id at row {row} must be a str, got {type(item_id).__name__} {item_id!r}")
            if not item_id:
                raise ValueError(f"item id at row {row} is empty")
            if item_id in seen:
                raise ValueError(f"duplicate item id {item_id!r} (second occurrence at row {row})")
            seen.add(item_id)
        return ids

    def _require_label(self, item_id: str, *, allow_deleted: bool = False) -> int:
        label = self._label.get(item_id) if isinstance(item_id, str) else None
        if label is None:
            raise KeyError(f"item id {item_id!r} is not in the index")
        if not allow_deleted and label in self._deleted:
            raise KeyError(f"item id {item_id!r} was deleted")
        return label

    # ---------------------------------------------------------------------------------- updates
    def add_items(
        self,
        vectors: np.ndarray,
        ids: Sequence[str],
        *,
        domains: Sequence[str] | str | None = None,
    ) -> None:
        """Insert items; an id that already exists gets its vector replaced (and is un-deleted).

        New items are searchable as soon as this returns.  The graph is resized (doubling) when full
        unless the index has a fixed ``max_elements``, in which case :class:`IndexFullError` is raised
        before anything changes.

        Args:
            vectors: ``[n, d]`` (or ``[d]`` with one id).
            ids: ``n`` unique non-empty item ids.
            domains: ``n`` domain names, or one name for all rows.  Required for *new* ids when the
                index already has domains; for replaced ids ``None`` keeps their domain.
        """
        ids = self._check_ids(ids)
        x = self._check_vectors(vectors, ids, "vectors")
        if isinstance(domains, str):
            domains = [domains] * len(ids)
        if domains is not None:
            domains = list(domains)
            if len(domains) != len(ids):
                raise ValueError(f"got {len(domains)} domains for {len(ids)} ids")
            for item_id, dom in zip(ids, domains):
                if not isinstance(dom, str) or not dom:
                    raise ValueError(f"domain of id {item_id!r} must be a non-empty str, got {dom!r}")
        if not ids:
            return
        with self._lock.write():
            labels = np.empty(len(ids), dtype=np.int64)
            next_label = len(self._ids)
            new_rows: list[int] = []
            for row, item_id in enumerate(ids):
                label = self._label.get(item_id)
                if label is None:
                    if domains is None and self._domain_names:
                        raise ValueError(
                            f"the index has domains {self._domain_names}; pass domains= for new id {item_id!r}"
                        )
                    label = next_label
                    next_label += 1
                    new_rows.append(row)
                labels[row] = label
            self._ensure_capacity(next_label)
            self._hnsw.add_items(x, labels, num_threads=self.num_threads)
            self._grow_mirrors(next_label)
            # bookkeeping only after hnswlib accepted the batch
            for row, item_id in enumerate(ids):
                label = int(labels[row])
                if label >= len(self._ids):
                    self._ids.append(item_id)
                    self._label[item_id] = label
                    self._domain_code.append(_NO_DOMAIN)
                    old_code, was_live = _NO_DOMAIN, False
                else:
                    old_code, was_live = self._domain_code[label], label not in self._deleted
                    self._deleted.discard(label)
                code = old_code if domains is None else self._domain_code_for(domains[row])
                self._domain_code[label] = code
                self._ids_array[label] = item_id
                self._codes_array[label] = code
                if was_live:
                    self._live_per_domain[old_code] -= 1
                self._live_per_domain[code] += 1
            logger.debug("added %d new and replaced %d existing items", len(new_rows), len(ids) - len(new_rows))

    def _domain_code_for(self, name: str) -> int:
        code = self._domain_index.get(name)
        if code is None:
            code = self._domain_index[name] = len(self._domain_names)
            self._domain_names.append(name)
        return code

    def _ensure_capacity(self, needed: int) -> None:
        cap = int(self._hnsw.max_elements)
        if needed <= cap:
            return
        if self._fixed_capacity:
            raise IndexFullError(
                f"adding would need {needed} slots but the index has a fixed max_elements={cap} "
                "(build with max_elements=None to let it grow)"
            )
        new_cap = max(needed, 2 * cap)
        logger.info("resizing HNSW index from %d to %d slots", cap, new_cap)
        self._hnsw.resize_index(new_cap)

    def mark_deleted(self, ids: Iterable[str]) -> None:
        """Remove items from query results (hnswlib tombstones). Unknown ids raise ``KeyError`` before
        anything changes; ids that are already deleted are ignored."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self._lock.write():
            labels = {self._require_label(i, allow_deleted=True) for i in ids}
            for label in sorted(labels - self._deleted):
                self._hnsw.mark_deleted(label)
                self._deleted.add(label)
                self._live_per_domain[self._domain_code[label]] -= 1

    # ---------------------------------------------------------------------------------- reads
    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors ``[len(ids), d]`` (L2-normalised in the cosine space). ``KeyError`` for
        unknown or deleted ids."""
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self._lock.read():
            labels = [self._require_label(i) for i in ids]
            if not labels:
                return np.empty((0, self.dim), dtype=np.float32)
            return np.asarray(self._hnsw.get_items(labels), dtype=np.float32).reshape(len(labels), self.dim)

    def _grow_mirrors(self, n_labels: int) -> None:
        cap = len(self._ids_array)
        if n_labels <= cap:
            return
        new_cap = max(n_labels, 2 * cap, _MIN_CAPACITY)
        ids_array = np.empty(new_cap, dtype=object)
        ids_array[:cap] = self._ids_array
        codes = np.full(new_cap, _NO_DOMAIN, dtype=np.int32)
        codes[:cap] = self._codes_array
        self._ids_array, self._codes_array = ids_array, codes

    def query(
        self,
        vectors: np.ndarray,
        k: int = 10,
        filter_ids: IdFilter | None = None,
        *,
        domain: str | Collection[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each query vector.

        Args:
            vectors: ``[q, d]`` queries, or one ``[d]`` query.
            k: neighbours wanted; clamped to the number of eligible live items (module docstring).
            filter_ids: only return these item ids (a collection; unknown ids are ignored) or the ids
                for which this predicate is true.
            domain: only return items of this domain (or of any of these domains); an unknown domain
                name raises ``ValueError``.

        Returns:
            ``(ids, scores)``: ``ids`` an object array of ``str`` and ``scores`` float32 similarities
            (higher = better, best first), both ``[q, k']`` for 2-D input or ``[k']`` for a single
            ``[d]`` query, with ``k' = min(k, eligible)``.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        single = np.ndim(vectors) == 1
        q = self._check_vectors(vectors, None, "queries")
        with self._lock.read():
            flt = self._make_filter(filter_ids, domain)
            hnsw_filter = flt.predicate()
            kk = min(int(k), flt.bound)
            if kk == 0 or q.shape[0] == 0:
                labels = np.empty((q.shape[0], 0), dtype=np.int64)
                scores = np.empty((q.shape[0], 0), dtype=np.float32)
            elif hnsw_filter is not None and flt.bound <= self.exact_filter_threshold:
                labels, scores = self._exact(q, kk, flt)
            else:
                try:
                    if hnsw_filter is None:
                        raw_labels, dist = self._hnsw.knn_query(q, k=kk, num_threads=self.num_threads)
                    else:
                        # a Python filter needs the GIL for every candidate: more threads only contend
                        raw_labels, dist = self._hnsw.knn_query(q, k=kk, num_threads=1, filter=hnsw_filter)
                except RuntimeError as e:
                    if "contiguous" not in str(e):
                        raise
                    logger.warning("HNSW found fewer than k=%d eligible items (%s); exact search fallback", kk, e)
                    labels, scores = self._exact(q, kk, flt)
                else:
                    labels = raw_labels.astype(np.int64)
                    scores = (-dist if self.space == "l2" else 1.0 - dist).astype(np.float32)
            ids = self._ids_array[labels] if labels.size else np.empty(labels.shape, dtype=object)
        if single:
            return ids[0], scores[0]
        return ids, scores

    def within(self, domain: str) -> "DomainView":
        """A view whose ``query(vectors, k)`` searches only ``domain``'s items (e.g. inner-domain cold start)."""
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}; the index has {self.domains}")
        return DomainView(self, domain)

    def _make_filter(self, filter_ids: IdFilter | None, domain: str | Collection[str] | None) -> "_Filter":
        """Turn ``filter_ids``/``domain`` into a label predicate plus a cheap candidate set."""
        flt = _Filter(bound=len(self))
        if domain is not None:
            names = [domain] if isinstance(domain, str) else list(domain)
            unknown = [d for d in names if d not in self._domain_index]
            if unknown:
                raise ValueError(f"unknown domain(s) {unknown}; the index has {self._domain_names}")
            codes = sorted({self._domain_index[d] for d in names})
            flt.bound = min(flt.bound, sum(self._live_per_domain[c] for c in codes))
            dom, codes_array, n_labels = self._domain_code, self._codes_array, len(self._ids)
            if len(codes) == 1:
                only = codes[0]
                flt.checks.append(lambda label: dom[label] == only)
            else:
                code_set = set(codes)
                flt.checks.append(lambda label: dom[label] in code_set)
            flt.candidates = lambda: np.flatnonzero(np.isin(codes_array[:n_labels], codes))
        if filter_ids is not None:
            if callable(filter_ids):
                pred, names_of = filter_ids, self._ids
                flt.checks.append(lambda label: bool(pred(names_of[label])))
            else:
                if isinstance(filter_ids, str):
                    raise TypeError("filter_ids must be a collection of ids or a predicate, not a single str")
                allowed = {self._label[i] for i in filter_ids if i in self._label} - self._deleted
                flt.bound = min(flt.bound, len(allowed))
                flt.checks.append(allowed.__contains__)
                flt.candidates = lambda: np.fromiter(sorted(allowed), dtype=np.int64, count=len(allowed))
        return flt

    def _exact(self, q: np.ndarray, k: int, flt: "_Filter") -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the live items passing ``flt``; returns (labels, scores)."""
        labels = flt.candidates() if flt.candidates is not None else np.arange(len(self._ids), dtype=np.int64)
        if self._deleted:
            labels = labels[~np.isin(labels, np.fromiter(self._deleted, dtype=np.int64))]
        fn = flt.predicate()
        if fn is not None:
            labels = labels[np.fromiter((fn(int(label)) for label in labels), dtype=bool, count=len(labels))]
        if labels.size == 0:
            return np.empty((q.shape[0], 0), dtype=np.int64), np.empty((q.shape[0], 0), dtype=np.float32)
        stored = np.asarray(self._hnsw.get_items(labels), dtype=np.float32).reshape(len(labels), self.dim)
        idx, scores = exact_search(stored, q, k, self.space)  # type: ignore[arg-type]
        return labels[idx], scores

    # ---------------------------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the index directory atomically (temp dir beside ``path``, then renamed over it).

        A failure at any point leaves a previous index at ``path`` untouched and no partial files.
        """
        path = Path(path)
        metadata = _check_json(self.metadata)
        with self._lock.read():
            with atomic_dir(path) as tmp:
                self._hnsw.save_index(str(tmp / INDEX_FILE))
                deleted = np.zeros(len(self._ids), dtype=bool)
                if self._deleted:
                    deleted[list(self._deleted)] = True
                domains = [None if c == _NO_DOMAIN else self._domain_names[c] for c in self._domain_code]
                _write_labels(tmp / LABELS_FILE, self._ids, domains, deleted)
                files = {
                    name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                    for name in (INDEX_FILE, LABELS_FILE)
                }
                meta = {
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "space": self.space,
                    "dim": self.dim,
                    "count": len(self._ids),
                    "live_count": len(self),
                    "max_elements": int(self._hnsw.max_elements),
                    "growable": not self._fixed_capacity,
                    "M": self.M,
                    "ef_construction": self.ef_construction,
                    "ef_search": self._ef_search,
                    "domains": list(self._domain_names),
                    "hnswlib_version": _hnswlib_version(),
                    "files": files,
                    "metadata": metadata,
                }
                _write_meta(tmp / META_FILE, meta)
        logger.info("saved %r to %s", self, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        num_threads: int = 1,
        verify_checksums: bool = True,
        exact_filter_threshold: int = 2048,
    ) -> "HNSWIndex":
        """Load a directory written by :meth:`save`, checking it against its ``meta.json``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            IndexFormatError: a file is missing, a checksum/size differs, ``meta.json`` is unreadable
                or inconsistent (count, M, ef_construction, labels; with ``verify_checksums`` also dim)
                with the hnswlib binary as hnswlib loads it.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no HNSW index directory at {path}")
        meta = _read_meta(path)
        for name in (INDEX_FILE, LABELS_FILE):
            f = path / name
            if not f.is_file():
                raise IndexFormatError(f"{f} is missing (meta.json lists it); the index directory is incomplete")
            want = meta["files"].get(name, {})
            size = f.stat().st_size
            if want.get("bytes") != size:
                raise IndexFormatError(f"{f} has {size} bytes but meta.json records {want.get('bytes')}: corrupted")
            if verify_checksums and want.get("sha256") != _sha256(f):
                raise IndexFormatError(f"{f} does not match the SHA-256 in meta.json: corrupted")
        count, dim = meta["count"], meta["dim"]
        try:
            labels = pq.read_table(path / LABELS_FILE).to_pydict()
        except Exception as e:  # noqa: BLE001 - any pyarrow failure means a bad file
            raise IndexFormatError(f"cannot read {path / LABELS_FILE}: {e}") from e
        missing = {"label", "item_id", "domain", "deleted"} - set(labels)
        if missing:
            raise IndexFormatError(f"{path / LABELS_FILE} lacks column(s) {sorted(missing)}")
        if len(labels["item_id"]) != count:
            raise IndexFormatError(
                f"{path / LABELS_FILE} has {len(labels['item_id'])} rows but meta.json count={count}"
            )
        if labels["label"] != list(range(count)):
            raise IndexFormatError(f"{path / LABELS_FILE}: labels must be 0..{count - 1} in order")
        # a growable index is loaded at its size and grows again on demand; a fixed one keeps its cap
        capacity = max(count, _MIN_CAPACITY) if meta["growable"] else max(meta["max_elements"], count)
        hnsw = hnswlib.Index(space=meta["space"], dim=dim)
        try:
            hnsw.load_index(str(path / INDEX_FILE), max_elements=capacity)
        except RuntimeError as e:
            raise IndexFormatError(f"hnswlib cannot load {path / INDEX_FILE}: {e}") from e
        loaded = {"count": int(hnsw.element_count), "M": int(hnsw.M), "ef_construction": int(hnsw.ef_construction)}
        if verify_checksums:
            # the stored vector width, from hnswlib's own parameters (its pickling state): an index loaded
            # with another dim would read vectors wrongly
            params = hnsw.__getstate__()[0]
            loaded["dim"] = (int(params["label_offset"]) - int(params["offset_data"])) // 4
        for key, value in loaded.items():
            if value != meta[key]:
                raise IndexFormatError(
                    f"{key} mismatch: {path / INDEX_FILE} has {key}={value} but {path / META_FILE} records "
                    f"{key}={meta[key]}"
                )
        index = cls(
            meta["space"],
            dim,
            ef_search=meta["ef_search"],
            max_elements=None if meta["growable"] else int(meta["max_elements"]),
            num_threads=num_threads,
            metadata=meta["metadata"],
            exact_filter_threshold=exact_filter_threshold,
            _hnsw=hnsw,
        )
        index._restore(labels["item_id"], labels["domain"], labels["deleted"], path)
        if len(index) != meta["live_count"]:
            raise IndexFormatError(f"{path}: {len(index)} live items but meta.json live_count={meta['live_count']}")
        logger.info("loaded %r from %s", index, path)
        return index

    def _restore(self, ids: list[str], domains: list[str | None], deleted: list[bool], path: Path) -> None:
        try:
            self._check_ids(ids)
        except (TypeError, ValueError) as e:
            raise IndexFormatError(f"{path / LABELS_FILE}: {e}") from e
        self._ids = list(ids)
        self._label = {item_id: label for label, item_id in enumerate(ids)}
        self._domain_code = [_NO_DOMAIN if d is None else self._domain_code_for(d) for d in domains]
        self._deleted = {label for label, dead in enumerate(deleted) if dead}
        self._live_per_domain = Counter(
            code for label, code in enumerate(self._domain_code) if label not in self._deleted
        )
        self._grow_mirrors(len(ids))
        self._ids_array[: len(ids)] = ids
        self._codes_array[: len(ids)] = self._domain_code


_META_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "format_version": int,
    "space": str,
    "dim": int,
    "count": int,
    "live_count": int,
    "max_elements": int,
    "growable": bool,
    "M": int,
    "ef_construction": int,
    "ef_search": int,
    "domains": list,
    "files": dict,
    "metadata": dict,
}


@dataclasses.dataclass(frozen=True)
class DomainView:
    """:meth:`HNSWIndex.within`: the index restricted to one domain (the ``SimilarityIndex`` surface)."""

    index: HNSWIndex
    domain: str

    def query(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.index.query(vectors, k, domain=self.domain)


def _read_meta(path: Path) -> dict[str, Any]:
    f = path / META_FILE
    if not f.is_file():
        raise IndexFormatError(f"{f} is missing: {path} is not a saved HNSWIndex (or an incomplete copy of one)")
    try:
        meta = json.loads(f.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{f} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{f} must hold a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{f}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{f}: format_version {meta.get('format_version')!r} is not supported (this code reads {FORMAT_VERSION})"
        )
    for key, typ in _META_TYPES.items():
        if key not in meta:
            raise IndexFormatError(f"{f} lacks the key {key!r}")
        value = meta[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise IndexFormatError(f"{f}: {key!r} must be {typ}, got {value!r}")
    if meta["space"] not in SPACES:
        raise IndexFormatError(f"{f}: space {meta['space']!r} is not one of {SPACES}")
    if meta["dim"] < 1 or meta["count"] < 0 or not 0 <= meta["live_count"] <= meta["count"]:
        raise IndexFormatError(
            f"{f}: impossible sizes dim={meta['dim']}, count={meta['count']}, live_count={meta['live_count']}"
        )
    return meta
