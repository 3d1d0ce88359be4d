"""Locate and load what the Serve app serves, from a trained run or a whole IDP pipeline directory.

Accepted layouts (:meth:`ServingSpec.resolve`):

* an **IDP pipeline directory** (``runs/<name>/`` written by :mod:`raypipe.pipelines.idp`): the served
  sequence model is the first of ``idp`` (fine-tuned), ``idp_zero_shot``, ``pretrain`` that has a
  ``model.pt`` (or ``variant=``); the CDIM matcher is ``cdim/model.pt`` and its index over the
  pre-trained items' CDIM vectors is ``transfer_cdim/index`` (IDP eq. 8);
* a **run directory** (``config.yaml`` + ``item_index.parquet`` + ``model.pt``, any trained sequential
  model) plus an optional CDIM directory.  A run directory inside an IDP pipeline directory finds its
  sibling ``cdim/`` and ``transfer_cdim/index`` by itself.

* a **serving bundle** (:mod:`raypipe.serve.bundle`, ``raypipe bundle``): a run directory plus the item
  popularity, attributes, feature views and CDIM files the app would otherwise read from the dataset, the
  feature store and the pipeline directory, so the serving node needs none of them; and, when exported
  with ``--reranker``, the reranker slot's run in ``reranker/`` (:attr:`ServingSpec.reranker_run`) with the
  item texts and feature views its catalogue reads (:func:`load_reranker`).

Without a CDIM directory the matcher uses the packaged MiniLM untuned (IDP's ablation "w/o BCL"); the
app reports which one it runs in ``/healthz``.  Without a saved CDIM index the matcher encodes the
pre-trained items' texts at start-up (cached under the state directory).

Paths are made absolute when the spec is resolved (in the process that builds the app), because Serve
replicas do not share the caller's working directory.

``artifacts`` may also be a URI (``s3://``, ``gs://``, ``file://``) of a serving bundle (exported with
``raypipe bundle ... --out <uri>``) or of a finished run: it is downloaded into the local cache
(:mod:`raypipe.storage`), and each replica fetches its own copy on its node (:func:`on_this_node`).  The
serve state then defaults to ``<cache>/serve_state/`` (the cached copy is replaced when the stored one
changes).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from raypipe import storage
from raypipe.config import ExperimentConfig, load_config
from raypipe.data.schema import DATASET_FILE, INTERACTIONS_FILE, ITEMS_FILE, DatasetInfo
from raypipe.data.sequences import ItemIndex
from raypipe.models.base import SequentialRecommender
from raypipe.models.registry import build_model, get_spec
from raypipe.data.catalogue import ItemCatalogue, load_views
from raypipe.rundir import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, load_weights
from raypipe.serve import bundle as bundles
from raypipe.train.run import load_features

log = logging.getLogger(__name__)

#: served-model preference inside an IDP pipeline directory
VARIANT_PREFERENCE = ("idp", "idp_zero_shot", "pretrain")
ATTRIBUTE_COLUMNS = ("title", "category", "brand", "description", "price")
UNTUNED_CDIM = "packaged MiniLM, not tuned (IDP ablation w/o BCL)"


def is_run_dir(path: Path) -> bool:
    return all((path / f).is_file() for f in (CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE))


def find_dataset(spec: str, anchors: list[Path]) -> Path | None:
    """The canonical dataset directory a run was trained on, or ``None`` when it is not on this machine.

    Unlike :func:`raypipe.data.registry.resolve_dataset` this never generates or converts anything.
    Relative paths (runs record ``data/builtin-small`` when ``$RAYPIPE_DATA`` is relative) are tried
    against the working directory and every ancestor of ``anchors``.
    """
    from raypipe.data.registry import data_root

    kind, _, arg = spec.partition(":")
    if kind == "builtin" and arg:
        rel = data_root() / f"builtin-{arg}"
    elif kind == "movielens" and arg:
        rel = data_root() / arg
    else:
        rel = Path(spec)
    candidates = [rel] if rel.is_absolute() else [Path.cwd() / rel] + [
        p / rel for a in anchors for p in [a, *a.resolve().parents]]
    for c in candidates:
        if all((c / f).is_file() for f in (ITEMS_FILE, INTERACTIONS_FILE, DATASET_FILE)):
            return c.resolve()
    return None


@dataclass
class ServingSpec:
    """Absolute paths of everything the deployments load (picklable, passed to every replica)."""

    run_dir: str
    dataset: str | None
    cdim_dir: str | None
    cdim_index: str | None
    cdim_config: dict[str, Any]
    state_dir: str
    domains: list[str]
    #: domains whose items count as "pre-trained" for the matcher when no CDIM index is saved
    pretrained_domains: list[str]
    model_name: str
    num_items: int
    description: dict[str, Any] = field(default_factory=dict)
    #: the model's retrieval vectors carry a popularity term recomputed from live events (PreRec's Z)
    live_popularity: bool = False
    #: how POST /items embeds a new item: ``cdim`` (IDP's matcher) or ``content`` (the model's projectors)
    onboarding: str = "cdim"
    #: the serving bundle served (its files replace the dataset's), ``None`` for a run or pipeline directory
    bundle: str | None = None
    #: a bundle or run read from storage (``s3://``, ``gs://``, ``file://``): its URI, and the local copy
    #: every path above points into on the node that resolved it (:func:`on_this_node` moves them)
    source_uri: str | None = None
    local_copy: str | None = None
    #: the bundle's reranker run (``<bundle>/reranker``), served in the reranker slot unless ``reranker_run=``
    #: names another; ``None`` when the bundle has none or this is no bundle
    reranker_run: str | None = None

    @classmethod
    def resolve(cls, artifacts: str | Path, *, variant: str | None = None, cdim_dir: str | Path | None = None,
                cdim_index: str | Path | None = None, state_dir: str | Path | None = None,
                dataset: str | Path | None = None, onboarding: str = "auto") -> "ServingSpec":
        if storage.is_uri(str(artifacts)):  # a bundle (or run) in storage: served from its local copy
            uri = str(artifacts).rstrip("/")
            local = fetch_stored(uri)
            state = state_dir or storage.cache_root() / "serve_state" / storage.cache_dir(uri).name
            spec = cls.resolve(local, variant=variant, cdim_dir=cdim_dir, cdim_index=cdim_index, state_dir=state,
                               dataset=dataset, onboarding=onboarding)
            spec.description["source_uri"] = uri
            return replace(spec, source_uri=uri, local_copy=str(local))
        root = Path(artifacts).resolve()
        if not root.exists():
            raise FileNotFoundError(f"artifacts: {root} does not exist")
        pipeline: Path | None = None
        manifest: dict[str, Any] | None = None
        if bundles.is_bundle(root):
            manifest = bundles.read_manifest(root)
            if variant is not None:
                raise ValueError(f"variant: {root} is a serving bundle of one run ({manifest['model']}); "
                                 "export another bundle to serve another variant")
            if dataset is not None:
                raise ValueError(f"dataset: {root} is a serving bundle, it carries its own popularity and "
                                 "item attributes")
            run = root
            if cdim_dir is None and (root / bundles.CDIM_DIR / WEIGHTS_FILE).is_file():
                cdim_dir = root / bundles.CDIM_DIR
            if cdim_index is None and (root / bundles.CDIM_INDEX_DIR / "meta.json").is_file():
                cdim_index = root / bundles.CDIM_INDEX_DIR
        elif is_run_dir(root):
            run = root
            if (root.parent / "pretrain").is_dir() and (root.parent / "cdim").exists():
                pipeline = root.parent
        else:
            pipeline = root
            names = [variant] if variant else list(VARIANT_PREFERENCE)
            runs = [root / n for n in names if is_run_dir(root / n)]
            if not runs:
                raise FileNotFoundError(
                    f"artifacts: {root} is neither a run directory ({CONFIG_FILE}, {INDEX_FILE}, {WEIGHTS_FILE}) "
                    f"nor an IDP pipeline directory with a finished run among {names}")
            run = runs[0]
        if pipeline is not None:
            if cdim_dir is None and (pipeline / "cdim" / WEIGHTS_FILE).is_file():
                cdim_dir = pipeline / "cdim"
            if cdim_index is None and (pipeline / "transfer_cdim" / "index" / "meta.json").is_file():
                cdim_index = pipeline / "transfer_cdim" / "index"
        if cdim_dir is not None and not (Path(cdim_dir) / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"cdim_dir: no {WEIGHTS_FILE} in {cdim_dir}")
        cfg = load_config(run / CONFIG_FILE)
        if manifest is not None:  # a bundle: nothing is read from the dataset
            data = None
        else:
            data = Path(dataset).resolve() if dataset else find_dataset(cfg.data.dataset, [run])
            if data is None:
                log.warning("dataset %s of %s is not on this machine: no popularity fallback ranking by counts, "
                            "no item attributes", cfg.data.dataset, run)
        index = ItemIndex.load(run / INDEX_FILE)
        domains = sorted(set(index.domains))
        if manifest is not None:
            pretrained = [d for d in manifest["pretrained_domains"] if d in domains] or list(domains)
            cdim_cfg = dict(manifest.get("cdim_config") or {})
        else:
            pretrained = _pretrained_domains(run, data, domains)
            cdim_cfg = _cdim_config(pipeline)
        state = Path(state_dir).resolve() if state_dir else (pipeline or run) / "serve_state"
        caps = get_spec(cfg.model.name).capabilities
        live = "live_popularity" in caps and bool(getattr(cfg.model, "popularity", True))
        if onboarding not in ("auto", "cdim", "content"):
            raise ValueError(f"onboarding: choose auto, cdim or content, got {onboarding!r}")
        if onboarding == "content" and "content_items" not in caps:
            raise ValueError(f"onboarding=content: the served model {cfg.model.name} cannot embed an item from its "
                             "contents alone (no content_items capability); use onboarding=cdim")
        live_store = _live_store(cfg, run)
        if onboarding == "content" and live_store is None:
            raise ValueError(f"onboarding=content: {run} has no feature store with a manifest (data.features="
                             f"{cfg.data.features}) to encode new items with")
        method = "content" if onboarding == "content" or (
            onboarding == "auto" and "content_items" in caps and live_store is not None) else "cdim"
        if onboarding == "auto" and "content_items" in caps and method == "cdim":
            log.warning("%s: no feature store with a manifest on this machine (data.features=%s); new items "
                        "are onboarded by CDIM instead of %s's own projectors", run, cfg.data.features, cfg.model.name)
        desc = {"run_dir": str(run), "model": cfg.model.name, "stage": cfg.run.stage, "mode": cfg.run.mode,
                "live_popularity": live, "onboarding": method}
        rerank = root / bundles.RERANKER_DIR if manifest is not None and manifest.get("reranker") else None
        if manifest is not None:
            desc.update({"bundle": str(root), "source_run": manifest["source"]["run_dir"]})
        if method == "cdim":
            desc.update({"cdim": str(cdim_dir) if cdim_dir else UNTUNED_CDIM,
                         "cdim_index": str(cdim_index) if cdim_index else "built from pre-trained item texts at start-up"})
        return cls(str(run), str(data) if data else None, str(Path(cdim_dir).resolve()) if cdim_dir else None,
                   str(Path(cdim_index).resolve()) if cdim_index else None, cdim_cfg, str(state), domains,
                   pretrained, cfg.model.name, len(index), desc, live, method,
                   str(root) if manifest is not None else None, reranker_run=str(rerank) if rerank else None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fetch_stored(uri: str) -> Path:
    """The local copy of a serving bundle (``bundle.json``) or a finished run (``metrics.json``) at ``uri``,
    downloaded unless the cached copy is current."""
    if storage.exists(storage.join(uri, bundles.BUNDLE_FILE)):
        return storage.fetch_run(uri, commit=bundles.BUNDLE_FILE)
    return storage.fetch_run(uri)


def on_this_node(spec: dict[str, Any]) -> dict[str, Any]:
    """A replica's view of a spec (:meth:`ServingSpec.to_dict`): for a spec resolved from a URI, the stored
    bundle or run fetched into this node's cache (nothing to do when it is current) and every path moved
    from the resolving node's copy into it; any other spec as it is."""
    uri, copy = spec.get("source_uri"), spec.get("local_copy")
    if not uri or not copy:
        return spec
    local = str(fetch_stored(uri))
    if local == copy:
        return spec
    return {k: local + v[len(copy):] if isinstance(v, str) and (v == copy or v.startswith(copy + "/")) else v
            for k, v in spec.items()} | {"local_copy": local}


