"""Ranking metrics for next-item prediction with a single held-out target per user.

Every function takes the 1-based rank of each user's target among the ranked candidates
(``rank == 1`` is the top; ``np.inf`` marks a target that was not ranked at all, e.g. it fell
outside a first-stage top-N in a re-ranking protocol) and returns per-user values as a float
array; :func:`compute_metrics` averages them into a flat ``dict[str, float]``.

With one relevant item per user the ideal DCG is 1, so

* ``hit_rate@K`` = ``recall@K`` = 1[rank <= K]
* ``ndcg@K`` = 1[rank <= K] / log2(rank + 1)
* ``mrr`` = 1 / rank, and ``mrr@K`` = 1[rank <= K] / rank

PreRec (Appendix C.3) replaces the absolute cutoff K by a share K% of the domain's catalogue so that
domains with different numbers of items N are comparable:

* eq. 7  r-DCG  = 1 / log(a + b (rank - 1) / N)
* eq. 8  r-iDCG = 1 / log(a)
* eq. 9  r-NDCG = r-DCG / r-iDCG = log(a) / log(a + b (rank - 1) / N)

with a = 2, b = 15000 in the paper; with a = 2 and b = N, r-NDCG is the ordinary NDCG. "@K%" means
only the top K% of the N items contribute. Here the cutoff is

    cutoff(N, K%) = max(1, ceil(N * K / 100))

computed exactly for decimal K (``Fraction(str(K))``, so 25000 items at K = 0.04 give exactly 10, not
11 from floating-point round-off); at least one item always counts, so tiny domains are not scored 0 by
construction. ``recall@K%`` = 1[rank <= cutoff] and ``r_ndcg@K%`` = 1[rank <= cutoff] * eq. 9.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

logger = logging.getLogger(__name__)

PRE_REC_A: float = 2.0
"""PreRec's ``a`` in eq. 7-9."""
PRE_REC_B: float = 15000.0
"""PreRec's ``b`` in eq. 7-9."""


