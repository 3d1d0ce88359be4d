"""UPSR without Ray: the §3.3.2 prompt and its truncation, MITP examples, perplexity scoring (batched ==
per-candidate == a hand computation from the plain HF forward), the tokenizer carried in the weights,
learning a toy next-item task, and the config defaults."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from raypipe.config import DataConfig, load_config
from raypipe.data.catalogue import ItemCatalogue
from raypipe.data.prepare import prepare_for
from raypipe.models.registry import build_model
from raypipe.models.upsr import UPSRConfig, upsr_resolve, upsr_rows

SMALL_T5 = dict(backbone="t5-random", vocab_size=600, d_model=64, d_ff=128, num_layers=2, num_heads=2)


@pytest.fixture(scope="module")
def catalogue(tiny_dataset) -> ItemCatalogue:
    prep = prepare_for(DataConfig(dataset=str(tiny_dataset)))
    return ItemCatalogue(prep.index, prep.counts, dataset=tiny_dataset)


@pytest.fixture(scope="module")
def minilm(catalogue):
    torch.manual_seed(0)
    return build_model(UPSRConfig(template="upsr_pretrain", max_len=10), catalogue).eval()


def _t5(catalogue, **kw):
    torch.manual_seed(0)
    return build_model(UPSRConfig(**{"template": "upsr_pretrain", "max_len": 10, **SMALL_T5, **kw}), catalogue)


def test_prompt_is_the_papers_text_sequence(minilm) -> None:
    m = minilm
    ids, start = m.encoder_input([1, 2, 0], {2})
    assert start == 0
    assert ids == m.head + m.item_tokens[1] + m.sep + m.item_tokens[2] + m.sep + [m.lm.sentinel_ids[0]] + m.tail
    decode = m.lm.tokenizer.decode
    assert decode(m.head) == "[CLS] given the following purchase history of user :"
    assert decode(m.sep) == ","
    assert decode(m.tail) == ", predict masked item purchased by the user? [SEP]"
    assert m.texts[1].startswith("(category: ") and decode(m.item_tokens[1]) == m.texts[1].lower().replace(
        "(category: ", "( category : ").replace(") ", " ) ")


def test_truncation_drops_the_oldest_whole_items_and_keeps_the_mask(catalogue) -> None:
    m = build_model(UPSRConfig(template="upsr_pretrain", max_len=10, max_tokens=60), catalogue)
    items = [1, 2, 3, 4, 5, 6, 0]
    ids, start = m.encoder_input(items, {6})
    assert len(ids) <= 60 and start > 0
    kept = sum(len(m.item_tokens[i]) for i in items[start:6])
    fixed = len(m.head) + len(m.tail) + 1 + len(m.sep) * (6 - start)
    assert len(ids) == kept + fixed  # whole items only: nothing of an item is cut
    assert ids[-len(m.tail) - 1] == m.lm.sentinel_ids[0]
    # one more old item would not have fitted
    assert kept + len(m.item_tokens[items[start - 1]]) + fixed + len(m.sep) > 60


def test_mitp_last_item_and_random_masking(minilm) -> None:
    m = minilm
    rng = np.random.default_rng(0)
    items = [3, 5, 7, 9]
    m.cfg.last_item_ratio, m.cfg.mask_ratio = 1.0, 0.1
    enc, tgt = m.mitp_example(items, rng)
    assert tgt == [m.lm.sentinel_ids[0]] + m.item_tokens[9] + [m.lm.eos_id]
    assert enc.count(m.lm.sentinel_ids[0]) == 1 and all(t in enc for t in m.item_tokens[3])
    m.cfg.last_item_ratio, m.cfg.mask_ratio = 0.0, 1.0  # every item masked, in order
    enc, tgt = m.mitp_example(items, rng)
    want = sum(([m.lm.sentinel_ids[k]] + m.item_tokens[i] for k, i in enumerate(items)), []) + [m.lm.eos_id]
    assert tgt == want
    assert [t for t in enc if t in m.lm.sentinel_ids] == m.lm.sentinel_ids[:4]
    m.cfg.max_target_tokens = len(m.item_tokens[3]) + 3  # room for the first masked item only
    enc, tgt = m.mitp_example(items, rng)
    assert tgt == [m.lm.sentinel_ids[0]] + m.item_tokens[3] + [m.lm.eos_id]
    assert [t for t in enc if t in m.lm.sentinel_ids] == m.lm.sentinel_ids[:1]
    m.cfg.last_item_ratio, m.cfg.mask_ratio, m.cfg.max_target_tokens = 0.1, 0.1, 256


def test_batched_scores_equal_per_candidate_and_the_plain_forward(minilm) -> None:
    m = minilm
    history = torch.tensor([[0, 0, 4, 2], [7, 1, 3, 2], [0, 0, 0, 0]])
    cands = torch.tensor([[1, 5, 9, 2, 3], [6, 2, 8, 4, 1], [3, 3, 7, 2, 5]])
    m.cfg.score_pairs = 4  # several candidate chunks
    with torch.inference_mode():
        batched = m.score(history, cands)
        naive = m.score_per_candidate(history, cands)
    m.cfg.score_pairs = 256
    assert batched.shape == (3, 5)
    assert torch.allclose(batched, naive, atol=1e-4)
    # by hand from EncoderDecoderModel's own forward: mean log P(w_k) over the text and </s>
    enc_ids, enc_mask = m._history_inputs(history[1:2])
    words = m.item_tokens[8] + [m.lm.eos_id]
    dec = torch.tensor([[m.lm.start_id, m.lm.sentinel_ids[0]] + words[:-1]])
    with torch.inference_mode():
        logits = m.lm.model(input_ids=enc_ids, attention_mask=enc_mask, decoder_input_ids=dec).logits[0, 1:]
    hand = F.log_softmax(logits, -1).gather(1, torch.tensor(words)[:, None]).mean()
    assert math.isclose(float(batched[1, 2]), float(hand), abs_tol=1e-4)
    assert torch.equal(batched[2, 0], batched[2, 1])  # the same candidate twice scores the same


def test_shared_candidates_score_like_per_row_candidates(minilm) -> None:
    history = torch.tensor([[0, 4, 2], [1, 3, 2]])
    with torch.inference_mode():
        shared = minilm.score(history, torch.tensor([5, 6, 7]))
        rows = minilm.score(history, torch.tensor([[5, 6, 7], [5, 6, 7]]))
    assert torch.allclose(shared, rows, atol=1e-5)


def test_t5_random_scores_and_carries_its_tokenizer_in_the_weights(catalogue) -> None:
    m = _t5(catalogue).eval()
    history, cands = torch.tensor([[0, 4, 2], [1, 3, 2]]), torch.tensor([[1, 5, 9], [6, 2, 8]])
    with torch.inference_mode():
        assert torch.allclose(m.score(history, cands), m.score_per_candidate(history, cands), atol=1e-4)
    state = m.state_dict()
    assert "tokenizer_json" in state["lm._extra_state"]
    other = _t5(catalogue, template="upsr_finetune")  # another corpus: another tokenizer
    assert other.lm.tokenizer.backend_tokenizer.to_str() != m.lm.tokenizer.backend_tokenizer.to_str()
    other.cfg.template = "upsr_pretrain"
    other.texts = m.texts
    other.load_state_dict(state)
    assert other.lm.tokenizer.backend_tokenizer.to_str() == m.lm.tokenizer.backend_tokenizer.to_str()
    assert other.item_tokens == m.item_tokens
    with torch.inference_mode():
        assert torch.allclose(other.eval().score(history, cands), m.score(history, cands), atol=1e-5)


def test_training_learns_a_next_item_task_and_generates_its_text(catalogue) -> None:
    torch.manual_seed(0)
    m = _t5(catalogue, last_item_ratio=1.0)
    for mod in m.modules():  # no dropout: the run converges the same way whatever the thread count
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    rng = np.random.default_rng(0)
    items = rng.choice(np.arange(1, 41), size=24, replace=False)
    hist, nxt = items[:12].reshape(6, 2), items[12:18]
    seq = torch.tensor(np.c_[np.zeros((6, 7), int), hist, nxt])  # max_len 10, left-padded
    cands = torch.tensor(np.tile(nxt, (6, 1)))

    def hit1() -> float:
        m.eval()
        with torch.inference_mode():
            s = m.score(seq[:, :-1], cands)
        m.train()
        return float((s.argmax(1) == torch.arange(6)).float().mean())

    before = hit1()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    # until the six pairs are memorised well enough for greedy decoding to spell them out: one CI run that
    # stopped at a loss of 0.1 decoded only 3 of the 6 texts (not reproduced here: 6 of 6 with 1-3 threads,
    # at 0.1 and at 0.02), so train on to 0.02 (250-300 steps)
    for _ in range(800):
        loss = m.loss({"seq": seq})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if losses[-1] < 0.02:
            break
    assert losses[-1] < 0.1 < 0.05 * losses[0]
    assert before <= 0.5 and hit1() == 1.0
    texts = m.eval().generate_text(seq[:, :-1])
    want = [m.lm.tokenizer.decode(m.item_tokens[int(i)], skip_special_tokens=True).strip() for i in nxt]
    assert sum(t == w for t, w in zip(texts, want)) >= 4  # chance: about 0


def test_rows_resolve_and_experiment_defaults() -> None:
    import pandas as pd

    train = pd.DataFrame({"items": [np.array([1, 2, 3, 4, 5]), np.array([7]), np.array([8, 9])],
                          "domain": ["a", "a", "b"]})
    rows = upsr_rows(UPSRConfig(max_len=3), train, None)  # type: ignore[arg-type]
    assert rows["seq"].dtype == np.int64
    assert sorted(map(tuple, rows["seq"].tolist())) == [(0, 8, 9), (1, 2, 3), (3, 4, 5)]
    cfg = load_config(None, ["model.name=upsr"])
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.optim.grad_accum) == (3e-4, 16, 8)
    assert cfg.eval.protocol == "auto"
    cfg = load_config(None, ["model.name=upsr", "train.batch_size=4"])
    assert cfg.train.batch_size == 4 and cfg.train.optim.grad_accum == 8  # the user's value wins
    assert load_config(None, []).train.batch_size == 256  # other models keep theirs
    assert upsr_resolve(cfg.model, cfg).template == "upsr_pretrain"
    ft = load_config(None, ["model.name=upsr", "run.stage=finetune"])
    assert upsr_resolve(ft.model, ft).template == "upsr_finetune"
    with pytest.raises(ValueError, match="template"):
        UPSRConfig(template="nope")


def test_template_orders_are_validated_by_the_config() -> None:
    import pytest

    from raypipe.models.upsr import UPSRConfig

    assert UPSRConfig(template="upsr:TCD").template == "upsr:TCD"
    with pytest.raises(ValueError, match="model.template"):
        UPSRConfig(template="upsr:CC")
    with pytest.raises(ValueError, match="upsr:<order>"):
        UPSRConfig(template="title")


def test_the_reranker_slot_orders_candidates_by_upsr_perplexity(minilm, catalogue) -> None:
    from raypipe.serve.rerank import ModelReranker

    ids = list(catalogue.index.item_ids)
    rr = ModelReranker(minilm, catalogue.index, max_len=10)
    cands = [{"item_id": i, "domain": "x", "score": 0.0} for i in ids[10:15]] + [
        {"item_id": "unknown", "domain": "x", "score": 9.0}]
    out = rr.rerank(ids[:3] + ["nope"], cands)
    with torch.inference_mode():
        scores = minilm.score(torch.as_tensor([[1, 2, 3]]), torch.arange(11, 16))[0]
    want = [ids[10 + int(j)] for j in torch.argsort(-scores, stable=True)]
    assert [c["item_id"] for c in out[:5]] == want and out[5]["item_id"] == "unknown"  # unknown ids stay put
    assert [c["score"] for c in out[:5]] == pytest.approx(sorted(scores.tolist(), reverse=True), abs=1e-5)
    assert rr.explain(ids[:3], ids[5], 5)["__error__"]["error"] == "not_generative"


def test_a_pretrained_upsr_starts_a_run_over_another_catalogue_whole(catalogue, tiny_dataset) -> None:
    """Pre-trained on one catalogue, fine-tuned on another (ML-1M → ML-100k in the leaderboard): every
    state entry carries over (no item table), the tokenizer included, and the new model reads its own
    catalogue's item texts with it."""
    from raypipe.data.sequences import ItemIndex
    from raypipe.train.finetune import cross_catalogue_state

    pre = _t5(catalogue)
    with torch.no_grad():
        for p in pre.parameters():
            p.add_(0.01)  # differs from any fresh initialisation
    keep = [i for i in range(1, len(catalogue.index)) if i % 3 == 0]  # another, smaller item index
    sub = ItemIndex.build(pd.Series(catalogue.index.item_ids[keep]), pd.Series(catalogue.index.domains[keep]))
    other = ItemCatalogue(sub, dataset=tiny_dataset)
    torch.manual_seed(1)
    new = build_model(UPSRConfig(template="upsr_pretrain", max_len=10, **SMALL_T5), other)
    state, dropped = cross_catalogue_state(new, pre.state_dict(), "runs/pre")
    assert dropped == [] and set(state) == set(pre.state_dict())
    assert new.load_state_dict(state, strict=True)
    for key, value in pre.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(new.state_dict()[key], value), key
    assert len(new.item_tokens) == len(keep) + 1
    tok = pre.lm.tokenizer  # the pre-trained tokenizer, on the new catalogue's texts
    assert new.item_tokens[1] == list(tok(other.texts("upsr_pretrain")[1], add_special_tokens=False,
                                          truncation=True, max_length=new.cfg.item_tokens)["input_ids"])
