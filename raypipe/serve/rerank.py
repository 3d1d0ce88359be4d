"""The optional reranking stage: a second trained model re-scores the retriever's candidates.

Any run whose model implements ``score(history, candidates)`` fits (the same surface
:func:`raypipe.eval.evaluate` uses, including models that score by likelihood).  Candidates the
reranking model does not know (e.g. items onboarded live) keep their slots; the known ones are
re-ordered among the remaining slots by the reranker's scores.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from raypipe.data.sequences import ItemIndex, pad_left
from raypipe.models.base import SequentialRecommender


class ModelReranker:
    def __init__(self, model: SequentialRecommender, index: ItemIndex, max_len: int) -> None:
        self.model = model.eval()
        self.max_len = int(max_len)
        self.position = {iid: i for i, iid in enumerate(index.item_ids, start=1)}

    @torch.inference_mode()
    def rerank(self, history: Sequence[str], candidates: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        hist = [self.position[i] for i in history if i in self.position][-self.max_len:]
        slots = [j for j, c in enumerate(candidates) if c["item_id"] in self.position]
        if not hist or len(slots) < 2:
            return list(candidates)
        cand = torch.as_tensor([self.position[candidates[j]["item_id"]] for j in slots])
        scores = self.model.score(torch.as_tensor(pad_left([np.asarray(hist)], self.max_len)), cand)[0].numpy()
        order = np.argsort(-scores, kind="stable")
        out = list(candidates)
        for slot, j in zip(slots, order):
            out[slot] = {**candidates[slots[j]], "score": float(scores[j])}
        return out