def _live_store(cfg: ExperimentConfig, run: Path) -> Path | None:
    """The run's feature store directory when it has a manifest here (what live encoding needs)."""
    from raypipe.features.store import MANIFEST_FILE

    store = features_path(cfg, run)
    return store if store is not None and (store / MANIFEST_FILE).is_file() else None


def features_path(cfg: ExperimentConfig, run: Path) -> Path | None:
    """``data.features`` of a run, a relative path found from the working directory or the run's ancestors."""
    if cfg.data.features is None:
        return None
    bundled = bundles.bundled_features(run)  # a bundle reads its own copy of the run's feature views
    if bundled is not None:
        return bundled
    store = Path(cfg.data.features)
    return store if store.is_absolute() else (find_relative(cfg.data.features, run) or store)


def _pretrained_domains(run: Path, dataset: Path | None, domains: list[str]) -> list[str]:
    """The pre-training (source) domains: the dataset's ``source`` roles, else every domain."""
    if dataset is not None:
        info = DatasetInfo.load(dataset / DATASET_FILE)
        src = [d for d in info.source_domains if d in domains]
        if src:
            return src
    return list(domains)


def _cdim_config(pipeline: Path | None) -> dict[str, Any]:
    """The CDIM config an IDP pipeline ran with (its ``results.json``), else the defaults."""
    if pipeline is not None and (pipeline / "results.json").is_file():
        try:
            return dict(json.loads((pipeline / "results.json").read_text())["config"]["cdim"])
        except (KeyError, TypeError, ValueError):
            log.warning("%s/results.json has no cdim config; using defaults", pipeline)
    return {}


