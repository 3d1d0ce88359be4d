"""Histories of item ids → user vectors with a trained sequential model (``user_repr``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from raypipe.data.sequences import ItemIndex, pad_left
from raypipe.models.base import SequentialRecommender


@dataclass
class EncodedHistory:
    vector: np.ndarray | None  # [d] float32; None when no history item is known to the model
    used: int  # known items fed to the model (after truncation to max_len)
    skipped: list[str]  # ids the model does not know, in history order (duplicates kept once)

    def to_dict(self) -> dict:
        return {"vector": self.vector, "used": self.used, "skipped": self.skipped}


class HistoryEncoder:
    """Maps item ids to the model's indices (1..N) and runs ``user_repr`` on a batch of histories."""

    def __init__(self, model: SequentialRecommender, index: ItemIndex, max_len: int) -> None:
        self.model = model.eval()
        self.max_len = int(max_len)
        self.position = {iid: i for i, iid in enumerate(index.item_ids, start=1)}

    def add(self, item_ids: Sequence[str], indices: Sequence[int]) -> None:
        """Make items added to the model after training (``model.extend_items``) known to histories."""
        self.position.update(zip(item_ids, (int(i) for i in indices)))

    def known(self, history: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        idx, skipped, seen = [], [], set()
        for iid in history:
            i = self.position.get(iid)
            if i is None:
                if iid not in seen:
                    skipped.append(iid)
                    seen.add(iid)
            else:
                idx.append(i)
        return np.asarray(idx[-self.max_len:], dtype=np.int64), skipped

    @torch.inference_mode()
    def encode(self, histories: Sequence[Sequence[str]]) -> list[EncodedHistory]:
        """One :class:`EncodedHistory` per history; histories with known items run as one batch, left-padded
        to ``max_len`` exactly as in training and evaluation."""
        split = [self.known(h) for h in histories]
        rows = [i for i, (idx, _) in enumerate(split) if len(idx)]
        out = [EncodedHistory(None, 0, skipped) for _, skipped in split]
        if rows:
            seqs = [split[i][0] for i in rows]
            batch = torch.as_tensor(pad_left(seqs, self.max_len))
            vecs = self.model.user_repr(batch).float().numpy()
            for r, i in enumerate(rows):
                out[i].vector = np.ascontiguousarray(vecs[r])
                out[i].used = len(split[i][0])
        return out