def _as_ranks(ranks: np.ndarray | Sequence[float]) -> np.ndarray:
    """Validate 1-based ranks (``np.inf`` allowed for "not ranked") and return them as float64."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.ndim != 1:
        raise ValueError(f"ranks must be a 1-d array, got shape {r.shape}")
    if np.isnan(r).any():
        raise ValueError("ranks contain NaN")
    if r.size and r.min() < 1:
        raise ValueError(f"ranks are 1-based; got a minimum of {r.min()}")
    return r


def set_prf(selected: Sequence[Sequence[int]], positives: Sequence[Sequence[int]]) -> dict[str, float]:
    """Precision, recall and F1 of chosen sets against true sets, each per user then averaged (the
    selection task of UniMP).  An empty choice has precision 0; F1 is 0 where P + R is 0.  Also the mean
    size of the chosen sets and the share of empty choices (a model that chooses nothing scores 0 on all
    three, and these say so)."""
    if len(selected) != len(positives):
        raise ValueError(f"{len(selected)} choices for {len(positives)} users")
    p, r, f = [], [], []
    for chosen, true in zip(selected, positives):
        chosen, true = set(chosen), set(true)
        if not true:
            raise ValueError("every user needs at least one positive")
        hit = len(chosen & true)
        pi, ri = (hit / len(chosen) if chosen else 0.0), hit / len(true)
        p.append(pi)
        r.append(ri)
        f.append(2 * pi * ri / (pi + ri) if pi + ri > 0 else 0.0)
    n = max(len(p), 1)
    sizes = [len(set(c)) for c in selected]
    return {"precision": sum(p) / n, "recall": sum(r) / n, "f1": sum(f) / n, "n": len(p),
            "mean_chosen": sum(sizes) / n, "empty_share": sum(x == 0 for x in sizes) / n}


def _check_k(k: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"K must be a positive integer, got {k!r}")


def hit_rate(ranks: np.ndarray | Sequence[float], k: int) -> np.ndarray:
    """HR@K per user: 1 if the target is in the top K, else 0."""
    _check_k(k)
    return (_as_ranks(ranks) <= k).astype(np.float64)


def recall(ranks: np.ndarray | Sequence[float], k: int) -> np.ndarray:
    """Recall@K per user; equal to :func:`hit_rate` because there is a single target."""
    return hit_rate(ranks, k)


def ndcg(ranks: np.ndarray | Sequence[float], k: int) -> np.ndarray:
    """NDCG@K per user with one relevant item: 1 / log2(rank + 1) if rank <= K, else 0."""
    _check_k(k)
    r = _as_ranks(ranks)
    hit = r <= k
    return np.where(hit, 1.0 / np.log2(np.where(hit, r, 1.0) + 1.0), 0.0)


def reciprocal_rank(ranks: np.ndarray | Sequence[float], k: int | None = None) -> np.ndarray:
    """Reciprocal rank per user, 1 / rank (0 for an unranked target); with ``k``, MRR@K (0 beyond K)."""
    r = _as_ranks(ranks)
    rr = 1.0 / r  # 1 / inf == 0
    if k is None:
        return rr
    _check_k(k)
    return np.where(r <= k, rr, 0.0)


def k_percent_cutoff(n_items: int, k_percent: float) -> int:
    """Number of top items that count for "@K%": ``max(1, ceil(n_items * k_percent / 100))``.

    ``k_percent`` is in percent (0.5 means 0.5%). The product is evaluated exactly on the decimal
    representation of ``k_percent`` so round-off never adds an extra item.
    """
    if int(n_items) != n_items or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
    if not (0 < k_percent <= 100):
        raise ValueError(f"k_percent must be in (0, 100], got {k_percent!r}")
    exact = Fraction(int(n_items)) * Fraction(str(k_percent)) / 100
    return max(1, math.ceil(exact))


def _cutoffs(n_items: int | np.ndarray, k_percent: float, n_users: int) -> np.ndarray:
    """Per-user K% cutoffs for a scalar N or a per-user array of N (users from several domains)."""
    n = np.asarray(n_items)
    if n.ndim == 0:
        return np.full(n_users, k_percent_cutoff(int(n), k_percent), dtype=np.float64)
    if n.shape != (n_users,):
        raise ValueError(f"n_items must be a scalar or have one entry per user ({n_users}), got {n.shape}")
    uniq, inv = np.unique(n, return_inverse=True)
    table = np.array([k_percent_cutoff(int(v), k_percent) for v in uniq], dtype=np.float64)
    return table[inv.reshape(-1)]


def recall_at_k_percent(
    ranks: np.ndarray | Sequence[float], n_items: int | np.ndarray, k_percent: float
) -> np.ndarray:
    """PreRec Recall@K% per user: 1 if rank <= cutoff(N, K%), else 0.

    ``n_items`` is the number of items N in the user's domain catalogue: a scalar, or one value per
    user when users of several domains are pooled.
    """
    r = _as_ranks(ranks)
    return (r <= _cutoffs(n_items, k_percent, r.size)).astype(np.float64)


def r_ndcg_at_k_percent(
    ranks: np.ndarray | Sequence[float],
    n_items: int | np.ndarray,
    k_percent: float,
    a: float = PRE_REC_A,
    b: float = PRE_REC_B,
) -> np.ndarray:
    """PreRec r-NDCG@K% per user (eq. 7-9): ``log(a) / log(a + b (rank - 1) / N)`` within the cutoff, else 0.

    eq. 7 r-DCG = 1 / log(a + b (rank - 1) / N); eq. 8 r-iDCG = 1 / log(a); eq. 9 is their ratio. Only
    ranks within ``cutoff(N, K%)`` (see :func:`k_percent_cutoff`) contribute. ``a > 1`` keeps r-iDCG
    finite; ``b >= 0``. With ``a = 2`` and ``b = N`` this is NDCG at the same cutoff.
    """
    if not a > 1:
        raise ValueError(f"a must be > 1 so that log(a) > 0, got {a!r}")
    if not b >= 0:
        raise ValueError(f"b must be >= 0, got {b!r}")
    r = _as_ranks(ranks)
    cutoff = _cutoffs(n_items, k_percent, r.size)
    n = np.broadcast_to(np.asarray(n_items, dtype=np.float64), r.shape)
    hit = r <= cutoff
    r_in = np.where(hit, r, 1.0)  # keep inf out of the arithmetic
    value = math.log(a) / np.log(a + b * (r_in - 1.0) / n)  # eq. 9
    return np.where(hit, value, 0.0)


def _fmt_percent(k_percent: float) -> str:
    return f"{k_percent:g}"


def metric_names(
    ks: Sequence[int] = (1, 5, 10, 20),
    k_percents: Sequence[float] = (),
    mrr_ks: Sequence[int] = (),
) -> list[str]:
    """The keys :func:`compute_metrics` returns for these settings, in order (without ``n_users``)."""
    names: list[str] = []
    for k in ks:
        names += [f"hr@{k}", f"recall@{k}", f"ndcg@{k}"]
    names.append("mrr")
    names += [f"mrr@{k}" for k in mrr_ks]
    for kp in k_percents:
        names += [f"recall@{_fmt_percent(kp)}%", f"r_ndcg@{_fmt_percent(kp)}%"]
    return names


def metric_cutoffs(names: Sequence[str]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The ``ks`` (10 always) and ``k_percents`` that metrics such as ``ndcg@10`` and ``r_ndcg@0.5%`` need;
    ``ValueError`` for a cut-off that is not a number."""
    cut = [m.split("@", 1)[1] for m in names if "@" in m and not m.startswith("mrr@")]
    try:
        ks = tuple(sorted({10} | {int(c) for c in cut if not c.endswith("%")}))
        k_percents = tuple(sorted({float(c[:-1]) for c in cut if c.endswith("%")}))
    except ValueError:
        raise ValueError(f"metric cut-offs must be numbers (K or K%): {list(names)}") from None
    return ks, k_percents


