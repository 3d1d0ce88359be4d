"""A pre-trained content model starting a run over another catalogue (another dataset): what carries over."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from raypipe.data.catalogue import FeatureView, ItemCatalogue
from raypipe.data.sequences import ItemIndex
from raypipe.models.prerec import PreRecConfig
from raypipe.models.registry import build_model
from raypipe.models.sasrec import SASRecConfig
from raypipe.models.unim2rec import UniSRecConfig
from raypipe.train.finetune import cross_catalogue_state


def _catalogue(prefix: str, domains: dict[str, int], seed: int, dim: int = 12) -> ItemCatalogue:
    ids = [f"{d}/{prefix}{i}" for d, n in domains.items() for i in range(n)]
    index = ItemIndex.build(pd.Series(ids), pd.Series([i.split("/")[0] for i in ids]))
    vec = np.random.default_rng(seed).normal(size=(len(ids) + 1, dim)).astype(np.float32)
    vec[0] = 0
    return ItemCatalogue(index, views={"text": FeatureView(vec, np.r_[False, np.ones(len(ids), bool)])})


SOURCE = {"ml-1m": 30}  # one big source catalogue ...
TARGET = {"ml-100k": 11, "other": 4}  # ... and a smaller target with other items and domains


def _unisrec() -> UniSRecConfig:
    return UniSRecConfig(hidden=8, n_layers=1, n_heads=2, dropout=0.0, adaptor_dropout=0.0, max_len=5, n_experts=3)


def test_a_unisrec_keeps_its_adaptor_and_encoder_and_gets_fresh_item_ids() -> None:
    torch.manual_seed(0)
    pre = build_model(_unisrec(), _catalogue("m", SOURCE, seed=0))
    torch.manual_seed(1)
    new = build_model(_unisrec(), _catalogue("k", TARGET, seed=1))
    fresh_ids = new.state_dict()["items.id.weight"].clone()
    state, dropped = cross_catalogue_state(new, pre.state_dict(), "runs/pre")
    assert dropped == ["items.id.weight"]
    assert pre.state_dict()["items.id.weight"].shape[0] == 31 and fresh_ids.shape[0] == 16
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert missing == ["items.id.weight"] and unexpected == []
    after = new.state_dict()
    for key, value in pre.state_dict().items():
        if key != "items.id.weight":
            assert torch.equal(after[key], value), key  # projector experts, gate, positions, Transformer
    assert torch.equal(after["items.id.weight"], fresh_ids)
    # the transferred model embeds the new catalogue's items by their own text through the pre-trained MoE
    items = torch.arange(1, 16)
    assert new.item_repr(items).shape == (15, 8)


def test_prerec_leaves_its_domains_and_residuals_behind() -> None:
    cfg = PreRecConfig(hidden=8, n_layers=1, n_heads=2, dropout=0.0, max_len=4, n_neg=5, pop_window=1,
                       pop_hidden=4, pop_orders=[1, 2], popularity=False)
    pre = build_model(cfg, _catalogue("m", {"books": 6, "films": 5}, seed=0))
    new = build_model(cfg, _catalogue("k", TARGET, seed=1))
    state, dropped = cross_catalogue_state(new, pre.state_dict(), "runs/pre")
    assert {"residual.weight", "domain.weight", "domain_trained"} <= set(dropped)
    assert "f_e.weight" in state and not any(k.startswith(("residual.", "domain")) for k in state)
    new.load_state_dict(state, strict=False)
    assert torch.equal(new.f_e.weight, pre.f_e.weight)
    assert not bool(new.domain_trained.any())  # the new domains start untrained: do(D = 0)


def test_an_id_model_or_another_width_is_refused_by_name() -> None:
    sas = SASRecConfig(hidden=8, n_layers=1, n_heads=2, max_len=5)
    pre = build_model(sas, _catalogue("m", SOURCE, seed=0))
    new = build_model(sas, _catalogue("k", TARGET, seed=1))
    with pytest.raises(ValueError, match="runs/pre: .*SASRec has no content path"):
        cross_catalogue_state(new, pre.state_dict(), "runs/pre")
    pre = build_model(_unisrec(), _catalogue("m", SOURCE, seed=0))
    wider = build_model(UniSRecConfig(hidden=16, n_layers=1, n_heads=2, max_len=5, n_experts=3),
                        _catalogue("k", TARGET, seed=1))
    with pytest.raises(ValueError, match=r"runs/pre: pre-trained entry 'items\.proj\.text\.weight' has shape"):
        cross_catalogue_state(wider, pre.state_dict(), "runs/pre")
