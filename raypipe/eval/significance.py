"""Paired comparison of two models evaluated on the same users (and the same sampled negatives).

A difference between two mean metrics on a few thousand users can be noise. :func:`paired_bootstrap`
resamples *users* (each user's pair of per-user metrics stays together) and gives the mean difference,
its 95% percentile interval and a two-sided bootstrap p-value for "no difference".
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDiff:
    n_users: int
    mean_a: float
    mean_b: float
    diff: float  # mean_a - mean_b
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, bootstrap

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 10_000, seed: int = 0,
                     block: int = 1_000) -> PairedDiff:
    """Bootstrap of ``mean(a - b)`` over users; ``a[u]`` and ``b[u]`` are user ``u``'s metric for models A/B.

    The p-value is ``2 * min(P*(d <= 0), P*(d >= 0))`` under the bootstrap distribution of the mean
    difference (capped at 1; its resolution is ``1 / n_boot``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-d arrays of per-user values of equal length, got {a.shape}, {b.shape}")
    if not len(a):
        raise ValueError("no users to compare")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("per-user values contain NaN (users evaluated by one model only?)")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.concatenate([d[rng.integers(0, len(d), size=(min(block, n_boot - i), len(d)))].mean(1)
                            for i in range(0, n_boot, block)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedDiff(len(d), float(a.mean()), float(b.mean()), float(d.mean()), float(lo), float(hi), p)


def paired_ndcg(a: Mapping[str, float], b: Mapping[str, float], users: Iterable[str] | None = None,
                k: int = 10, seed: int = 0) -> PairedDiff:
    """:func:`paired_bootstrap` of per-user NDCG@k from two runs' test ranks (``{user: rank}``, 1-based,
    ``inf`` = a miss) over the users both judged, restricted to ``users`` when given."""
    from raypipe.eval.metrics import ndcg

    common = set(a) & set(b)
    if users is not None:
        common &= set(users)
    us = sorted(common)
    return paired_bootstrap(ndcg(np.array([a[u] for u in us], np.float64), k),
                            ndcg(np.array([b[u] for u in us], np.float64), k), seed=seed)
