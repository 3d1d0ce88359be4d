"""UniM2Rec / UniSRec without Ray: projectors (eq. 1-9), missing views, single-domain contexts hidden in
mixed flows, exact retrieval vectors, the contrastive and fused objectives, rows and their domains."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from raypipe.config import ConfigError, load_config
from raypipe.data.catalogue import FeatureView, ItemCatalogue
from raypipe.data.sequences import ItemIndex
from raypipe.models.registry import build_model
from raypipe.models.unim2rec import (
    UniM2RecConfig, UniSRecConfig, WhiteningMoE, compact, info_nce, resolve, rows, to_domain,
)

N_PER = 12  # items per domain; domains "a" (1..12) and "b" (13..24)


def _catalogue(dims: dict[str, int] | None = None, missing: dict[str, list[int]] | None = None) -> ItemCatalogue:
    ids = [f"a/{i:02d}" for i in range(N_PER)] + [f"b/{i:02d}" for i in range(N_PER)]
    index = ItemIndex.build(pd.Series(ids), pd.Series([i.split("/")[0] for i in ids]))
    rng = np.random.default_rng(0)
    views = {}
    for name, dim in (dims or {"text": 16, "image": 8}).items():
        vec = rng.normal(size=(len(ids) + 1, dim)).astype(np.float32)
        present = np.r_[False, np.ones(len(ids), bool)]
        present[(missing or {}).get(name, [])] = False
        vec[~present] = 0
        views[name] = FeatureView(vec, present)
    return ItemCatalogue(index, np.ones(len(ids) + 1, np.int64), views)


def _cfg(**kw) -> UniM2RecConfig:
    base = dict(views=["text", "image"], hidden=8, n_layers=1, n_heads=2, dropout=0.0, adaptor_dropout=0.0,
                max_len=6, n_experts=3, flow="single")
    return UniM2RecConfig(**{**base, **kw})


def test_whitening_moe_is_the_gated_sum_of_whitened_experts() -> None:
    torch.manual_seed(0)
    moe = WhiteningMoE(4, 3, n_experts=2, dropout=0.0).eval()
    e = torch.randn(5, 4)
    g = torch.softmax(e @ moe.gate.weight.T + moe.gate.bias, -1)
    expected = sum(g[:, k:k + 1] * ((e - moe.bias[k]) @ moe.weight[k]) for k in range(2))
    assert torch.allclose(moe(e), expected, atol=1e-6)
    lin = WhiteningMoE(4, 3, n_experts=2, dropout=0.0, linear=True)
    assert lin.linear is not None and torch.allclose(lin(e), lin.linear(e))
    noisy = WhiteningMoE(4, 3, n_experts=2, dropout=0.0, noisy=True)
    assert not torch.allclose(noisy.train().gates(e), noisy.gates(e))  # noise while training only
    assert torch.allclose(noisy.eval().gates(e), torch.softmax(noisy.gate(e), -1))


def test_compact_and_to_domain_keep_order_and_left_pad() -> None:
    h = torch.tensor([[0, 3, 14, 5, 15, 6]])
    assert compact(h, torch.tensor([[True, False, True, True, False, True]])).tolist() == [[0, 0, 0, 14, 5, 6]]
    dom = torch.as_tensor(_catalogue().item_domain)
    assert to_domain(h, dom, torch.tensor([1])).tolist() == [[0, 0, 0, 0, 14, 15]]
    assert to_domain(h, dom, torch.tensor([0])).tolist() == [[0, 0, 0, 3, 5, 6]]


def test_a_missing_view_is_a_zero_slot() -> None:
    model = build_model(_cfg(), _catalogue(missing={"image": [2]})).eval()
    c = model.items.content(torch.tensor([1, 2]))
    assert c.shape == (2, 16)
    assert torch.count_nonzero(c[1, 8:]) == 0 and torch.count_nonzero(c[1, :8]) > 0  # text kept
    assert torch.count_nonzero(c[0, 8:]) > 0


def test_scores_are_user_times_item_vectors_of_the_candidates_domain() -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(flow="both"), _catalogue()).eval()
    with torch.no_grad():
        model.items.id.weight.normal_()  # non-zero IDs, so the single-domain head differs from the mixed one
    hist = torch.tensor([[0, 1, 13, 2, 14, 3], [0, 0, 15, 16, 4, 17]])
    cand_b = torch.arange(13, 25)
    s = model.score(hist, cand_b)
    dom_b = torch.tensor([1, 1])
    assert torch.allclose(s, model.user_repr(hist, dom_b) @ model.item_repr(cand_b).T, atol=1e-5)
    # per-row candidates of another domain read that domain's sub-sequence
    cand_a = torch.tensor([[1, 5, 7], [2, 3, 9]])
    s2 = model.score(hist, cand_a)
    u = model.user_repr(hist, torch.tensor([0, 0]))
    assert torch.allclose(s2, torch.einsum("bd,bcd->bc", u, model.item_repr(cand_a)), atol=1e-5)
    assert not torch.allclose(model.user_repr(hist, dom_b), u)
    # fused logits: the mean of the two heads' cosine / temperature
    ctx_m = model._encode(model.mixed, hist, False)[:, -1]
    ctx_s = model._single_ctx(hist, dom_b, True)
    e = model.items.content(cand_b)
    cos = lambda a, b: torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T  # noqa: E731
    expected = (cos(ctx_m, e) + cos(ctx_s, e + model.items.id(cand_b))) / (2 * model.cfg.temperature)
    assert torch.allclose(s, expected, atol=1e-4)


def test_content_item_repr_of_raw_views_is_the_inductive_item_vector() -> None:
    """A never-seen item's retrieval vector from its raw views equals a catalogue item's with the same
    contents and a zero ID offset; a missing view is a zero slot there too."""
    torch.manual_seed(0)
    cat = _catalogue(missing={"image": [5]})
    model = build_model(_cfg(flow="both"), cat).eval()
    items = torch.tensor([3, 5, 14])
    feats = {v: torch.as_tensor(cat.view(v).vectors[items.numpy()]) for v in ("text", "image")}
    present = {v: torch.as_tensor(cat.view(v).present[items.numpy()]) for v in ("text", "image")}
    with torch.no_grad():
        new = model.content_item_repr(feats, present)
        assert new.shape == (3, 32) and torch.allclose(new, model.item_repr(items), atol=1e-6)  # IDs still 0
        model.items.id.weight.normal_()  # trained IDs move only the single-domain head of known items
        known = model.item_repr(items)
        assert torch.allclose(known[:, :16], new[:, :16], atol=1e-6) and not torch.allclose(known[:, 16:], new[:, 16:])
        assert torch.allclose(model.content_item_repr(feats, present), new, atol=1e-6)
    with pytest.raises(ValueError, match="missing"):
        model.content_item_repr({"text": feats["text"]}, {"text": present["text"]})


def test_items_added_after_training_are_read_in_histories_by_their_contents() -> None:
    torch.manual_seed(0)
    cat = _catalogue()
    model = build_model(_cfg(flow="both"), cat).eval()
    twins = torch.tensor([4, 15])  # one item of each domain, added again under new indices
    feats = {v: torch.as_tensor(cat.view(v).vectors[twins.numpy()]) for v in ("text", "image")}
    present = {v: torch.as_tensor(cat.view(v).present[twins.numpy()]) for v in ("text", "image")}
    assert model.content_dims() == {"text": 16, "image": 8}
    with torch.no_grad():
        new = model.extend_items(feats, present, torch.tensor([0, 1]))
        assert new.tolist() == [25, 26] and model.items.id.num_embeddings == 27
        assert torch.allclose(model.item_repr(new), model.content_item_repr(feats, present), atol=1e-6)
        hist = torch.tensor([[1, 13, 2, 4], [1, 13, 2, 25]])  # the same history, the twin's copy last
        u = model.user_repr(hist)
        assert torch.allclose(u[0], u[1], atol=1e-5)  # untrained IDs are zero: the copy reads as its twin
        model.items.id.weight[1:25].normal_()  # trained items have ID offsets, the added ones none
        u = model.user_repr(hist)
        assert not torch.allclose(u[0], u[1], atol=1e-3) and torch.count_nonzero(model.items.id.weight[25:]) == 0


def test_single_domain_contexts_at_every_position() -> None:
    """Position j's single-domain context is the causal encoding of the row's items of the target's domain
    at j's last such item (one pass per row and domain); later items do not change it, and the last
    position's context is exactly what scoring computes."""
    torch.manual_seed(1)
    model = build_model(_cfg(flow="both"), _catalogue()).eval()
    seq = torch.tensor([[0, 1, 13, 2, 14, 3, 15], [0, 0, 16, 17, 4, 18, 5]])
    inp, tgt = seq[:, :-1], seq[:, 1:]
    dom = model.item_domain[tgt]
    ok = (tgt > 0) & (inp > 0)
    ctx, has = model._single_positions(inp, dom, ok, with_id=False)
    for b in range(2):
        for j in range(inp.shape[1]):
            d = int(dom[b, j])
            kept = [int(x) for x in inp[b] if x > 0 and int(model.item_domain[x]) == d]
            n_before = sum(1 for x in inp[b, : j + 1] if x > 0 and int(model.item_domain[x]) == d)
            assert bool(has[b, j]) == (bool(ok[b, j]) and n_before > 0)
            if not has[b, j]:
                continue
            padded = torch.tensor([[0] * (6 - len(kept)) + kept])
            out = model._encode(model.single, padded, False)[0]
            assert torch.allclose(ctx[b, j], out[6 - len(kept) + n_before - 1], atol=1e-5), (b, j)
            # causality: other later items of the same domain leave position j's context unchanged
            later = inp.clone()
            for t in range(j + 1, 6):
                if later[b, t] > 0 and int(model.item_domain[later[b, t]]) == d:
                    later[b, t] = later[b, t] % N_PER + 1 + d * N_PER if d else later[b, t] % N_PER + 1
            ctx2, _ = model._single_positions(later, dom, ok, with_id=False)
            assert torch.allclose(ctx[b, j], ctx2[b, j], atol=1e-5)
    last = model._single_ctx(inp, dom[:, -1], False)
    assert torch.allclose(ctx[1, -1], last[1], atol=1e-5)  # row 1: its last target is a domain-a item


