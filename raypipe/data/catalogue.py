"""The :class:`ItemCatalogue`: everything a model sees of the items (DESIGN "Models, training, evaluation").

* the item index (indices ``1..N``, ``0`` = padding) and each item's domain, with every domain's
  contiguous index range (items are indexed by domain, see :class:`raypipe.data.sequences.ItemIndex`);
* training popularity (interactions per item);
* any number of named feature views (``[N+1, d]`` float32 with a presence mask; row 0 is padding and
  absent) from a :class:`raypipe.features.store.FeatureStore`;
* item texts through the :mod:`raypipe.data.text` templates and their tokenisation for a given
  tokenizer (cached per tokenizer, template and length);
* item images on demand (PNG/JPEG bytes read from the dataset when asked for);
* per-domain popularity counts per time slot and PreRec's recent-window popularity factors
  ``F_j = [c_j/s_1, ..., c_j/s_W]`` with ``s_w = (Σ_{i∈J_k} c_i^w / |J_k|)^{1/w}`` (PreRec appendix E),
  from ``events`` (every interaction of the prepared data: item indices and Unix times);
  :meth:`ItemCatalogue.prior_popularity` gives them for any moment from the slots *before* it only.

A catalogue is built on the driver and reaches Ray Train workers inside the training payload, which is
put in the object store once (numpy arrays are shared zero-copy by workers on a node), not per epoch.
Texts, tokens and images need the dataset directory, which must be readable from the workers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from raypipe.data.sequences import ItemIndex

log = logging.getLogger(__name__)

TEXT_COLUMNS = ["item_id", "title", "category", "brand", "price", "description"]


@dataclass
class FeatureView:
    """One named view: ``vectors[i]`` is item index ``i``'s vector, ``present[i]`` whether it has one."""

    vectors: np.ndarray  # [N+1, d] float32, row 0 = padding (zeros)
    present: np.ndarray  # [N+1] bool, row 0 False
    source: str = ""

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.present.shape != (len(self.vectors),):
            raise ValueError(f"feature view {self.source!r}: vectors {self.vectors.shape} and presence "
                             f"{self.present.shape} do not align")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def without(self, share: float, seed: int = 0) -> "FeatureView":
        """This view with ``share`` of the items that have a vector made absent (a zero row flagged absent,
        as for an item the store has no vector of): the items are a seeded sample, the same for every
        model.  The missing-modality robustness check of the leaderboard judges runs on such views."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"feature view {self.source!r}: the absent share must be in [0, 1], got {share}")
        have = np.flatnonzero(self.present)
        drop = np.random.default_rng([seed, 0xAB5E]).permutation(have)[:int(round(share * len(have)))]
        vectors, present = self.vectors.copy(), self.present.copy()
        vectors[drop], present[drop] = 0.0, False
        return FeatureView(vectors, present, f"{self.source} ({share:.0%} made absent, seed {seed})")


@dataclass
class PopularityTable:
    """Interactions per (time slot, item index): ``counts[t, i]``; slot ``t`` covers
    ``[start + t * slot_seconds, start + (t + 1) * slot_seconds)``."""

    start: int
    slot_seconds: int
    counts: np.ndarray  # [T, N+1] int64

    def slot_of(self, timestamps: np.ndarray) -> np.ndarray:
        """The slot of each timestamp, clipped to the table (later events read the last slot)."""
        t = (np.asarray(timestamps, dtype=np.int64) - self.start) // self.slot_seconds
        return np.clip(t, 0, len(self.counts) - 1)


@dataclass
class ItemCatalogue:
    index: ItemIndex
    item_counts: np.ndarray | None = None  # training interactions per item index, length N+1
    views: dict[str, FeatureView] = field(default_factory=dict)
    #: the canonical dataset directory (texts and images are read from it on demand)
    dataset: Path | None = None
    popularity: PopularityTable | None = None
    #: every interaction of the prepared data, ``(item indices, Unix times)``: popularity statistics
    events: tuple[np.ndarray, np.ndarray] | None = None
    _text_cache: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _token_cache: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _items_frame: Any = field(default=None, repr=False)
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.domain_names: list[str] = sorted(set(self.index.domains))
        dom_id = {d: i for i, d in enumerate(self.domain_names)}
        self.item_domain = np.concatenate([[-1], [dom_id[d] for d in self.index.domains]]).astype(np.int64)
        self.domain_ranges = np.zeros((len(self.domain_names), 2), dtype=np.int64)
        for d, i in dom_id.items():
            idx = self.index.domain_items(d)
            self.domain_ranges[i] = (idx.min(), idx.max() + 1)
            if len(idx) != idx.max() + 1 - idx.min():
                raise AssertionError(f"domain {d} items are not contiguous in the item index")
        for name, view in self.views.items():
            if len(view.vectors) != self.num_embeddings:
                raise ValueError(f"feature view {name!r} has {len(view.vectors)} rows, the item index "
                                 f"{self.num_embeddings} (N+1)")
        if self.item_counts is not None and len(self.item_counts) != self.num_embeddings:
            raise ValueError(f"item_counts has {len(self.item_counts)} entries, expected {self.num_embeddings}")

    # -- index ---------------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.index)

    @property
    def num_embeddings(self) -> int:
        return len(self.index) + 1

    def derived(self, key: str, compute: Any) -> Any:
        """A value computed once from the catalogue and kept with it (``compute()`` on first use).  Models
        cache large derived arrays here when they are built on the driver (e.g. CDIM's frozen-layer text
        states), so the workers receive them with the catalogue instead of recomputing them."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    # -- feature views -------------------------------------------------------------------------------
    def view(self, name: str) -> FeatureView:
        try:
            return self.views[name]
        except KeyError:
            raise ValueError(f"the catalogue has no feature view {name!r} (views: {sorted(self.views)}; "
                             "set data.features and data.feature_views)") from None

    @property
    def item_features(self) -> np.ndarray | None:
        """The vectors of the only view (``None`` without views); models naming a view use :meth:`view`."""
        if not self.views:
            return None
        if len(self.views) > 1:
            raise ValueError(f"the catalogue has several views {sorted(self.views)}: name one")
        return next(iter(self.views.values())).vectors

    # -- texts, tokens, images -----------------------------------------------------------------------
    def _items(self):
        if self._items_frame is None:
            if self.dataset is None:
                raise ValueError("item texts and images need the catalogue's dataset directory")
            from raypipe.data.dataset import CanonicalDataset

            ds = CanonicalDataset.open(self.dataset)
            names = set(ds.items().schema.names)
            frame = ds.items(columns=[c for c in TEXT_COLUMNS if c in names]).to_pandas().set_index("item_id")
            missing = [i for i in self.index.item_ids if i not in frame.index]
            if missing:
                raise KeyError(f"{self.dataset}: items.parquet has no row for {len(missing)} indexed item(s), "
                               f"e.g. {missing[0]!r}")
            self._items_frame = frame.loc[list(self.index.item_ids)]
        return self._items_frame

    def texts(self, template: str = "plain", **kwargs: Any) -> list[str]:
        """The text of every item index under a :mod:`raypipe.data.text` template; entry 0 (padding) is
        ``""``.  Cached per template (and options)."""
        from raypipe.data.text import render

        key = template + repr(sorted(kwargs.items()))
        if key not in self._text_cache:
            records = self._items().reset_index().to_dict("records")
            self._text_cache[key] = [""] + [render(template, r, **kwargs) for r in records]
        return self._text_cache[key]

    def records(self) -> list[dict[str, Any]]:
        """Every item index's text attributes (``title``, ``category``, ``brand``, ``price``,
        ``description``; missing ones absent); entry 0 (padding) is ``{}``."""
        def clean(r: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in r.items() if k != "item_id" and v is not None and not (isinstance(v, float) and v != v)}

        return self.derived("records", lambda: [{}] + [clean(r) for r in self._items().reset_index().to_dict("records")])

    def tokens(self, tokenizer: Any, template: str = "plain", max_length: int = 40) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention masks ``[N+1, max_length]`` (int64) of every item's text for a Hugging
        Face tokenizer (no special tokens, right-padded, truncated); row 0 is all padding.  Cached per
        (tokenizer, template, max_length)."""
        key = (str(getattr(tokenizer, "name_or_path", id(tokenizer))) + f"#{len(tokenizer)}", template, max_length)
        if key not in self._token_cache:
            enc = tokenizer(self.texts(template)[1:], add_special_tokens=False, truncation=True,
                            max_length=max_length, padding="max_length")
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            ids = np.full((self.num_embeddings, max_length), pad, dtype=np.int64)
            mask = np.zeros((self.num_embeddings, max_length), dtype=np.int64)
            ids[1:] = np.asarray(enc["input_ids"], dtype=np.int64)
            mask[1:] = np.asarray(enc["attention_mask"], dtype=np.int64)
            self._token_cache[key] = (ids, mask)
        return self._token_cache[key]

    def images(self, indices: Sequence[int]) -> list[bytes | None]:
        """Encoded image bytes of item indices (``None`` where an item has no image), read on demand."""
        if self.dataset is None:
            raise ValueError("item images need the catalogue's dataset directory")
        import pyarrow as pa
        import pyarrow.compute as pc

        from raypipe.data.dataset import CanonicalDataset

        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 1 or idx.max() > self.num_items):
            raise IndexError(f"item indices must be in 1..{self.num_items}")
        ids = [str(self.index.item_ids[i - 1]) for i in idx]
        ds = CanonicalDataset.open(self.dataset)
        names = set(ds.items().schema.names)
        if "image" in names:
            t = ds.items(columns=["item_id", "image"])
            t = t.filter(pc.is_in(t["item_id"], value_set=pa.array(ids)))
            found = dict(zip(t["item_id"].to_pylist(), t["image"].to_pylist()))
            return [found.get(i) for i in ids]
        if "image_path" in names:
            t = ds.items(columns=["item_id", "image_path"]).to_pandas().set_index("item_id")["image_path"]
            out: list[bytes | None] = []
            for i in ids:
                p = t.get(i)
                out.append(Path(self.dataset, p).read_bytes() if isinstance(p, str) and p else None)
            return out
        return [None] * len(ids)

    # -- popularity ----------------------------------------------------------------------------------
    def with_popularity(self, items: np.ndarray, timestamps: np.ndarray, slot_seconds: int) -> "ItemCatalogue":
        """Count interactions (item indices with their timestamps) per time slot of ``slot_seconds``."""
        if slot_seconds <= 0:
            raise ValueError(f"slot_seconds must be > 0, got {slot_seconds}")
        items = np.asarray(items, dtype=np.int64)
        ts = np.asarray(timestamps, dtype=np.int64)
        if len(items) != len(ts) or not len(items):
            raise ValueError("popularity needs one timestamp per interaction, and at least one")
        start = int(ts.min())
        slot = (ts - start) // slot_seconds
        counts = np.zeros((int(slot.max()) + 1, self.num_embeddings), dtype=np.int64)
        np.add.at(counts, (slot, items), 1)
        self.popularity = PopularityTable(start, int(slot_seconds), counts)
        return self

    def prior_popularity(self, slot_seconds: int, window: int, orders: Sequence[int] = (1, 2, 3, 4)
                         ) -> tuple[int, np.ndarray, np.ndarray]:
        """Popularity before every moment, from ``events`` (no look-ahead): ``(start, counts, norms)`` where
        query slot ``q`` covers times in ``[start + q·slot_seconds, start + (q+1)·slot_seconds)`` (see
        :func:`query_slot`) and sees only the ``window`` *complete* slots before it: ``counts[q, j]`` is item
        j's interactions in slots ``q-window .. q-1`` (float32 ``[T+1, N+1]``; ``q = T`` is after all the
        data) and ``norms[q, k, w] = s_w`` of domain k (float32 ``[T+1, K, W]``), so the factors of item j at
        slot q are ``counts[q, j] / norms[q, domain(j)]`` (0 where the domain had no interaction).  An event
        never counts towards its own slot's factors.  Cached per option set."""
        if window < 1 or slot_seconds <= 0:
            raise ValueError(f"popularity needs window >= 1 and slot_seconds > 0, got {window}, {slot_seconds}")
        if self.events is None:
            raise ValueError("the catalogue has no interaction events for popularity statistics")

        def compute() -> tuple[int, np.ndarray, np.ndarray]:
            items, ts = (np.asarray(a, dtype=np.int64) for a in self.events)  # type: ignore[union-attr]
            if not len(items):
                raise ValueError("popularity needs at least one interaction event")
            start = int(ts.min())
            slot = (ts - start) // slot_seconds
            n_slots = int(slot.max()) + 1
            per_slot = np.zeros((n_slots, self.num_embeddings), dtype=np.int64)
            np.add.at(per_slot, (slot, items), 1)
            csum = np.vstack([np.zeros((1, self.num_embeddings), np.int64), np.cumsum(per_slot, 0)])  # [T+1]
            q = np.arange(n_slots + 1)
            counts = (csum - csum[np.clip(q - window, 0, None)]).astype(np.float32)
            return start, counts, domain_norms(counts, self.domain_ranges, orders)

        return self.derived(f"prior_popularity/{slot_seconds}/{window}/{tuple(orders)}", compute)

    def popularity_factors(self, slot: int | np.ndarray, orders: Sequence[int] = (1, 2, 3, 4),
                           window: int = 1) -> np.ndarray:
        """PreRec's popularity factors ``[..., N+1, W]`` at ``slot``: ``c_j`` is item j's interactions in the
        ``window`` slots ending at ``slot``, normalised per domain by ``s_w = (mean_{i∈J_k} c_i^w)^{1/w}``
        for each order ``w`` (a domain without interactions in the window gets zeros).  Row 0 is 0."""
        if self.popularity is None:
            raise ValueError("no popularity table: call with_popularity() first")
        counts = self.popularity.counts
        csum = np.vstack([np.zeros((1, counts.shape[1]), np.int64), np.cumsum(counts, 0)])
        t = np.asarray(slot, dtype=np.int64)
        lo = np.clip(t - window + 1, 0, None)
        c = (csum[t + 1] - csum[lo]).astype(np.float64)  # [..., N+1]
        out = np.zeros(c.shape + (len(orders),), dtype=np.float32)
        for lo_i, hi_i in self.domain_ranges:
            part = c[..., lo_i:hi_i]
            for j, w in enumerate(orders):
                s = np.mean(part ** w, axis=-1, keepdims=True) ** (1.0 / w)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[..., lo_i:hi_i, j] = np.where(s > 0, part / np.where(s > 0, s, 1.0), 0.0)
        return out


