"""Onboarding through a content model's projectors (UniM2Rec's inductive setting), without Ray Serve: a new
item's vector comes from its own text and image alone, every replica's catalogue finds it at once, and
bad or duplicate input writes nothing."""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raypipe.config import load_config
from raypipe.data.prepare import prepare_for
from raypipe.data.schema import ITEMS_FILE
from raypipe.features.aligned import ALIGNER_FILE, CrossAligner
from raypipe.features.live import ImageInputError, LiveItemEncoder
from raypipe.models.registry import build_model, get_spec
from raypipe.serve.artifacts import item_vectors
from raypipe.serve.catalogue import Catalogue
from raypipe.serve.content import ContentOnboarder, LiveHistoryItems
from raypipe.serve.encoder import HistoryEncoder
from raypipe.serve.onboarding import DuplicateItemError, OnboardingLog
from raypipe.train.run import item_catalogue

DOMAIN = "toys"


@pytest.fixture(scope="module")
def served(tiny_dataset: Path, tiny_store: Path, tmp_path_factory):
    """An untrained UniM2Rec over the tiny catalogue (its ID offsets are zero, so a known item's vector is
    its contents' vector), the run directory's aligner, and the item vectors the retriever serves."""
    run = tmp_path_factory.mktemp("u2r-run")
    cfg = load_config(None, ["model.name=unim2rec", f"data.dataset={tiny_dataset}", f"data.features={tiny_store}",
                             "data.feature_views=[text,image,cross]", "data.flow=mixed", "data.max_len=20",
                             "model.hidden=16", "model.n_experts=4", "run.stage=finetune"])
    cfg.model = get_spec("unim2rec").resolve(cfg.model, cfg)
    cfg.model.max_len = 20
    prep = prepare_for(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, item_catalogue(cfg, prep, tiny_dataset, run, save_aligner=True)).eval()
    encoder = LiveItemEncoder(tiny_store, cfg.model.views, CrossAligner.load(run / ALIGNER_FILE))
    cfg.save(run / "config.yaml")  # a run directory the Serve app can resolve
    prep.index.save(run / "item_index.parquet")
    torch.save(model.state_dict(), run / "model.pt")
    return model, prep.index, encoder, item_vectors(model, len(prep.index)), run


def _item(tiny_dataset: Path, index, with_image: bool) -> dict:
    rows = pq.read_table(tiny_dataset / ITEMS_FILE).to_pylist()
    known = set(index.item_ids)
    return next(r for r in rows if r["domain"] == DOMAIN and r["item_id"] in known and r["title"]
                and (r["image"] is not None) == with_image)


def test_new_item_vector_is_its_contents_and_it_is_retrieved_at_once(served, tiny_dataset, tmp_path) -> None:
    model, index, encoder, vecs, _ = served
    log_path = tmp_path / "onboarded.jsonl"
    onboarder = ContentOnboarder(model, encoder, list(index.item_ids), OnboardingLog(log_path))
    replica = Catalogue(list(index.item_ids), list(index.domains), vecs, None, None, OnboardingLog(log_path),
                        ef_search=400)
    twin = _item(tiny_dataset, index, with_image=True)
    attrs = {k: twin[k] for k in ("title", "category", "brand", "description", "price")}
    new = {"item_id": "toys/NEW-TWIN", "domain": DOMAIN,
           "attributes": {**attrs, "image": base64.b64encode(twin["image"]).decode()}}
    records, version = onboarder.onboard([new])
    assert version == 1 and records[0]["views"] == ["text", "image", "cross"] and records[0]["method"] == "content"
    # the same contents as a trained item with a zero ID offset: the same vector
    row = index.lookup([twin["item_id"]])[0] - 1
    np.testing.assert_allclose(records[0]["vector"], vecs[row], atol=1e-4)
    # another replica's catalogue serves it on its next read, scored by the same vector
    u = vecs[row] + 0.01 * np.random.default_rng(0).normal(size=vecs.shape[1]).astype(np.float32)
    hits = replica.search(u, DOMAIN, 2)
    assert {h[0] for h in hits} == {"toys/NEW-TWIN", twin["item_id"]}
    score = dict((h[0], h[2]) for h in hits)["toys/NEW-TWIN"]
    assert score == pytest.approx(float(np.dot(records[0]["vector"], u)), rel=1e-4)
    got = replica.get("toys/NEW-TWIN")
    assert got["onboarded"] and got["title"] == twin["title"]
    # a sequence encoder replica reads the new item inside a history, as its twin (zero ID offsets here)
    import copy

    enc = HistoryEncoder(copy.deepcopy(model), index, 20)
    live = LiveHistoryItems(enc.model, enc, OnboardingLog(log_path), sorted(set(index.domains)))
    known = [i for i in index.item_ids if i.startswith(f"{DOMAIN}/")][:4]
    before = enc.encode([known + ["toys/NEW-TWIN"]])[0]
    assert before.skipped == ["toys/NEW-TWIN"] and live.sync() == 1 and live.sync() == 1
    after, ref = enc.encode([known + ["toys/NEW-TWIN"], known + [twin["item_id"]]])
    assert after.skipped == [] and after.used == 5
    np.testing.assert_allclose(after.vector, ref.vector, atol=1e-4)
    # onboarding it again, or a trained id, is refused and writes nothing
    for dup in (new, {**new, "item_id": twin["item_id"]}):
        with pytest.raises(DuplicateItemError):
            onboarder.onboard([dup])
    assert OnboardingLog(log_path).poll().__len__() == 1


