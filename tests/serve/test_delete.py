"""DELETE /v1/items/{id} over HTTP, on its own deployment of the tiny IDP app (deletions are shared state)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import requests

from .conftest import deploy

DOMAIN = "toys"


@pytest.fixture(scope="module")
def url(serve_port, idp_artifacts: Path, tmp_path_factory):
    from ray import serve

    u = deploy("recdel", serve_port, {"artifacts": str(idp_artifacts),
                                      "state_dir": str(tmp_path_factory.mktemp("del-state"))})
    yield u
    serve.delete("recdel")


def test_a_deleted_item_leaves_recommendations_lookups_and_matches(url, tiny_dataset: Path) -> None:
    inter = pd.read_parquet(tiny_dataset / "interactions.parquet")
    inter = inter[inter["domain"] == DOMAIN]
    user = inter["user_id"].value_counts().index[0]
    history = list(inter[inter["user_id"] == user].sort_values("timestamp")["item_id"])[-6:]
    body = {"history": history, "domain": DOMAIN, "k": 5}
    before = [i["item_id"] for i in requests.post(f"{url}/v1/recommend", json=body, timeout=30).json()["items"]]
    gone = before[0]
    r = requests.delete(f"{url}/v1/items/{gone}", timeout=30)
    assert r.status_code == 200 and r.json() == {"item_id": gone, "domain": DOMAIN, "deleted": True}
    after = [i["item_id"] for i in requests.post(f"{url}/v1/recommend", json=body, timeout=30).json()["items"]]
    assert gone not in after and after[:4] == before[1:]  # the others move up, in the same order
    assert requests.get(f"{url}/v1/items/{gone}", timeout=10).status_code == 404
    assert requests.get(f"{url}/v1/items/{gone}/similar", timeout=10).status_code == 404
    ranked = requests.post(f"{url}/v1/rank", json={"history": history, "candidates": before}, timeout=30).json()
    assert ranked["unknown_candidates"] == [gone] and [i["item_id"] for i in ranked["items"]] == before[1:]
    # /match searches the pre-trained (source) items: its best match for a text, deleted, leaves its answers
    match = {"text": "ocean wave kite", "k": 20}
    first = requests.post(f"{url}/v1/match", json=match, timeout=30).json()["items"]
    assert requests.delete(f"{url}/v1/items/{first[0]['item_id']}", timeout=30).status_code == 200
    matched = requests.post(f"{url}/v1/match", json=match, timeout=30).json()["items"]
    assert [m["item_id"] for m in matched][:19] == [m["item_id"] for m in first[1:]] and len(matched) == 20
    again = requests.delete(f"{url}/v1/items/{gone}", timeout=30)
    assert again.status_code == 404 and again.json()["error"] == "unknown_item"
    assert requests.delete(f"{url}/items/toys/NOPE", timeout=30).status_code == 404
    # the id stays reserved: onboarding it again is a duplicate
    dup = requests.post(f"{url}/v1/items", json={"items": [{"item_id": gone, "domain": DOMAIN, "title": "again"}]},
                        timeout=60)
    assert dup.status_code == 409
    health = requests.get(f"{url}/v1/health", timeout=10).json()["catalogue"]
    assert health["deleted_items"] == 2 and health["items"] == health["trained_items"] - 2