def domain_norms(counts: np.ndarray, domain_ranges: np.ndarray, orders: Sequence[int]) -> np.ndarray:
    """PreRec's per-domain popularity norms (appendix E) of window counts ``[T, N+1]``:
    ``s_w = (Σ_{i∈J_k} c_i^w / |J_k|)^{1/w}`` for each domain ``k`` (its item-index range) and order ``w``,
    float32 ``[T, K, W]`` (0 for a domain without interactions in the window)."""
    counts = np.asarray(counts)
    norms = np.zeros((counts.shape[0], len(domain_ranges), len(orders)), dtype=np.float32)
    for k, (lo, hi) in enumerate(domain_ranges):
        part = counts[:, lo:hi].astype(np.float64)
        for w_i, w in enumerate(orders):
            norms[:, k, w_i] = np.mean(part ** w, axis=1) ** (1.0 / w)
    return norms


def group_norms(counts: np.ndarray, groups: np.ndarray, orders: Sequence[int]) -> np.ndarray:
    """:func:`domain_norms` of one window's counts ``[M]`` over arbitrary item groups: ``groups[j]`` is entry
    j's domain (``< 0``: left out, e.g. the padding row), float32 ``[max(groups) + 1, W]`` (0 for a group
    without interactions or without items).  Serving uses it when items and domains arrive after training."""
    counts, groups = np.asarray(counts, np.float64), np.asarray(groups, np.int64)
    if counts.shape != groups.shape or counts.ndim != 1:
        raise ValueError(f"need one group per count, got shapes {counts.shape} and {groups.shape}")
    keep = groups >= 0
    n_groups = int(groups.max()) + 1 if keep.any() else 0
    size = np.bincount(groups[keep], minlength=n_groups).astype(np.float64)
    norms = np.zeros((n_groups, len(orders)), np.float32)
    for w_i, w in enumerate(orders):
        total = np.bincount(groups[keep], weights=counts[keep] ** w, minlength=n_groups)
        norms[:, w_i] = np.where(size > 0, total / np.maximum(size, 1), 0.0) ** (1.0 / w)
    return norms