# ------------------------------------------------------------------------------------------- loading
def load_model(run_dir: str | Path, counts: np.ndarray | None = None, torch_threads: int | None = 1,
               events_dataset: str | Path | None = None) -> tuple[SequentialRecommender, ItemIndex, ExperimentConfig]:
    """A run's model (best weights, eval mode) and item index, built without re-preparing the dataset.

    ``counts`` (length N+1) is only used by popularity models; ``events_dataset`` (a canonical dataset
    directory) gives models with time-slot popularity statistics (PreRec) the dataset's interactions,
    and models that read item texts (UPSR, UniMP) the items."""
    if torch_threads:
        torch.set_num_threads(torch_threads)
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / CONFIG_FILE)
    index = ItemIndex.load(run_dir / INDEX_FILE)
    if cfg.data.features is not None:
        cfg.data.features = str(features_path(cfg, run_dir))
    events = dataset_events(events_dataset, index) if events_dataset is not None else None
    model = build_model(cfg.model, ItemCatalogue(index, counts, load_features(cfg, index, run_dir=run_dir),
                                                 events=events,
                                                 dataset=Path(events_dataset) if events_dataset is not None else None))
    model.load_state_dict(load_weights(run_dir))
    return model.eval(), index, cfg


def reranker_dataset(run_dir: str | Path) -> Path | None:
    """The canonical dataset a reranking run's catalogue reads (item texts, events): a bundle's ``reranker/``
    carries its own; any other run's is found where it recorded it, else ``None``."""
    bundled = bundles.bundled_dataset(run_dir)
    if bundled is not None:
        return bundled
    return find_dataset(load_config(Path(run_dir) / CONFIG_FILE).data.dataset, [Path(run_dir)])


