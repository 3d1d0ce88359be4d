"""PreRec through the real Ray Train loop on the tiny benchmark with PreRec's 4:3:3 user split:
pre-training on the sources (early stopping on the mean r-NDCG@K% over domains), then zero-shot
(do(D=0), the targets' own popularity) and full fine-tuning on the targets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from raypipe.config import load_config
from raypipe.train.run import run_experiment


@pytest.fixture(scope="module")
def features(ray_local, tiny_dataset: Path, tmp_path_factory) -> Path:
    from raypipe.features.pipeline import FeatureConfig, extract_features

    out = tmp_path_factory.mktemp("prerec-features")
    extract_features(FeatureConfig(dataset=str(tiny_dataset), out=str(out), views=["text"]))
    return out


def _cfg(tiny_dataset: Path, features: Path, tmp: Path, *over: str):
    return load_config(None, [
        "model.name=prerec", f"data.dataset={tiny_dataset}", f"data.features={features}", "data.split=user_433",
        "data.max_len=20", "model.hidden=32", "model.n_neg=32", "model.pop_hidden=32", "train.batch_size=64",
        "train.lr=3e-3", "train.metric=r_ndcg@10%", "train.valid_average=domains", "eval.k_percents=[10]",
        f"run.storage_path={tmp}", *over])


@pytest.mark.slow
def test_pretrain_zero_shot_and_finetune(ray_local, tiny_dataset: Path, features: Path, tmp_path: Path) -> None:
    pre = run_experiment(_cfg(tiny_dataset, features, tmp_path, "run.name=pre", "train.epochs=4"))
    hist = json.loads((pre.run_dir / "metrics.json").read_text())["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert "valid/r_ndcg@10%" in hist[0]

    def target(mode: str, *over: str):
        return run_experiment(_cfg(tiny_dataset, features, tmp_path, f"run.name={mode}", "run.stage=finetune",
                                   f"run.mode={mode}", *over))

    untrained = target("untrained", "run.mode=zero-shot")
    zero = target("zero-shot", f"run.init_from={pre.run_dir}")
    fine = target("transductive", f"run.init_from={pre.run_dir}", "train.epochs=4")

    def mean(res, m="r_ndcg@10%"):
        return sum(v[m] for v in res.test.values()) / len(res.test)

    # the pre-trained model transfers: better than the same model untrained, on every target's average
    assert mean(zero) > mean(untrained)
    assert mean(fine) > mean(untrained)
    print({"untrained": mean(untrained), "zero-shot": mean(zero), "fine-tuned": mean(fine)})
