"""Serving bundles: a trained run exported with everything the Serve app reads at start-up, so the serving
node needs no training dataset, feature store or IDP pipeline directory.

    raypipe bundle runs/idp --out bundles/idp                 # an IDP pipeline directory (its served variant)
    raypipe bundle runs/idp --variant pretrain --out b/pre    # another variant of it
    raypipe bundle runs/x/unim2rec-s0 --out b/u2r --force     # a run directory; replace an older bundle
    raypipe bundle runs/idp --reranker runs/x/upsr --out b/r  # with a reranker slot model (UPSR, UniMP, ...)
    raypipe serve artifacts=bundles/idp                       # serve it (no dataset on this machine needed)

:func:`export_bundle` resolves the same :class:`~raypipe.serve.artifacts.ServingSpec` the app would
(same arguments: ``variant``, ``cdim_dir``, ``cdim_index``, ``dataset``, ``onboarding``) and writes::

    bundle.json                   the manifest: format, created, source (artifacts, run, dataset, CDIM paths),
                                  model, stage, capabilities, onboarding, live popularity, domains, pre-trained
                                  domains, item count, vector size, CDIM config, feature views, and the bytes
                                  and SHA-256 of every other file
    config.yaml                   the served run, as raypipe.rundir names its files: a bundle is also a run
    item_index.parquet            directory (load_model and content_onboarder read it as one)
    model.pt
    metrics.json                  the run's test metrics, when it has them (provenance only)
    cross_aligner.pt              the run's cross-modal heads (a derived ``cross`` view), when it has them
    item_vectors.parquet          item_id, domain, vector (fixed_size_list<float32>[d]): the model's item_repr
                                  in index order (a live-popularity model's popularity coordinate at zero
                                  counts; serving recomputes it from popularity_events.parquet)
    popularity.parquet            item_id, domain, count: the dataset's interactions per indexed item
    popularity_events.parquet     item_id, timestamp: every interaction of an indexed item (live-popularity
                                  models only: the seed of the served counts and of their time slots)
    item_attributes.parquet       item_id, domain, title, category, brand, description, price: what
                                  GET /items returns and the CDIM matcher's texts of pre-trained items
    features/                     the feature views the model reads, copied from its feature store
                                  (manifest.json with only those views + <view>/): the model's inputs and,
                                  for content onboarding, the encoders' record (features.npy for a .npy view)
    cdim/model.pt                 CDIM onboarding: the tuned matcher (absent: the packaged MiniLM, untuned)
    cdim_index/                   CDIM onboarding: the saved hnswlib index over the pre-trained items' CDIM
                                  vectors (absent: built at start-up from item_attributes.parquet)
    reranker/                     ``--reranker RUN_DIR``: the reranker slot's run, rebuilt from here alone (its
                                  own config.yaml, item_index.parquet, model.pt, metrics.json, cross_aligner.pt):
      dataset/                    a canonical dataset reduced to what its ItemCatalogue reads: items.parquet
                                  (its indexed items' text columns, no images), interactions.parquet (their
                                  interactions' user, item, domain and time, the events of time-slot popularity;
                                  no ratings or reviews) and the source's dataset.json
      features/                   the feature views it reads, copied as for the served run (features.npy for
                                  a .npy view)

``--reranker`` must name a finished run (``metrics.json`` written) of a model with the ``scorer``
capability whose item index holds every item the bundled model serves, with its dataset (and feature
store) on this machine; anything else is refused, naming ``--reranker``, before anything is written.
``bundle.json`` records it under ``reranker`` (model, stage, capabilities, item count, source, dataset,
feature views) and lists its files with their bytes and SHA-256 like every other.  An app started on the
bundle serves it in the reranker slot (``Reranker``) with no ``reranker_run=``; an explicit
``reranker_run=`` still wins.  A bundle re-exported from a bundle carries its reranker only when
``--reranker <bundle>/reranker`` is passed again.

The bundle is written into a temporary directory beside ``out`` and renamed into place only once it is
complete and resolves as a spec; a non-empty ``out`` is refused unless ``force`` (then it is replaced as
a whole).  :meth:`ServingSpec.resolve` accepts the bundle directory as ``artifacts`` and checks each
listed file's size; :func:`verify_bundle` checks their hashes too.

Not in a bundle: a reranker slot's run exported without ``--reranker`` (``reranker_run=`` names a run
directory and reads its dataset), the serve state (``<bundle>/serve_state`` unless ``state_dir=``: pass one
for a read-only bundle), and the encoders' weights (the packaged MiniLM / EfficientNet that the feature
store's manifest names; a store extracted with other weights needs them at the same path on the serving
node; likewise a reranker's ``model.backbone`` when it is a local model folder, not ``minilm`` or
``t5-random``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from raypipe.io import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from raypipe.data.sequences import ItemIndex

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "raypipe.bundle/1"
VECTORS_FILE = "item_vectors.parquet"
POPULARITY_FILE = "popularity.parquet"
EVENTS_FILE = "popularity_events.parquet"
ATTRIBUTES_FILE = "item_attributes.parquet"
FEATURES_DIR = "features"
FEATURES_NPY = "features.npy"
CDIM_DIR = "cdim"
CDIM_INDEX_DIR = "cdim_index"
RERANKER_DIR = "reranker"
RERANKER_DATASET = "dataset"


class BundleError(ValueError):
    """A bundle cannot be written or read; the message names the argument or file at fault."""


# ----------------------------------------------------------------------------------------- reading
def is_bundle(path: str | Path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def read_manifest(path: str | Path, check_sizes: bool = True) -> dict[str, Any]:
    """A bundle's ``bundle.json``, its format checked and (``check_sizes``) every listed file present with
    its recorded size: a half-copied bundle fails here, naming the file."""
    root = Path(path)
    try:
        manifest = json.loads((root / BUNDLE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{root}: cannot read {BUNDLE_FILE}: {e}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{root}/{BUNDLE_FILE}: format {manifest.get('format')!r}, this raypipe reads "
                          f"{BUNDLE_FORMAT!r}")
    if check_sizes:
        for name, entry in manifest.get("files", {}).items():
            f = root / name
            if not f.is_file():
                raise BundleError(f"{root}: {name} is listed in {BUNDLE_FILE} but missing")
            if f.stat().st_size != entry["bytes"]:
                raise BundleError(f"{root}: {name} has {f.stat().st_size} bytes, {BUNDLE_FILE} records "
                                  f"{entry['bytes']}")
    return manifest


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """:func:`read_manifest` plus every file's SHA-256; :class:`BundleError` names the first that differs
    or a file the manifest does not list."""
    root = Path(path)
    manifest = read_manifest(root)
    listed = manifest.get("files", {})
    for name, entry in listed.items():
        if _sha256(root / name) != entry["sha256"]:
            raise BundleError(f"{root}: {name} does not match its SHA-256 in {BUNDLE_FILE}")
    extra = sorted(set(_files(root)) - set(listed) - {BUNDLE_FILE})
    extra = [e for e in extra if not e.startswith("serve_state/")]
    if extra:
        raise BundleError(f"{root}: files not listed in {BUNDLE_FILE}: {extra[:5]}")
    return manifest


def bundled_features(run_dir: str | Path) -> Path | None:
    """The feature views a bundle carries for its model (``features/`` or ``features.npy``), or for its
    reranker when ``run_dir`` is the bundle's ``reranker/``; ``None`` when ``run_dir`` is neither or the
    model reads no feature views."""
    root = Path(run_dir)
    entry = read_manifest(root, check_sizes=False) if is_bundle(root) else bundled_reranker(root)
    name = entry.get("features") if entry else None
    return (root / name).resolve() if name else None


def bundled_reranker(run_dir: str | Path) -> dict[str, Any] | None:
    """The manifest's ``reranker`` entry when ``run_dir`` is a bundle's ``reranker/`` directory, else ``None``."""
    root = Path(run_dir)
    if root.name != RERANKER_DIR or not is_bundle(root.parent):
        return None
    return read_manifest(root.parent, check_sizes=False).get("reranker")


def bundled_dataset(run_dir: str | Path) -> Path | None:
    """The reduced canonical dataset a bundle's ``reranker/`` carries (what its catalogue reads), else ``None``."""
    entry = bundled_reranker(run_dir)
    return (Path(run_dir) / entry["dataset"]).resolve() if entry else None


