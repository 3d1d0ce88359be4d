"""The optional reranking stage: a second trained model re-scores the retriever's candidates.

Any run whose model implements ``score(history, candidates)`` fits (the same surface
:func:`raypipe.eval.evaluate` uses, including models that score by likelihood).  Candidates the
reranking model does not know (e.g. items onboarded live) keep their slots; the known ones are
re-ordered among the remaining slots by the reranker's scores.

A reranking model with the ``generative`` capability and an ``explain(history, items, max_new_tokens)``
method (UniMP) also answers explanation requests (:meth:`ModelReranker.explain`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from raypipe.data.sequences import ItemIndex, pad_left
from raypipe.models.base import SequentialRecommender
from raypipe.serve.errors import error_result


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

    @torch.inference_mode()
    def explain(self, history: Sequence[str], item_id: str, max_tokens: int) -> dict[str, Any]:
        """A generated explanation of ``item_id`` for the user of ``history`` (an error value when the
        model cannot explain or does not know the item)."""
        explain = getattr(self.model, "explain", None)
        if explain is None:
            return error_result(400, "not_generative", f"the reranking model ({type(self.model).__name__}) "
                                "does not generate explanations")
        if item_id not in self.position:
            return error_result(404, "unknown_item", f"the reranking model does not know item {item_id!r}")
        known = [i for i in history if i in self.position]
        hist = [self.position[i] for i in known][-self.max_len:]
        padded = torch.as_tensor(pad_left([np.asarray(hist, dtype=np.int64)], self.max_len))
        text = explain(padded, torch.as_tensor([self.position[item_id]]), max_new_tokens=max_tokens)[0]
        window = int(getattr(getattr(self.model, "cfg", None), "history", len(hist)) or len(hist))
        tokens = len(self.model.tok(text, add_special_tokens=False)["input_ids"]) if hasattr(self.model, "tok") else 0
        return {"item_id": item_id, "explanation": text, "tokens": min(tokens, max_tokens),
                "used_items": min(len(hist), window), "skipped_items": [i for i in history if i not in self.position],
                "model": type(self.model).__name__}
