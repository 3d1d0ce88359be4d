"""UniMP in the app's reranker slot: ``/v1``-style explanation (``POST /explain``) and reranking.

Slow (a UniMP run trained through Ray Train, then a second app): ``python -m pytest -m slow
tests/serve/test_explain.py``."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from .conftest import deploy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unimp_run(ray_local, tiny_dataset: Path, tmp_path_factory) -> Path:
    from raypipe.config import load_config
    from raypipe.train.run import run_experiment

    cfg = load_config(None, ["model.name=unimp", f"data.dataset={tiny_dataset}", "model.backbone=llama-random",
                             "model.fusion=none", "model.tasks=[rec, explanation]", "model.max_users=20",
                             "model.heads=4", "train.epochs=1", "train.valid_users=20",
                             f"run.storage_path={tmp_path_factory.mktemp('unimp_runs')}", "run.name=unimp"])
    return run_experiment(cfg).run_dir


@pytest.fixture(scope="module")
def explain_url(serve_port, idp_artifacts: Path, unimp_run: Path, tmp_path_factory):
    from ray import serve

    url = deploy("rx", serve_port, {"artifacts": str(idp_artifacts), "reranker_run": str(unimp_run),
                                    "state_dir": str(tmp_path_factory.mktemp("serve_state_rx"))})
    yield url
    serve.delete("rx")


def _items(url: str, domain: str, n: int) -> list[str]:
    r = requests.post(f"{url}/recommend", json={"history": [], "domain": domain, "k": n}, timeout=60)
    return [it["item_id"] for it in r.json()["items"]]


def test_explain_generates_bounded_text_and_rejects_bad_input(explain_url) -> None:
    items = _items(explain_url, "toys", 4)
    r = requests.post(f"{explain_url}/explain", json={"history": items[:3] + ["toys/NOPE"], "item_id": items[3],
                                                      "max_tokens": 6}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["explanation"], str) and 0 <= body["tokens"] <= 6
    assert body["skipped_items"] == ["toys/NOPE"] and body["used_items"] == 3 and body["model"] == "UniMP"
    bad = requests.post(f"{explain_url}/explain", json={"history": items[:2], "item_id": "toys/NOPE"}, timeout=60)
    assert bad.status_code == 404 and bad.json()["error"] == "unknown_item"
    for payload in ({"history": items[:2], "item_id": items[0], "max_tokens": 0},
                    {"history": items[:2], "item_id": items[0], "max_tokens": 65},
                    {"history": items[:2]}, {"history": items[:2], "item_id": items[0], "extra": 1}):
        r = requests.post(f"{explain_url}/explain", json=payload, timeout=60)
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", payload


def test_recommend_is_reranked_by_unimp(explain_url) -> None:
    items = _items(explain_url, "toys", 3)
    r = requests.post(f"{explain_url}/recommend", json={"history": items, "domain": "toys", "k": 5}, timeout=120)
    assert r.status_code == 200 and r.json()["reranked"] is True and len(r.json()["items"]) == 5


def test_explain_without_a_generative_reranker_is_400(app_url) -> None:
    r = requests.post(f"{app_url}/explain", json={"history": [], "item_id": "toys/X"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "no_reranker"
