"""Feature views of items that are not in the store: a brand-new item encoded live, exactly as the batch
extraction encoded the catalogue.

:class:`LiveItemEncoder` reads a feature store's manifest and, per view, rebuilds the same encoder (the
Ray Data actors' own :class:`~raypipe.features.pipeline.EncodeBatch`, on the CPU), the same text template
and the same image decoding (:func:`~raypipe.features.pipeline.prepare_batch`); the encoder's weights
hash must equal the manifest's, so a served item is never encoded by another model than the one its
catalogue was.  A derived ``cross`` view (no vision-language weights offline) comes from the run's
:class:`~raypipe.features.aligned.CrossAligner`.  Used by the Serve app to onboard items through a
content model's item encoder (UniM2Rec, UniSRec, PreRec).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from raypipe.features.aligned import CrossAligner
from raypipe.features.encoders import EFFICIENTNET_LITE0, EFFICIENTNET_LITE0_ARCH, image_preprocess_for, \
    parse_image_model, weights_id
from raypipe.features.pipeline import CORRUPT, EncodeBatch, prepare_batch, read_manifest, spec_string
from raypipe.features.text import resolve_text_model, weights_hash

log = logging.getLogger(__name__)

#: the item fields the encoders read (the canonical items schema's; images as bytes only: a live item
#: never names a file on the serving machine)
ITEM_FIELDS = ("title", "category", "brand", "description", "price", "image")


class ImageInputError(ValueError):
    """Images that could not be decoded: ``problems`` maps the item's position to the decoder's message."""

    def __init__(self, problems: dict[int, str]) -> None:
        super().__init__("; ".join(f"items[{i}].image: {m}" for i, m in problems.items()))
        self.problems = problems


def _local_text_model(entry: Mapping[str, Any]) -> str:
    """The text view's model folder; the packaged MiniLM when the recorded folder is not on this machine
    (another virtual environment) and the packaged one has the recorded weights."""
    path = str(entry["model"])
    if Path(path).is_dir():
        return path
    packaged = resolve_text_model(None)
    if weights_hash(packaged) == entry["weights"]:
        return packaged
    raise FileNotFoundError(f"text view: encoder folder {path} is not on this machine")


def _local_image_spec(entry: Mapping[str, Any]) -> str:
    ckpt = entry.get("checkpoint")
    if ckpt and not Path(ckpt).is_file() and entry["model"] == EFFICIENTNET_LITE0_ARCH:
        ckpt = parse_image_model(EFFICIENTNET_LITE0).checkpoint  # the packaged file, wherever it is installed
    return spec_string(entry["encoder"], entry["model"], ckpt)


class LiveItemEncoder:
    """Raw feature-view vectors of new items, as the store's extraction would have computed them.

    Args:
        store: the feature store directory (its ``manifest.json`` names each view's encoder).
        views: the views wanted (e.g. a model's ``text``, ``image``, ``cross``).
        aligner: the run's cross-modal heads, needed when ``cross`` is wanted and the store has none.
        torch_threads: intra-op threads of the encoders.
    """

    def __init__(self, store: str | Path, views: Sequence[str], aligner: CrossAligner | None = None,
                 torch_threads: int = 1) -> None:
        manifest = read_manifest(store)
        if manifest is None:
            raise FileNotFoundError(f"{store}: no feature store manifest")
        have = manifest.get("views", {})
        self.views = list(views)
        self.derived_cross = "cross" in self.views and "cross" not in have
        if self.derived_cross and aligner is None:
            raise ValueError("the cross view is derived from text and image: give the run's CrossAligner")
        self.aligner = aligner
        base = [v for v in self.views if not (self.derived_cross and v == "cross")]
        if self.derived_cross:
            base += [v for v in ("text", "image") if v not in base]
        missing = [v for v in base if v not in have]
        if missing:
            raise ValueError(f"{store}: the feature store has no view {missing}; it has {sorted(have)}")
        self.template = "plain"
        self.encoders: dict[str, EncodeBatch] = {}
        self.preprocess = None
        for v in base:
            e = have[v]
            if v == "text":
                model = _local_text_model(e)
                self.template = str(e.get("template", "plain"))
            else:
                model = _local_image_spec(e)
                pre = image_preprocess_for(parse_image_model(model), e.get("image_size"))
                if self.preprocess is not None and pre != self.preprocess:
                    raise ValueError(f"{store}: the image views decode images differently ({self.preprocess} vs {pre})")
                self.preprocess = pre
                if v == "cross":
                    self.template = str(e.get("template", self.template))
            enc = EncodeBatch(v, model, 0.0, torch_threads, e.get("image_size"), int(e.get("seed", 0)),
                              int(e.get("max_length", 128)), int(e.get("grid", 0)))
            got = weights_hash(model) if v == "text" else weights_id(enc.encoder.spec)
            if got != e["weights"]:
                raise ValueError(f"{store}: view {v} was computed with weights {e['weights']}, but {model} has {got}")
            self.encoders[v] = enc
        log.info("live item encoder over %s (views %s, cross %s)", store, self.views,
                 "derived by the run's aligner" if self.derived_cross else "from the store's encoder")

    def encode(self, items: Sequence[Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{view: (vectors [n, d] float32, present [n] bool)}`` for items given as dicts of the canonical
        item fields (``image``: PNG/JPEG bytes).  Raises :class:`ImageInputError` naming every item whose
        image does not decode (nothing is encoded then)."""
        rows = [{"item_id": str(it.get("item_id", i)), **{f: it.get(f) for f in ITEM_FIELDS}, "image_path": None}
                for i, it in enumerate(items)]
        table = pa.Table.from_pylist(rows)
        batch = prepare_batch(table, template=self.template, uses_text="text" in self.encoders or "cross" in self.encoders,
                              preprocess=self.preprocess, base_dir=".")
        if self.preprocess is not None:
            bad = {i: str(batch["error"][i]) for i, s in enumerate(batch["image_status"]) if s == CORRUPT}
            if bad:
                raise ImageInputError(bad)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for v, enc in self.encoders.items():
            t = enc(batch)  # each encoder reads the columns of its view
            present = t.column("present").to_numpy(zero_copy_only=False).astype(bool)
            vec = np.zeros((len(rows), enc.encoder.dim), np.float32)
            col = t.column("vector").combine_chunks()
            if present.any():
                flat = col.filter(pa.array(present)).flatten().to_numpy(zero_copy_only=False)
                vec[present] = flat.reshape(int(present.sum()), -1)
            out[v] = (vec, present)
        if self.derived_cross:
            (t, tp), (im, ip) = out["text"], out["image"]
            out["cross"] = self.aligner.cross(t, tp, im, ip)
        return {v: out[v] for v in self.views}


__all__ = ["LiveItemEncoder", "ImageInputError", "ITEM_FIELDS"]
