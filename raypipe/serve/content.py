"""Live cold-start items for content models: a new item's retrieval vector from its own text and image.

A model with the ``content_items`` capability (UniM2Rec, UniSRec; PreRec) scores items by their contents passed
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

    def sync(self) -> int:
        self.log.poll()
        return self.log.count

    @torch.inference_mode()
    def vectors(self, items: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Retrieval vectors ``[n, d]`` of items (canonical fields; ``image`` as bytes) and their raw views
        ``{view: (vectors, present)}``.  Raises :class:`raypipe.features.live.ImageInputError` for
        undecodable images."""
        views = self.encoder.encode(items)
        feats = {v: torch.as_tensor(x) for v, (x, _) in views.items()}
        present = {v: torch.as_tensor(p) for v, (_, p) in views.items()}
        vec = self.model.content_item_repr(feats, present).float().numpy()
        return np.ascontiguousarray(vec, np.float32), views

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
        vec, views = self.vectors(fields)
        now = time.time()
        records = [{
            "item_id": it["item_id"], "domain": it["domain"], "method": self.method,
            "attributes": {k: f[k] for k in ATTRIBUTES if f[k] is not None}, "has_image": f["image"] is not None,
            "views": [v for v, (_, p) in views.items() if bool(p[j])], "vector": vec[j].tolist(),
            # the raw views, for sequence encoders that read the item inside a history (float32, base64)
            "features": {v: pack(x[j]) for v, (x, p) in views.items() if bool(p[j])}, "created": now,
        } for j, (it, f) in enumerate(zip(items, fields))]
        self.log.append(records, taken=self.known.__contains__)
        return records, self.sync()


def pack(vector: np.ndarray) -> str:
    """A float32 vector as base64 text (a JSON-lines record stays compact and exact)."""
    return base64.b64encode(np.ascontiguousarray(vector, np.float32).tobytes()).decode()


def unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


def record_views(records: Sequence[Mapping[str, Any]], dims: Mapping[str, int]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The raw views ``({view: [n, d]}, {view: present [n]})`` of content-onboarded records; a view a record
    lacks is a zero row flagged absent."""
    feats = {v: torch.zeros(len(records), d) for v, d in dims.items()}
    present = {v: torch.zeros(len(records), dtype=torch.bool) for v in dims}
    for j, r in enumerate(records):
        for v, text in r.get("features", {}).items():
            if v in dims:
                feats[v][j] = torch.as_tensor(unpack(text))
                present[v][j] = True
    return feats, present


class LiveHistoryItems:
    """Keeps a sequence encoder in step with the content-onboarded items of the shared log, so that a
    history may hold an item posted a minute ago: its logged raw views are added to the model
    (``model.extend_items``: zero ID offset, the domain's index) and its id to the encoder's map.

    Args:
        model: the sequence encoder's model (``content_dims`` / ``extend_items``).
        encoder: the :class:`raypipe.serve.encoder.HistoryEncoder` over that model.
        onboarding_log: the log the onboarder appends to.
        domain_names: the model's domain index order (the catalogue's sorted domain names).
    """

    def __init__(self, model: torch.nn.Module, encoder: Any, onboarding_log: OnboardingLog,
                 domain_names: Sequence[str]) -> None:
        self.model, self.encoder, self.log = model, encoder, onboarding_log
        self.dims = model.content_dims()
        self.domain_index = {d: i for i, d in enumerate(domain_names)}
        self.added = 0

    @torch.inference_mode()
    def sync(self) -> int:
        """Apply new records (one ``stat`` when there are none); returns how many items were added so far.
        Records of another method (CDIM) are left out.  An item of a domain added while serving
        (:mod:`raypipe.serve.domains`) gets that domain the next index past the model's: a domain with no
        trained parameters (PreRec reads its confounder as 0, do(D = 0))."""
        new = [r for r in self.log.poll() if r.get("method") == "content" and r["item_id"] not in self.encoder.position]
        for r in new:
            self.domain_index.setdefault(r["domain"], len(self.domain_index))
        if new:
            feats, present = record_views(new, self.dims)
            idx = self.model.extend_items(feats, present, torch.tensor([self.domain_index[r["domain"]] for r in new]))
            self.encoder.add([r["item_id"] for r in new], idx.tolist())
            self.added += len(new)
        return self.added