def test_info_nce_by_hand() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 2])
    tau = 0.5
    # row 0: logits [2, 2, 0]; row 1: [0, 0, 2]
    expected = ((math.log(2 * math.e ** 2 + 1) - 2) + (math.log(2 + math.e ** 2) - 2)) / 2
    assert info_nce(q, k, labels, tau) == pytest.approx(expected, rel=1e-5)
    mask = torch.tensor([[False, True, False], [False, False, False]])  # key 1 is row 0's own target again
    expected_masked = ((math.log(math.e ** 2 + 1) - 2) + (math.log(2 + math.e ** 2) - 2)) / 2
    assert info_nce(q, k, labels, tau, mask) == pytest.approx(expected_masked, rel=1e-5)


def _cycle_rows(model_cfg: UniM2RecConfig, cat: ItemCatalogue, n_users: int = 64) -> dict[str, np.ndarray]:
    """Every user walks domain a's items in a cycle (next = +1): learnable only from the item contents
    (contrastive, IDs unused) or from IDs."""
    rng = np.random.default_rng(0)
    seqs = [(np.arange(s, s + 7) % N_PER) + 1 for s in rng.integers(0, N_PER, n_users)]
    train = pd.DataFrame({"user_id": np.arange(n_users), "domain": "a", "items": seqs})
    train.attrs["train_domains"] = ["a"]
    return rows(model_cfg, train, cat)


