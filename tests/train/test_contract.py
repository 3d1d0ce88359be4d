"""The one Ray Train loop takes any batch schema: a token-sequence encoder-decoder and a model over three
float views (small modules defined here, not registry entries) train through the same TorchTrainer
loop as the recommenders, with checkpoints, resume after a failure, early stopping and the recipe's
optimiser / schedule / clipping / accumulation."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.config import load_config
from raypipe.models.spec import BatchSchema, Column, OptimRecipe
from raypipe.train.loop import TrainPayload
from raypipe.train.run import best_weights, fit

VOCAB, LEN, PAD, BOS = 12, 6, 0, 1

TOKEN_SCHEMA = BatchSchema((Column("src_ids", "int64", (LEN,)), Column("src_mask", "int64", (LEN,)),
                            Column("tgt_ids", "int64", (LEN,))))
VIEWS_SCHEMA = BatchSchema((Column("text", "float32", (8,)), Column("image", "float32", (4,)),
                            Column("cross", "float32", (6,)), Column("label", "int64")))


@pytest.fixture(autouse=True, scope="module")
def _ship_this_module():
    """Workers unpickle the factories and validators below by value (this module is not installed)."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# -- a token-sequence encoder-decoder: reverse the source tokens --------------------------------------
class TinySeq2Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 32, padding_idx=PAD)
        self.enc = nn.GRU(32, 32, batch_first=True)
        self.dec = nn.GRU(32, 32, batch_first=True)
        self.out = nn.Linear(32, VOCAB)

    def logits(self, src: torch.Tensor, mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        _, h = self.enc(self.emb(src) * mask[..., None])
        dec_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)  # teacher forcing
        y, _ = self.dec(self.emb(dec_in), h)
        return self.out(y)

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits(batch["src_ids"], batch["src_mask"], batch["tgt_ids"])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        lg = self.predict(batch)
        return F.cross_entropy(lg.reshape(-1, VOCAB), batch["tgt_ids"].reshape(-1))


def token_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    src = np.random.default_rng(seed).integers(2, VOCAB, size=(n, LEN)).astype(np.int64)
    return {"src_ids": src, "src_mask": np.ones_like(src), "tgt_ids": src[:, ::-1].copy()}


@dataclass
class Accuracy:
    """``valid/<metric>``: the share of ``target`` entries that ``model.predict(batch)`` gets right."""

    rows: dict[str, np.ndarray]
    target: str
    metric: str

    def __call__(self, model: nn.Module, rank: int, world: int, device: torch.device) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            t = {k: torch.as_tensor(v, device=device) for k, v in self.rows.items()}
            acc = float((model.predict(t).argmax(-1) == t[self.target]).float().mean())
        model.train()
        return {f"valid/{self.metric}": acc}


