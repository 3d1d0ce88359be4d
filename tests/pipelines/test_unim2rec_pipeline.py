"""UniM2Rec through the real Ray Train loop on the tiny benchmark's mixed flows: contrastive pre-training
on the sources, then fine-tuning on the targets (transductive, inductive, zero-shot) from it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from raypipe.config import load_config
from raypipe.data.prepare import prepare
from raypipe.train.run import mixed_training_flows, run_experiment


def test_mixed_training_flows_hold_only_the_stages_events(tiny_dataset: Path) -> None:
    prep = prepare(tiny_dataset, flow="mixed")
    sources = [d for d in prep.domains if prep.info.role_of(d) == "source"]
    targets = [d for d in prep.domains if prep.info.role_of(d) == "target"]
    pre = mixed_training_flows(prep, sources)
    assert set(np.concatenate(list(pre["domains"]))) == set(sources)  # no target event in pre-training
    fine = mixed_training_flows(prep, targets[:1])
    assert set(np.concatenate(list(fine["domains"]))) == set(sources) | {targets[0]}
    for flows in (pre, fine):  # every per-event column filtered alike
        assert all(len(a) == len(b) == len(c) for a, b, c in zip(flows["items"], flows["domains"], flows["timestamps"]))


@pytest.fixture(scope="module")
def features(ray_local, tiny_dataset: Path, tmp_path_factory) -> Path:
    from raypipe.features.pipeline import FeatureConfig, extract_features

    out = tmp_path_factory.mktemp("u2r-features")
    # small random image encoder: this test is about the training path, not the image features
    extract_features(FeatureConfig(dataset=str(tiny_dataset), out=str(out), views=["text", "image"],
                                   image_model="resnet18", image_size=32))
    return out


def _cfg(tiny_dataset: Path, features: Path, tmp: Path, *over: str):
    return load_config(None, [
        "model.name=unim2rec", f"data.dataset={tiny_dataset}", f"data.features={features}",
        "data.feature_views=[text,image,cross]", "data.flow=mixed", "data.max_len=20", "model.hidden=16",
        "model.n_experts=4", "train.batch_size=64", "train.lr=3e-3", "train.patience=5",
        f"run.storage_path={tmp}", *over])


@pytest.mark.slow
def test_pretrain_then_finetune_in_every_mode(ray_local, tiny_dataset: Path, features: Path, tmp_path: Path) -> None:
    pre = run_experiment(_cfg(tiny_dataset, features, tmp_path, "run.name=pre", "run.stage=pretrain", "train.epochs=3"))
    saved = yaml.safe_load((pre.run_dir / "config.yaml").read_text())["model"]
    assert (saved["objective"], saved["flow"]) == ("contrastive", "both")  # "auto" resolved and recorded
    hist = json.loads((pre.run_dir / "metrics.json").read_text())["history"]
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]

    def finetune(mode: str, *over: str):
        return run_experiment(_cfg(tiny_dataset, features, tmp_path, f"run.name={mode}", "run.stage=finetune",
                                   f"run.mode={mode}", f"run.init_from={pre.run_dir}", "train.epochs=3", *over))

    zero = finetune("zero-shot")
    trans = finetune("transductive")
    ind = finetune("inductive")
    scratch = run_experiment(_cfg(tiny_dataset, features, tmp_path, "run.name=untrained", "run.stage=finetune",
                                  "run.mode=zero-shot"))  # no init_from: the untrained model
    targets = sorted(zero.test)
    assert targets == sorted(trans.test) and targets
    mean = lambda r: float(np.mean([r.test[d]["ndcg@10"] for d in targets]))  # noqa: E731
    # pre-trained contents transfer: zero-shot and both fine-tunings beat the untrained model (tiny's target
    # domains have only ~17 test users each: fine-tuned vs zero-shot is not decided at this size)
    assert min(mean(zero), mean(trans), mean(ind)) > mean(scratch)
    ids = torch.load(ind.run_dir / "model.pt")["items.id.weight"]
    assert torch.count_nonzero(ids) == 0  # inductive: contents only, the ID table stays zero
    assert torch.count_nonzero(torch.load(trans.run_dir / "model.pt")["items.id.weight"]) > 0
    # the cross view's heads are fitted once, by pre-training; every fine-tuned run keeps that copy
    heads = [torch.load(r.run_dir / "cross_aligner.pt")["state"] for r in (pre, zero, trans, ind)]
    assert all(torch.equal(h["head_t.weight"], heads[0]["head_t.weight"]) for h in heads)
    print({"scratch": mean(scratch), "zero-shot": mean(zero), "transductive": mean(trans), "inductive": mean(ind)})


@pytest.mark.slow
def test_contrastive_pretraining_with_two_ddp_workers(ray_local, tiny_dataset: Path, features: Path, tmp_path: Path) -> None:
    """Two Ray Train workers: the in-batch negatives are gathered across them (all_gather with gradients)
    and DDP tolerates a head without a valid position in a step."""
    res = run_experiment(_cfg(tiny_dataset, features, tmp_path, "run.name=ddp", "run.stage=pretrain",
                              "train.epochs=2", "train.num_workers=2", "train.cpus_per_worker=0.5",
                              "train.torch_threads=1"))
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert len(m["workers"]) == 2 and len(m["history"]) == 2
    assert all(np.isfinite(h["train_loss"]) for h in m["history"])