def check_metric_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a validation metric :func:`compute_metrics` reports
    (``hr@K``, ``recall@K``, ``ndcg@K``, ``mrr``, ``recall@K%``, ``r_ndcg@K%``)."""
    if name not in metric_names(*metric_cutoffs([name])):
        raise ValueError(f"unknown metric {name!r}: use hr@K, recall@K, ndcg@K, mrr, recall@K% or r_ndcg@K%")


def compute_metrics(
    ranks: np.ndarray | Sequence[float],
    n_items: int | np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 20),
    k_percents: Sequence[float] = (),
    mrr_ks: Sequence[int] = (),
    a: float = PRE_REC_A,
    b: float = PRE_REC_B,
) -> dict[str, float]:
    """Mean metrics over users from the 1-based ranks of their single target.

    Keys: ``hr@K``, ``recall@K`` (identical with one target; both kept because papers name it either
    way), ``ndcg@K`` for each K in ``ks``; ``mrr`` (uncut) and ``mrr@K`` for each K in ``mrr_ks``;
    ``recall@{K}%`` and ``r_ndcg@{K}%`` for each K in ``k_percents`` (in percent, formatted with ``:g``,
    e.g. ``recall@0.5%``; PreRec eq. 7-9 with ``a``, ``b`` and N = ``n_items``, scalar or per user).
    With no users every metric is NaN.
    """
    r = _as_ranks(ranks)
    names = metric_names(ks, k_percents, mrr_ks)
    if r.size == 0:
        logger.warning("compute_metrics called with no users; every metric is NaN")
        return {name: float("nan") for name in names}
    out: dict[str, float] = {}
    for k in ks:
        hr = float(hit_rate(r, k).mean())
        out[f"hr@{k}"] = hr
        out[f"recall@{k}"] = hr
        out[f"ndcg@{k}"] = float(ndcg(r, k).mean())
    out["mrr"] = float(reciprocal_rank(r).mean())
    for k in mrr_ks:
        out[f"mrr@{k}"] = float(reciprocal_rank(r, k).mean())
    for kp in k_percents:
        tag = _fmt_percent(kp)
        out[f"recall@{tag}%"] = float(recall_at_k_percent(r, n_items, kp).mean())
        out[f"r_ndcg@{tag}%"] = float(r_ndcg_at_k_percent(r, n_items, kp, a=a, b=b).mean())
    return out
