"""From a canonical dataset directory to what models train and are evaluated on.

:func:`prepare` applies k-core filtering, builds the item index, per-domain chronological sequences and
the leave-one-out split, and counts training popularity.  :meth:`Prepared.eval_set` turns a split of a
domain into a :class:`raypipe.eval.EvalSet` whose catalogue is that domain's items.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.schema import DatasetInfo
from raypipe.data.sequences import ItemIndex, SplitSet, build_sequences, item_counts, kcore, leave_one_out
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
        return sorted(set(self.sequences["domain"]))

    def eval_set(self, split: str, domain: str, max_len: int) -> EvalSet:
        """Users of ``domain`` in ``split`` ("valid" or "test"); catalogue = the domain's items."""
        s = {"valid": self.valid, "test": self.test}[split]
        sub = s.subset(s.domain == domain)
        return EvalSet(history=sub.padded(max_len), target=sub.target,
                       catalogue=self.index.domain_items(domain), user_ids=sub.user_id)


def prepare(path: str | Path, k: int = 5, domains: list[str] | None = None) -> Prepared:
    """Load interactions (only the columns needed), k-core them per domain and split leave-one-out."""
    ds = CanonicalDataset.open(path)
    df = ds.interactions(columns=["user_id", "item_id", "domain", "timestamp"]).to_pandas()
    if domains is not None:
        unknown = set(domains) - set(df["domain"].unique())
        if unknown:
            raise ValueError(f"{path}: unknown domains {sorted(unknown)}")
        df = df[df["domain"].isin(domains)]
    n0 = len(df)
    df = kcore(df, k)
    log.info("%s: %d-core kept %d of %d interactions", path, k, len(df), n0)
    index = ItemIndex.build(df["item_id"], df["domain"])
    seqs = build_sequences(df, index)
    train, valid, test = leave_one_out(seqs)
    return Prepared(ds.info, index, seqs, train, valid, test, item_counts(train["items"], index.num_embeddings))
