"""IDP pieces: eq. 8–9 generation, the item-table transplant, ID-space neighbours and CDIM."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe.models.cdim import CDIM, CDIMConfig, CDIMValidator, id_neighbours
from raypipe.models.idp import ITEM_TABLE_KEY, eq9_weights, generate_id_embeddings, transplant


class ExactIndex:
    """Cosine top-k over fixed vectors (stand-in for hnswlib in unit tests)."""

    def __init__(self, vecs: np.ndarray, ids: list[str]) -> None:
        self.v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        self.ids = np.array(ids)

    def query(self, q: np.ndarray, k: int):
        s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ self.v.T
        top = np.argsort(-s, axis=1)[:, :k]
        return self.ids[top], np.take_along_axis(s, top, 1)


def test_eq9_weights_normalise_positive_similarities() -> None:
    w = eq9_weights(np.array([[0.6, 0.3, 0.1], [0.5, -0.5, 0.0], [-0.2, -0.3, -0.1]]))
    assert np.allclose(w[0], [0.6, 0.3, 0.1])
    assert np.allclose(w[1], [1.0, 0.0, 0.0])  # negative similarity never flips an embedding
    assert np.allclose(w[2], [1 / 3] * 3)  # nothing similar: plain mean


def test_generated_embedding_is_the_similarity_weighted_mean() -> None:
    src_vecs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    idx = ExactIndex(src_vecs, ["a", "b", "c"])
    emb = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 1.0, 0.0]), "c": np.array([0.0, 0.0, 1.0])}
    g = generate_id_embeddings(["t"], np.array([[1.0, 0.2]]), idx, emb, m=2)
    # neighbours: a (cos 0.9806), c (cos 0.8321) -> weights 0.5410, 0.4590
    s_a, s_c = 1 / np.sqrt(1.04), 1.2 / np.sqrt(1.04) / np.sqrt(2)
    assert list(g.neighbours[0]) == ["a", "c"]
    assert np.allclose(g.embeddings[0], [s_a / (s_a + s_c), 0.0, s_c / (s_a + s_c)], atol=1e-6)


def test_transplant_row_sources() -> None:
    pre = {ITEM_TABLE_KEY: torch.arange(12, dtype=torch.float32).reshape(4, 3), "encoder.w": torch.ones(2)}
    state, counts = transplant(pre, ["s/a", "s/b", "t/x"], ["s/a", "s/b", "t/x", "t/y"],
                               {"t/x": np.array([7.0, 7.0, 7.0])}, extra_rows=1)
    table = state[ITEM_TABLE_KEY]
    assert table.shape == (6, 3)
    assert counts == {"generated": 1, "pretrained": 2, "random": 1}
    assert torch.equal(table[0], torch.zeros(3))
    assert torch.equal(table[1], pre[ITEM_TABLE_KEY][1]) and torch.equal(table[3], torch.full((3,), 7.0))
    assert "encoder.w" in state
    state2, _ = transplant(pre, ["s/a", "s/b", "t/x"], ["s/a"], {}, keep_encoder=False)
    assert set(state2) == {ITEM_TABLE_KEY}


def test_id_neighbours_exact() -> None:
    e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert id_neighbours(e, 1).ravel().tolist() == [1, 0, 3, 2]


@pytest.fixture(scope="module")
def cdim_model() -> CDIM:
    return CDIM(CDIMConfig(trainable_layers=2))


TEXTS = ["Coastal Marine Mug", "Tidal Ocean Teapot", "Blazing Fire Kite", "Volcanic Ember Puzzle"]


def test_cached_encoding_equals_full_encoding(cdim_model: CDIM) -> None:
    h, mask = cdim_model.cache_states(TEXTS)
    m = CDIM(CDIMConfig(trainable_layers=2), h, mask)
    m.load_state_dict(cdim_model.state_dict(), strict=False)
    m.eval()
    with torch.no_grad():
        cached = m.encode_cached(torch.arange(4)).numpy()
    assert np.allclose(cached, m.encode_texts(TEXTS), atol=1e-5)
    # and they are the packaged MiniLM's sentence embeddings (mean pooled, normalised)
    from raypipe.features.text import TextEncoder

    assert np.allclose(cached, TextEncoder().encode(TEXTS), atol=1e-4)


def test_behaviour_cl_pulls_id_neighbours_together(cdim_model: CDIM) -> None:
    """Make 'Coastal Marine Mug' and 'Blazing Fire Kite' behaviour neighbours; tuning must raise their
    similarity relative to the untuned encoder, and the validator must see it."""
    h, mask = cdim_model.cache_states(TEXTS)
    torch.manual_seed(0)
    m = CDIM(CDIMConfig(trainable_layers=1, temperature=0.1), h, mask)
    before = m.encode_texts(TEXTS)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-4)
    m.train()
    batch = {"anchor": torch.tensor([0, 2, 1, 3]), "neighbour": torch.tensor([2, 0, 3, 1])}
    losses = []
    for _ in range(25):
        loss = m(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    after = m.encode_texts(TEXTS)
    assert losses[-1] < losses[0]
    assert after[0] @ after[2] > before[0] @ before[2] + 0.1
    nbrs = np.array([[2], [3], [0], [1]])
    rec = CDIMValidator(np.array([0, 1, 2, 3]), nbrs)(m, 0, 1, torch.device("cpu"))["valid/neighbour_recall@10"]
    assert rec == 1.0  # with 4 items every neighbour is within the top 10 (3 candidates)
    both = CDIMValidator(np.array([0, 1]), nbrs, probe_idx=np.array([2, 3]))(m, 0, 1, torch.device("cpu"))
    assert both == {"valid/neighbour_recall@10": 1.0, "fit/neighbour_recall@10": 1.0}


def test_behaviour_loss_masks_in_batch_id_neighbours(cdim_model: CDIM) -> None:
    """An in-batch anchor that is one of the anchor's own ID neighbours is not a negative of eq. 6."""
    import torch.nn.functional as F

    h, mask = cdim_model.cache_states(TEXTS)
    nbrs = torch.tensor([[2], [3], [0], [1]])
    masked = CDIM(CDIMConfig(trainable_layers=1, temperature=0.1), h, mask, nbrs).eval()
    plain = CDIM(CDIMConfig(trainable_layers=1, temperature=0.1), h, mask).eval()
    plain.load_state_dict(masked.state_dict(), strict=False)
    batch = {"anchor": torch.tensor([0, 1, 2]), "neighbour": torch.tensor([2, 3, 0])}
    with torch.no_grad():
        a = masked.encode_cached(batch["anchor"])
        n = masked.encode_cached(batch["neighbour"])
        sims = a @ a.T / 0.1
        text = F.cross_entropy(sims, torch.arange(3))
        pos = (a * n).sum(-1, keepdim=True) / 0.1
        neg = sims.clone()
        neg[0, 2] = neg[2, 0] = float("-inf")  # anchors 0 and 2 are each other's ID neighbours
        want = text + F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros(3, dtype=torch.long))
        unmasked = text + F.cross_entropy(torch.cat([pos, sims], 1), torch.zeros(3, dtype=torch.long))
        assert float(masked(batch)) == pytest.approx(float(want), rel=1e-5)
        assert float(plain(batch)) == pytest.approx(float(unmasked), rel=1e-5)
    assert float(want) < float(unmasked)


