"""Preprocessing: k-core filtering, item indexing, chronological sequences, splits and mixed flows.

Conventions used by every model and by :mod:`raypipe.eval`:

* items are indexed ``1..N`` in a fixed order (domain, then item_id); ``0`` is padding;
* a sequence is chronological, ties in timestamp broken by the row order of ``interactions.parquet``
  (a *stable* sort), so the same input always gives the same sequences;
* histories handed to models are **left**-padded: the most recent item is the last column.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.io import write_parquet_atomic

log = logging.getLogger(__name__)


def kcore(df: pd.DataFrame, k: int, per_domain: bool = True, max_rounds: int = 100) -> pd.DataFrame:
    """Iterated k-core: repeatedly drop users and items with fewer than ``k`` interactions until stable.

    With ``per_domain`` the user degree is counted inside each domain (a user's sequence in one domain
    is what a single-domain model sees), as in the papers' per-domain 5-core preprocessing.
    """
    if k <= 1:
        return df
    user_key = ["user_id", "domain"] if per_domain else ["user_id"]
    for rnd in range(max_rounds):
        n = len(df)
        ucount = df.groupby(user_key, sort=False)["item_id"].transform("size")
        icount = df.groupby("item_id", sort=False)["user_id"].transform("size")
        df = df[(ucount >= k) & (icount >= k)]
        if len(df) == n:
            log.info("k-core(%d) stable after %d rounds: %d interactions", k, rnd, n)
            return df
    raise RuntimeError(f"k-core({k}) did not converge in {max_rounds} rounds")


@dataclass
class ItemIndex:
    """Bidirectional item_id <-> index map (index 0 is padding)."""

    item_ids: np.ndarray  # object array, position i holds the id of index i+1
    domains: np.ndarray  # object array, domain of index i+1

    @classmethod
    def build(cls, item_ids: pd.Series, domains: pd.Series) -> "ItemIndex":
        frame = pd.DataFrame({"item_id": item_ids, "domain": domains}).drop_duplicates("item_id")
        frame = frame.sort_values(["domain", "item_id"], kind="mergesort")
        return cls(frame["item_id"].to_numpy(dtype=object), frame["domain"].to_numpy(dtype=object))

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def num_embeddings(self) -> int:
        return len(self.item_ids) + 1

    def lookup(self, ids: pd.Series | list[str]) -> np.ndarray:
        """Indices for ids; unknown ids map to 0."""
        mapping = pd.Series(np.arange(1, len(self) + 1), index=self.item_ids)
        return pd.Series(ids).map(mapping).fillna(0).to_numpy(dtype=np.int64)

    def domain_items(self, domain: str) -> np.ndarray:
        """The catalogue of one domain as item indices."""
        return np.flatnonzero(self.domains == domain) + 1

    def save(self, path: str | Path) -> None:
        write_parquet_atomic(path, pa.table({"index": np.arange(1, len(self) + 1), "item_id": self.item_ids.astype(str),
                                             "domain": self.domains.astype(str)}))

    @classmethod
    def load(cls, path: str | Path) -> "ItemIndex":
        t = pq.read_table(path).to_pandas().sort_values("index")
        if not np.array_equal(t["index"].to_numpy(), np.arange(1, len(t) + 1)):
            raise ValueError(f"{path}: item index is not contiguous from 1")
        return cls(t["item_id"].to_numpy(dtype=object), t["domain"].to_numpy(dtype=object))


#: optional per-event attributes a sequences frame can carry (``data.event_attrs``): the interactions
#: column each is read from and the dtype of its arrays (reviews are object arrays of ``str | None``)
EVENT_ATTRS: dict[str, tuple[str, str]] = {"ratings": ("rating", "float32"), "reviews": ("review", "object")}


def build_sequences(df: pd.DataFrame, index: ItemIndex, by_domain: bool = True) -> pd.DataFrame:
    """One chronological sequence per user (per domain when ``by_domain``).

    Returns columns ``user_id``, ``domain`` (``"*"`` for mixed sequences), ``items`` (int64 arrays),
    ``timestamps`` (int64 arrays), and ``ratings`` / ``reviews`` when ``df`` has ``rating`` / ``review``
    columns (per-event arrays; a missing rating is NaN, a missing review ``None``).  Order: stable sort by
    timestamp within the input row order.
    """
    df = df.assign(_row=np.arange(len(df)), _idx=index.lookup(df["item_id"]))
    if (df["_idx"] == 0).any():
        bad = df.loc[df["_idx"] == 0, "item_id"].iloc[0]
        raise KeyError(f"interaction references item {bad!r} absent from the item index")
    df = df.sort_values(["timestamp", "_row"], kind="mergesort")
    keys = ["user_id", "domain"] if by_domain else ["user_id"]
    g = df.groupby(keys, sort=True)
    out = pd.DataFrame({
        "items": g["_idx"].agg(lambda s: s.to_numpy(dtype=np.int64)),
        "timestamps": g["timestamp"].agg(lambda s: s.to_numpy(dtype=np.int64)),
        **{name: g[col].agg(_event_array(dtype)) for name, (col, dtype) in EVENT_ATTRS.items() if col in df.columns},
    }).reset_index()
    if not by_domain:
        out["domain"] = "*"
        doms = g["domain"].agg(lambda s: s.to_numpy(dtype=object)).reset_index(drop=True)
        out["domains"] = doms
    return out


def _event_array(dtype: str):  # noqa: ANN202 - a pandas aggregation function
    if dtype == "object":
        return lambda s: np.array([v if isinstance(v, str) else None for v in s], dtype=object)
    return lambda s: s.to_numpy(dtype=dtype, na_value=np.nan)


def mixed_flows(df: pd.DataFrame, index: ItemIndex) -> pd.DataFrame:
    """UniM2Rec's mixed user behaviour flow: all of a user's items from every domain, chronological."""
    return build_sequences(df, index, by_domain=False)


def truncate(seqs: np.ndarray, max_len: int) -> np.ndarray:
    """Keep the most recent ``max_len`` items of each sequence."""
    return np.array([s[-max_len:] for s in seqs], dtype=object)


def pad_left(seqs: list[np.ndarray] | np.ndarray, max_len: int) -> np.ndarray:
    """Left-pad (with 0) / truncate variable-length sequences into an int64 matrix ``[n, max_len]``."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        if len(s):
            out[i, max_len - len(s):] = s
    return out


