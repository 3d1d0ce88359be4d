"""Item feature extraction with Ray Data: text, image and cross-modal views into a Parquet feature store.

One streaming pipeline per view (DESIGN.md "Features")::

    read_parquet(items.parquet, columns of the view)          CPU read tasks (fractional num_cpus)
      → filter(item_id not already done)                       only on resume
      → map_batches(prepare_batch)                             CPU tasks: render text / decode + resize images
      → map_batches(EncodeBatch, batch_size, num_gpus,         an actor pool: each actor loads the encoder
                    compute=ActorPoolStrategy(min, max))       once; GPU when one is there, else CPU
      → write_parquet(OUT/.work/<view>-<fingerprint>/)         part files appear as blocks finish

The catalogue is never loaded whole: rows stream through in blocks.  When every item of the view has a
row in the work directory, the directory is renamed to ``OUT/<view>/`` (atomic) and the view's entry
in ``OUT/manifest.json`` is written (atomic).  Readers only ever see finished views
(:mod:`raypipe.features.store`).

Resume: a view whose manifest fingerprint (items file size and mtime, encoder, weights hash, template,
image size, seed, format version) matches is skipped.  An interrupted view keeps its work directory;
the next run with the same fingerprint reads the item ids already written there (a part file that
cannot be read — a write cut short — is discarded) and encodes only the remaining items.

Row contract of every view file: ``item_id``, ``vector`` (``fixed_size_list<float32>[dim]``, null when the
item has no vector), ``present`` (bool), ``text_status`` / ``image_status`` (``ok`` | ``missing`` |
``corrupt``, null when the view does not use that modality) and ``error`` (why an image is corrupt).
An item without input is never given a zero vector that looks real: its vector is null and it is listed
by id in the manifest.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.data.schema import ITEMS_FILE
from raypipe.data.text import check_template, render
from raypipe.features.encoders import (
    CPU_IMAGE_CHUNK,
    DEFAULT_CROSS_MODEL,
    DEFAULT_IMAGE_MODEL,
    ImageDecodeError,
    ImagePreprocess,
    ModelSpec,
    check_image_packages,
    image_preprocess_for,
    parse_cross_model,
    parse_image_model,
    weights_id,
)
from raypipe.features.store import MANIFEST_FILE, VIEW_INFO_FILE
from raypipe.features.text import resolve_text_model, text_pooling, weights_hash
from raypipe.io import replace_dir, write_json_atomic

log = logging.getLogger(__name__)

VIEWS: tuple[str, ...] = ("text", "image", "cross", "image_grid")
#: views of the image tower alone (pooled vector; region grid of UniMP's resampler)
IMAGE_VIEWS = ("image", "image_grid")
STORE_FORMAT = "raypipe.features/1"
WORK_DIR = ".work"
OK, MISSING, CORRUPT = "ok", "missing", "corrupt"
_TEXT_COLUMNS = ("title", "category", "brand", "description", "price")
_IMAGE_COLUMNS = ("image", "image_path")


class SimulatedInterruption(RuntimeError):
    """Raised by the testing hook of :func:`extract_features` after part of a view was written."""


@dataclass
class FeatureConfig:
    """Everything :func:`extract_features` needs; ``jobs/extract_features.py`` builds it from flags."""

    dataset: str  # canonical dataset directory (items.parquet)
    out: str  # feature store directory
    views: list[str] = field(default_factory=lambda: ["text", "image", "cross"])
    #: local Hugging Face / sentence-transformers directory; ``None`` = the packaged MiniLM
    text_model: str | None = None
    #: item text template of raypipe.data.text (``plain``: title, else category)
    text_template: str = "plain"
    text_max_length: int = 128
    #: ``efficientnet_lite0`` (packaged ImageNet weights), ``timm:ARCH:ckpt``, ``resnet50[:ckpt]``
    #: (torchvision) or ``open_clip:ARCH[:ckpt]``
    image_model: str = DEFAULT_IMAGE_MODEL
    #: open_clip model for the joint text-image space: ``ARCH[:ckpt]`` or ``local-dir:/dir``
    cross_model: str = DEFAULT_CROSS_MODEL
    #: image side length fed to the image encoders (``None`` = the architecture's native size)
    image_size: int | None = None
    #: ``image_grid`` view: the image tower's last feature map average-pooled to ``grid x grid`` regions,
    #: each a vector of the tower's width (timm models only), stored flattened (regions x width)
    image_grid: int = 3
    #: rows per encoder call (and per decoding batch)
    batch_size: int = 64
    #: images per forward pass of the image and cross encoders; ``None`` = CPU_IMAGE_CHUNK on the CPU
    #: (small batches keep a convolutional network's activations in cache) and the whole batch on a GPU
    image_chunk: int | None = None
    #: GPUs per encoder actor; ``None`` = 1 when the cluster has GPUs, else 0 (CPU)
    num_gpus: float | None = None
    #: largest encoder actor pool; ``None`` = one per GPU, or on CPU about one per core (a quarter kept
    #: for reading, decoding and writing)
    num_actors: int | None = None
    #: torch intra-op threads per actor; ``None`` = 1 on CPU (RAY_NOTES: oversubscription is very slow)
    torch_threads: int | None = None
    #: CPUs reserved by each read / decode / write task
    task_cpus: float = 0.25
    #: items per block between the stages (the unit the actors share and stream)
    block_rows: int = 256
    #: rows per written part file (also the resume granularity)
    rows_per_file: int = 1024
    seed: int = 0  # random initialisation of encoders without a checkpoint
    force: bool = False  # recompute views even when their fingerprint matches
    max_listed_ids: int = 1000  # item ids listed per category in the manifest (counts are always exact)

    def validate(self) -> None:
        bad = [v for v in self.views if v not in VIEWS]
        if bad or not self.views:
            raise ValueError(f"views must be a non-empty subset of {list(VIEWS)}, got {self.views}")
        check_template(self.text_template)
        if min(self.batch_size, self.block_rows, self.rows_per_file) < 1:
            raise ValueError("batch_size, block_rows and rows_per_file must be >= 1")
        if self.image_chunk is not None and self.image_chunk < 1:
            raise ValueError(f"image_chunk must be >= 1, got {self.image_chunk}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError("num_gpus must be >= 0")
        if self.num_actors is not None and self.num_actors < 1:
            raise ValueError("num_actors must be >= 1")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError("image_size must be >= 8")
        if not 1 <= self.image_grid <= 7:
            raise ValueError(f"image_grid must be in 1..7, got {self.image_grid}")
        if not (Path(self.dataset) / ITEMS_FILE).is_file():
            raise FileNotFoundError(f"{self.dataset}: no {ITEMS_FILE} (expected a canonical dataset directory)")
        # the image and cross-modal encoders are the [image] extra: name a missing package before Ray starts
        if any(v in IMAGE_VIEWS for v in self.views):
            check_image_packages(parse_image_model(self.image_model))
        if "cross" in self.views:
            check_image_packages(parse_cross_model(self.cross_model))


@dataclass
class ViewResult:
    """What happened to one view in one run (also the job's results table)."""

    view: str
    status: str  # "computed" | "resumed" | "skipped"
    encoder: str
    weights: str
    dim: int
    n_items: int
    n_with_vector: int
    n_missing: int  # items with no input at all for this view
    n_corrupt: int  # items whose image could not be decoded
    encoded_this_run: int
    seconds: float
    items_per_s: float
    path: str


# ----------------------------------------------------------------------------- view plans
@dataclass(frozen=True)
class _ViewPlan:
    view: str
    encoder: str  # human-readable encoder name for the manifest
    model: str  # the model path / architecture the actors load
    checkpoint: str | None
    weights: str  # weights hash or "random"
    columns: tuple[str, ...]
    uses_text: bool
    uses_image: bool
    preprocess: ImagePreprocess | None
    fingerprint: str
    describe: dict[str, Any]


def _items_stamp(items: Path) -> dict[str, Any]:
    st = items.stat()
    return {"path": str(items.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _fingerprint(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plan_view(view: str, cfg: FeatureConfig, stamp: dict[str, Any], available: set[str]) -> _ViewPlan:
    text_cols = tuple(c for c in _TEXT_COLUMNS if c in available)
    image_cols = tuple(c for c in _IMAGE_COLUMNS if c in available)
    spec: ModelSpec | None = None
    if view == "text":
        path = resolve_text_model(cfg.text_model)
        encoder = f"sentence-transformers:{text_pooling(path)}-pooling"
        model, checkpoint, weights = path, None, weights_hash(path)
        columns = text_cols + (image_cols if cfg.text_template == "unimp" else ())
        preprocess = None
        describe = {"template": cfg.text_template, "max_length": cfg.text_max_length}
    else:
        spec = parse_image_model(cfg.image_model) if view in IMAGE_VIEWS else parse_cross_model(cfg.cross_model)
        spec.check()
        encoder, model, checkpoint, weights = spec.name, spec.arch, spec.checkpoint, weights_id(spec)
        preprocess = image_preprocess_for(spec, cfg.image_size)
        columns = image_cols if view in IMAGE_VIEWS else text_cols + image_cols
        describe = {"image_size": preprocess.size}
        if view == "image_grid":
            if spec.family != "timm":
                raise ValueError(f"the image_grid view needs a timm image model (region features), got {spec.name}")
            describe["grid"] = cfg.image_grid
        if view == "cross":
            describe["template"] = cfg.text_template
    if weights == "random":
        describe["seed"] = cfg.seed
    fp = _fingerprint({"format": STORE_FORMAT, "view": view, "items": {k: stamp[k] for k in ("size", "mtime_ns")},
                       "encoder": encoder, "model": model if spec is not None else os.path.basename(model),
                       "weights": weights, **describe})
    return _ViewPlan(view, encoder, model, checkpoint, weights, ("item_id",) + columns, view not in IMAGE_VIEWS,
                     view != "text", preprocess, fp, describe)


# ----------------------------------------------------------------------- CPU preparation tasks
def item_blocks(items: Path, block_rows: int, done: set[str]) -> list[dict[str, Any]]:
    """The read units of a run: slices of ``block_rows`` items of each row group of the items file that
    still hold an item not in ``done`` (the driver reads only the ``item_id`` column for that)."""
    pf = pq.ParquetFile(items)
    units = []
    for rg in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(rg).num_rows
        if not done:
            units += [{"path": str(items), "row_group": rg, "slice": k, "rows": block_rows}
                      for k in range(-(-n // block_rows))]
            continue
        for k, rb in enumerate(pf.iter_batches(batch_size=block_rows, row_groups=[rg], columns=["item_id"])):
            if any(i not in done for i in rb.column(0).to_pylist()):
                units.append({"path": str(items), "row_group": rg, "slice": k, "rows": block_rows})
    return units


def read_block(unit: Any, columns: Sequence[str], skip: pa.Array | None) -> pa.Table:
    """Rows of one read unit (see :func:`item_blocks`), minus the item ids in ``skip``.

    A slice is read by iterating its row group up to it: Parquet cannot start inside a row group, so
    a row group of ``k`` slices is decoded about ``k/2`` times on average (cheap next to encoding)."""
    path, rg, k, rows = (unit[c][0] for c in ("path", "row_group", "slice", "rows"))
    pf = pq.ParquetFile(str(path))
    for i, rb in enumerate(pf.iter_batches(batch_size=int(rows), row_groups=[int(rg)], columns=list(columns))):
        if i == k:
            t = pa.Table.from_batches([rb])
            if skip is not None:
                t = t.filter(pc.invert(pc.is_in(t.column("item_id"), value_set=skip)))
            return t
    raise IndexError(f"{path}: row group {rg} has no slice {k} of {rows} rows")


def load_block(unit: dict[str, np.ndarray], *, columns: Sequence[str], skip: pa.Array | None, template: str,
               uses_text: bool, preprocess: ImagePreprocess | None, base_dir: str) -> dict[str, np.ndarray]:
    """CPU task: read one block of items and prepare it for the encoder (:func:`prepare_batch`)."""
    return prepare_batch(read_block(unit, columns, skip), template=template, uses_text=uses_text,
                         preprocess=preprocess, base_dir=base_dir)


def prepare_batch(batch: pa.Table, *, template: str, uses_text: bool, preprocess: ImagePreprocess | None,
                  base_dir: str) -> dict[str, np.ndarray]:
    """CPU task: render item text and/or decode + resize images of one batch (no model involved).

    Text is "missing" when the template renders nothing (plain: no title and no category).  An image is
    "missing" when neither bytes nor a path is given, "corrupt" when decoding fails (error kept)."""
    rows = batch.to_pylist()
    n = len(rows)
    out: dict[str, np.ndarray] = {"item_id": np.array([r["item_id"] for r in rows], dtype=object)}
    if uses_text:
        texts = [render(template, r).strip() for r in rows]
        out["text"] = np.array(texts, dtype=object)
        out["text_status"] = np.array([OK if t else MISSING for t in texts], dtype=object)
    if preprocess is not None:
        pixels = np.zeros((n, preprocess.size, preprocess.size, 3), dtype=np.uint8)
        status, errors = [], []
        for i, r in enumerate(rows):
            data, path = r.get("image"), r.get("image_path")
            if data is None and not path:
                status.append(MISSING), errors.append("")
                continue
            if data is None and not os.path.isabs(path):
                path = os.path.join(base_dir, path)
            try:
                pixels[i] = preprocess(data, None if data is not None else path)
                status.append(OK), errors.append("")
            except ImageDecodeError as e:
                status.append(CORRUPT), errors.append(str(e)[:300])
        out["pixels"] = pixels
        out["image_status"] = np.array(status, dtype=object)
        out["error"] = np.array(errors, dtype=object)
    return out


def _output_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("present", pa.bool_(), nullable=False),
        pa.field("text_status", pa.string()),
        pa.field("image_status", pa.string()),
        pa.field("error", pa.string()),
    ])


def to_output_table(item_ids: Sequence[str], vectors: np.ndarray, present: np.ndarray,
                    text_status: Sequence[str] | None, image_status: Sequence[str] | None,
                    errors: Sequence[str] | None) -> pa.Table:
    """Rows of a view file; rows without a vector get a *null* vector, never zeros."""
    n, dim = vectors.shape
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    vec = pa.FixedSizeListArray.from_arrays(values, dim, mask=pa.array(~np.asarray(present, bool)))
    none = [None] * n

    def strs(xs: Sequence[str] | None) -> pa.Array:
        return pa.array(none if xs is None else [x or None for x in xs], type=pa.string())

    return pa.Table.from_arrays(
        [pa.array(list(item_ids), pa.string()), vec, pa.array(np.asarray(present, bool)),
         strs(text_status), strs(image_status), strs(errors)], schema=_output_schema(dim))


class EncodeBatch:
    """Ray Data callable class: one frozen encoder per actor (loaded once), applied to prepared batches.

    The device is the GPU when the actor was given one (``num_gpus > 0``) and CUDA is visible, else the
    CPU — the same code either way."""

    def __init__(self, view: str, model: str, num_gpus: float, torch_threads: int, image_size: int | None,
                 seed: int, text_max_length: int, grid: int = 0, image_chunk: int | None = None) -> None:
        import torch

        torch.set_num_threads(max(1, torch_threads))
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.view = view
        #: images per forward pass (0 = the whole batch)
        self.image_chunk = image_chunk or (CPU_IMAGE_CHUNK if device == "cpu" else 0)
        if view == "text":
            from raypipe.features.text import TextEncoder

            self.encoder: Any = TextEncoder(model, device=device, max_length=text_max_length)
        elif view in IMAGE_VIEWS:
            from raypipe.features.encoders import ImageEncoder

            self.encoder = ImageEncoder(model, device=device, image_size=image_size, seed=seed,
                                        grid=grid if view == "image_grid" else 0)
        else:
            from raypipe.features.encoders import CrossModalEncoder

            self.encoder = CrossModalEncoder(model, device=device, image_size=image_size, seed=seed)
        log.info("%s encoder ready on %s (%d torch threads)", view, device, torch.get_num_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        ids = batch["item_id"]
        n = len(ids)
        text_status = batch.get("text_status")
        image_status = batch.get("image_status")
        errors = batch.get("error")
        dim = self.encoder.dim
        vectors = np.zeros((n, dim), dtype=np.float32)
        if self.view == "text":
            present = text_status == OK
            if present.any():
                vectors[present] = self.encoder.encode(list(batch["text"][present]), batch_size=max(1, n))
        elif self.view in IMAGE_VIEWS:
            present = image_status == OK
            if present.any():
                vectors[present] = self.encoder.encode(batch["pixels"][present], batch_size=self.image_chunk or n)
        else:
            has_text = text_status == OK
            has_image = image_status == OK
            texts = [t if ok else None for t, ok in zip(batch["text"], has_text)]
            vectors, present = self.encoder.encode_items(texts, batch["pixels"], has_image,
                                                         image_batch=self.image_chunk or max(1, n))
        return to_output_table(ids, vectors, present, text_status, image_status, errors)


# ------------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class _Resources:
    num_gpus: float
    n_actors: int
    actor_cpus: float
    torch_threads: int


def _resources(cfg: FeatureConfig) -> _Resources:
    import ray

    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 1.0)), float(total.get("GPU", 0.0))
    num_gpus = cfg.num_gpus if cfg.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
    if num_gpus > 0:
        if gpus <= 0:
            raise ValueError(f"num_gpus={num_gpus} but the Ray cluster has no GPU")
        threads = cfg.torch_threads or 1
        n_actors = cfg.num_actors or max(1, int(gpus // num_gpus))
        actor_cpus = max(0.1, min(1.0, (cpus - 0.5) / n_actors))
    else:
        # About one single-threaded actor per core; the actors reserve three quarters of the CPUs (at least
        # half a CPU stays free) so that the reading/decoding and writing tasks always get scheduled.
        threads = cfg.torch_threads or 1
        budget = cpus - max(0.5, 0.25 * cpus)
        n_actors = cfg.num_actors or max(1, round(0.75 * cpus / threads))
        actor_cpus = max(0.1, min(float(threads), budget / n_actors))
    return _Resources(num_gpus, n_actors, actor_cpus, threads)


# ------------------------------------------------------------------------------- work files
def _work_dir(out: Path, plan: _ViewPlan) -> Path:
    return out / WORK_DIR / f"{plan.view}-{plan.fingerprint}"


def _scan_done(work: Path) -> set[str]:
    """Item ids already written in a work directory; unreadable (cut-short) part files are removed."""
    done: set[str] = set()
    if not work.is_dir():
        return done
    for f in sorted(work.iterdir()):
        if f.name == VIEW_INFO_FILE:
            continue
        if f.suffix != ".parquet" or f.name.startswith("."):
            log.warning("removing leftover %s", f)
            shutil.rmtree(f, ignore_errors=True) if f.is_dir() else f.unlink(missing_ok=True)
            continue
        try:
            ids = pq.read_table(f, columns=["item_id"]).column(0).to_pylist()
        except Exception as e:  # a part file whose write was cut short
            log.warning("discarding unreadable part file %s (%s); its items are encoded again", f.name, e)
            f.unlink(missing_ok=True)
            continue
        done.update(ids)
    return done


def _view_stats(work: Path, n_items: int, max_listed: int, plan: _ViewPlan) -> dict[str, Any]:
    """Counts and item-id lists of a complete work directory (reads every column but the vectors)."""
    files = sorted(work.glob("*.parquet"))
    if not files:
        raise RuntimeError(f"{work}: no part files were written")
    cols = ["item_id", "present", "text_status", "image_status", "error"]
    t = pa.concat_tables([pq.read_table(f, columns=cols) for f in files])
    ids = t.column("item_id").to_numpy(zero_copy_only=False)
    if len(ids) != n_items or len(np.unique(ids)) != n_items:
        raise RuntimeError(f"{work}: {len(ids)} rows ({len(np.unique(ids))} distinct item ids) for a catalogue "
                           f"of {n_items} items; remove the directory (or pass --force) and run again")
    dim = pq.read_schema(files[0]).field("vector").type.list_size
    present = t.column("present").to_numpy(zero_copy_only=False).astype(bool)

    def listed(mask: np.ndarray) -> dict[str, Any]:
        sel = ids[mask]
        return {"count": int(mask.sum()), "item_ids": sorted(sel.tolist())[:max_listed]}

    stats: dict[str, Any] = {"dim": int(dim), "n_items": n_items, "n_with_vector": int(present.sum()),
                             "without_vector": listed(~present)}
    if plan.uses_text:
        ts = t.column("text_status").to_numpy(zero_copy_only=False)
        stats["text"] = {"missing": listed(ts == MISSING)}
    if plan.uses_image:
        st = t.column("image_status").to_numpy(zero_copy_only=False)
        err = t.column("error").to_numpy(zero_copy_only=False)
        corrupt = st == CORRUPT
        order = np.argsort(ids[corrupt], kind="stable")[:max_listed]
        stats["image"] = {"missing": listed(st == MISSING),
                          "corrupt": {"count": int(corrupt.sum()),
                                      "items": [{"item_id": str(i), "error": str(e)}
                                                for i, e in zip(ids[corrupt][order], err[corrupt][order])]}}
    return stats


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    p = Path(out) / MANIFEST_FILE
    return json.loads(p.read_text()) if p.is_file() else None


def _view_is_current(out: Path, manifest: dict[str, Any] | None, plan: _ViewPlan) -> bool:
    if not manifest or plan.view not in manifest.get("views", {}):
        return False
    entry = manifest["views"][plan.view]
    info = out / entry.get("path", plan.view) / VIEW_INFO_FILE
    if entry.get("fingerprint") != plan.fingerprint or not info.is_file():
        return False
    return json.loads(info.read_text()).get("fingerprint") == plan.fingerprint


# ----------------------------------------------------------------------------- the pipeline
def _run_view(plan: _ViewPlan, cfg: FeatureConfig, res: _Resources, items: Path, work: Path,
              done: set[str], interrupt_after: int | None) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    # One CPU task per block of block_rows items reads its slice of the items file and prepares it (text,
    # image decoding).  Blocks of that size let the actors share the work evenly and let decoding,
    # encoding and writing stream; a crash loses at most the blocks in flight.  (ray.data.read_parquet
    # would add a file-listing task that costs seconds per run and a whole CPU.)
    units = item_blocks(items, cfg.block_rows, done)
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds = ds.map_batches(load_block, batch_size=1, batch_format="numpy", num_cpus=cfg.task_cpus,
                        fn_kwargs={"columns": list(plan.columns),
                                   "skip": pa.array(sorted(done), pa.string()) if done else None,
                                   "template": cfg.text_template, "uses_text": plan.uses_text,
                                   "preprocess": plan.preprocess, "base_dir": str(items.parent.resolve())})
    ds = ds.map_batches(
        EncodeBatch,
        batch_size=cfg.batch_size,
        batch_format="numpy",
        num_gpus=res.num_gpus,
        num_cpus=res.actor_cpus,
        compute=ActorPoolStrategy(min_size=1, max_size=res.n_actors, initial_size=res.n_actors),
        fn_constructor_kwargs={"view": plan.view, "model": plan.model if plan.view == "text" else
                               _spec_string(plan), "num_gpus": res.num_gpus, "torch_threads": res.torch_threads,
                               "image_size": cfg.image_size, "seed": cfg.seed,
                               "text_max_length": cfg.text_max_length,
                               "grid": cfg.image_grid if plan.view == "image_grid" else 0,
                               "image_chunk": cfg.image_chunk},
    )
    if interrupt_after is not None:
        ds = ds.limit(interrupt_after)
    work.mkdir(parents=True, exist_ok=True)
    ds.write_parquet(str(work), min_rows_per_file=cfg.rows_per_file, ray_remote_args={"num_cpus": cfg.task_cpus})
    if interrupt_after is not None:
        raise SimulatedInterruption(f"{plan.view}: stopped after {interrupt_after} items (testing hook)")


def _spec_string(plan: _ViewPlan) -> str:
    return spec_string(plan.encoder, plan.model, plan.checkpoint)


def spec_string(encoder: str, model: str, checkpoint: str | None) -> str:
    """The image / cross-modal model spec an encoder actor loads, from a view's encoder name, model and
    checkpoint (as the manifest records them)."""
    ckpt = f":{checkpoint}" if checkpoint else ""
    if encoder.startswith("torchvision:"):
        return model + ckpt
    if encoder.startswith("timm:"):
        return "timm:" + model + ckpt
    return "open_clip:" + model + ckpt


def extract_features(cfg: FeatureConfig, *, _interrupt_after: dict[str, int] | None = None) -> list[ViewResult]:
    """Extract the requested views of ``cfg.dataset`` into the feature store ``cfg.out``; resumable.

    Ray must already be initialised (:func:`raypipe.runtime.init_ray`).  ``_interrupt_after`` is a
    testing hook: ``{view: n}`` writes ``n`` more items of that view, then raises
    :class:`SimulatedInterruption` as a crash would, leaving the work directory behind."""
    cfg.validate()
    out = Path(cfg.out)
    items = Path(cfg.dataset) / ITEMS_FILE
    stamp = _items_stamp(items)
    n_items = pq.ParquetFile(items).metadata.num_rows
    available = set(pq.read_schema(items).names)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out) or {}
    manifest.update({"format": STORE_FORMAT, "dataset": str(Path(cfg.dataset).resolve()), "items_file": stamp,
                     "n_items": n_items})
    manifest.setdefault("views", {})
    stale = [v for v, e in manifest["views"].items() if e.get("items_size_mtime") != [stamp["size"], stamp["mtime_ns"]]]
    if stale:  # the catalogue changed since those views were computed: a store describes one catalogue
        log.warning("dropping views %s: computed for another version of %s", stale, items)
        for v in stale:
            manifest["views"].pop(v)
        write_json_atomic(out / MANIFEST_FILE, manifest)
        for v in stale:
            shutil.rmtree(out / v, ignore_errors=True)

    res = _resources(cfg)
    log.info("encoder actors: %d x (num_gpus=%g, num_cpus=%g, torch threads=%d)",
             res.n_actors, res.num_gpus, res.actor_cpus, res.torch_threads)
    results = []
    for view in cfg.views:
        plan = _plan_view(view, cfg, stamp, available)
        work = _work_dir(out, plan)
        for other in (out / WORK_DIR).glob(f"{view}-*") if (out / WORK_DIR).is_dir() else []:
            if other != work:  # work of another configuration of this view
                shutil.rmtree(other, ignore_errors=True)
        if not cfg.force and _view_is_current(out, manifest, plan):
            e = manifest["views"][view]
            log.info("%s: up to date (fingerprint %s), skipped", view, plan.fingerprint)
            results.append(_result(view, "skipped", e, 0, 0.0, out))
            continue
        if cfg.force:
            shutil.rmtree(work, ignore_errors=True)
        done = _scan_done(work)
        pending = n_items - len(done)
        log.info("%s: %s; %d items to encode (%d already done) with %s [weights %s]", view,
                 "resuming" if done else "starting", pending, len(done), plan.encoder, plan.weights)
        if plan.weights == "random":
            log.warning("%s view: encoder %s has RANDOM weights (seed %d); recorded in the manifest",
                        view, plan.encoder, cfg.seed)
        t0 = time.perf_counter()
        if pending > 0:
            _run_view(plan, cfg, res, items, work, done, (_interrupt_after or {}).get(view))
        seconds = time.perf_counter() - t0
        stats = _view_stats(work, n_items, cfg.max_listed_ids, plan)
        entry = {
            "view": view, "path": view, "encoder": plan.encoder, "model": plan.model,
            "checkpoint": plan.checkpoint, "weights": plan.weights, "random_init": plan.weights == "random",
            **plan.describe, "dtype": "float32", "normalised": "l2", "fingerprint": plan.fingerprint,
            "items_size_mtime": [stamp["size"], stamp["mtime_ns"]], **stats,
            "run": {"encoded": pending, "resumed_from": len(done), "seconds": round(seconds, 3),
                    "items_per_s": round(pending / seconds, 2) if seconds > 0 and pending else None,
                    "actors": res.n_actors, "torch_threads_per_actor": res.torch_threads,
                    "num_gpus_per_actor": res.num_gpus, "batch_size": cfg.batch_size,
                    "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        }
        write_json_atomic(work / VIEW_INFO_FILE, entry)
        replace_dir(work, out / view)
        manifest["views"][view] = entry
        manifest["updated_at"] = entry["run"]["finished_at"]
        write_json_atomic(out / MANIFEST_FILE, manifest)
        log.info("%s: %d/%d items with a vector (dim %d), %d missing, %d corrupt images; %.1fs",
                 view, stats["n_with_vector"], n_items, stats["dim"], stats["without_vector"]["count"],
                 stats.get("image", {}).get("corrupt", {}).get("count", 0), seconds)
        results.append(_result(view, "resumed" if done else "computed", entry, pending, seconds, out))
    if (out / WORK_DIR).is_dir() and not any((out / WORK_DIR).iterdir()):
        (out / WORK_DIR).rmdir()
    return results


def _result(view: str, status: str, e: dict[str, Any], encoded: int, seconds: float, out: Path) -> ViewResult:
    corrupt = e.get("image", {}).get("corrupt", {}).get("count", 0)
    return ViewResult(view=view, status=status, encoder=e["encoder"], weights=e["weights"], dim=e["dim"],
                      n_items=e["n_items"], n_with_vector=e["n_with_vector"],
                      n_missing=e["without_vector"]["count"], n_corrupt=corrupt, encoded_this_run=encoded,
                      seconds=round(seconds, 2), items_per_s=round(encoded / seconds, 1) if seconds > 0 else 0.0,
                      path=str(out / e["path"]))


def format_results(results: Sequence[ViewResult]) -> str:
    """A Markdown table of one run."""
    head = "| View | Status | Encoder | Weights | Dim | Items | With vector | No input | Corrupt img | Encoded | s | items/s |"
    lines = [head, "|" + "---|" * 12]
    for r in results:
        lines.append(f"| {r.view} | {r.status} | {r.encoder} | {r.weights} | {r.dim} | {r.n_items:,} | "
                     f"{r.n_with_vector:,} | {r.n_missing:,} | {r.n_corrupt:,} | {r.encoded_this_run:,} | "
                     f"{r.seconds:.1f} | {r.items_per_s:,.1f} |")
    return "\n".join(lines)


__all__ = ["FeatureConfig", "ViewResult", "VIEWS", "extract_features", "format_results", "prepare_batch",
           "EncodeBatch", "SimulatedInterruption", "read_manifest"]