def load_reranker(run_dir: str | Path) -> tuple[SequentialRecommender, ItemIndex, ExperimentConfig]:
    """The reranker slot's model, as :func:`load_model` with its dataset (:func:`reranker_dataset`): models
    reading item texts (UPSR, UniMP) get them, models with time-slot popularity (PreRec) score by the
    popularity at the end of their data."""
    return load_model(run_dir, events_dataset=reranker_dataset(run_dir))


def content_onboarder(run_dir: str | Path, log_path: str | Path, torch_threads: int | None = 1):  # noqa: ANN201
    """A :class:`raypipe.serve.content.ContentOnboarder` for a run whose model has the ``content_items``
    capability: the run's model, the live encoders of its feature store's views, and (for a derived cross
    view) the aligner its run directory saved."""
    from raypipe.features.aligned import ALIGNER_FILE, CrossAligner, run_aligner
    from raypipe.features.live import LiveItemEncoder
    from raypipe.serve.content import ContentOnboarder
    from raypipe.serve.onboarding import OnboardingLog
    from raypipe.train.run import derives_cross

    run_dir = Path(run_dir)
    model, index, cfg = load_model(run_dir, torch_threads=torch_threads)
    spec = get_spec(cfg.model.name)
    if "content_items" not in spec.capabilities:
        raise ValueError(f"{cfg.model.name} cannot embed items from their contents (no content_items capability)")
    if cfg.data.features is None:
        raise ValueError(f"{run_dir}: the run names no feature store (data.features)")
    aligner = None
    if derives_cross(cfg):
        if (run_dir / ALIGNER_FILE).is_file():
            aligner = CrossAligner.load(run_dir / ALIGNER_FILE)
        else:  # a run from before the heads were saved: fit them as its training did (same seed)
            log.warning("%s has no %s: fitting the cross-view heads again (seed %d)", run_dir, ALIGNER_FILE,
                        cfg.train.seed)
            views = load_views(cfg.data.features, ["text", "image"], index)
            aligner = run_aligner(views["text"], views["image"], cfg.train.seed)
    views = list(spec.feature_views(cfg.model)) if spec.feature_views else list(cfg.data.feature_views)
    encoder = LiveItemEncoder(cfg.data.features, views, aligner, torch_threads=torch_threads or 1)
    return ContentOnboarder(model, encoder, list(index.item_ids), OnboardingLog(log_path))


