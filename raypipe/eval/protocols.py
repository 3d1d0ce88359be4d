"""Evaluation protocols: one :func:`evaluate` that every model goes through.

A model is seen only through a score function with the shared model surface::

    score_fn(history: LongTensor[B, L], candidates: LongTensor[C] | LongTensor[B, C]) -> Tensor[B, C]

Item indices are 1..N (0 = padding), histories are left-padded so the most recent item is the last
column, a 1-d ``candidates`` is shared by every row and a 2-d one is per row; a higher score is better.
A score function that takes a ``time`` keyword also receives the target events' Unix times
(``EvalSet.time``, LongTensor[B]) when the set has them: time-aware models read the state of the
world at the moment of the recommendation (e.g. PreRec's popularity factors).
A model's bound ``.score`` qualifies; if it belongs to an ``nn.Module`` that module is switched to
``eval()`` for the duration and restored afterwards. Scoring runs under ``torch.inference_mode()``.

Protocols (:class:`EvalConfig` ``protocol``):

* ``"full"``: leave-one-out full ranking of the target among the whole ``catalogue``; with
  ``exclude_seen`` each user's seen items (default: the items of their history) except the target get
  score -inf first. Users are scored in batches of ``max_scores_per_batch // len(catalogue)`` rows, so
  no U x N matrix ever exists and catalogues of 10^5-10^6 items work.
* ``"sampled"``: the target plus ``n_neg`` negatives drawn uniformly *without replacement* from the
  catalogue minus every item the user touched (seen items and the target), by vectorised rejection
  sampling (users who touched more than half of the catalogue are sampled exactly from their
  untouched pool). Negatives are drawn in fixed blocks of users with a generator seeded by
  ``(seed, block)``, so they depend on the seed only, never on the scoring batch size.
* ``"rerank"``: a first-stage score function ranks the catalogue (seen items excluded as in
  ``"full"``), its top ``top_n`` are re-ranked by ``score_fn``; a target outside the first-stage top-N
  gets rank ``inf`` (a miss for every metric). Shortlist ties at the N-th place are resolved by
  ``torch.topk``; items the first stage scores -inf (e.g. excluded) are never in the shortlist.
  :func:`rerank_depths` re-ranks the top 20, 50, ... of one shortlist with a single scoring pass.

Ranks with ties: ``rank = 1 + #(valid candidates scoring strictly higher than the target) + J`` where
``J`` is uniform on ``{0, ..., T}`` and ``T`` is the number of *other* valid candidates with exactly
the target's score (excluded candidates never count, even when the target itself scores -inf). ``J``
comes from one uniform number per user drawn from a generator seeded by ``seed``, so ranks are
reproducible and independent of batching, and a constant-score model gets the expected random ranking
(mean rank (C + 1) / 2 over C candidates) instead of an optimistic rank 1 or pessimistic rank C.

Subsets and groups: ``unseen_items`` restricts evaluation to users whose target is in that set (e.g.
items never seen in training); :func:`evaluate_popularity_groups` buckets users by the training
popularity of their target item and reports metrics and ``n_users`` per bucket;
:func:`evaluate_groups` does the same for any grouping (e.g. targets missing a modality).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import torch
from tqdm.auto import tqdm

from raypipe.eval.metrics import PRE_REC_A, PRE_REC_B, compute_metrics, metric_names

logger = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(history [B, L], candidates [C] or [B, C]) -> scores [B, C]``; higher is better."""

ProtocolName = Literal["full", "sampled", "rerank"]