def read_popularity(bundle: str | Path, index: "ItemIndex") -> "np.ndarray":
    """``popularity.parquet`` aligned to ``index``: int64 ``[N + 1]`` (row 0 = 0)."""
    import numpy as np
    import pyarrow.parquet as pq

    t = pq.read_table(Path(bundle) / POPULARITY_FILE, columns=["item_id", "count"])
    counts = np.zeros(len(index) + 1, dtype=np.int64)
    idx = index.lookup(t.column("item_id").to_pylist())
    keep = idx > 0
    np.add.at(counts, idx[keep], t.column("count").to_numpy()[keep])
    return counts


def read_events(bundle: str | Path, index: "ItemIndex") -> tuple["np.ndarray", "np.ndarray"]:
    """``popularity_events.parquet`` as ``(item indices, Unix times)`` (int64), like
    :func:`raypipe.serve.artifacts.dataset_events`; none when the bundle has no events."""
    import numpy as np
    import pyarrow.parquet as pq

    path = Path(bundle) / EVENTS_FILE
    if not path.is_file():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    t = pq.read_table(path, columns=["item_id", "timestamp"])
    idx = index.lookup(t.column("item_id").to_pylist())
    keep = idx > 0
    return idx[keep].astype(np.int64), t.column("timestamp").to_numpy()[keep].astype(np.int64)