def dataset_events(dataset: str | Path, index: ItemIndex) -> tuple[np.ndarray, np.ndarray]:
    """Every interaction of a dataset whose item the index knows: ``(item indices, Unix times)``, int64."""
    t = pq.read_table(Path(dataset) / INTERACTIONS_FILE, columns=["item_id", "timestamp"])
    idx = index.lookup(t.column("item_id").to_pylist())
    keep = idx > 0
    return idx[keep].astype(np.int64), t.column("timestamp").to_numpy()[keep].astype(np.int64)


def find_relative(rel: str, anchor: Path) -> Path | None:
    for base in [Path.cwd(), anchor, *anchor.resolve().parents]:
        if (base / rel).exists():
            return (base / rel).resolve()
    return None


@torch.inference_mode()
def item_vectors(model: SequentialRecommender, n_items: int, batch: int = 65_536) -> np.ndarray:
    """The scoring vectors of items 1..N (``item_repr``), float32 ``[N, d]`` (row i = index i+1)."""
    parts = [model.item_repr(torch.arange(lo, min(lo + batch, n_items + 1))).float().numpy()
             for lo in range(1, n_items + 1, batch)]
    return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, 1), np.float32)


def popularity(dataset: str | Path | None, index: ItemIndex) -> np.ndarray:
    """Interactions per item over the whole dataset, aligned to the index: int64 ``[N + 1]`` (row 0 = 0).

    All zeros when the dataset is not available (the fallback then lists a domain in index order)."""
    counts = np.zeros(len(index) + 1, dtype=np.int64)
    if dataset is None:
        return counts
    ids = pq.read_table(Path(dataset) / INTERACTIONS_FILE, columns=["item_id"]).column("item_id")
    vc = ids.value_counts()
    per_item = pd.Series(vc.field("counts").to_numpy(), index=vc.field("values").to_pylist())
    idx = index.lookup(list(per_item.index))
    keep = idx > 0
    np.add.at(counts, idx[keep], per_item.to_numpy()[keep])
    return counts


