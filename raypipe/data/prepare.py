"""From a canonical dataset directory to what models train and are evaluated on.

:func:`prepare` drops users with too few interactions (optional), applies k-core filtering (to every
domain, or only to the domains of some roles: IDP k-cores its pre-training data only), builds the item
index, chronological sequences (one per user and domain, or one *mixed flow* per user across every
domain) and the split (leave-one-out, or PreRec's 4:3:3 user split), and counts training popularity.
:meth:`Prepared.eval_set` turns a split of a domain into a :class:`raypipe.eval.EvalSet` whose
catalogue is that domain's items and whose seen items are each user's *whole* history (the model still
reads only its last ``max_len`` items).  For mixed flows the targets are those of the per-domain
split (leave-one-out per user and domain), and a target's history holds every earlier event of the user
in any domain.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.schema import DatasetInfo
from raypipe.data.sequences import (
    EVENT_ATTRS, ItemIndex, SplitSet, build_sequences, item_counts, kcore, leave_one_out, mixed_leave_one_out, user_holdout,
)
from raypipe.eval.protocols import EvalSet

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    info: DatasetInfo
    index: ItemIndex
    sequences: pd.DataFrame  # full chronological sequences per (user, domain)
    train: pd.DataFrame  # sequences without their last two items (leave-one-out)
    valid: SplitSet
    test: SplitSet
    counts: np.ndarray  # training interactions per item index, length N+1

    @property
    def domains(self) -> list[str]:
        """The domains with sequences (for mixed flows: every domain some flow holds an event of)."""
        if "domains" in self.sequences.columns:
            return sorted(set().union(*map(set, self.sequences["domains"])))
        return sorted(set(self.sequences["domain"]))

    def eval_set(self, split: str, domain: str, max_len: int) -> EvalSet:
        """Users of ``domain`` in ``split`` ("valid" or "test"); catalogue = the domain's items."""
        s = {"valid": self.valid, "test": self.test}[split]
        sub = s.subset(s.domain == domain)
        return EvalSet(history=sub.padded(max_len), target=sub.target, catalogue=self.index.domain_items(domain),
                       seen=sub.seen_csr(), user_ids=sub.user_id, time=sub.target_time)


def prepare(path: str | Path, k: int = 5, domains: list[str] | None = None, *, split: str = "leave_one_out",
            flow: str = "domain", min_user_interactions: int = 0, k_core_roles: tuple[str, ...] = ("source", "target"),
            seed: int = 0, train_fraction: float = 1.0, event_attrs: tuple[str, ...] = ()) -> Prepared:
    """Load interactions (only the columns needed), filter them and split.

    ``split``: ``leave_one_out`` or ``user_433`` (PreRec); ``flow``: ``domain`` (a sequence per user and
    domain) or ``mixed`` (one cross-domain flow per user, UniM2Rec); ``min_user_interactions``: users
    with fewer interactions (in a domain, or in all for mixed flows) are dropped before the k-core;
    ``k_core_roles``: the domain roles the k-core applies to (the others are kept whole);
    ``train_fraction`` (``user_433`` only): the share of each domain's training users kept, the others
    removed from the data (nested across shares for one ``seed``); ``event_attrs``: per-event attributes
    the sequences carry besides items and times (``ratings``, ``reviews``: UniMP's preference and
    explanation tasks), truncated with them by the splits.
    """
    if split not in ("leave_one_out", "user_433") or flow not in ("domain", "mixed"):
        raise ValueError(f"split must be leave_one_out|user_433 and flow domain|mixed, got {split!r}, {flow!r}")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"data.train_fraction must lie in (0, 1], got {train_fraction}")
    if train_fraction < 1.0 and split != "user_433":
        raise ValueError("data.train_fraction < 1 needs data.split=user_433 (training users are whole users)")
    bad = sorted(set(event_attrs) - set(EVENT_ATTRS))
    if bad:
        raise ValueError(f"data.event_attrs: unknown {bad}; choose from {sorted(EVENT_ATTRS)}")
    ds = CanonicalDataset.open(path)
    extra = [EVENT_ATTRS[a][0] for a in event_attrs]
    df = ds.interactions(columns=["user_id", "item_id", "domain", "timestamp", *extra]).to_pandas()
    if domains is not None:
        unknown = set(domains) - set(df["domain"].unique())
        if unknown:
            raise ValueError(f"{path}: unknown domains {sorted(unknown)}")
        df = df[df["domain"].isin(domains)]
    n0 = len(df)
    if min_user_interactions > 0:
        key = ["user_id"] if flow == "mixed" else ["user_id", "domain"]
        df = df[df.groupby(key, sort=False)["item_id"].transform("size") >= min_user_interactions]
        log.info("%s: users with >= %d interactions keep %d of %d", path, min_user_interactions, len(df), n0)
    cored = {d for d in df["domain"].unique() if ds.info.role_of(d) in (*k_core_roles, None)}
    part = df["domain"].isin(cored)
    df = pd.concat([kcore(df[part], k), df[~part]]).sort_index(kind="mergesort")
    log.info("%s: %d-core on %d of %d domains kept %d of %d interactions", path, k, len(cored),
             df["domain"].nunique(), len(df), n0)
    index = ItemIndex.build(df["item_id"], df["domain"])
    seqs = build_sequences(df, index, by_domain=flow == "domain")
    if split == "leave_one_out":
        train, valid, test = mixed_leave_one_out(seqs) if flow == "mixed" else leave_one_out(seqs)
    else:
        train, valid, test = user_holdout(seqs, seed=seed)
        if train_fraction < 1.0:
            train, seqs = keep_training_share(train, seqs, train_fraction, seed)
    return Prepared(ds.info, index, seqs, train, valid, test, item_counts(train["items"], index.num_embeddings))


def keep_training_share(train: pd.DataFrame, seqs: pd.DataFrame, fraction: float, seed: int
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep ``ceil(fraction · n)`` of each domain's ``n`` training sequences (a seeded order per domain,
    so smaller shares are prefixes of larger ones); the dropped ones leave ``seqs`` too."""
    key = "domain" if "domain" in train.columns else None
    groups = train.groupby(key, sort=True).indices.values() if key else [np.arange(len(train))]
    keep = np.zeros(len(train), bool)
    for g_i, rows in enumerate(groups):
        order = np.random.default_rng([seed, 433, g_i]).permutation(len(rows))
        keep[np.asarray(rows)[order[:math.ceil(fraction * len(rows))]]] = True
    dropped = train.loc[~keep, ["user_id"] + ([key] if key else [])]
    gone = seqs.merge(dropped.assign(_gone=True), how="left", on=list(dropped.columns))["_gone"].fillna(False)
    log.info("train_fraction %.3g keeps %d of %d training sequences", fraction, int(keep.sum()), len(train))
    return train[keep].reset_index(drop=True), seqs[~gone.to_numpy(dtype=bool)].reset_index(drop=True)


def prepare_for(data) -> Prepared:
    """:func:`prepare` with the options of a :class:`raypipe.config.DataConfig`."""
    from raypipe.data.registry import resolve_dataset

    return prepare(resolve_dataset(data.dataset), k=data.k_core, split=data.split, flow=data.flow,
                   min_user_interactions=data.min_user_interactions, k_core_roles=tuple(data.k_core_roles),
                   seed=data.split_seed, train_fraction=data.train_fraction,
                   event_attrs=tuple(data.event_attrs))