def read_vectors(bundle: str | Path) -> tuple[list[str], list[str], "np.ndarray"]:
    """``item_vectors.parquet``: ``(item ids, domains, vectors [N, d] float32)``."""
    import numpy as np
    import pyarrow.parquet as pq

    t = pq.read_table(Path(bundle) / VECTORS_FILE)
    col = t.column("vector").combine_chunks()
    d = col.type.list_size
    vecs = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
    return t.column("item_id").to_pylist(), t.column("domain").to_pylist(), vecs


# ----------------------------------------------------------------------------------------- writing
def export_bundle(artifacts: str | Path, out_dir: str | Path, variant: str | None = None, *,
                  cdim_dir: str | Path | None = None, cdim_index: str | Path | None = None,
                  dataset: str | Path | None = None, onboarding: str = "auto", reranker: str | Path | None = None,
                  force: bool = False) -> Path:
    """Write the serving bundle of ``artifacts`` (what ``build_app(artifacts=..., variant=...)`` would serve)
    to ``out_dir``, with ``reranker`` (a run directory) for the reranker slot; its path.  :class:`BundleError`
    (or ``FileNotFoundError`` / ``ValueError`` from resolving the spec) for bad arguments, before anything is
    written."""
    import numpy as np
    import pyarrow as pa

    from raypipe.config import load_config
    from raypipe.data.sequences import ItemIndex
    from raypipe.io import atomic_dir, write_parquet_atomic
    from raypipe.models.registry import get_spec
    from raypipe.rundir import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE
    from raypipe.serve.artifacts import (
        ATTRIBUTE_COLUMNS, ServingSpec, item_vectors, load_model, load_reranker, serving_attributes, serving_events,
        serving_popularity,
    )

    out = Path(out_dir).absolute()
    check_out_dir(out, force)
    rerank_run = check_reranker_run(reranker) if reranker is not None else None
    spec = ServingSpec.resolve(artifacts, variant=variant, cdim_dir=cdim_dir, cdim_index=cdim_index,
                               dataset=dataset, onboarding=onboarding)
    s = spec.to_dict()
    run = Path(spec.run_dir)
    cfg = load_config(run / CONFIG_FILE)
    if spec.bundle is None and spec.dataset is None:
        raise BundleError(f"dataset: {cfg.data.dataset} (the dataset of {run}) is not on this machine; a bundle "
                          "needs its item popularity and attributes: pass dataset=<canonical dataset directory>")
    store = _feature_store(cfg, run, "")
    index = ItemIndex.load(run / INDEX_FILE)
    rr = _RerankerSource(rerank_run, index) if rerank_run is not None else None
    sources = [p for p in (spec.run_dir, spec.dataset, spec.cdim_dir, spec.cdim_index, spec.bundle, store,
                           Path(artifacts).resolve(), *(rr.sources() if rr else ())) if p is not None]
    for src in sources:
        src = Path(src).resolve()
        if out.resolve() == src or out.resolve() in src.parents:
            raise BundleError(f"--out: {out} holds what the bundle is exported from ({src})")

    model, _, _ = load_model(run)  # exactly as a serving replica builds it (fails here, not when served)
    if rr is not None:
        load_reranker(rr.run)  # likewise the Reranker deployment
    vectors = item_vectors(model, len(index))
    caps = sorted(get_spec(cfg.model.name).capabilities)
    ids, doms = [str(i) for i in index.item_ids], [str(d) for d in index.domains]

    with atomic_dir(out) as tmp:
        _readable(tmp)
        _copy_run(cfg, run, tmp)
        features, views = _copy_features(cfg, run, store, tmp)
        d = int(vectors.shape[1])
        write_parquet_atomic(tmp / VECTORS_FILE, pa.table({
            "item_id": pa.array(ids, pa.string()), "domain": pa.array(doms, pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), d)}))
        counts = serving_popularity(s, index)
        write_parquet_atomic(tmp / POPULARITY_FILE, pa.table({
            "item_id": pa.array(ids, pa.string()), "domain": pa.array(doms, pa.string()),
            "count": pa.array(counts[1:].astype(np.int64), pa.int64())}))
        if spec.live_popularity:
            items, times = serving_events(s, index)
            write_parquet_atomic(tmp / EVENTS_FILE, pa.table({
                "item_id": pa.array([ids[i - 1] for i in items], pa.string()),
                "timestamp": pa.array(times.astype(np.int64), pa.int64())}))
        attrs = serving_attributes(s, index)
        cols: dict[str, Any] = {"item_id": pa.array(ids, pa.string()), "domain": pa.array(doms, pa.string())}
        for c in ATTRIBUTE_COLUMNS:
            vals = [_missing_to_none(v) for v in attrs[c].tolist()]
            cols[c] = pa.array([None if v is None else float(v) for v in vals], pa.float64()) if c == "price" \
                else pa.array([None if v is None else str(v) for v in vals], pa.string())
        write_parquet_atomic(tmp / ATTRIBUTES_FILE, pa.table(cols))
        if spec.onboarding == "cdim":
            if spec.cdim_dir:
                (tmp / CDIM_DIR).mkdir()
                shutil.copy2(Path(spec.cdim_dir) / WEIGHTS_FILE, tmp / CDIM_DIR / WEIGHTS_FILE)
            if spec.cdim_index:
                shutil.copytree(spec.cdim_index, tmp / CDIM_INDEX_DIR)
        reranker_entry = rr.write(tmp / RERANKER_DIR) if rr is not None else None
        manifest = {
            "format": BUNDLE_FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": {"artifacts": str(Path(artifacts).resolve()), "run_dir": spec.description.get("source_run",
                                                                                                   spec.run_dir),
                       "variant": variant, "dataset": spec.dataset, "cdim_dir": spec.cdim_dir,
                       "cdim_index": spec.cdim_index, "bundle": spec.bundle},
            "model": cfg.model.name, "stage": cfg.run.stage, "mode": cfg.run.mode, "capabilities": caps,
            "onboarding": spec.onboarding, "live_popularity": spec.live_popularity,
            "domains": list(spec.domains), "pretrained_domains": list(spec.pretrained_domains),
            "num_items": len(index), "vector_dim": d, "cdim_config": dict(spec.cdim_config),
            "cdim": "tuned" if spec.onboarding == "cdim" and spec.cdim_dir else (
                "packaged MiniLM, untuned" if spec.onboarding == "cdim" else None),
            "features": features, "feature_views": views,
            "interactions": int(counts.sum()), "reranker": reranker_entry,
            "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                      for name in _files(tmp)},
        }
        (tmp / BUNDLE_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        ServingSpec.resolve(tmp, onboarding=onboarding, state_dir=tmp / "serve_state")  # it serves as exported
    log.info("bundle of %s (%s, %d items%s) written to %s", run, cfg.model.name, len(index),
             f", reranker {rr.cfg.model.name} from {rr.run}" if rr else "", out)
    return out


def check_reranker_run(path: str | Path) -> Path:
    """``--reranker``: a finished run (its ``metrics.json`` written last) of a model with the ``scorer``
    capability; its absolute path.  :class:`BundleError` naming ``--reranker`` otherwise."""
    from raypipe.config import load_config
    from raypipe.models.registry import get_spec
    from raypipe.rundir import CONFIG_FILE, INDEX_FILE, METRICS_FILE, WEIGHTS_FILE

    run = Path(path).absolute()
    if not run.is_dir():
        raise BundleError(f"--reranker: {run} " + ("is not a directory" if run.exists() else "does not exist"))
    missing = [f for f in (CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, METRICS_FILE) if not (run / f).is_file()]
    if missing:
        raise BundleError(f"--reranker: {run} is not a finished run directory (no {', '.join(missing)})")
    name = load_config(run / CONFIG_FILE).model.name
    caps = get_spec(name).capabilities
    if "scorer" not in caps:
        raise BundleError(f"--reranker: {run} is a run of {name} ({', '.join(sorted(caps)) or 'no capabilities'}); "
                          "the reranker slot needs a model with the scorer capability (score(history, candidates)), "
                          "e.g. upsr or unimp")
    return run


class _RerankerSource:
    """What ``--reranker`` is exported from: the run, its item index, dataset and feature store (checked)."""

    def __init__(self, run: Path, served: "ItemIndex") -> None:
        from raypipe.config import load_config
        from raypipe.data.sequences import ItemIndex
        from raypipe.rundir import CONFIG_FILE, INDEX_FILE
        from raypipe.serve.artifacts import reranker_dataset

        self.run, self.cfg = run, load_config(run / CONFIG_FILE)
        self.index = ItemIndex.load(run / INDEX_FILE)
        known = set(self.index.item_ids)
        unknown = [i for i in served.item_ids if i not in known]
        if unknown:
            raise BundleError(f"--reranker: {run} does not know {len(unknown)} of the {len(served)} items the "
                              f"bundled model serves (e.g. {unknown[0]!r}): its item index must hold them all")
        dataset = reranker_dataset(run)
        if dataset is None:
            raise BundleError(f"--reranker: {run}: its dataset {self.cfg.data.dataset} is not on this machine; the "
                              "bundle carries the item texts its catalogue reads from it")
        self.dataset = dataset
        self.store = _feature_store(self.cfg, run, "--reranker: ")

    def sources(self) -> list[Path | None]:
        return [self.run, self.dataset, self.store]

    def write(self, dest: Path) -> dict[str, Any]:
        """Copy the run into ``dest`` (the bundle's ``reranker/``); its manifest entry."""
        from raypipe.models.registry import get_spec

        dest.mkdir()
        _copy_run(self.cfg, self.run, dest)
        features, views = _copy_features(self.cfg, self.run, self.store, dest)
        interactions = _write_catalogue_dataset(self.dataset, self.index, dest / RERANKER_DATASET)
        return {"model": self.cfg.model.name, "stage": self.cfg.run.stage, "mode": self.cfg.run.mode,
                "capabilities": sorted(get_spec(self.cfg.model.name).capabilities), "num_items": len(self.index),
                "source": {"run_dir": str(self.run), "dataset": str(self.dataset)}, "dataset": RERANKER_DATASET,
                "interactions": interactions, "features": features, "feature_views": views}


def _write_catalogue_dataset(src: Path, index: "ItemIndex", dest: Path) -> int:
    """A canonical dataset at ``dest`` reduced to what an :class:`ItemCatalogue` of ``index`` reads from
    ``src``: the indexed items' text columns (no images) and their interactions' user, item, domain and
    time (no ratings or reviews); the number of interactions."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from raypipe.data.dataset import CanonicalDataset
    from raypipe.data.schema import DATASET_FILE, INTERACTIONS_FILE, INTERACTIONS_SCHEMA, ITEMS_FILE, ITEMS_SCHEMA
    from raypipe.io import write_parquet_atomic

    ids = pa.array([str(i) for i in index.item_ids], pa.string())
    ds = CanonicalDataset.open(src)
    items = ds.items(columns=[f.name for f in ITEMS_SCHEMA if not f.name.startswith("image")])
    items = items.filter(pc.is_in(items["item_id"], value_set=ids))
    inter = ds.interactions(columns=["user_id", "item_id", "domain", "timestamp"])
    inter = inter.filter(pc.is_in(inter["item_id"], value_set=ids))
    for name in ("rating", "review"):
        f = INTERACTIONS_SCHEMA.field(name)
        inter = inter.append_column(f, pa.nulls(len(inter), f.type))
    dest.mkdir()
    write_parquet_atomic(dest / ITEMS_FILE, items)
    write_parquet_atomic(dest / INTERACTIONS_FILE, inter)
    info = dataclasses.replace(ds.info, extra={
        **ds.info.extra, "bundled_from": str(src), "reduced": "the reranker's indexed items: text columns (no "
        "images) and their interactions' user, item, domain and time (no ratings or reviews)"})
    (dest / DATASET_FILE).write_text(info.to_json() + "\n")
    CanonicalDataset.open(dest)  # its schema checked as any dataset's
    return len(inter)


def _feature_store(cfg: Any, run: Path, arg: str) -> Path | None:
    """The feature store a run reads (``None`` when it reads none); :class:`BundleError` when it is not here."""
    from raypipe.serve.artifacts import features_path

    store = features_path(cfg, run)
    if cfg.data.features is not None and (store is None or not store.exists()):
        raise BundleError(f"{arg}{run}: its feature store {cfg.data.features} is not on this machine; the model "
                          f"reads its views {list(cfg.data.feature_views)}")
    return store


def _copy_run(cfg: Any, run: Path, dest: Path) -> None:
    """A run directory's files under ``raypipe.rundir``'s names into ``dest``: config, item index, weights,
    its test metrics when it has them (provenance) and the cross-modal heads its ``cross`` view reads."""
    from raypipe.rundir import CONFIG_FILE, INDEX_FILE, METRICS_FILE, WEIGHTS_FILE

    for name in (CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE):
        shutil.copy2(run / name, dest / name)
    if (run / METRICS_FILE).is_file():
        shutil.copy2(run / METRICS_FILE, dest / METRICS_FILE)
    aligner = _aligner_file(cfg, run)
    if aligner is not None:
        shutil.copy2(aligner, dest / aligner.name)


def check_out_dir(out: Path, force: bool) -> None:
    """``out`` may be new, empty, or (``force``) a directory to replace; never a file."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"--out: {out} is a file")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise BundleError(f"--out: {out} is not empty; pass --force to replace it")


def _copy_features(cfg: Any, run: Path, store: Path | None, tmp: Path) -> tuple[str | None, list[str]]:
    """Copy the views the model reads (and content onboarding encodes with) into ``tmp``; ``(name, views)``."""
    if store is None:
        return None, []
    if str(store).endswith(".npy"):
        shutil.copy2(store, tmp / FEATURES_NPY)
        return FEATURES_NPY, list(cfg.data.feature_views)[:1]
    from raypipe.features.store import MANIFEST_FILE, FeatureStore
    from raypipe.models.registry import get_spec

    spec = get_spec(cfg.model.name)
    wanted = list(cfg.data.feature_views)  # what the model reads (load_features) ...
    if spec.feature_views:  # ... and what content onboarding encodes new items into
        wanted += [v for v in spec.feature_views(cfg.model) if v not in wanted]
    manifest = FeatureStore.open(store).manifest
    have = manifest.get("views", {})
    if "cross" in wanted and "cross" not in have:  # derived from text and image by the run's aligner
        wanted = [v for v in wanted if v != "cross"] + [v for v in ("text", "image") if v not in wanted]
    missing = [v for v in wanted if v not in have]
    if missing:
        raise BundleError(f"{store}: the feature store has no view {missing} (it has {sorted(have)})")
    (tmp / FEATURES_DIR).mkdir()
    for v in wanted:
        rel = have[v].get("path", v)
        shutil.copytree(store / rel, tmp / FEATURES_DIR / rel)
    manifest["views"] = {v: have[v] for v in wanted}
    manifest["bundled_from"] = str(store)
    (tmp / FEATURES_DIR / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    FeatureStore.open(tmp / FEATURES_DIR)  # every view's record matches the manifest
    return FEATURES_DIR, sorted(wanted)


def _aligner_file(cfg: Any, run: Path) -> Path | None:
    """The cross-modal heads a run's derived ``cross`` view reads (where :func:`load_features` finds them)."""
    from raypipe.features.aligned import ALIGNER_FILE

    look = [run]
    if cfg.run.init_from:
        init = Path(cfg.run.init_from)
        look.append(init if init.is_dir() else init.parent)
    return next((d / ALIGNER_FILE for d in look if (d / ALIGNER_FILE).is_file()), None)


def _missing_to_none(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    return sha256_file(path)


def _readable(path: Path) -> None:
    """``mkdtemp`` makes a private directory; a bundle gets the usual permissions (umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o777 & ~mask)


# ------------------------------------------------------------------------------------------ command
def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", help="an IDP pipeline directory, a run directory or a bundle (what "
                                     "`raypipe serve artifacts=...` takes)")
    p.add_argument("--out", required=True, help="the bundle directory to write (new or empty), or a storage URI "
                                               "(s3://, gs://, file://): exported locally, then published there")
    p.add_argument("--variant", help="the run inside an IDP pipeline directory (default idp > idp_zero_shot > "
                                     "pretrain)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out as a whole")
    p.add_argument("--dataset", help="the run's canonical dataset directory when it is not where the run "
                                     "recorded it")
    p.add_argument("--cdim-dir", help="a CDIM run directory (default: the pipeline's cdim/)")
    p.add_argument("--cdim-index", help="a saved CDIM index (default: the pipeline's transfer_cdim/index)")
    p.add_argument("--onboarding", choices=("auto", "cdim", "content"), default="auto",
                   help="how the served app onboards new items (default: %(default)s, as `raypipe serve`)")
    p.add_argument("--reranker", metavar="RUN_DIR", help="a finished run of a scorer model (UPSR, UniMP, ...) "
                                                         "bundled for the reranker slot, with its item texts and "
                                                         "feature views (served without reranker_run=)")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    p = parser(prog)
    ns = p.parse_args(argv)
    import raypipe.runtime  # noqa: F401 -- its environment defaults (offline hubs)

    if not Path(ns.artifacts).exists():
        p.error(f"artifacts: {ns.artifacts} does not exist")
    from raypipe import storage

    uri = str(ns.out).rstrip("/") if storage.is_uri(str(ns.out)) else None
    try:
        if ns.reranker is not None:
            check_reranker_run(ns.reranker)
        if uri is None:
            check_out_dir(Path(ns.out).absolute(), ns.force)
        else:  # exported into a local staging directory, then published (bundle.json last)
            storage.check(uri)
            if storage.is_nonempty_dir(uri) and not ns.force:
                raise BundleError(f"--out: {uri} is not empty; pass --force to replace it")
    except (ValueError, storage.StorageError) as e:  # BundleError, ConfigError: bad --out or --reranker
        p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.config import ConfigError
    from raypipe.data.schema import DataValidationError

    target = storage.staging_dir(uri) if uri else ns.out
    try:
        out = export_bundle(ns.artifacts, target, ns.variant, cdim_dir=ns.cdim_dir, cdim_index=ns.cdim_index,
                            dataset=ns.dataset, onboarding=ns.onboarding, reranker=ns.reranker,
                            force=ns.force or uri is not None)
    except (FileNotFoundError, ValueError, ConfigError, DataValidationError) as e:  # BundleError is a ValueError
        p.error(str(e))
    m = read_manifest(out)
    if uri:
        storage.publish_run(out, uri, commit=BUNDLE_FILE)
        out = uri
    size = sum(f["bytes"] for f in m["files"].values())
    print(f"{out}: {m['model']} ({m['stage']}), {m['num_items']} items in {len(m['domains'])} domains, "
          f"onboarding {m['onboarding']}, " + (f"reranker {m['reranker']['model']}, " if m.get("reranker") else "")
          + f"{len(m['files'])} files, {size / 2**20:.1f} MiB")
    print(f"serve it with: raypipe serve artifacts={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
