"""The model registry and contract: specs, ``python -m raypipe.models``, recipes, layers (SASRec causality)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from raypipe.config import ModelConfig, load_config
from raypipe.data.catalogue import FeatureView, ItemCatalogue
from raypipe.data.sequences import ItemIndex
from raypipe.models.gru4rec import GRU4RecConfig
from raypipe.models.registry import SPECS, build_model, get_spec
from raypipe.models.spec import ModelSpec, OptimRecipe


def _catalogue(n_per_domain: int = 5, dim: int = 0) -> ItemCatalogue:
    ids = [f"a/{i}" for i in range(n_per_domain)] + [f"b/{i}" for i in range(n_per_domain)]
    index = ItemIndex.build(pd.Series(ids), pd.Series([i.split("/")[0] for i in ids]))
    views = {}
    if dim:
        vec = np.random.default_rng(0).normal(size=(len(ids) + 1, dim)).astype(np.float32)
        vec[0] = 0
        views["text"] = FeatureView(vec, np.r_[False, np.ones(len(ids), bool)])
    return ItemCatalogue(index, np.arange(len(ids) + 1), views)


def test_registry_holds_every_model_with_a_consistent_spec() -> None:
    assert {"sasrec", "gru4rec", "bert4rec", "pop", "random", "content_last_item"} <= set(SPECS)
    for name, spec in SPECS.items():
        assert spec.name == name and spec.config().name == name
        assert issubclass(spec.config, ModelConfig)
    assert SPECS["sasrec"].trainable and not SPECS["pop"].trainable
    assert SPECS["sasrec"].capabilities == {"retrieval", "scorer"}


def test_python_m_raypipe_models_lists_models_capabilities_and_fields() -> None:
    out = subprocess.run([sys.executable, "-m", "raypipe.models"], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    for name, spec in SPECS.items():
        assert f"{name}: {spec.summary}" in out
        for field, _, _ in spec.config_fields():
            assert f"{field}:" in out
    assert "capabilities: retrieval, scorer; trainable: yes" in out
    assert "batch:        seq:int64[51]" in out


def test_spec_rejects_an_inconsistent_definition() -> None:
    cfg = SPECS["sasrec"].config
    with pytest.raises(ValueError, match="unknown capabilities"):
        ModelSpec(name="sasrec", config=cfg, build=lambda c, k: None, capabilities=frozenset({"ranking"}))
    with pytest.raises(ValueError, match="default name"):
        ModelSpec(name="other", config=cfg, build=lambda c, k: None)
    with pytest.raises(ValueError, match="both schema and rows"):
        ModelSpec(name="sasrec", config=cfg, build=lambda c, k: None, schema=SPECS["sasrec"].schema)


def test_recipe_warmup_and_decays_by_hand() -> None:
    r = OptimRecipe(schedule="linear", warmup_steps=4)
    assert [r.lr_factor(s, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert r.lr_factor(8, 12) == pytest.approx(0.5) and r.lr_factor(12, 12) == 0.0
    c = OptimRecipe(schedule="cosine")
    assert c.lr_factor(0, 10) == 1.0 and c.lr_factor(5, 10) == pytest.approx(0.5) and c.lr_factor(10, 10) == pytest.approx(0.0)
    assert OptimRecipe().lr_factor(7, 10) == 1.0
    with pytest.raises(ValueError):
        OptimRecipe(grad_accum=0)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "bert4rec"])
def test_sequence_models_build_score_and_train_on_their_schema(name: str) -> None:
    cfg = load_config(None, [f"model.name={name}", "model.hidden=16", "data.max_len=6"]).model
    cat = _catalogue()
    torch.manual_seed(0)
    model = build_model(cfg, cat)
    spec = get_spec(name)
    train = pd.DataFrame({"items": [np.array([1, 2, 3]), np.array([6, 7]), np.array([4])], "domain": ["a", "b", "a"]})
    rows = spec.rows(cfg, train, cat)
    assert spec.schema(cfg).check(rows) == 2  # the 1-item sequence has nothing to predict
    assert rows["seq"].tolist()[0] == [0, 0, 0, 0, 1, 2, 3]
    loss = model({"seq": torch.as_tensor(rows["seq"])})
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    hist = torch.tensor([[0, 1, 2], [0, 0, 6]])
    s = model.score(hist, torch.arange(1, 11))
    assert s.shape == (2, 10)
    assert torch.allclose(s, model.user_repr(hist) @ model.item_repr(torch.arange(1, 11)).T, atol=1e-5)


def test_sasrec_is_causal() -> None:
    """Changing a later item changes no earlier position's output."""
    cfg = load_config(None, ["model.hidden=16", "data.max_len=8", "model.dropout=0.0"]).model
    torch.manual_seed(0)
    model = build_model(cfg, _catalogue()).eval()
    a = torch.tensor([[0, 0, 1, 2, 3, 4, 5, 6]])
    b = a.clone()
    b[0, 5] = 9
    with torch.no_grad():
        oa, ob = model.sequence_output(a), model.sequence_output(b)
    assert torch.allclose(oa[0, :5], ob[0, :5], atol=1e-6)
    assert not torch.allclose(oa[0, 5:], ob[0, 5:])


def test_content_input_reads_the_named_view() -> None:
    cfg = load_config(None, ["model.item_input=content", "model.hidden=8", "data.max_len=4"]).model
    model = build_model(cfg, _catalogue(dim=6))
    assert model.items.content.shape == (11, 6)
    with pytest.raises(ValueError, match="no feature view 'image'"):
        build_model(dataclasses.replace(cfg, content_view="image"), _catalogue(dim=6))
    with pytest.raises(TypeError, match="needs a SASRecConfig"):
        build_model(GRU4RecConfig(name="sasrec", max_len=4), _catalogue())


def test_item_embedding_padding_content_and_identity_projection() -> None:
    from raypipe.models.layers import ItemEmbedding, attention_mask

    feats = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    feats[0] = 0
    torch.manual_seed(0)
    ids = ItemEmbedding(4, 3, "id")
    both = ItemEmbedding(4, 3, "id+content", projection="identity", features=feats)
    idx = torch.tensor([[0, 1, 3]])
    assert torch.equal(ids(idx)[0, 0], torch.zeros(3))  # padding is all zeros
    # identity projection: the content vector is added to the ID row as it is
    assert torch.allclose(both(idx)[0, 2], both.id.weight[3] + torch.as_tensor(feats[3]))
    assert both.all_items().shape == (4, 3)
    with pytest.raises(ValueError, match="identity content projection needs 5-d"):
        ItemEmbedding(4, 5, "content", projection="identity", features=feats)
    with pytest.raises(ValueError, match="no item features"):
        ItemEmbedding(4, 3, "content")
    m = attention_mask(torch.tensor([[False, True, True]]), causal=True)[0, 0]
    assert m.tolist() == [[True, False, False], [False, True, False], [False, True, True]]
