"""Reading a feature store written by :mod:`raypipe.features.pipeline`, aligned to a model's item index.

Layout::

    OUT/manifest.json           views, encoders, weights hash or "random", dims, counts, fingerprints
    OUT/<view>/part-*.parquet   item_id, vector (fixed_size_list<float32>[dim], null = no vector), present,
                                text_status, image_status, error
    OUT/<view>/view.json        the view's manifest entry (must match manifest.json)

>>> store = FeatureStore.open("features/")                          # doctest: +SKIP
>>> vecs, present = store.aligned("text", ["books/B0...", ...])      # [n, dim] float32, bool [n]
>>> table, mask = store.embedding_table("cross", item_index)         # torch [N+1, dim], row 0 = padding

Rows of items the store does not have, or that have no vector in that view (no text, no / corrupt
image), are zeros **and** ``False`` in the mask: nothing absent ever looks like a real vector.
Vectors stream in file by file (``aligned`` never holds more than the output plus one row group), and
:meth:`FeatureStore.aligned_memmap` fills a memory-mapped ``.npy`` for catalogues larger than memory.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    import torch

    from raypipe.data.sequences import ItemIndex

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
VIEW_INFO_FILE = "view.json"


class FeatureStoreError(RuntimeError):
    """The directory is not a (complete, consistent) feature store, or lacks the requested view."""


@dataclass
class FeatureStore:
    """A finished feature store directory and its manifest."""

    root: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> "FeatureStore":
        """Open a store; every view listed in the manifest must be present and match its fingerprint."""
        root = Path(root)
        path = root / MANIFEST_FILE
        if not path.is_file():
            raise FeatureStoreError(f"{root}: no {MANIFEST_FILE}; run jobs/extract_features.py first")
        manifest = json.loads(path.read_text())
        for view, entry in manifest.get("views", {}).items():
            info = root / entry.get("path", view) / VIEW_INFO_FILE
            if not info.is_file():
                raise FeatureStoreError(f"{root}: view {view!r} is listed but {info} is missing")
            if json.loads(info.read_text()).get("fingerprint") != entry.get("fingerprint"):
                raise FeatureStoreError(f"{root}: view {view!r} on disk does not match the manifest "
                                        "(interrupted replacement?); re-run the extraction")
        return cls(root, manifest)

    # ------------------------------------------------------------------ metadata
    @property
    def views(self) -> list[str]:
        return sorted(self.manifest.get("views", {}))

    def info(self, view: str) -> dict[str, Any]:
        """The manifest entry of a view (encoder, weights, dim, counts, listed item ids ...)."""
        try:
            return self.manifest["views"][view]
        except KeyError:
            raise FeatureStoreError(f"{self.root}: no view {view!r}; available: {self.views}") from None

    def dim(self, view: str) -> int:
        return int(self.info(view)["dim"])

    def is_random(self, view: str) -> bool:
        """True when the view's encoder had no pre-trained weights (random initialisation)."""
        return self.info(view)["weights"] == "random"

    def files(self, view: str) -> list[Path]:
        d = self.root / self.info(view).get("path", view)
        return sorted(d.glob("*.parquet"))

    # ------------------------------------------------------------------ reading
    def iter_batches(self, view: str, columns: Sequence[str] | None = None,
                     batch_size: int = 8192) -> Iterator[pa.RecordBatch]:
        """Stream the rows of a view (all columns by default)."""
        for f in self.files(view):
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)

    def table(self, view: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole view as one Arrow table (small catalogues; prefer :meth:`aligned` for models)."""
        return pa.concat_tables([pq.read_table(f, columns=columns) for f in self.files(view)])

    def _fill(self, view: str, positions: "pd.Index", out: np.ndarray, mask: np.ndarray) -> None:
        dim = self.dim(view)
        for batch in self.iter_batches(view, columns=["item_id", "vector"]):
            pos = positions.get_indexer(batch.column(0).to_numpy(zero_copy_only=False))
            vec = batch.column(1)
            keep = (pos >= 0) & vec.is_valid().to_numpy(zero_copy_only=False)
            if not keep.any():
                continue
            rows = pc.filter(vec, pa.array(keep)).flatten().to_numpy().reshape(-1, dim)
            out[pos[keep]] = rows
            mask[pos[keep]] = True

    def aligned(self, view: str, item_ids: Sequence[str] | np.ndarray,
                out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Vectors in the order of ``item_ids``: ``(float32 [n, dim], present bool [n])``.

        Rows of unknown items and of items without a vector in this view are zero and ``False`` in
        ``present``.  ``out`` (e.g. a memory map) receives the vectors when given."""
        ids = np.asarray(item_ids, dtype=object)
        dim = self.dim(view)
        uniq, inverse = np.unique(ids, return_inverse=True) if len(ids) else (ids, np.zeros(0, np.int64))
        duplicated = len(uniq) != len(ids)
        target_ids = uniq if duplicated else ids
        if out is None or duplicated:
            buf = np.zeros((len(target_ids), dim), dtype=np.float32)
        else:
            if out.shape != (len(ids), dim):
                raise ValueError(f"out has shape {out.shape}, expected {(len(ids), dim)}")
            buf = out
            buf[:] = 0.0
        import pandas as pd

        present = np.zeros(len(target_ids), dtype=bool)
        self._fill(view, pd.Index(target_ids), buf, present)
        if duplicated:
            vecs, present = buf[inverse], present[inverse]
            if out is not None:
                out[:] = vecs
                vecs = out
            return vecs, present
        return buf, present

    def aligned_memmap(self, view: str, item_ids: Sequence[str] | np.ndarray,
                       path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`aligned`, written into a memory-mapped ``.npy`` at ``path`` (plus ``path.mask.npy``);
        reuse with ``np.load(path, mmap_mode="r")``.  The file appears only when complete."""
        from raypipe.io import atomic_path

        path = Path(path)
        n = len(item_ids)
        with atomic_path(path) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, self.dim(view)))
            _, present = self.aligned(view, item_ids, out=mm)
            mm.flush()
            del mm
        mask_path = path.with_name(path.name + ".mask.npy")
        with atomic_path(mask_path) as tmp:
            with tmp.open("wb") as fh:
                np.save(fh, present)
        return np.load(path, mmap_mode="r"), present

    def embedding_table(self, view: str, index: "ItemIndex",
                        device: "str | torch.device | None" = None) -> tuple["torch.Tensor", "torch.Tensor"]:
        """Model-ready item table for an :class:`~raypipe.data.sequences.ItemIndex`:
        ``(float32 [N+1, dim], present bool [N+1])``; row 0 is padding (zeros, ``False``)."""
        import torch

        vecs, present = self.aligned(view, index.item_ids)
        table = torch.zeros(len(vecs) + 1, vecs.shape[1], dtype=torch.float32)
        table[1:] = torch.from_numpy(vecs)
        mask = torch.zeros(len(vecs) + 1, dtype=torch.bool)
        mask[1:] = torch.from_numpy(present)
        if device is not None:
            table, mask = table.to(device), mask.to(device)
        return table, mask

    def missing_items(self, view: str) -> list[str]:
        """Item ids of the view without a vector (complete list, read from the files)."""
        t = self.table(view, columns=["item_id", "present"])
        return sorted(pc.filter(t.column("item_id"), pc.invert(t.column("present"))).to_pylist())
