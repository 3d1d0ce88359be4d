"""Metrics split by repeated targets: users whose held-out target is an item they already took.

Every protocol excludes a user's seen items from the ranking but never the target
(:meth:`raypipe.eval.protocols.EvalSet.target_seen`), so a repeated target competes only with the items
the user has not taken. A model that ranks the history's items first, or a catalogue of a few dozen
items, scores well on those users without predicting anything new; :func:`split_by_repeat` reports the
two groups apart, each optionally against its chance level.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from raypipe.eval.metrics import ndcg
from raypipe.eval.significance import paired_bootstrap

#: ``{run: {domain: {user: rank}}}``
RankSets = Mapping[str, Mapping[str, Mapping[str, float]]]


def split_by_repeat(rank_sets: RankSets, repeats: Mapping[str, Mapping[str, bool]],
                    chance: Mapping[str, Mapping[str, Any]] | None = None, seed: int = 0) -> dict[str, Any]:
    """Per run and domain, NDCG@10 and HR@1 of the users whose target repeats a history item
    (``"repeat"``) and of the others (``"other"``), with their counts ``n``. ``repeats``: ``{domain:
    {user: bool}}`` (users it does not know are left out). ``chance``: ``{domain: {"per_user": {user:
    expected NDCG@10 of a random ranking}}}``; where it covers a domain, each group also gets its mean
    ``chance`` and ``minus_chance``, a paired bootstrap of the run's per-user NDCG@10 against it."""
    out: dict[str, Any] = {}
    for name, ranks in rank_sets.items():
        for d, users in ranks.items():
            for group, want in (("repeat", True), ("other", False)):
                us = sorted(u for u in users if repeats.get(d, {}).get(u) is want)
                r = np.array([users[u] for u in us], dtype=np.float64)
                a = ndcg(r, 10)
                res: dict[str, Any] = {"n": len(us), "ndcg@10": float(a.mean()) if us else math.nan,
                                       "hr@1": float((r <= 1).mean()) if us else math.nan}
                per_user = (chance or {}).get(d, {}).get("per_user")
                if per_user and us:
                    b = np.array([per_user[u] for u in us])
                    res["chance"] = float(b.mean())
                    res["minus_chance"] = paired_bootstrap(a, b, seed=seed).as_dict()
                out.setdefault(name, {}).setdefault(d, {})[group] = res
    return out
