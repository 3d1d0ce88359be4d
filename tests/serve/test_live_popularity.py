"""PreRec served over HTTP: ``POST /events`` moves its popularity term (Z) and so the ranking, from the
next time slot on; bad events are 4xx naming the field, and change nothing."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import requests
import torch

from raypipe.config import load_config
from raypipe.rundir import load_weights, save_weights

DAY = 86_400


@pytest.fixture(scope="module")
def prerec_run(ray_local, tiny_dataset: Path, tmp_path_factory) -> Path:
    """An untrained PreRec over the packaged MiniLM text view (``run.stage=evaluate``: no training), its
    f_pop made increasing and strong so that the test knows which way popularity must move an item."""
    from raypipe.features.pipeline import FeatureConfig, extract_features
    from raypipe.train.run import run_experiment

    tmp = tmp_path_factory.mktemp("live_pop")
    extract_features(FeatureConfig(dataset=str(tiny_dataset), out=str(tmp / "features"), views=["text"]))
    res = run_experiment(load_config(None, [
        "model.name=prerec", f"data.dataset={tiny_dataset}", f"data.features={tmp / 'features'}",
        "data.split=user_433", "data.max_len=20", "model.hidden=16", "model.pop_hidden=8", "run.stage=evaluate",
        "eval.k_percents=[10]", f"run.storage_path={tmp / 'runs'}", "run.name=prerec"]))
    state = load_weights(res.run_dir)
    for k in ("f_pop.0.weight", "f_pop.2.weight"):
        state[k] = state[k].abs() * (10.0 if k.startswith("f_pop.2") else 1.0)
    for k in ("f_pop.0.bias", "f_pop.2.bias"):
        state[k] = torch.zeros_like(state[k])
    save_weights(res.run_dir, state)
    return res.run_dir


@pytest.mark.slow
def test_events_move_the_served_prerec_ranking(serve_port, prerec_run: Path, tiny_dataset: Path, tmp_path) -> None:
    from ray import serve

    from tests.serve.conftest import deploy

    inter = pd.read_parquet(tiny_dataset / "interactions.parquet")
    now = int(inter["timestamp"].max()) + DAY  # a replay clock: one day after the data
    url = deploy("pop", serve_port, {"artifacts": str(prerec_run), "state_dir": str(tmp_path),
                                     "popularity_clock": float(now)})
    try:
        h = requests.get(f"{url}/healthz", timeout=10).json()
        assert h["serving"]["live_popularity"] is True
        assert h["catalogue"]["live_popularity"]["events_in_window"] > 0  # seeded from the dataset
        domain = sorted(inter["domain"].unique())[0]
        user = inter[inter["domain"] == domain]["user_id"].value_counts().index[0]
        history = list(inter[inter["user_id"] == user].sort_values("timestamp")["item_id"])[-5:]
        req = {"history": history, "domain": domain, "k": 40, "exclude_history": True}
        before = [i["item_id"] for i in requests.post(f"{url}/recommend", json=req, timeout=30).json()["items"]]
        target = before[-1]
        # the slot before now's (slots are one day long): inside the window at once
        events = [{"user_id": f"u{j}", "item_id": target, "domain": domain, "timestamp": now - DAY - j}
                  for j in range(300)]
        r = requests.post(f"{url}/events", json={"events": events}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 300 and r.json()["stale"] == 0
        after = [i["item_id"] for i in requests.post(f"{url}/recommend", json=req, timeout=30).json()["items"]]
        assert after.index(target) < before.index(target) and after[0] == target, (before[:5], after[:5])
        item = requests.get(f"{url}/items/{target}", timeout=10).json()
        assert item["recent_interactions"] >= 300
        # an event of today counts only from tomorrow's slot; a month-old one can no longer count
        first = requests.get(f"{url}/items/{before[0]}", timeout=10).json()["recent_interactions"]
        r = requests.post(f"{url}/events", json={"events": [
            {"user_id": "u", "item_id": before[0], "timestamp": now},
            {"user_id": "u", "item_id": before[0], "timestamp": now - 30 * DAY}]}, timeout=30)
        assert r.json()["accepted"] == 1 and r.json()["stale"] == 1
        assert requests.get(f"{url}/items/{before[0]}", timeout=10).json()["recent_interactions"] == first
        # bad batches: every problem named, nothing applied
        version = requests.get(f"{url}/healthz", timeout=10).json()["catalogue"]["live_popularity"]["version"]
        r = requests.post(f"{url}/events", json={"events": [
            {"user_id": "u", "item_id": target, "timestamp": now - 10},
            {"user_id": "u", "item_id": "no/such", "timestamp": now - 10},
            {"user_id": "u", "item_id": target, "timestamp": now + 3600}]}, timeout=30)
        assert r.status_code == 422 and r.json()["error"] == "invalid_events"
        assert [p["loc"][2:] for p in r.json()["detail"]] == [[1, "item_id"], [2, "timestamp"]]
        r = requests.post(f"{url}/events", json={"events": [{"user_id": "u", "item_id": target, "domain": "nope",
                                                              "timestamp": 1}]}, timeout=30)
        assert r.status_code == 422 and r.json()["error"] == "unknown_domain"
        r = requests.post(f"{url}/events", json={"events": []}, timeout=30)
        assert r.status_code == 422
        assert requests.get(f"{url}/healthz", timeout=10).json()["catalogue"]["live_popularity"]["version"] == version
        # a new item is onboarded through PreRec's own item encoder: [f_e(its text), Z of no interactions]
        assert h["serving"]["onboarding"] == "content" and h["matcher"]["views"] == ["text"]
        twin = before[0]
        title = requests.get(f"{url}/items/{twin}", timeout=10).json()["title"] or "a new item"
        r = requests.post(f"{url}/items", json={"items": [{"item_id": f"{domain}/NEW", "domain": domain,
                                                           "title": title}]}, timeout=60)
        assert r.status_code == 201 and r.json()["items"][0]["views"] == ["text"], r.text
        new = requests.get(f"{url}/items/{domain}/NEW", timeout=10).json()
        assert new["onboarded"] is True and new["recent_interactions"] == 0
        ranked = [i["item_id"] for i in requests.post(f"{url}/recommend", json={**req, "k": 100},
                                                      timeout=30).json()["items"]]
        assert f"{domain}/NEW" in ranked
        # its interactions count like a trained item's: 400 events in the window put it first
        r = requests.post(f"{url}/events", json={"events": [
            {"user_id": f"n{j}", "item_id": f"{domain}/NEW", "domain": domain, "timestamp": now - DAY - j}
            for j in range(400)]}, timeout=30)
        assert r.status_code == 200 and r.json()["accepted"] == 400, r.text
        assert requests.get(f"{url}/items/{domain}/NEW", timeout=10).json()["recent_interactions"] == 400
        top = requests.post(f"{url}/recommend", json=req, timeout=30).json()["items"][0]["item_id"]
        assert top == f"{domain}/NEW"
        # a brand-new domain, served zero-shot from its items' text and its own live counts
        r = requests.post(f"{url}/domains", json={"domain": "newmarket"}, timeout=10)
        assert r.status_code == 201 and "newmarket" in r.json()["domains"], r.text
        assert requests.post(f"{url}/domains", json={"domain": "newmarket"}, timeout=10).status_code == 409
        assert requests.post(f"{url}/recommend", json={"history": [], "domain": "newmarket"},
                             timeout=10).json()["items"] == []
        titles = [requests.get(f"{url}/items/{i}", timeout=10).json()["title"] or i for i in before[:4]]
        r = requests.post(f"{url}/items", json={"items": [
            {"item_id": f"newmarket/{j}", "domain": "newmarket", "title": t} for j, t in enumerate(titles)]}, timeout=60)
        assert r.status_code == 201, r.text
        new_req = {"history": ["newmarket/0"], "domain": "newmarket", "k": 3, "exclude_history": True}
        out = requests.post(f"{url}/recommend", json=new_req, timeout=30).json()
        assert out["fallback"] is None and out["used_items"] == 1, out
        assert sorted(i["item_id"] for i in out["items"]) == ["newmarket/1", "newmarket/2", "newmarket/3"]
        last = out["items"][-1]["item_id"]
        r = requests.post(f"{url}/events", json={"events": [
            {"user_id": f"m{j}", "item_id": last, "domain": "newmarket", "timestamp": now - DAY - j}
            for j in range(50)]}, timeout=30)
        assert r.status_code == 200, r.text
        out = requests.post(f"{url}/recommend", json=new_req, timeout=30).json()
        assert out["items"][0]["item_id"] == last, out  # the new market's own counts moved it
        cold = requests.post(f"{url}/recommend", json={"history": [], "domain": "newmarket", "k": 2},
                             timeout=30).json()
        assert cold["fallback"] == "popular" and cold["items"][0] == {"item_id": last, "domain": "newmarket",
                                                                      "score": 50.0}
        h = requests.get(f"{url}/healthz", timeout=10).json()
        assert h["catalogue"]["per_domain"]["newmarket"] == 4
    finally:
        serve.delete("pop")