def test_cdim_is_a_registry_model_on_the_catalogue(tiny_dataset) -> None:
    """CDIM trains on the items with text and an `id` vector; its pairs avoid held-out items, its text
    cache is computed once and kept with the catalogue (what the workers receive)."""
    from raypipe.data.catalogue import FeatureView, ItemCatalogue
    from raypipe.data.prepare import prepare
    from raypipe.models.cdim import CDIM_SCHEMA, cdim_data
    from raypipe.models.registry import SPECS, build_model

    prep = prepare(tiny_dataset)
    n = prep.index.num_embeddings
    vec = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    present = np.zeros(n, bool)
    present[1: n // 2] = True  # half of the items have a pre-trained ID embedding
    cat = ItemCatalogue(prep.index, prep.counts, {"id": FeatureView(vec, present)}, dataset=tiny_dataset)
    cfg = CDIMConfig(k_neighbours=3, pairs_per_item=2)
    spec = SPECS["cdim"]
    assert spec.trainable and spec.capabilities == frozenset() and spec.validator is not None
    d = cdim_data(cfg, cat)
    texts = cat.texts("plain")
    assert all(present[i] and texts[i] for i in d.items)
    assert len(d.valid) == max(10, int(0.05 * len(d.items)))
    held = set(d.valid.tolist())
    assert not held & set(d.anchors.tolist()) and not held & set(d.positives.tolist())
    assert all(p in d.neighbours[a] or p == a for a, p in zip(d.anchors, d.positives))
    rows = spec.rows(cfg, prep.train, cat)
    assert CDIM_SCHEMA.check(rows) == len(d.anchors)
    model = build_model(cfg, cat)
    assert model.cache_hidden.shape[0] == len(d.items) and model.neighbours.shape == (len(d.items), 3)
    again = build_model(cfg, cat)
    assert again.cache_hidden.data_ptr() == model.cache_hidden.data_ptr()  # computed once, kept with the catalogue
    out = spec.validator(cfg, cat)(model, 0, 1, torch.device("cpu"))
    assert set(out) == {"valid/neighbour_recall@10", "fit/neighbour_recall@10"}
    with pytest.raises(ValueError, match="pairs_per_item"):
        cdim_data(CDIMConfig(k_neighbours=3, pairs_per_item=4), cat)