_SAMPLING_BLOCK_USERS = 4096
"""Users per negative-sampling block; fixed so that negatives never depend on the batch size."""
_TIE_STREAM = 0
_NEGATIVE_STREAM = 1


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """Users to evaluate, one held-out target each.

    Attributes:
        history: int64 [U, L] item indices, left-padded with 0 (most recent item in the last column).
        target: int64 [U] the held-out next item of each user; must be in ``catalogue``.
        catalogue: int64 [N] the distinct item indices (>= 1) that may be ranked for this set, e.g. the
            target domain's items. N is the catalogue size used by the @K% metrics by default.
        seen: optional CSR ``(indptr [U + 1], indices)`` of items to exclude per user; default: the
            non-padding items of ``history``. Items outside the catalogue are ignored.
        user_ids: optional [U] identifiers carried along for the caller (not used for scoring).
        time: optional int64 [U] Unix time of each target event.  Score functions that take a ``time``
            keyword (time-aware models such as PreRec, whose popularity factors depend on when the
            recommendation is made) receive the rows' times; others never see it.
    """

    history: np.ndarray
    target: np.ndarray
    catalogue: np.ndarray
    seen: tuple[np.ndarray, np.ndarray] | None = None
    user_ids: np.ndarray | None = None
    time: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.history = np.asarray(self.history, dtype=np.int64)
        self.target = np.asarray(self.target, dtype=np.int64)
        self.catalogue = np.asarray(self.catalogue, dtype=np.int64)
        if self.history.ndim != 2:
            raise ValueError(f"history must be [U, L], got shape {self.history.shape}")
        n_users = self.history.shape[0]
        if self.target.shape != (n_users,):
            raise ValueError(f"target must be [U]={n_users}, got shape {self.target.shape}")
        if self.catalogue.ndim != 1 or self.catalogue.size == 0:
            raise ValueError(f"catalogue must be a non-empty 1-d array, got shape {self.catalogue.shape}")
        if self.catalogue.min() < 1:
            raise ValueError("catalogue item indices must be >= 1 (0 is padding)")
        if np.unique(self.catalogue).size != self.catalogue.size:
            raise ValueError("catalogue contains duplicate items")
        if n_users and self.history.min() < 0:
            raise ValueError("history item indices must be >= 0")
        if self.seen is not None:
            indptr = np.asarray(self.seen[0], dtype=np.int64)
            indices = np.asarray(self.seen[1], dtype=np.int64)
            if indptr.shape != (n_users + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
                raise ValueError("seen indptr must be non-decreasing, start at 0 and have U + 1 entries")
            if indptr[-1] != indices.size:
                raise ValueError(f"seen indptr[-1]={indptr[-1]} != len(indices)={indices.size}")
            self.seen = (indptr, indices)
        if self.user_ids is not None:
            self.user_ids = np.asarray(self.user_ids)
            if self.user_ids.shape[:1] != (n_users,):
                raise ValueError(f"user_ids must have U={n_users} entries, got {self.user_ids.shape}")
        if self.time is not None:
            self.time = np.asarray(self.time, dtype=np.int64)
            if self.time.shape != (n_users,):
                raise ValueError(f"time must be [U]={n_users}, got shape {self.time.shape}")

    @property
    def n_users(self) -> int:
        """Number of users U."""
        return int(self.history.shape[0])

    def seen_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of each user's seen items (``seen`` or the non-padding history)."""
        if self.seen is not None:
            return self.seen
        mask = self.history != 0
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        return indptr, self.history[mask]

    def target_seen(self) -> np.ndarray:
        """bool [U]: whether each user's target is one of their seen items (a repeat consumption). The
        protocols exclude seen items from the ranking but never the target, so a repeated target competes
        only with the items the user has not taken."""
        indptr, indices = self.seen_csr()
        row = np.repeat(np.arange(self.n_users), np.diff(indptr))
        out = np.zeros(self.n_users, dtype=bool)
        out[row[indices == self.target[row]]] = True
        return out

    def subset(self, rows: np.ndarray) -> EvalSet:
        """A new :class:`EvalSet` with the given rows (boolean mask or integer indices), same catalogue."""
        idx = np.arange(self.n_users)[rows]
        seen: tuple[np.ndarray, np.ndarray] | None = None
        if self.seen is not None:
            indptr, indices = self.seen
            lengths = indptr[idx + 1] - indptr[idx]
            new_indptr = np.zeros(idx.size + 1, dtype=np.int64)
            np.cumsum(lengths, out=new_indptr[1:])
            take = _ranges(indptr[idx], lengths)
            seen = (new_indptr, indices[take])
        return EvalSet(
            history=self.history[idx],
            target=self.target[idx],
            catalogue=self.catalogue,
            seen=seen,
            user_ids=None if self.user_ids is None else self.user_ids[idx],
            time=None if self.time is None else self.time[idx],
        )


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate; every field can also be overridden as a keyword of :func:`evaluate`.

    Attributes:
        protocol: ``"full"`` ranking, ``"sampled"`` candidates or ``"rerank"`` over a first-stage top-N.
        ks: cutoffs for ``hr@K`` / ``recall@K`` / ``ndcg@K``.
        k_percents: PreRec cutoffs in percent for ``recall@K%`` / ``r_ndcg@K%`` (eq. 7-9), e.g. (0.5,).
        mrr_ks: cutoffs for ``mrr@K`` (``mrr`` is always reported uncut).
        exclude_seen: full / rerank: give the user's seen items (except the target) score -inf.
        n_neg: sampled: negatives per user (99 or 100 in the papers).
        top_n: rerank: size of the first-stage shortlist.
        n_items: N for the @K% metrics; default ``len(catalogue)``.
        a, b: PreRec eq. 7-9 hyperparameters.
        seed: seeds negative sampling and tie-breaking.
        max_scores_per_batch: upper bound on batch_users x candidates scored at once (memory budget).
        max_batch_users: optional extra cap on users per score call (heavy per-user models).
        device: where history and candidate tensors are sent; ranking runs on the scores' device.
        progress: tqdm bar; ``None`` shows it only on a terminal.
    """

    protocol: ProtocolName = "full"
    ks: tuple[int, ...] = (1, 5, 10, 20)
    k_percents: tuple[float, ...] = ()
    mrr_ks: tuple[int, ...] = ()
    exclude_seen: bool = True
    n_neg: int = 100
    top_n: int | None = None
    n_items: int | None = None
    a: float = PRE_REC_A
    b: float = PRE_REC_B
    seed: int = 0
    max_scores_per_batch: int = 2**25
    max_batch_users: int | None = None
    device: str | torch.device = "cpu"
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("full", "sampled", "rerank"):
            raise ValueError(f"unknown protocol {self.protocol!r}; use 'full', 'sampled' or 'rerank'")
        if self.n_neg < 1:
            raise ValueError(f"n_neg must be >= 1, got {self.n_neg}")
        if self.top_n is not None and self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")
        if self.max_scores_per_batch < 1:
            raise ValueError("max_scores_per_batch must be >= 1")
        if self.max_batch_users is not None and self.max_batch_users < 1:
            raise ValueError("max_batch_users must be >= 1")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - offsets)


class _CataloguePositions:
    """Maps item indices to their position in the catalogue (-1 when not in it)."""

    def __init__(self, catalogue: np.ndarray) -> None:
        self.size = int(catalogue.size)
        self._pos = np.full(int(catalogue.max()) + 1, -1, dtype=np.int64)
        self._pos[catalogue] = np.arange(catalogue.size, dtype=np.int64)

    def __call__(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        out = np.full(items.shape, -1, dtype=np.int64)
        ok = (items >= 0) & (items < self._pos.size)
        out[ok] = self._pos[items[ok]]
        return out


def _seen_positions(
    indptr: np.ndarray, indices: np.ndarray, start: int, stop: int, positions: _CataloguePositions
) -> tuple[np.ndarray, np.ndarray]:
    """Local row ids and catalogue positions of the seen items of users ``start:stop`` (in catalogue)."""
    items = indices[indptr[start] : indptr[stop]]
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(indptr[start : stop + 1]))
    pos = positions(items)
    keep = pos >= 0
    return rows[keep], pos[keep]


def _unique_keys(rows: np.ndarray, pos: np.ndarray, n_cols: int) -> np.ndarray:
    """Sorted unique ``row * n_cols + pos`` keys."""
    return np.unique(rows * np.int64(n_cols) + pos)


def _ranks_from_scores(
    scores: torch.Tensor, target_col: torch.Tensor, tie_u: torch.Tensor, n_masked: torch.Tensor
) -> torch.Tensor:
    """Rank of column ``target_col`` in each row (masked entries already hold -inf).

    rank = 1 + #(strictly higher) + floor(u * (T + 1)) with T the other valid candidates tied with
    the target; ``n_masked`` (masked entries per row) is removed from T when the target is -inf.
    """
    t = scores.gather(1, target_col.view(-1, 1))
    greater = (scores > t).sum(dim=1)
    ties = (scores == t).sum(dim=1) - 1
    ties = ties - torch.where(torch.isneginf(t.view(-1)), n_masked, torch.zeros_like(n_masked))
    offset = torch.floor(tie_u * (ties + 1).to(tie_u.dtype)).to(ties.dtype)
    offset = torch.minimum(offset, ties)  # guard u * (T + 1) rounding up to T + 1
    return (1 + greater + offset).to(torch.float64)


def takes_time(score_fn: ScoreFn) -> bool:
    """Whether ``score_fn`` accepts a ``time`` keyword (the target events' Unix times)."""
    try:
        return "time" in inspect.signature(score_fn).parameters
    except (TypeError, ValueError):
        return False


def _call_scores(
    score_fn: ScoreFn, history: torch.Tensor, candidates: torch.Tensor, n_rows: int, n_cols: int,
    time: np.ndarray | None = None,
) -> torch.Tensor:
    """Call ``score_fn`` (with the rows' ``time`` when given and it takes one) and check its output:
    shape [B, C], floating point, no NaN."""
    if time is not None and takes_time(score_fn):
        scores = score_fn(history, candidates, time=torch.from_numpy(time).to(history.device))
    else:
        scores = score_fn(history, candidates)
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"score_fn must return a torch.Tensor, got {type(scores).__name__}")
    if tuple(scores.shape) != (n_rows, n_cols):
        raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected ({n_rows}, {n_cols})")
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    if bool(torch.isnan(scores).any()):
        raise ValueError("score_fn returned NaN scores")
    return scores


def _mask(scores: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """Out-of-place copy of ``scores`` with -inf at (rows, cols); the model's tensor is never written."""
    if rows.size == 0:
        return scores
    r = torch.from_numpy(rows).to(scores.device)
    c = torch.from_numpy(cols).to(scores.device)
    fill = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    return scores.index_put((r, c), fill)


@contextlib.contextmanager
def _eval_mode(*fns: ScoreFn | None) -> Iterator[None]:
    """Switch the ``nn.Module`` behind each (bound) score function to eval mode, then restore it."""
    modules: list[torch.nn.Module] = []
    for fn in fns:
        owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, torch.nn.Module) and all(owner is not m for m in modules):
            modules.append(owner)
    states = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, state in zip(modules, states):
            m.train(state)


def _batch_users(n_candidates: int, config: EvalConfig) -> int:
    batch = max(1, config.max_scores_per_batch // max(1, n_candidates))
    if config.max_batch_users is not None:
        batch = min(batch, config.max_batch_users)
    return batch


# --------------------------------------------------------------------------------------------------
# Negative sampling
# --------------------------------------------------------------------------------------------------


def _sample_block(
    rng: np.random.Generator,
    n_rows: int,
    n_cat: int,
    n_neg: int,
    touched_keys: np.ndarray,
    row_offset: int,
    user_ids: np.ndarray | None,
) -> np.ndarray:
    """[n_rows, n_neg] distinct catalogue positions per row avoiding ``touched_keys`` (row * n_cat + pos).

    Rejection sampling: draw iid uniform positions, drop touched ones and repeats within the row, keep
    the first ``n_neg`` survivors (a uniform sample without replacement from the untouched pool); rows
    that come up short are redrawn with a wider draw. Rows whose pool is under half the catalogue, or
    that still fail after a few rounds, are sampled exactly from their explicit pool.
    """
    n_touched = np.bincount(touched_keys // n_cat, minlength=n_rows)
    allowed = n_cat - n_touched
    short = np.flatnonzero(allowed < n_neg)
    if short.size:
        row = int(short[0])
        who = f"user {user_ids[row_offset + row]!r}" if user_ids is not None else f"row {row_offset + row}"
        raise ValueError(
            f"{short.size} user(s) have fewer than n_neg={n_neg} untouched catalogue items to sample "
            f"negatives from (e.g. {who}: {int(allowed[row])} of {n_cat}); lower n_neg or widen the catalogue"
        )
    out = np.empty((n_rows, n_neg), dtype=np.int64)
    hard = (2 * allowed < n_cat) | (allowed < 2 * n_neg)
    todo = np.flatnonzero(~hard)
    width = 3 * n_neg + 16
    for _ in range(6):
        if todo.size == 0:
            break
        draws = rng.integers(0, n_cat, size=(todo.size, width), dtype=np.int64)
        keys = todo[:, None] * n_cat + draws
        ok = np.ones(keys.shape, dtype=bool)
        if touched_keys.size:
            at = np.minimum(np.searchsorted(touched_keys, keys), touched_keys.size - 1)
            ok = touched_keys[at] != keys
        first = np.zeros(keys.size, dtype=bool)
        first[np.unique(keys.ravel(), return_index=True)[1]] = True  # first occurrence in each row
        ok &= first.reshape(keys.shape)
        count = np.cumsum(ok, axis=1)
        done = count[:, -1] >= n_neg
        take = ok[done] & (count[done] <= n_neg)
        out[todo[done]] = draws[done][take].reshape(-1, n_neg)
        todo = todo[~done]
        width *= 2
    exact = np.concatenate([np.flatnonzero(hard), todo])
    if exact.size:
        bounds = np.searchsorted(touched_keys, np.stack([exact * n_cat, (exact + 1) * n_cat]))
        everything = np.arange(n_cat, dtype=np.int64)
        for row, lo, hi in zip(exact, bounds[0], bounds[1]):
            pool = np.setdiff1d(everything, touched_keys[lo:hi] - row * n_cat, assume_unique=True)
            out[row] = rng.choice(pool, size=n_neg, replace=False)
    return out


def _negative_blocks(
    eval_set: EvalSet, n_neg: int, seed: int, positions: _CataloguePositions
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, negative positions [stop - start, n_neg])`` per fixed block of users."""
    indptr, indices = eval_set.seen_csr()
    target_pos = positions(eval_set.target)
    n_cat = positions.size
    for block, start in enumerate(range(0, eval_set.n_users, _SAMPLING_BLOCK_USERS)):
        stop = min(start + _SAMPLING_BLOCK_USERS, eval_set.n_users)
        rows, pos = _seen_positions(indptr, indices, start, stop, positions)
        rows = np.concatenate([rows, np.arange(stop - start, dtype=np.int64)])
        pos = np.concatenate([pos, target_pos[start:stop]])
        keep = pos >= 0
        touched = _unique_keys(rows[keep], pos[keep], n_cat)
        rng = np.random.default_rng([seed, _NEGATIVE_STREAM, block])
        yield start, stop, _sample_block(rng, stop - start, n_cat, n_neg, touched, start, eval_set.user_ids)


def auto_protocol(preferred: str, eval_set: EvalSet, n_neg: int) -> str:
    """``preferred`` (``full`` or ``sampled``), except that ``sampled`` becomes ``full`` when some user of
    ``eval_set`` has fewer than ``n_neg`` untouched catalogue items (its catalogue is then about as small
    as the candidate list, and ranking all of it costs no more)."""
    if preferred != "sampled":
        return preferred
    indptr, _ = eval_set.seen_csr()
    most_seen = int(np.diff(indptr).max()) if eval_set.n_users else 0
    if int(eval_set.catalogue.size) - most_seen - 1 < n_neg:
        logger.info("catalogue of %d items: too few to sample %d negatives for every user, ranking it whole",
                    eval_set.catalogue.size, n_neg)
        return "full"
    return "sampled"


def sample_negatives(eval_set: EvalSet, n_neg: int = 100, seed: int = 0) -> np.ndarray:
    """The negatives the ``"sampled"`` protocol uses: int64 [U, n_neg] item indices.

    Each row holds ``n_neg`` distinct items drawn uniformly from ``eval_set.catalogue`` minus the
    user's seen items and target; deterministic for ``seed`` and independent of any batch size.
    Raises ``ValueError`` when a user has fewer than ``n_neg`` untouched items.
    """
    positions = _CataloguePositions(eval_set.catalogue)
    out = np.empty((eval_set.n_users, n_neg), dtype=np.int64)
    for start, stop, neg in _negative_blocks(eval_set, n_neg, seed, positions):
        out[start:stop] = eval_set.catalogue[neg]
    return out


# --------------------------------------------------------------------------------------------------
# Ranking loops
# --------------------------------------------------------------------------------------------------


def _masked_catalogue_scores(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig,
    positions: _CataloguePositions,
) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Batches of users with ``score_fn``'s scores over the whole catalogue, the user's seen items other
    than the target at -inf (with ``exclude_seen``): ``(start, stop, history, scores, target positions,
    masked count per row, times)``."""
    n_cat = positions.size
    device = torch.device(config.device)
    catalogue_t = torch.from_numpy(eval_set.catalogue).to(device)
    target_pos = positions(eval_set.target)
    indptr, indices = eval_set.seen_csr()
    batch = _batch_users(n_cat, config)
    for start in range(0, eval_set.n_users, batch):
        stop = min(start + batch, eval_set.n_users)
        n_rows = stop - start
        history = torch.from_numpy(eval_set.history[start:stop]).to(device)
        tpos = target_pos[start:stop]
        rows = cols = np.zeros(0, dtype=np.int64)
        if config.exclude_seen:
            rows, cols = _seen_positions(indptr, indices, start, stop, positions)
            keep = cols != tpos[rows]
            keys = _unique_keys(rows[keep], cols[keep], n_cat)
            rows, cols = keys // n_cat, keys % n_cat
        times = None if eval_set.time is None else eval_set.time[start:stop]
        scores = _mask(_call_scores(score_fn, history, catalogue_t, n_rows, n_cat, times), rows, cols)
        yield start, stop, history, scores, tpos, np.bincount(rows, minlength=n_rows), times


def _rerank_rows(
    score_fn: ScoreFn, history: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor,
    target: torch.Tensor, u: torch.Tensor, times: np.ndarray | None,
) -> torch.Tensor:
    """Ranks of each row's target among its shortlist ``candidates`` (item ids; ``valid`` marks real
    entries) re-scored by ``score_fn``; ``inf`` where the target is not in the shortlist."""
    second = _call_scores(score_fn, history, candidates, *candidates.shape, times).to(candidates.device)
    return _shortlist_rank(second, candidates, valid, target, u)


def _shortlist_rank(
    second: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor, target: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """Ranks of each row's target among ``candidates`` scored ``second``; ``inf`` where it is not there."""
    match = (candidates == target.view(-1, 1)) & valid
    in_top = match.any(dim=1)
    second = torch.where(valid, second, torch.full_like(second, float("-inf")))
    col = match.to(torch.int8).argmax(dim=1)
    r = _ranks_from_scores(second, col, u, (~valid).sum(dim=1))
    return torch.where(in_top, r, torch.full_like(r, float("inf")))


def _full_or_rerank_ranks(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig,
    positions: _CataloguePositions,
    tie_u: np.ndarray,
    bar: tqdm,
    first_stage: ScoreFn | None,
) -> np.ndarray:
    ranks = np.empty(eval_set.n_users, dtype=np.float64)
    catalogue_t = torch.from_numpy(eval_set.catalogue)
    stage_fn = first_stage if first_stage is not None else score_fn
    for start, stop, history, scores, tpos, n_masked, times in _masked_catalogue_scores(
            stage_fn, eval_set, config, positions):
        dev = scores.device
        u = torch.from_numpy(tie_u[start:stop]).to(dev)
        if first_stage is None:
            r = _ranks_from_scores(scores, torch.from_numpy(tpos).to(dev), u, torch.from_numpy(n_masked).to(dev))
        else:
            assert config.top_n is not None
            values, short_pos = torch.topk(scores, k=min(config.top_n, positions.size), dim=1)
            valid = ~torch.isneginf(values)  # excluded (or -inf) items are not in the shortlist
            candidates = catalogue_t.to(dev)[short_pos]
            target = torch.from_numpy(eval_set.target[start:stop]).to(dev)
            r = _rerank_rows(score_fn, history, candidates, valid, target, u, times)
        ranks[start:stop] = r.cpu().numpy()
        bar.update(stop - start)
    return ranks


def _shortlist_ranks(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig,
    shortlist: np.ndarray,
    tie_u: np.ndarray,
    bar: tqdm,
    depths: Sequence[int] | None = None,
) -> dict[int, np.ndarray]:
    """Ranks of the targets re-ranked within the first ``n`` columns of ``shortlist``, per ``n`` of
    ``depths`` (default: all of its columns); each row's shortlist is scored once."""
    device = torch.device(config.device)
    depths = [shortlist.shape[1]] if depths is None else list(depths)
    batch = _batch_users(shortlist.shape[1], config)
    ranks = {n: np.empty(eval_set.n_users, dtype=np.float64) for n in depths}
    for start in range(0, eval_set.n_users, batch):
        stop = min(start + batch, eval_set.n_users)
        candidates = torch.from_numpy(shortlist[start:stop]).to(device)
        valid = candidates != 0
        # an empty slot (0) is scored as the row's first real candidate and then ignored
        filled = torch.where(valid, candidates, candidates.max(dim=1, keepdim=True).values.clamp(min=1))
        target = torch.from_numpy(eval_set.target[start:stop]).to(device)
        u = torch.from_numpy(tie_u[start:stop]).to(device)
        times = None if eval_set.time is None else eval_set.time[start:stop]
        history = torch.from_numpy(eval_set.history[start:stop]).to(device)
        second = _call_scores(score_fn, history, filled, *filled.shape, times).to(device)
        for n in depths:
            r = _shortlist_rank(second[:, :n], filled[:, :n], valid[:, :n], target, u)
            ranks[n][start:stop] = r.cpu().numpy()
        bar.update(stop - start)
    return ranks


def first_stage_shortlist(score_fn: ScoreFn, eval_set: EvalSet, top_n: int, config: EvalConfig | None = None
                          ) -> np.ndarray:
    """Each user's top ``top_n`` items by ``score_fn`` over the catalogue (seen items other than the
    target excluded as in ``"full"``), as item ids ``int64[U, top_n]``, best first; ``0`` fills the slots
    of users with fewer than ``top_n`` rankable items.  ``evaluate(..., protocol="rerank",
    shortlist=...)`` re-ranks it, so every second stage sees the same first-stage candidates even when
    it reads the users' histories differently (e.g. as mixed cross-domain flows)."""
    config = config or EvalConfig()
    positions = _CataloguePositions(eval_set.catalogue)
    out = np.zeros((eval_set.n_users, min(top_n, positions.size)), dtype=np.int64)
    with _eval_mode(score_fn), torch.inference_mode():
        for start, stop, _, scores, _, _, _ in _masked_catalogue_scores(score_fn, eval_set, config, positions):
            values, pos = torch.topk(scores, k=out.shape[1], dim=1)
            items = torch.from_numpy(eval_set.catalogue)[pos.cpu()]
            out[start:stop] = torch.where(torch.isneginf(values.cpu()), 0, items).numpy()
    return out


def _sampled_ranks(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig,
    positions: _CataloguePositions,
    tie_u: np.ndarray,
    bar: tqdm,
) -> np.ndarray:
    device = torch.device(config.device)
    n_cand = 1 + config.n_neg
    batch = _batch_users(n_cand, config)
    target_pos = positions(eval_set.target)
    ranks = np.empty(eval_set.n_users, dtype=np.float64)
    for block_start, block_stop, negatives in _negative_blocks(eval_set, config.n_neg, config.seed, positions):
        # the target sits in column 0; tie-breaking makes its position irrelevant
        cand_pos = np.concatenate([target_pos[block_start:block_stop, None], negatives], axis=1)
        cand_items = eval_set.catalogue[cand_pos]
        for start in range(block_start, block_stop, batch):
            stop = min(start + batch, block_stop)
            n_rows = stop - start
            history = torch.from_numpy(eval_set.history[start:stop]).to(device)
            candidates = torch.from_numpy(cand_items[start - block_start : stop - block_start]).to(device)
            times = None if eval_set.time is None else eval_set.time[start:stop]
            scores = _call_scores(score_fn, history, candidates, n_rows, n_cand, times)
            dev = scores.device
            zeros = torch.zeros(n_rows, dtype=torch.int64, device=dev)
            u = torch.from_numpy(tie_u[start:stop]).to(dev)
            ranks[start:stop] = _ranks_from_scores(scores, zeros, u, zeros).cpu().numpy()
            bar.update(n_rows)
    return ranks


def compute_ranks(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig | None = None,
    *,
    first_stage: ScoreFn | None = None,
    shortlist: np.ndarray | None = None,
) -> np.ndarray:
    """1-based float64 rank of every user's target under ``config.protocol`` (``inf`` = rerank miss).

    Protocol ``"rerank"`` takes its shortlist from ``first_stage`` (top ``config.top_n``) or, given,
    ``shortlist`` (item ids ``[U, N]`` aligned with ``eval_set``'s rows, 0 = empty slot; see
    :func:`first_stage_shortlist`).

    See the module docstring for the protocols and the tie-breaking rule.
    """
    config = config or EvalConfig()
    positions = _CataloguePositions(eval_set.catalogue)
    missing = positions(eval_set.target) < 0
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} target(s) are not in the catalogue (e.g. item {int(eval_set.target[missing][0])})"
        )
    if config.protocol == "rerank":
        if shortlist is not None:
            if first_stage is not None:
                raise ValueError("protocol 'rerank' takes first_stage= or shortlist=, not both")
            if shortlist.ndim != 2 or shortlist.shape[0] != eval_set.n_users:
                raise ValueError(f"shortlist must be [n_users={eval_set.n_users}, N], got {shortlist.shape}")
        elif first_stage is None or config.top_n is None:
            raise ValueError("protocol 'rerank' needs first_stage= and top_n, or shortlist=")
    elif first_stage is not None or shortlist is not None:
        raise ValueError(f"first_stage / shortlist are only used by protocol 'rerank', not {config.protocol!r}")
    tie_u = np.random.default_rng([config.seed, _TIE_STREAM]).random(eval_set.n_users)
    bar = tqdm(
        total=eval_set.n_users,
        desc=f"evaluate[{config.protocol}]",
        unit="user",
        disable=None if config.progress is None else not config.progress,
        leave=False,
    )
    try:
        with _eval_mode(score_fn, first_stage), torch.inference_mode():
            if config.protocol == "sampled":
                return _sampled_ranks(score_fn, eval_set, config, positions, tie_u, bar)
            if shortlist is not None:
                short = np.asarray(shortlist, np.int64)
                return _shortlist_ranks(score_fn, eval_set, config, short, tie_u, bar)[short.shape[1]]
            return _full_or_rerank_ranks(score_fn, eval_set, config, positions, tie_u, bar, first_stage)
    finally:
        bar.close()


def rerank_depths(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    shortlist: np.ndarray,
    depths: Sequence[int],
    config: EvalConfig | None = None,
) -> dict[int, np.ndarray]:
    """Ranks of every user's target when ``score_fn`` re-ranks the top ``n`` of ``shortlist`` (item ids
    ``[U, N]``, best first, as :func:`first_stage_shortlist` gives), for each ``n`` of ``depths``;
    ``inf`` where the target is not among them.

    Each row's shortlist is scored once, so this is ``len(depths)`` times cheaper than calling
    :func:`compute_ranks` with ``shortlist[:, :n]`` per depth, and gives the same ranks (same tie-breaking)
    for any model whose score of a candidate does not depend on the other candidates of its row.
    """
    config = dataclasses.replace(config or EvalConfig(), protocol="rerank")
    short = np.asarray(shortlist, np.int64)
    if short.ndim != 2 or short.shape[0] != eval_set.n_users:
        raise ValueError(f"shortlist must be [n_users={eval_set.n_users}, N], got {short.shape}")
    bad = [n for n in depths if not 1 <= int(n) <= short.shape[1]]
    if bad or not depths:
        raise ValueError(f"depths must be 1..{short.shape[1]} (the shortlist's length), got {list(depths)}")
    tie_u = np.random.default_rng([config.seed, _TIE_STREAM]).random(eval_set.n_users)
    bar = tqdm(total=eval_set.n_users, desc="rerank_depths", unit="user",
               disable=None if config.progress is None else not config.progress, leave=False)
    try:
        with _eval_mode(score_fn), torch.inference_mode():
            return _shortlist_ranks(score_fn, eval_set, config, short, tie_u, bar, [int(n) for n in depths])
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


@overload
def evaluate(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig | None = ...,
    *,
    first_stage: ScoreFn | None = ...,
    shortlist: np.ndarray | None = ...,
    unseen_items: np.ndarray | Sequence[int] | None = ...,
    return_ranks: Literal[False] = ...,
    **overrides: object,
) -> dict[str, float]: ...


@overload
def evaluate(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig | None = ...,
    *,
    first_stage: ScoreFn | None = ...,
    shortlist: np.ndarray | None = ...,
    unseen_items: np.ndarray | Sequence[int] | None = ...,
    return_ranks: Literal[True],
    **overrides: object,
) -> tuple[dict[str, float], np.ndarray]: ...


def evaluate(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    config: EvalConfig | None = None,
    *,
    first_stage: ScoreFn | None = None,
    shortlist: np.ndarray | None = None,
    unseen_items: np.ndarray | Sequence[int] | None = None,
    return_ranks: bool = False,
    **overrides: object,
) -> dict[str, float] | tuple[dict[str, float], np.ndarray]:
    """Evaluate a score function on ``eval_set``; the one entry point for every model.

    Args:
        score_fn: ``(history [B, L], candidates [C] | [B, C]) -> scores [B, C]``, e.g. ``model.score``.
        eval_set: users, histories, targets, catalogue and seen items.
        config: protocol and metric settings; keyword ``overrides`` replace its fields
            (``evaluate(fn, s, protocol="sampled", n_neg=99)``).
        first_stage: the first-stage score function of protocol ``"rerank"``.
        shortlist: or protocol ``"rerank"``'s precomputed shortlist, item ids ``[U, N]`` aligned with
            ``eval_set``'s rows (:func:`first_stage_shortlist`).
        unseen_items: if given, only users whose target is in this set are evaluated.
        return_ranks: also return float64 ranks aligned with ``eval_set`` rows (NaN for users left
            out by ``unseen_items``, ``inf`` for rerank misses).

    Returns:
        Mean metrics (see :func:`raypipe.eval.metrics.compute_metrics`) plus ``n_users``, the number
        of users evaluated; with ``return_ranks`` a ``(metrics, ranks)`` pair.
    """
    config = dataclasses.replace(config or EvalConfig(), **overrides)  # type: ignore[arg-type]
    rows = np.arange(eval_set.n_users)
    subset = eval_set
    if unseen_items is not None:
        rows = np.flatnonzero(np.isin(eval_set.target, np.asarray(unseen_items, dtype=np.int64)))
        subset = eval_set.subset(rows)
        shortlist = None if shortlist is None else np.asarray(shortlist)[rows]
        logger.info("unseen-item subset: %d of %d users", rows.size, eval_set.n_users)
    ranks = compute_ranks(score_fn, subset, config, first_stage=first_stage, shortlist=shortlist)
    n_items = config.n_items if config.n_items is not None else int(eval_set.catalogue.size)
    metrics = compute_metrics(
        ranks, n_items, ks=config.ks, k_percents=config.k_percents, mrr_ks=config.mrr_ks, a=config.a, b=config.b
    )
    metrics["n_users"] = int(ranks.size)
    logger.info("evaluate[%s] on %d users: %s", config.protocol, ranks.size, metrics)
    if not return_ranks:
        return metrics
    aligned = np.full(eval_set.n_users, np.nan)
    aligned[rows] = ranks
    return metrics, aligned


def popularity_groups(
    target: np.ndarray, item_counts: np.ndarray, edges: Sequence[float]
) -> tuple[np.ndarray, list[str]]:
    """Bucket users by the training popularity of their target item.

    ``item_counts[i]`` is the training interaction count of item ``i`` (items beyond its length count
    0). With strictly increasing ``edges`` e_0 < ... < e_m the groups are ``[e_0, e_1)``, ...,
    ``[e_{m-1}, e_m)`` and ``[e_m, inf)``; every count must be >= e_0 so the groups partition the users.
    Returns ``(group index per user, labels)``.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or np.any(np.diff(e) <= 0):
        raise ValueError(f"edges must be a non-empty strictly increasing sequence, got {edges!r}")
    counts_table = np.asarray(item_counts)
    t = np.asarray(target, dtype=np.int64)
    counts = np.zeros(t.shape, dtype=np.float64)
    inside = t < counts_table.size
    counts[inside] = counts_table[t[inside]]
    if counts.size and counts.min() < e[0]:
        raise ValueError(f"a target has popularity {counts.min():g} below the first edge {e[0]:g}")
    group = np.searchsorted(e, counts, side="right") - 1
    labels = [f"[{lo:g},{hi:g})" for lo, hi in zip(e[:-1], e[1:])] + [f"[{e[-1]:g},inf)"]
    return group.astype(np.int64), labels


def evaluate_groups(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    group: np.ndarray,
    labels: Sequence[str],
    config: EvalConfig | None = None,
    *,
    first_stage: ScoreFn | None = None,
    unseen_items: np.ndarray | Sequence[int] | None = None,
    **overrides: object,
) -> dict[str, dict[str, float]]:
    """Metrics per user group (popularity buckets, missing-modality targets, ...).

    ``group[u]`` in ``0..len(labels) - 1`` assigns each row of ``eval_set`` to a group. Ranks come from
    one :func:`evaluate` run, so groups share negatives and tie-breaks. Returns ``{label: metrics}`` in
    label order, each with ``n_users`` (an empty group: ``n_users`` 0 and NaN metrics).
    """
    cfg = dataclasses.replace(config or EvalConfig(), **overrides)  # type: ignore[arg-type]
    group = np.asarray(group, dtype=np.int64)
    if group.shape != (eval_set.n_users,):
        raise ValueError(f"group must have one entry per user ({eval_set.n_users}), got {group.shape}")
    if group.size and (group.min() < 0 or group.max() >= len(labels)):
        raise ValueError(f"group ids must be in 0..{len(labels) - 1}")
    _, ranks = evaluate(
        score_fn, eval_set, cfg, first_stage=first_stage, unseen_items=unseen_items, return_ranks=True
    )
    evaluated = ~np.isnan(ranks)
    n_items = cfg.n_items if cfg.n_items is not None else int(eval_set.catalogue.size)
    out: dict[str, dict[str, float]] = {}
    for g, label in enumerate(labels):
        sel = evaluated & (group == g)
        if sel.any():
            metrics = compute_metrics(
                ranks[sel], n_items, ks=cfg.ks, k_percents=cfg.k_percents, mrr_ks=cfg.mrr_ks, a=cfg.a, b=cfg.b
            )
        else:
            metrics = {name: float("nan") for name in metric_names(cfg.ks, cfg.k_percents, cfg.mrr_ks)}
        metrics["n_users"] = int(sel.sum())
        out[label] = metrics
    return out


def evaluate_popularity_groups(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    item_counts: np.ndarray,
    edges: Sequence[float],
    config: EvalConfig | None = None,
    *,
    first_stage: ScoreFn | None = None,
    unseen_items: np.ndarray | Sequence[int] | None = None,
    **overrides: object,
) -> dict[str, dict[str, float]]:
    """Metrics per training-popularity group of the target item (few-shot / long-tail analysis).

    Users are bucketed with :func:`popularity_groups` and evaluated with :func:`evaluate_groups`;
    returns ``{label: metrics}`` in edge order, each with ``n_users``.
    """
    group, labels = popularity_groups(eval_set.target, item_counts, edges)
    return evaluate_groups(
        score_fn, eval_set, group, labels, config, first_stage=first_stage, unseen_items=unseen_items, **overrides
    )