def item_attributes(dataset: str | Path | None, index: ItemIndex) -> pd.DataFrame:
    """Title, category, brand, description, price of the indexed items (indexed by ``item_id``)."""
    if dataset is None:
        return pd.DataFrame(columns=list(ATTRIBUTE_COLUMNS), index=pd.Index([], name="item_id"))
    return attributes_table(Path(dataset) / ITEMS_FILE, index)


def attributes_table(path: str | Path, index: ItemIndex) -> pd.DataFrame:
    """The :data:`ATTRIBUTE_COLUMNS` of the indexed items from a Parquet file with an ``item_id`` column (a
    dataset's items or a bundle's item attributes); absent columns and items are missing values."""
    cols = list(ATTRIBUTE_COLUMNS)
    have = set(pq.read_schema(path).names)
    t = pq.read_table(path, columns=["item_id"] + [c for c in cols if c in have]).to_pandas()
    t = t.drop_duplicates("item_id").set_index("item_id")
    return t.reindex(pd.Index(list(index.item_ids), name="item_id")).reindex(columns=cols)


# ------------------------------------------------------------------- what a deployment serves from
def serving_popularity(spec: Mapping[str, Any], index: ItemIndex) -> np.ndarray:
    """:func:`popularity` of a resolved spec (``ServingSpec.to_dict()``): from its bundle, else its dataset."""
    if spec.get("bundle"):
        return bundles.read_popularity(spec["bundle"], index)
    return popularity(spec["dataset"], index)


def serving_events(spec: Mapping[str, Any], index: ItemIndex) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dataset_events` of a resolved spec: from its bundle, else its dataset, else none."""
    if spec.get("bundle"):
        return bundles.read_events(spec["bundle"], index)
    if spec["dataset"]:
        return dataset_events(spec["dataset"], index)
    return np.zeros(0, np.int64), np.zeros(0, np.int64)


def serving_attributes(spec: Mapping[str, Any], index: ItemIndex) -> pd.DataFrame:
    """:func:`item_attributes` of a resolved spec: from its bundle, else its dataset."""
    if spec.get("bundle"):
        return attributes_table(Path(spec["bundle"]) / bundles.ATTRIBUTES_FILE, index)
    return item_attributes(spec["dataset"], index)


def has_item_texts(spec: Mapping[str, Any]) -> bool:
    """Whether the spec has item attributes to read texts from (a bundle or a dataset)."""
    return bool(spec.get("bundle") or spec.get("dataset"))


def weights_key(*paths: str | Path | None, extra: Any = None) -> str:
    """A short content key of files (size + SHA-256 of their bytes) and settings, for start-up caches."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for p in paths:
        if p is None:
            h.update(b"-")
            continue
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