# -- a model over three float views (text, image, cross-modal) ----------------------------------------
class ThreeViews(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({"text": nn.Linear(8, 16), "image": nn.Linear(4, 16), "cross": nn.Linear(6, 16)})
        self.head = nn.Linear(48, 4)

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([self.proj[v](batch[v]) for v in ("text", "image", "cross")], -1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.predict(batch), batch["label"])


def view_rows(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(18, 4))  # the same labelling rule for every split
    x = rng.normal(size=(n, 18)).astype(np.float32)
    return {"text": x[:, :8].copy(), "image": x[:, 8:12].copy(), "cross": x[:, 12:].copy(),
            "label": (x @ w).argmax(1).astype(np.int64)}


def _cfg(tmp_path: Path, metric: str, *overrides: str):
    return load_config(None, [f"run.storage_path={tmp_path}", f"train.metric={metric}", "train.batch_size=32",
                              "train.patience=10", *overrides])


def test_token_encoder_decoder_trains_checkpoints_and_resumes(ray_local, tmp_path: Path) -> None:
    train, valid = token_rows(1024, 0), token_rows(256, 1)
    TOKEN_SCHEMA.check(train)
    payload = TrainPayload(TinySeq2Seq, Accuracy(valid, "tgt_ids", "token_acc"), TOKEN_SCHEMA, n_rows=1024)
    over = ["train.epochs=3", "train.lr=1e-2"]
    plain = fit(_cfg(tmp_path, "token_acc", *over, "run.name=s2s"), tmp_path / "s2s", train, payload)
    failed = fit(_cfg(tmp_path, "token_acc", *over, "run.name=s2s-failed", "train.inject_failure_at_epoch=2",
                      "train.max_failures=1"), tmp_path / "s2s-failed", train, payload)
    assert (tmp_path / "s2s-failed" / ".injected_failure").exists()  # it failed once and resumed
    _, h_plain = best_weights(plain)
    _, h_failed = best_weights(failed)
    assert [h["epoch"] for h in h_failed] == [0, 1, 2]
    for a, b in zip(h_plain, h_failed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["valid/token_acc"] == pytest.approx(b["valid/token_acc"], rel=1e-5)
    losses = [h["train_loss"] for h in h_plain]
    assert losses[-1] < losses[0]
    assert h_plain[-1]["valid/token_acc"] > 2 / (VOCAB - 2)  # chance is 1/10 per token


def test_three_float_views_follow_the_recipe(ray_local, tmp_path: Path) -> None:
    train, valid = view_rows(1024, 0), view_rows(512, 1)
    recipe = OptimRecipe(optimizer="adamw", schedule="cosine", warmup_steps=2, grad_clip=1.0, grad_accum=2)
    payload = TrainPayload(ThreeViews, Accuracy(valid, "label", "acc"), VIEWS_SCHEMA, recipe=recipe, n_rows=1024)
    res = fit(_cfg(tmp_path, "acc", "train.epochs=3", "train.lr=2e-2", "train.batch_size=128", "run.name=views"),
              tmp_path / "views", train, payload)
    _, hist = best_weights(res)
    # 1024 rows / 128 per batch = 8 batches = 4 optimiser steps per epoch; 12 steps in all, 2 of warm-up
    steps = [4, 8, 12]
    expected = [2e-2 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 10)) for s in steps]
    assert [h["lr"] for h in hist] == pytest.approx(expected, abs=1e-9)
    assert hist[-1]["valid/acc"] > 0.6  # chance is about 0.25


def test_early_stopping_on_a_custom_metric(ray_local, tmp_path: Path) -> None:
    train, valid = view_rows(256, 0), view_rows(128, 1)
    payload = TrainPayload(ThreeViews, Accuracy(valid, "label", "acc"), VIEWS_SCHEMA, n_rows=256)
    # lr=1e-30 (lr must be > 0): updates below float32 resolution, so the validation accuracy never
    # improves after epoch 0 and patience 2 stops after epoch 2
    res = fit(_cfg(tmp_path, "acc", "train.epochs=20", "train.lr=1e-30", "train.patience=2", "run.name=stop"),
              tmp_path / "stop", train, payload)
    _, hist = best_weights(res)
    assert [h["epoch"] for h in hist] == [0, 1, 2]


def test_schema_rejects_rows_that_do_not_fit() -> None:
    rows = view_rows(8, 0)
    with pytest.raises(ValueError, match="'label' has dtype float32"):
        VIEWS_SCHEMA.check({**rows, "label": rows["label"].astype(np.float32)})
    with pytest.raises(ValueError, match="'image' has row shape \\(5,\\)"):
        VIEWS_SCHEMA.check({**rows, "image": np.zeros((8, 5), np.float32)})
    with pytest.raises(ValueError, match=r"missing columns \['cross'\]"):
        VIEWS_SCHEMA.check({k: v for k, v in rows.items() if k != "cross"})
    with pytest.raises(ValueError, match="'cross' has 7 rows"):
        VIEWS_SCHEMA.check({**rows, "cross": rows["cross"][:7]})
    assert VIEWS_SCHEMA.check(rows) == 8