@dataclass
class SplitSet:
    """Histories (variable length, the user's *whole* history before the target) and their next-item
    targets for one split.  ``domain`` is the target's domain (for mixed flows it differs per event);
    ``history_domains`` holds the domain of every history item of mixed flows (``None`` otherwise)."""

    user_id: np.ndarray
    domain: np.ndarray
    history: list[np.ndarray]
    target: np.ndarray
    target_time: np.ndarray
    history_domains: list[np.ndarray] | None = None
    #: the target events' own attributes (``ratings``, ``reviews``) when the sequences carry them
    target_attrs: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.target)

    def padded(self, max_len: int) -> np.ndarray:
        return pad_left(self.history, max_len)

    def seen_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of every user's whole history: what the protocols exclude as seen."""
        lengths = np.array([len(h) for h in self.history], dtype=np.int64)
        indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        flat = np.concatenate(self.history).astype(np.int64) if len(self.history) else np.zeros(0, np.int64)
        return indptr, flat

    def subset(self, mask: np.ndarray) -> "SplitSet":
        idx = np.flatnonzero(mask)
        hd = None if self.history_domains is None else [self.history_domains[i] for i in idx]
        return SplitSet(self.user_id[idx], self.domain[idx], [self.history[i] for i in idx],
                        self.target[idx], self.target_time[idx], hd,
                        {k: v[idx] for k, v in self.target_attrs.items()})


def seq_columns(seqs: pd.DataFrame) -> list[str]:
    """The per-event array columns of a sequences frame (all truncated together by the splits)."""
    return [c for c in ("items", "timestamps", "domains", *EVENT_ATTRS) if c in seqs.columns]


def _holdout(ev: pd.DataFrame, offset: int) -> SplitSet:
    """The event ``offset`` from the end of each sequence as the target, everything before it as history."""
    mixed = "domains" in ev.columns
    return SplitSet(
        ev["user_id"].to_numpy(dtype=object),
        np.array([d[len(d) - offset] for d in ev["domains"]], dtype=object) if mixed
        else ev["domain"].to_numpy(dtype=object),
        [s[: len(s) - offset] for s in ev["items"]],
        np.array([s[len(s) - offset] for s in ev["items"]], dtype=np.int64),
        np.array([t[len(t) - offset] for t in ev["timestamps"]], dtype=np.int64),
        [d[: len(d) - offset] for d in ev["domains"]] if mixed else None,
        {k: np.array([a[len(a) - offset] for a in ev[k]], dtype=EVENT_ATTRS[k][1])
         for k in EVENT_ATTRS if k in ev.columns},
    )


def mixed_leave_one_out(flows: pd.DataFrame, min_len: int = 3) -> tuple[pd.DataFrame, SplitSet, SplitSet]:
    """Leave-one-out per (user, domain) over mixed cross-domain flows (UniM2Rec): in each domain where a
    user has at least ``min_len`` events, the last is a test target and the one before it a validation
    target -- the same target events as :func:`leave_one_out` over per-domain sequences -- and a target's
    history is every earlier event of the user, in any domain.  The training flows are the flows without
    any held-out event (every per-event column filtered alike)."""
    valid_rows: list[tuple] = []
    test_rows: list[tuple] = []
    train_cols: dict[str, list[np.ndarray]] = {c: [] for c in seq_columns(flows)}
    cols = seq_columns(flows)
    for row, (user, items, times, doms) in enumerate(zip(flows["user_id"], flows["items"], flows["timestamps"],
                                                        flows["domains"])):
        doms = np.asarray(doms, dtype=object)
        held = np.zeros(len(items), dtype=bool)
        for d in dict.fromkeys(doms.tolist()):
            pos = np.flatnonzero(doms == d)
            if len(pos) < min_len:
                continue
            for rows, p in ((valid_rows, pos[-2]), (test_rows, pos[-1])):
                rows.append((user, d, items[:p], items[p], times[p], doms[:p]))
            held[pos[-2:]] = True
        for c in cols:
            train_cols[c].append(np.asarray(flows[c].iat[row])[~held])
    train = flows.copy()
    for c, vals in train_cols.items():
        train[c] = pd.Series(vals, index=flows.index, dtype=object)

    def split(rows: list[tuple]) -> SplitSet:
        return SplitSet(np.array([r[0] for r in rows], dtype=object), np.array([r[1] for r in rows], dtype=object),
                        [r[2] for r in rows], np.array([r[3] for r in rows], dtype=np.int64),
                        np.array([r[4] for r in rows], dtype=np.int64), [r[5] for r in rows])

    return train.reset_index(drop=True), split(valid_rows), split(test_rows)


