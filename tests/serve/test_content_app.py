"""A UniM2Rec run served over HTTP: POST /items onboards a new item from its own text and image through the
model's projectors (no CDIM), and /recommend ranks it at once by the exact content vector."""
from __future__ import annotations

import base64
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from raypipe.config import load_config
from raypipe.data.schema import ITEMS_FILE
from raypipe.serve.artifacts import content_onboarder, load_model
from raypipe.serve.encoder import HistoryEncoder
from raypipe.train.run import run_experiment

from .conftest import deploy

pytestmark = pytest.mark.slow
DOMAIN = "toys"


@pytest.fixture(scope="module")
def u2r_run(ray_local, tiny_dataset: Path, tiny_store: Path, tmp_path_factory) -> Path:
    cfg = load_config(None, ["model.name=unim2rec", f"data.dataset={tiny_dataset}", f"data.features={tiny_store}",
                             "data.feature_views=[text,image,cross]", "data.flow=mixed", "data.max_len=20",
                             "model.hidden=16", "model.n_experts=4", "train.epochs=1", "train.batch_size=128",
                             "run.stage=finetune", "run.name=u2r",
                             f"run.storage_path={tmp_path_factory.mktemp('u2r-runs')}"])
    return run_experiment(cfg).run_dir


@pytest.fixture(scope="module")
def content_url(serve_port, u2r_run: Path, tmp_path_factory):
    from ray import serve

    url = deploy("u2r", serve_port, {"artifacts": str(u2r_run), "state_dir": str(tmp_path_factory.mktemp("u2r-state"))})
    yield url
    serve.delete("u2r")


def test_items_are_onboarded_from_text_and_image_and_ranked_by_their_content_vector(
        content_url: str, u2r_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    h = requests.get(f"{content_url}/healthz", timeout=10).json()
    assert h["serving"]["onboarding"] == "content" and "cdim" not in h["serving"]
    assert h["matcher"]["method"] == "content" and h["matcher"]["views"] == ["text", "image", "cross"]
    rows = pq.read_table(tiny_dataset / ITEMS_FILE).to_pylist()
    twin = next(r for r in rows if r["domain"] == DOMAIN and r["image"] is not None and r["title"])
    new = {"item_id": "toys/NEW-KITE", "domain": DOMAIN, "title": "storm kite " + twin["title"],
           "category": twin["category"], "price": 9.5, "image": base64.b64encode(twin["image"]).decode()}
    pic = {"item_id": "toys/NEW-PICTURE", "domain": DOMAIN, "image": new["image"]}
    r = requests.post(f"{content_url}/items", json={"items": [new, pic]}, timeout=60)
    assert r.status_code == 201, r.text
    out = r.json()
    assert [(i["method"], i["views"], i["neighbours"]) for i in out["items"]] == [
        ("content", ["text", "image", "cross"], []), ("content", ["image", "cross"], [])]
    assert out["catalogue_version"] == 2
    # the served score is the user vector times the item's content vector, computed here independently
    model, index, cfg = load_model(u2r_run)
    enc = HistoryEncoder(model, index, cfg.data.max_len)
    history = [i for i in index.item_ids if i.startswith(f"{DOMAIN}/")][:5]
    u = enc.encode([history])[0].vector
    local = content_onboarder(u2r_run, tmp_path / "log.jsonl")
    fields = [{k: new.get(k) for k in ("title", "category", "brand", "description", "price")} | {
        "image": twin["image"]}]
    want = float(local.vectors(fields)[0][0] @ u)
    rec = requests.post(f"{content_url}/recommend", json={"history": history, "domain": DOMAIN, "k": 100},
                        timeout=30).json()["items"]
    mine = [i for i in rec if i["item_id"] == new["item_id"]]
    assert len(mine) == 1 and mine[0]["score"] == pytest.approx(want, rel=1e-3, abs=1e-4)
    got = requests.get(f"{content_url}/items/{new['item_id']}", timeout=10).json()
    assert got["onboarded"] is True and got["title"] == new["title"] and got["price"] == 9.5
    # the new item inside a history is read by its contents, not skipped
    body = requests.post(f"{content_url}/recommend", json={"history": history + [new["item_id"]], "domain": DOMAIN,
                                                           "k": 5}, timeout=30).json()
    assert body["skipped_items"] == [] and body["used_items"] == len(history) + 1 and body["fallback"] is None
    assert new["item_id"] not in [i["item_id"] for i in body["items"]]  # excluded as part of the history


def test_bad_content_items_are_4xx_and_match_is_not_offered(content_url: str) -> None:
    bad = base64.b64encode(b"GIF89a not really").decode()
    r = requests.post(f"{content_url}/items", json={"items": [
        {"item_id": "toys/A", "domain": DOMAIN, "title": "fine"},
        {"item_id": "toys/B", "domain": DOMAIN, "title": "broken", "image": bad}]}, timeout=60)
    assert r.status_code == 422 and r.json()["error"] == "invalid_image"
    assert [p["field"] for p in r.json()["detail"]] == ["items[1].image"]
    assert requests.get(f"{content_url}/items/toys/A", timeout=10).status_code == 404  # nothing was onboarded
    r = requests.post(f"{content_url}/match", json={"text": "kite"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "no_text_matcher"
    body = {"items": [{"item_id": "toys/ONCE", "domain": DOMAIN, "title": "once"}]}
    assert requests.post(f"{content_url}/items", json=body, timeout=60).status_code == 201
    dup = requests.post(f"{content_url}/items", json=body, timeout=60)
    assert dup.status_code == 409 and dup.json()["detail"]["item_ids"] == ["toys/ONCE"]