def _hit_at_1(model, cand=torch.arange(1, N_PER + 1)) -> float:
    hist = torch.tensor([[0, 0, 0, 0, s, (s % N_PER) + 1] for s in range(1, N_PER + 1)])
    want = (torch.arange(1, N_PER + 1) + 1) % N_PER + 1
    with torch.no_grad():
        return float((cand[model.eval().score(hist, cand).argmax(1)] == want).float().mean())


@pytest.mark.parametrize("objective", ["contrastive", "fused_ce"])
def test_training_learns_the_next_item(objective: str) -> None:
    torch.manual_seed(0)
    cat = _catalogue()
    cfg = _cfg(flow="single", objective=objective)
    model = build_model(cfg, cat)
    batch = {k: torch.as_tensor(v) for k, v in _cycle_rows(cfg, cat).items()}
    before = _hit_at_1(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(150):
        model.train()
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    assert before < 0.4 and _hit_at_1(model) >= 0.9


def test_css_term_is_weighted_by_lambda() -> None:
    torch.manual_seed(0)
    cat = _catalogue()
    base = _cfg(flow="single", objective="contrastive", css_weight=0.0)
    batch = {k: torch.as_tensor(v) for k, v in _cycle_rows(base, cat).items()}
    model = build_model(base, cat).eval()
    with_css = build_model(dataclasses.replace(base, css_weight=1.0), cat).eval()
    with_css.load_state_dict(model.state_dict())
    torch.manual_seed(5)
    csi = float(model.loss(batch))
    torch.manual_seed(5)
    total = float(with_css.loss(batch))
    torch.manual_seed(5)
    css = float(with_css._css(batch["seq"][:, :-1], with_css.item_domain[batch["seq"][:, 1:]].clamp_min(0),
                              batch["target_ok"] & (batch["seq"][:, 1:] > 0) & (batch["seq"][:, :-1] > 0)))
    assert css > 0 and total == pytest.approx(csi + css, rel=1e-4)


def test_rows_mark_only_training_domain_targets_and_need_mixed_flows() -> None:
    cat = _catalogue()
    flows = pd.DataFrame({"user_id": [0], "items": [np.array([1, 13, 2, 14])],
                          "domains": [np.array(["a", "b", "a", "b"], dtype=object)]})
    flows.attrs["train_domains"] = ["b"]
    r = rows(_cfg(flow="both"), flows, cat)
    assert r["seq"].tolist() == [[0, 0, 0, 1, 13, 2, 14]]
    assert r["target_ok"].tolist() == [[False, False, False, True, False, True]]
    with pytest.raises(ConfigError, match="data.flow=mixed"):
        rows(_cfg(flow="both"), flows.drop(columns="domains"), cat)


def test_configs_stage_and_validation() -> None:
    pre = load_config(None, ["model.name=unim2rec", "data.flow=mixed"])
    fine = load_config(None, ["model.name=unim2rec", "run.stage=finetune"])
    assert (resolve(pre.model, pre).objective, resolve(pre.model, pre).flow) == ("contrastive", "both")
    assert (resolve(fine.model, fine).objective, resolve(fine.model, fine).flow) == ("fused_ce", "single")
    fixed = load_config(None, ["model.name=unim2rec", "model.objective=fused_ce", "model.flow=mixed"])
    assert (resolve(fixed.model, fixed).objective, resolve(fixed.model, fixed).flow) == ("fused_ce", "mixed")
    uni = load_config(None, ["model.name=unisrec"]).model
    assert isinstance(uni, UniSRecConfig) and uni.views == ["text"] and uni.flow == "single" and uni.gate_noise
    cfg = load_config(None, ["model.name=unim2rec", "model.linear_views=[text,image]", "model.n_experts=4"]).model
    assert cfg.linear_views == ["text", "image"] and cfg.n_experts == 4
    with pytest.raises(ConfigError, match="linear_views"):
        build_model(_cfg(linear_views=["cross"]), _catalogue())
    with pytest.raises(ValueError, match="no feature view 'cross'"):
        build_model(_cfg(views=["text", "cross"]), _catalogue())


def test_fine_tune_modes_freeze_what_they_should_and_keep_what_the_model_froze() -> None:
    from raypipe.train.finetune import apply_trainable_filter

    model = build_model(_cfg(freeze_encoder=True), _catalogue())
    apply_trainable_filter(model, "all")  # transductive
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "items.id.weight" in trainable and any(n.startswith("items.proj.") for n in trainable)
    assert not any(n.startswith("single.") for n in trainable)  # the frozen encoder stays frozen
    apply_trainable_filter(model, "no_item_ids")  # inductive
    assert not model.items.id.weight.requires_grad
