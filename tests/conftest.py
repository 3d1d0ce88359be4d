"""Shared fixtures: one local Ray for the whole test session, on loopback, with a capped object store."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


@pytest.fixture(scope="session")
def ray_local():
    """Start Ray once per test session (2 CPUs, 384 MiB object store, 127.0.0.1; the dashboard, which
    serves the State API Ray Train's PlacementGroupCleaner needs, on 127.0.0.1 too)."""
    import ray

    from raypipe.runtime import init_ray

    init_ray(num_cpus=2, object_store_mb=384, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The embedded benchmark at size ``tiny``, written once per test session."""
    from raypipe.data import builtin

    return builtin.write(tmp_path_factory.mktemp("builtin") / "tiny", "tiny")


@pytest.fixture(scope="session")
def tiny_store(ray_local, tiny_dataset: Path, tmp_path_factory) -> Path:
    """The tiny benchmark's text and image views with the default encoders (packaged MiniLM, packaged
    ImageNet EfficientNet-Lite0 at 224 px), extracted once per test session."""
    from raypipe.features.pipeline import FeatureConfig, extract_features

    out = tmp_path_factory.mktemp("tiny-store")
    extract_features(FeatureConfig(dataset=str(tiny_dataset), out=str(out), views=["text", "image"]))
    return out


@pytest.fixture(scope="session")
def idp_tiny(ray_local, tiny_dataset: Path, tmp_path_factory) -> tuple[Path, dict]:
    """The IDP pipeline on tiny, run once per session: pretrain (SASRec-BPR, 2 epochs) → CDIM (two
    behaviour positives per item) → transfer (tuned and untuned encoder) → the zero-shot variants with and
    without BCL.  Returns the pipeline directory and ``run_idp``'s result.  The pipeline's test checks it;
    the Serve tests serve its ``idp_zero_shot`` run (read only: nothing may write into it)."""
    from raypipe.pipelines.idp import IDPConfig, run_idp

    cfg = IDPConfig(dataset=str(tiny_dataset), storage_path=str(tmp_path_factory.mktemp("idp_runs")), name="idp",
                    variants=["idp_zero_shot", "idp_wo_bcl_zero_shot"], top_m=3,
                    ).with_overrides(pretrain=["train.epochs=2", "train.patience=2"], cdim=["pairs_per_item=2"])
    res = run_idp(cfg)
    return Path(cfg.storage_path) / cfg.name, res


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting Ray fails the test: whatever a rejection does must happen before."""
    import ray

    import raypipe.runtime

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(raypipe.runtime, "init_ray", boom)
    monkeypatch.setattr(ray, "init", boom)
