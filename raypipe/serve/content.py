"""Live cold-start items for content models: a new item's retrieval vector from its own text and image.

A model with the ``content_items`` capability (UniM2Rec, UniSRec) scores items by their contents passed
through its projectors, so a brand-new item needs no matcher and no neighbours: its feature views are
computed live with the encoders the catalogue's store was built with
(:class:`raypipe.features.live.LiveItemEncoder`; the derived cross view through the run's
:class:`~raypipe.features.aligned.CrossAligner`), then ``model.content_item_repr`` gives its vector with a
zero ID offset — the paper's inductive setting.  The record goes to the same
:class:`~raypipe.serve.onboarding.OnboardingLog` as CDIM's, so every retriever replica applies it before
its next read, and it survives restarts.
"""
from __future__ import annotations

import base64
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from raypipe.features.live import LiveItemEncoder
from raypipe.serve.onboarding import DuplicateItemError, OnboardingLog

#: the item attributes an onboarding record keeps (the image bytes are encoded, not stored)
ATTRIBUTES = ("title", "category", "brand", "description", "price")


class ContentOnboarder:
    """Onboards items through a content model's projectors (``content_item_repr``).

    Args:
        model: the served model (eval mode) with ``content_item_repr(feats, present)``.
        encoder: the live encoder of the model's feature views.
        item_ids: the served model's trained item ids (onboarding one of them is a conflict).
        onboarding_log: the log shared with the retriever replicas.
    """

    method = "content"

    def __init__(self, model: torch.nn.Module, encoder: LiveItemEncoder, item_ids: Sequence[str],
                 onboarding_log: OnboardingLog) -> None:
        if not hasattr(model, "content_item_repr"):
            raise TypeError(f"{type(model).__name__} has no content_item_repr (the content_items capability)")
        self.model, self.encoder, self.log = model, encoder, onboarding_log
        self.known = set(item_ids)

    @property
    def count(self) -> int:
        return self.log.count

    def sync(self) -> int:
        self.log.poll()
        return self.log.count

    @torch.inference_mode()
    def vectors(self, items: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Retrieval vectors ``[n, d]`` of items (canonical fields; ``image`` as bytes) and each view's
        presence.  Raises :class:`raypipe.features.live.ImageInputError` for undecodable images."""
        views = self.encoder.encode(items)
        feats = {v: torch.as_tensor(x) for v, (x, _) in views.items()}
        present = {v: torch.as_tensor(p) for v, (_, p) in views.items()}
        vec = self.model.content_item_repr(feats, present).float().numpy()
        return np.ascontiguousarray(vec, np.float32), {v: p for v, (_, p) in views.items()}

    def onboard(self, items: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """Onboard ``items`` (dicts with ``item_id``, ``domain`` and ``attributes``, whose ``image`` may be
        base64 text): append their records to the log and apply it.  Raises
        :class:`DuplicateItemError` or :class:`~raypipe.features.live.ImageInputError` (nothing written)."""
        self.sync()
        dup = [it["item_id"] for it in items if it["item_id"] in self.known or it["item_id"] in self.log.ids]
        if dup:
            raise DuplicateItemError(dup)
        fields = []
        for it in items:
            attrs = dict(it.get("attributes", {}))
            image = attrs.get("image")
            if isinstance(image, str):
                image = base64.b64decode(image, validate=True)
            fields.append({**{k: attrs.get(k) for k in ATTRIBUTES}, "image": image, "item_id": it["item_id"]})
        vec, present = self.vectors(fields)
        now = time.time()
        records = [{
            "item_id": it["item_id"], "domain": it["domain"], "method": self.method,
            "attributes": {k: f[k] for k in ATTRIBUTES if f[k] is not None}, "has_image": f["image"] is not None,
            "views": [v for v in present if bool(present[v][j])], "vector": vec[j].tolist(), "created": now,
        } for j, (it, f) in enumerate(zip(items, fields))]
        self.log.append(records, taken=self.known.__contains__)
        return records, self.sync()
