"""Feature views extracted on demand: a run whose model reads feature views (its spec's
``feature_views``) and names no store gets one next to its dataset, built once by the Ray Data pipeline
with the default encoders (packaged MiniLM text, packaged ImageNet EfficientNet-Lite0 images); later runs
reuse it.  The ``cross`` view is derived from text and image at load time (:mod:`raypipe.features.aligned`)
unless the store has one from a real vision-language checkpoint."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from raypipe.config import ExperimentConfig

log = logging.getLogger(__name__)

EXTRACTED_VIEWS = ("text", "image", "image_grid")


def default_store(dataset: Path) -> Path:
    return dataset / "features"


def ensure_features(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``data.features`` / ``data.feature_views`` set to what its model reads, extracting the
    views its store lacks (needs Ray: call after :func:`raypipe.runtime.init_ray`)."""
    from raypipe.data.registry import resolve_dataset
    from raypipe.features.pipeline import FeatureConfig, extract_features, format_results
    from raypipe.models.registry import get_spec
    from raypipe.train.run import store_views

    spec = get_spec(cfg.model.name)
    views = list(dict.fromkeys(spec.feature_views(cfg.model))) if spec.feature_views else []
    if not views:
        return cfg
    dataset = resolve_dataset(cfg.data.dataset)
    store = Path(cfg.data.features) if cfg.data.features else default_store(dataset)
    have = set(store_views(str(store)))
    needed = set(views) | ({"text", "image"} if "cross" in views and "cross" not in have else set())
    missing = [v for v in EXTRACTED_VIEWS if v in needed - have]  # (cross is derived, never extracted here)
    if missing:
        if str(store).endswith(".npy"):
            raise ValueError(f"data.features={store} is one array; {cfg.model.name} reads the views {views}: "
                             f"python jobs/extract_features.py --dataset {cfg.data.dataset} --views "
                             f"{','.join(missing)} --out DIR")
        log.info("%s reads the feature views %s; extracting %s into %s (once: later runs reuse it)",
                 cfg.model.name, views, missing, store)
        results = extract_features(FeatureConfig(dataset=str(dataset), out=str(store), views=missing))
        log.info("feature store %s:\n%s", store, format_results(results))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, features=str(store), feature_views=views))