def leave_one_out(seqs: pd.DataFrame, min_len: int = 3) -> tuple[pd.DataFrame, SplitSet, SplitSet]:
    """Leave-one-out: the last item is the test target, the one before it the validation target.

    Returns the training sequences (everything before the validation target, every per-event column
    truncated alike: items, timestamps and, for mixed flows, domains) and the validation and test sets.
    Users with fewer than ``min_len`` items keep all their items for training only.
    """
    lengths = seqs["items"].map(len).to_numpy()
    ok = lengths >= min_len
    train = seqs.copy()
    for col in seq_columns(seqs):
        train[col] = pd.Series([s[:-2] if keep else s for s, keep in zip(seqs[col], ok)],
                               index=seqs.index, dtype=object)
    ev = seqs[ok]
    return train.reset_index(drop=True), _holdout(ev, 2), _holdout(ev, 1)


def user_holdout(seqs: pd.DataFrame, ratios: tuple[int, ...] = (4, 3, 3), seed: int = 0,
                 min_len: int = 2) -> tuple[pd.DataFrame, SplitSet, SplitSet]:
    """PreRec's user split: users are divided train/validation/test ``4:3:3`` (seeded); training users'
    sequences are used whole for training; each validation and test user's last item is their target,
    with the rest of their sequence as history (their sequences are never trained on).  Held-out users
    with fewer than ``min_len`` items are dropped (nothing to predict from)."""
    train_u, valid_u, test_u = user_split(seqs["user_id"].to_numpy(dtype=object), ratios, seed)
    lengths = seqs["items"].map(len).to_numpy()
    train = seqs[seqs["user_id"].isin(set(train_u))].reset_index(drop=True)
    valid = seqs[seqs["user_id"].isin(set(valid_u)) & (lengths >= min_len)]
    test = seqs[seqs["user_id"].isin(set(test_u)) & (lengths >= min_len)]
    return train, _holdout(valid, 1), _holdout(test, 1)


def sequence_windows(seqs: list[np.ndarray] | pd.Series, width: int) -> list[np.ndarray]:
    """Training windows of at most ``width`` items covering whole sequences: the last ``width`` items,
    then windows ending ``width - 1`` items earlier, and so on, so every item after a sequence's first
    is a next-item target in exactly one window (with as much of its history as the window holds).
    Sequences shorter than 2 items give no window."""
    if width < 2:
        raise ValueError(f"a training window needs at least 2 items, got width {width}")
    out: list[np.ndarray] = []
    for s in seqs:
        end = len(s)
        while end >= 2:
            start = max(0, end - width)
            out.append(s[start:end])
            if start == 0:
                break
            end = start + 1  # the next window's last item is this window's first input
    return out


def user_split(users: np.ndarray, ratios: tuple[int, ...] = (4, 3, 3), seed: int = 0) -> list[np.ndarray]:
    """Random user split (PreRec: train/validation/test users 4:3:3), deterministic for a seed."""
    users = np.asarray(sorted(set(users.tolist())), dtype=object)
    perm = np.random.default_rng(seed).permutation(len(users))
    cuts = np.cumsum(np.asarray(ratios, dtype=float) / sum(ratios) * len(users)).round().astype(int)[:-1]
    return [users[np.sort(p)] for p in np.split(perm, cuts)]


def next_item_examples(seqs: pd.Series | list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """All (history, next item) prefix pairs from training sequences: ``[n, max_len]`` and ``[n]``."""
    hist: list[np.ndarray] = []
    tgt: list[int] = []
    for s in seqs:
        for t in range(1, len(s)):
            hist.append(s[max(0, t - max_len):t])
            tgt.append(int(s[t]))
    return pad_left(hist, max_len), np.asarray(tgt, dtype=np.int64)


def item_counts(seqs: pd.Series | list[np.ndarray], n_embeddings: int) -> np.ndarray:
    """Interaction count per item index (training popularity), length ``n_embeddings``."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]) if len(seqs) else np.zeros(0, np.int64)
    return np.bincount(flat, minlength=n_embeddings)
