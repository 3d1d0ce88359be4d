"""UniMP without Ray: the unified data format (chunks, random item tokens, instructions), the per-item
cross-attention mask (eq. 3) and the zero-initialised gates (eq. 4), token re-weighting (eq. 8), the
multi-task training rows, what is frozen, learning a toy next-item task, and that the packaged LM is
the real SmolLM2."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from raypipe.data.catalogue import FeatureView, ItemCatalogue
from raypipe.data.prepare import prepare
from raypipe.models.registry import build_model
from raypipe.models.unimp import TASK_ID, TASKS, UniMPConfig, reweighted, unimp_rows

TINY = dict(backbone="llama-random", heads=4, visual_tokens=2, resampler_depth=1, image_grid=2, hidden=32,
            layers=2, random_heads=2, kv_heads=1, intermediate=64)


@pytest.fixture(scope="module")
def prepared(tiny_dataset):
    return prepare(tiny_dataset, event_attrs=("ratings", "reviews"))


@pytest.fixture(scope="module")
def catalogue(prepared, tiny_dataset) -> ItemCatalogue:
    n = prepared.index.num_embeddings
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 4 * 8)).astype(np.float32)  # 2x2 regions of width 8
    present = np.ones(n, dtype=bool)
    present[0] = False
    present[5] = False  # item 5 has no image
    return ItemCatalogue(prepared.index, prepared.counts, views={"image_grid": FeatureView(vectors, present)},
                         dataset=tiny_dataset)


def _model(catalogue, **kw):
    torch.manual_seed(0)
    return build_model(UniMPConfig(**{**TINY, **kw}), catalogue)


def test_reweighting_is_eq8_by_hand() -> None:
    logp = torch.log(torch.tensor([0.5, 0.9]))
    assert torch.allclose(reweighted(logp, 2.0), torch.tensor([0.25 * math.log(0.5), 0.01 * math.log(0.9)]))
    assert torch.equal(reweighted(logp, 0.0), logp)


def test_item_tokens_are_new_distinct_and_randomly_assigned(catalogue) -> None:
    m = _model(catalogue)
    tok = m.item_token[1:].numpy()
    assert len(set(tok.tolist())) == catalogue.num_items and tok.min() >= m.base_vocab + 4
    assert not (np.diff(tok) > 0).all()  # not in item-index order (sequential ids leak answers)
    assert m.lm.get_input_embeddings().weight.shape[0] == m.base_vocab + 4 + catalogue.num_items
    other = _model(catalogue, seed=1).item_token[1:].numpy()
    assert not np.array_equal(tok, other)


def test_content_init_starts_each_item_token_at_its_own_attribute_text(catalogue) -> None:
    plain, content = _model(catalogue), _model(catalogue, item_init="content")
    assert torch.equal(plain.item_token, content.item_token)  # the same tokens, only their first rows differ
    emb, out = content.lm.get_input_embeddings().weight, content.lm.get_output_embeddings().weight
    for w in ([emb] if out is emb else [emb, out]):  # tied (as SmolLM2): one matrix; untied: each its own
        rows = w[content.item_token[1:]].detach()
        text = torch.stack([w[torch.as_tensor(ids)].mean(0) for ids in content.attr_ids[1:]]).detach()
        noise = (rows - text).norm(dim=1)
        sd = w[: content.base_vocab].std(0).detach()
        assert torch.allclose(noise.mean(), 0.1 * sd.norm(), rtol=0.2)  # only the stated noise is added
        # each row is nearer its own item's text than any other item's (up to items with the same text)
        dist = torch.cdist(rows, text)
        same_text = torch.tensor([[a == b for b in content.attr_ids[1:]] for a in content.attr_ids[1:]])
        own = dist.diagonal()
        assert ((dist >= own[:, None] - 1e-6) | same_text).all()
    # the plain rows do not carry the item's text: nearest text is its own for few items
    w = plain.lm.get_input_embeddings().weight
    rows = w[plain.item_token[1:]].detach()
    text = torch.stack([w[torch.as_tensor(ids)].mean(0) for ids in plain.attr_ids[1:]]).detach()
    assert (torch.cdist(rows, text).argmin(1) == torch.arange(len(rows))).float().mean() < 0.2

def test_row_layout_chunks_instruction_and_answer(catalogue) -> None:
    m = _model(catalogue)
    row = m.build_row([1, 5, 2], "preference", 3, [m.digits[3]])
    ids, media, labels = row.ids, row.media, row.labels
    assert ids[0] == m.special["[CLS]"]
    assert ids.count(m.special["[IMG]"]) == 3 and ids.count(m.special["[EOC]"]) == 4  # item 5: no image
    assert row.slots == [1, 2, 3]
    text = m.tok.decode([t for t in ids if t < m.base_vocab])
    assert "can you predict the preference level of the user to the product? Answer:4" in text
    assert text.count(" item:") == 4 and " Given" in text
    # chunk tokens see their own image slot; item 5's chunk and the instruction see none
    eoc = [i for i, t in enumerate(ids) if t == m.special["[EOC]"]]
    assert set(media[1: eoc[0] + 1]) == {0}
    assert set(media[eoc[0] + 1: eoc[1] + 1]) == {-1}
    assert set(media[eoc[1] + 1: eoc[2] + 1]) == {1}
    assert media[-1] == -1 and media[ids.index(m.special["[IMG]"], eoc[2])] == 2
    # labels: history attribute + item tokens (context), the answer digit and EOS (task)
    assert labels[-2:] == [2, 2] and ids[-1] == m.eos
    assert labels[ids.index(int(m.item_token[1]))] == 1 and labels[eoc[0]] == 0
    assert all(lab == 0 for lab in labels[eoc[2] + 1: -2])  # the queried item is not reconstructed
    no_ctx = _model(catalogue, context_loss=False).build_row([1, 5, 2], "rec", 0, [int(m.item_token[4])])
    assert set(no_ctx.labels) == {0, 2}


def test_mask_is_per_item_or_causal_over_images(catalogue) -> None:
    m = _model(catalogue)
    media = torch.tensor([[-1, 0, 0, 1, -1]])
    allow = m._allow(media, n_keys=4)[0]  # 2 slots x 2 visual tokens
    assert allow.tolist() == [[False] * 4, [True, True, False, False], [True, True, False, False],
                              [False, False, True, True], [False] * 4]
    loose = _model(catalogue, exclusive=False)
    row = loose.build_row([1, 2], "rec", 0, None)
    assert row.media[-1] == 1  # the instruction sees every image of the history
    allow = loose._allow(torch.tensor([[-1, 0, 1]]), n_keys=4)[0]
    assert allow.tolist() == [[False] * 4, [True, True, False, False], [True] * 4]


def test_gates_start_closed_and_vision_reaches_only_its_own_chunk(catalogue) -> None:
    m = _model(catalogue).eval()
    row = m.build_row([1, 2, 3], "rec", 0, None)
    with torch.no_grad():
        base, _ = m._hidden([row])
        m.regions[2] += 5.0  # change item 2's image
        same, _ = m._hidden([row])
        assert torch.allclose(base, same, atol=1e-6)  # tanh(0) gates: the frozen LM is unchanged
        for i in m.cross_layers:
            m.lm.model.layers[i].xattn.attn_gate.fill_(1.0)
        opened, _ = m._hidden([row])
        m.regions[2] -= 5.0
        restored, _ = m._hidden([row])
    eoc = [i for i, t in enumerate(row.ids) if t == m.special["[EOC]"]]
    diff = (opened - restored).abs().amax(-1)[0]
    assert diff[: eoc[0] + 1].max() < 1e-6  # chunk of item 1 (and [CLS]) never sees item 2's image
    assert diff[eoc[0] + 1: eoc[1] + 1].min() > 1e-4  # item 2's chunk tokens do
    assert diff[eoc[1] + 1:].max() > 1e-4  # later tokens through self-attention


def test_rows_one_per_task_with_data(prepared, catalogue) -> None:
    cfg = UniMPConfig(**TINY)
    rows = unimp_rows(cfg, prepared.train, catalogue)
    users = int((prepared.train["items"].map(len) >= 2).sum())
    counts = np.bincount(rows["task"], minlength=len(TASKS))
    assert counts[TASK_ID["rec"]] == counts[TASK_ID["search"]] == counts[TASK_ID["preference"]] == users
    with_review = sum(1 for r in prepared.train["reviews"] if len(r) >= 2 and r[-1])
    assert counts[TASK_ID["explanation"]] == with_review
    expl = rows["task"] == TASK_ID["explanation"]
    assert (rows["answer"][expl][:, 0] >= 0).all() and (rows["answer"][~expl] == -1).all()
    # the history holds the items before the target, left-padded
    seq = next(s for s in prepared.train["items"] if len(s) >= 7)
    k = next(i for i in range(len(rows["item"])) if rows["item"][i] == seq[-1] and
             list(rows["hist"][i]) == list(seq[-6:-1]))
    assert rows["task"][k] in TASK_ID.values()
    two = unimp_rows(UniMPConfig(**TINY, rows_per_user=2, tasks=["rec"], max_users=10), prepared.train, catalogue)
    assert len(two["task"]) <= 20 and (two["task"] == 0).all()
    nan_rating = prepared.train.copy()
    nan_rating["ratings"] = [np.full(len(s), np.nan, np.float32) for s in nan_rating["items"]]
    assert not (unimp_rows(cfg, nan_rating, catalogue)["task"] == TASK_ID["preference"]).any()


def test_trainable_parameters(catalogue) -> None:
    m = _model(catalogue)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any(n.startswith("resampler.") for n in trainable)
    assert any(".xattn." in n for n in trainable) and "lm.model.embed_tokens.weight" in trainable
    assert not any(".layer.self_attn." in n or ".mlp." in n for n in trainable)  # LM blocks frozen
    last = _model(catalogue, tune="last_layer")
    names = {n for n, p in last.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(f"lm.model.layers.{len(last.lm.model.layers) - 1}.") or
                         n.startswith("lm.model.norm.") for n in names)


def test_learns_a_toy_next_item_task_and_scores_every_candidate(prepared, catalogue) -> None:
    m = _model(catalogue, tasks=["rec"], gamma=0.0, context_loss=False, hidden=64, random_heads=4, kv_heads=2)
    rows = unimp_rows(m.cfg, prepared.train, catalogue)
    batch = {k: torch.as_tensor(v[:8]) for k, v in rows.items()}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    with torch.no_grad():
        first = float(m.loss(batch))
    for _ in range(120):
        opt.zero_grad()
        loss = m.loss(batch)
        loss.backward()
        opt.step()
    m.eval()
    assert float(loss) < 0.05 * first
    with torch.no_grad():
        hist = batch["hist"]
        scores = m.score(hist, torch.arange(1, catalogue.num_embeddings))
        assert scores.shape == (8, catalogue.num_items)
        top = scores.argmax(1) + 1
        assert (top == batch["item"]).float().mean() >= 0.75  # memorised
        sub = torch.stack([batch["item"], batch["item"] % catalogue.num_items + 1], 1)
        assert torch.allclose(m.score(hist, sub), scores.gather(1, sub - 1), atol=1e-5)
        ratings = m.predict_rating(hist, batch["item"])
    assert ratings.shape == (8,) and set(ratings.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    texts = m.explain(hist[:2], batch["item"][:2], max_new_tokens=4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_cached_generation_matches_a_full_pass(catalogue) -> None:
    m = _model(catalogue).eval()
    for i in m.cross_layers:
        torch.nn.init.constant_(m.lm.model.layers[i].xattn.attn_gate, 0.5)
    row = m.build_row([1, 2], "explanation", 3, None)
    with torch.no_grad():
        h, mask = m._hidden([row], use_cache=True)
        tok = torch.tensor([42])
        step = m._step(tok, torch.tensor([row.media[-1]]), torch.cat([mask, mask.new_ones((1, 1))], 1))
        row.ids.append(42)
        row.media.append(-1)
        row.labels.append(0)
        full, _ = m._hidden([row])
    assert torch.allclose(step[0], full[0, -1], atol=1e-4)


def test_packaged_lm_is_the_real_smollm2() -> None:
    from raypipe.models.causal_lm import load_causal_lm

    lm, tok, source = load_causal_lm("smollm2")
    assert "de-quantised" in source or "Q4_1" in source
    words = "The cat sat on the mat and looked out of the window at the birds in the garden.".split()
    shuffled = words[:]
    random.Random(0).shuffle(shuffled)

    def ppl(text: str) -> float:
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            return float(torch.exp(lm(ids, labels=ids).loss))

    normal, mixed = ppl(" ".join(words)), ppl(" ".join(shuffled))
    assert normal < 100 and mixed > 10 * normal


def test_reranker_slot_explains_and_reorders(prepared, catalogue) -> None:
    from raypipe.serve.rerank import ModelReranker

    m = _model(catalogue, tasks=["rec", "explanation"]).eval()
    ids = list(prepared.index.item_ids)
    rr = ModelReranker(m, prepared.index, max_len=10)
    out = rr.explain(ids[:3] + ["nope"], ids[5], max_tokens=5)
    assert out["item_id"] == ids[5] and out["tokens"] <= 5 and out["skipped_items"] == ["nope"]
    assert out["used_items"] == 3 and isinstance(out["explanation"], str)
    assert rr.explain(ids[:3], "nope", 5)["__error__"]["status"] == 404
    cands = [{"item_id": i, "domain": "x", "score": 0.0} for i in ids[10:16]]
    ranked = rr.rerank(ids[:3], cands)
    scores = m.score(torch.as_tensor([[1, 2, 3]]), torch.arange(11, 17))[0]
    assert [c["item_id"] for c in ranked] == [ids[10 + int(j)] for j in torch.argsort(-scores, stable=True)]


def test_early_fusion_writes_visual_tokens_into_the_chunk_placeholders(catalogue) -> None:
    m = _model(catalogue, fusion="early").eval()
    row = m.build_row([1, 2], "rec", 0, None)
    assert row.ids.count(m.special["<vis>"]) == 2 * m.cfg.visual_tokens and not m.cross_layers
    assert [row.ids[i] for i in row.vis_at] == [m.special["<vis>"]] * len(row.vis_at)
    with torch.no_grad():
        base, _ = m._hidden([row])
        m.regions[2] += 5.0
        moved, _ = m._hidden([row])
        m.regions[2] -= 5.0
    diff = (moved - base).abs().amax(-1)[0]
    second = row.vis_at[m.cfg.visual_tokens]  # item 2's first visual token
    assert diff[:second].max() < 1e-6 and diff[second:].min() > 1e-5  # causal: from its visual tokens on


def test_selection_instances_take_the_last_items_as_positives_and_unseen_domain_items_as_negatives() -> None:
    from raypipe.models.unimp import selection_instance

    seq = np.array([11, 12, 13, 14, 15])
    rng = np.random.default_rng(0)
    counts = np.zeros(4, int)
    for _ in range(200):
        hist, cands, picked = selection_instance(seq, 3, 6, 3, 10, 30, rng)
        p = int(picked.sum())
        counts[p] += 1
        assert sorted(cands[picked == 1].tolist()) == seq[-p:].tolist()
        assert hist.tolist() == ([0] * 3 + seq[:-p].tolist())[-3:]  # the items before the positives
        neg = cands[picked == 0]
        assert len(neg) == 6 - p and len(set(neg)) == len(neg)
        assert ((neg >= 10) & (neg < 30)).all() and not set(neg) & set(seq)
    assert counts[0] == 0 and (counts[1:] > 40).all()  # 1, 2 or 3 positives, about equally often
    # a two-item sequence keeps one item of history; a tiny domain pads the candidates with 0
    hist, cands, picked = selection_instance(np.array([3, 4]), 2, 6, 3, 1, 6, np.random.default_rng(1))
    assert hist.tolist() == [0, 3] and picked.sum() == 1 and sorted(cands[cands > 0].tolist()) == [1, 2, 4, 5]
    assert (cands == 0).sum() == 2
    # a repeated last item is one positive
    _, cands, picked = selection_instance(np.array([3, 4, 4]), 2, 6, 3, 1, 30, np.random.default_rng(3))
    assert len(set(cands[cands > 0].tolist())) == 6 and cands[picked == 1].tolist().count(4) <= 1


def test_selection_rows_prompts_and_constrained_decoding(prepared, catalogue) -> None:
    m = _model(catalogue, tasks=["selection"], gamma=0.0, context_loss=False, hidden=64, random_heads=4,
               kv_heads=2)
    rows = unimp_rows(m.cfg, prepared.train, catalogue)
    users = int((prepared.train["items"].map(len) >= 2).sum())
    assert (rows["task"] == TASK_ID["selection"]).sum() == users
    assert ((rows["picked"].sum(1) >= 1) & (rows["picked"].sum(1) <= 3)).all()
    dom = catalogue.item_domain
    for c, it in zip(rows["cands"][:20], rows["item"][:20]):
        assert (dom[c[c > 0]] == dom[it]).all()  # candidates of the target's domain
    # the prompt holds every candidate's chunk (and image slot) after the history's
    cb = [int(c) for c in rows["cands"][0]]
    row = m.build_row([int(i) for i in rows["hist"][0] if i > 0], "selection", 0, None, cb)
    n_hist = int((rows["hist"][0] > 0).sum())
    assert row.ids.count(m.special["[EOC]"]) == n_hist + len(cb)
    assert row.slots[-len([c for c in cb if catalogue.view("image_grid").present[c]]):] == \
        [c for c in cb if catalogue.view("image_grid").present[c]]
    # learning 8 prompts: the decoded choices become their positives, always candidates in their order
    batch = {k: torch.as_tensor(v[:8]) for k, v in rows.items()}
    truth = [[int(c) for c, k in zip(cs, ps) if k] for cs, ps in zip(rows["cands"][:8], rows["picked"][:8])]
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.eval()
    before = set_prf_f1(m.select(batch["hist"], batch["cands"]), truth)
    m.train()
    for _ in range(150):
        opt.zero_grad()
        loss = m.loss(batch)
        loss.backward()
        opt.step()
    m.eval()
    chosen = m.select(batch["hist"], batch["cands"])
    for ch, cs in zip(chosen, batch["cands"].tolist()):
        assert len(set(ch)) == len(ch) and [cs.index(c) for c in ch] == sorted(cs.index(c) for c in ch)
    after = set_prf_f1(chosen, truth)
    assert after > 0.9 and after > before, (before, after)


def set_prf_f1(chosen, truth) -> float:
    from raypipe.eval.metrics import set_prf

    return set_prf(chosen, truth)["f1"]
