"""ItemCatalogue: domains, named views with presence, texts and tokens, images on demand, PreRec's
popularity factors (hand-computed)."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from raypipe.data.catalogue import FeatureView, ItemCatalogue
from raypipe.data.prepare import prepare
from raypipe.data.sequences import ItemIndex


def _index() -> ItemIndex:
    ids = ["a/1", "a/2", "a/3", "b/1", "b/2"]
    return ItemIndex.build(pd.Series(ids), pd.Series([i[0] for i in ids]))


def test_domains_ranges_and_views_align_to_the_index() -> None:
    vec = np.arange(12, dtype=np.float32).reshape(6, 2)
    cat = ItemCatalogue(_index(), views={"text": FeatureView(vec, np.array([False, True, True, False, True, True]))})
    assert cat.domain_names == ["a", "b"]
    assert cat.item_domain.tolist() == [-1, 0, 0, 0, 1, 1]
    assert cat.domain_ranges.tolist() == [[1, 4], [4, 6]]
    assert cat.view("text").dim == 2 and cat.item_features is vec
    with pytest.raises(ValueError, match="no feature view 'image'"):
        cat.view("image")
    with pytest.raises(ValueError, match="has 3 rows"):
        ItemCatalogue(_index(), views={"text": FeatureView(vec[:3], np.ones(3, bool))})


def test_a_view_without_a_share_of_its_vectors() -> None:
    vec = np.arange(12, dtype=np.float32).reshape(6, 2) + 1.0
    vec[0] = 0.0
    view = FeatureView(vec, np.array([False, True, True, False, True, True]), "store:text")
    half = view.without(0.5, seed=3)
    # two of the four present items lose their vector; the absent ones and the padding row stay absent
    assert half.present.sum() == 2 and not half.present[[0, 3]].any()
    dropped = view.present & ~half.present
    assert dropped.sum() == 2 and (half.vectors[dropped] == 0).all()
    assert np.array_equal(half.vectors[half.present], vec[half.present])  # the rest untouched
    assert np.array_equal(view.without(0.5, seed=3).present, half.present)  # seeded
    assert view.present.sum() == 4 and "50% made absent" in half.source  # the original view is not changed
    assert not view.without(1.0).present.any() and np.array_equal(view.without(0.0).vectors, vec)
    with pytest.raises(ValueError, match="absent share must be in"):
        view.without(1.5)


def test_popularity_factors_by_hand() -> None:
    cat = ItemCatalogue(_index())
    # slot 0 (t in [0, 10)): a/1 x3, a/2 x1 ; b/1 x2 ; slot 1: a/3 x2
    items = np.array([1, 1, 1, 2, 4, 4, 3, 3])
    ts = np.array([0, 1, 2, 3, 4, 5, 10, 11])
    cat.with_popularity(items, ts, slot_seconds=10)
    assert cat.popularity.counts.tolist() == [[0, 3, 1, 0, 2, 0], [0, 0, 0, 2, 0, 0]]
    f = cat.popularity_factors(0, orders=(1, 2))
    # domain a at slot 0: c = [3, 1, 0]; s1 = 4/3; s2 = sqrt(10/3)
    s1, s2 = 4 / 3, np.sqrt(10 / 3)
    np.testing.assert_allclose(f[1:4, 0], [3 / s1, 1 / s1, 0], rtol=1e-6)
    np.testing.assert_allclose(f[1:4, 1], [3 / s2, 1 / s2, 0], rtol=1e-6)
    # domain b: c = [2, 0]; s1 = 1, s2 = sqrt(2)
    np.testing.assert_allclose(f[4:6, 0], [2, 0], rtol=1e-6)
    np.testing.assert_allclose(f[4:6, 1], [2 / np.sqrt(2), 0], rtol=1e-6)
    assert f[0].tolist() == [0, 0]
    # slot 1 alone: domain b has no interactions -> zeros, not NaN; a window of 2 slots sums them
    f1 = cat.popularity_factors(1, orders=(1,))
    assert np.isfinite(f1).all() and f1[4:, 0].tolist() == [0, 0]
    f2 = cat.popularity_factors(1, orders=(1,), window=2)
    np.testing.assert_allclose(f2[1:4, 0], np.array([3, 1, 2]) / 2.0, rtol=1e-6)
    assert cat.popularity_factors(np.array([0, 1]), orders=(1,)).shape == (2, 6, 1)
    assert cat.popularity.slot_of(np.array([-5, 15, 99])).tolist() == [0, 1, 1]


def test_texts_tokens_and_images_on_demand(tiny_dataset) -> None:
    from transformers import AutoTokenizer

    from raypipe.data.dataset import CanonicalDataset
    from raypipe.features.text import resolve_text_model

    prep = prepare(tiny_dataset, k=5)
    cat = ItemCatalogue(prep.index, prep.counts, dataset=tiny_dataset)
    items = CanonicalDataset.open(tiny_dataset).items(columns=["item_id", "title", "category", "image"]).to_pandas()
    items = items.set_index("item_id")
    first = str(prep.index.item_ids[0])
    texts = cat.texts("upsr_pretrain")
    assert len(texts) == cat.num_embeddings and texts[0] == ""
    assert texts[1] == f"(category: {items.loc[first, 'category']}) {items.loc[first, 'title']}"
    assert cat.texts("upsr_pretrain") is texts  # cached
    tok = AutoTokenizer.from_pretrained(resolve_text_model(None), local_files_only=True)
    ids, mask = cat.tokens(tok, "plain", max_length=8)
    assert ids.shape == mask.shape == (cat.num_embeddings, 8)
    assert mask[0].sum() == 0 and mask[1:].sum(1).min() >= 1
    want = tok(items.loc[first, "title"], add_special_tokens=False)["input_ids"][:8]
    assert ids[1, : len(want)].tolist() == want
    assert cat.tokens(tok, "plain", max_length=8)[0] is ids  # cached
    imgs = cat.images([1, 2])
    for got, iid in zip(imgs, prep.index.item_ids[:2]):
        expect = items.loc[iid, "image"]
        assert got == expect
    if imgs[0] is not None:
        from PIL import Image

        assert Image.open(io.BytesIO(imgs[0])).size[0] > 0
    with pytest.raises(IndexError):
        cat.images([0])