def test_items_with_one_modality_and_bad_images(served, tiny_dataset, tmp_path) -> None:
    model, index, encoder, vecs, _ = served
    onboarder = ContentOnboarder(model, encoder, list(index.item_ids), OnboardingLog(tmp_path / "log.jsonl"))
    text_only = _item(tiny_dataset, index, with_image=False)
    picture = _item(tiny_dataset, index, with_image=True)
    records, _ = onboarder.onboard([
        {"item_id": "toys/TEXT-ONLY", "domain": DOMAIN, "attributes": {"title": text_only["title"]}},
        {"item_id": "toys/IMAGE-ONLY", "domain": DOMAIN,
         "attributes": {"image": base64.b64encode(picture["image"]).decode()}},
    ])
    assert [r["views"] for r in records] == [["text", "cross"], ["image", "cross"]]
    assert all(np.isfinite(r["vector"]).all() and np.linalg.norm(r["vector"]) > 0 for r in records)
    # the image-only item's image slot equals its twin's: the projections of the same image
    width = model.items.width
    img = slice(model.cfg.hidden, 2 * model.cfg.hidden)
    views = encoder.encode([{"image": picture["image"]}])
    with torch.no_grad():
        twin = model.items.content(torch.tensor([index.lookup([picture["item_id"]])[0]]))[0]
        mine = model.items.project({v: torch.as_tensor(x) for v, (x, _) in views.items()},
                                   {v: torch.as_tensor(p) for v, (_, p) in views.items()})[0]
    assert mine.shape == (width,) and torch.allclose(mine[img], twin[img], atol=1e-4)
    with pytest.raises(ImageInputError, match=r"items\[1\]\.image"):
        onboarder.onboard([{"item_id": "toys/OK", "domain": DOMAIN, "attributes": {"title": "fine"}},
                           {"item_id": "toys/BAD", "domain": DOMAIN,
                            "attributes": {"title": "x", "image": base64.b64encode(b"not an image").decode()}}])
    assert onboarder.sync() == 2  # nothing of the failed request was logged


def test_the_app_onboards_by_content_only_where_it_can_encode_new_items(served, tmp_path) -> None:
    from raypipe.config import load_config as load
    from raypipe.serve.artifacts import ServingSpec

    run = served[4]
    spec = ServingSpec.resolve(run, state_dir=tmp_path / "state")
    assert spec.onboarding == "content" and spec.description["onboarding"] == "content"
    assert ServingSpec.resolve(run, state_dir=tmp_path / "state", onboarding="cdim").onboarding == "cdim"
    # without a feature store on this machine, auto falls back to CDIM and content is refused
    cfg = load(run / "config.yaml")
    store = cfg.data.features
    cfg.data.features = str(tmp_path / "no-such-store")
    cfg.save(run / "config.yaml")
    try:
        assert ServingSpec.resolve(run, state_dir=tmp_path / "state").onboarding == "cdim"
        with pytest.raises(ValueError, match="no feature store"):
            ServingSpec.resolve(run, state_dir=tmp_path / "state", onboarding="content")
    finally:
        cfg.data.features = store
        cfg.save(run / "config.yaml")
    with pytest.raises(ValueError, match="choose auto, cdim or content"):
        ServingSpec.resolve(run, state_dir=tmp_path / "state", onboarding="clip")