def query_slot(timestamps: np.ndarray, start: int, slot_seconds: int, n_slots: int) -> np.ndarray:
    """The query slot of :meth:`ItemCatalogue.prior_popularity` for Unix times: the slot ``(t - start) //
    slot_seconds`` they fall in, clipped to ``[0, n_slots]`` (times after the data read the latest window,
    times before it see nothing)."""
    t = np.asarray(timestamps, dtype=np.int64)
    return np.clip((t - start) // slot_seconds, 0, n_slots)


def load_views(store_path: str | Path, names: Sequence[str], index: ItemIndex) -> dict[str, FeatureView]:
    """Named views of a feature store (``raypipe.features``) or a ``.npy`` array ``[N+1, d]`` aligned to
    the item index (one view, the first name), with presence masks."""
    p = str(store_path)
    if p.endswith(".npy"):
        arr = np.load(p).astype(np.float32)
        if arr.ndim != 2 or arr.shape[0] != index.num_embeddings:
            raise ValueError(f"{p}: expected [{index.num_embeddings}, d] aligned to the item index, got {arr.shape}")
        present = np.abs(arr).sum(1) > 0
        present[0] = False
        return {names[0]: FeatureView(arr, present, p)}
    from raypipe.features.store import FeatureStore

    store = FeatureStore.open(p)
    out = {}
    for name in names:
        vecs, present = store.aligned(name, list(index.item_ids))
        if not present.all():
            log.warning("%d of %d items have no %s vector (zeros, flagged by the store)",
                        int((~present).sum()), len(present), name)
        out[name] = FeatureView(np.vstack([np.zeros((1, vecs.shape[1]), np.float32), vecs.astype(np.float32)]),
                                np.concatenate([[False], present]), f"{p}:{name}")
    return out

