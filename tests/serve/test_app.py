"""The recommender Serve app over HTTP on the tiny IDP pipeline: recommend, onboard, match, bad input."""
from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest
import requests

from raypipe.serve.artifacts import item_vectors, load_model
from raypipe.serve.encoder import HistoryEncoder

DOMAIN = "toys"


@pytest.fixture(scope="module")
def model_view(idp_artifacts: Path):
    model, index, cfg = load_model(idp_artifacts / "idp_zero_shot")
    return model, index, HistoryEncoder(model, index, cfg.data.max_len), item_vectors(model, len(index))


@pytest.fixture(scope="module")
def history(tiny_dataset: Path, model_view) -> list[str]:
    index = model_view[1]
    inter = pd.read_parquet(tiny_dataset / "interactions.parquet")
    inter = inter[(inter["domain"] == DOMAIN) & inter["item_id"].isin(set(index.item_ids))]
    user = inter["user_id"].value_counts().index[0]
    return list(inter[inter["user_id"] == user].sort_values("timestamp")["item_id"])[-6:]


def post(url: str, path: str, body) -> requests.Response:
    return requests.post(f"{url}{path}", json=body, timeout=30)


def test_health_and_openapi(app_url: str) -> None:
    h = requests.get(f"{app_url}/healthz", timeout=10).json()
    assert h["status"] == "ok" and h["catalogue"]["trained_items"] > 200
    assert h["serving"]["cdim"].endswith("cdim") and h["serving"]["onboarding"] == "cdim"
    assert h["matcher"]["method"] == "cdim"
    spec = requests.get(f"{app_url}/openapi.json", timeout=10).json()
    assert {"/recommend", "/items", "/match", "/events", "/healthz"} <= set(spec["paths"])
    # the replica serves the documented schema (tests/serve/test_openapi.py checks it in full)
    ok = spec["paths"]["/v1/recommend"]["post"]["responses"]["200"]["content"]["application/json"]
    assert ok["example"]["items"] and "HTTPValidationError" not in json.dumps(spec)
    assert "body_too_large" in spec["components"]["schemas"]["ErrorResponse"]["properties"]["error"]["enum"]
    assert h["serving"]["live_popularity"] is False and "live_popularity" not in h["catalogue"]


def test_recommend_returns_k_distinct_valid_ids_matching_exact_scores(app_url, history, model_view) -> None:
    model, index, enc, vecs = model_view
    r = post(app_url, "/recommend", {"history": history, "domain": DOMAIN, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [i["item_id"] for i in body["items"]]
    catalogue = set(index.item_ids[index.domains == DOMAIN])
    assert len(ids) == 5 and len(set(ids)) == 5 and set(ids) <= catalogue and not set(ids) & set(history)
    assert body["fallback"] is None and body["skipped_items"] == [] and body["used_items"] == len(history)
    # the same top-5 as an exact dot-product ranking with the served model
    u = enc.encode([history])[0].vector
    rows = np.flatnonzero(index.domains == DOMAIN)
    scores = vecs[rows] @ u
    exact = [index.item_ids[rows[j]] for j in np.argsort(-scores) if index.item_ids[rows[j]] not in history][:5]
    assert ids == exact
    assert [i["score"] for i in body["items"]] == pytest.approx(
        [float(vecs[index.lookup([i])[0] - 1] @ u) for i in ids], rel=1e-4, abs=1e-5)


def test_recommend_answers_carry_each_hops_server_timing(app_url, history) -> None:
    """Every answered /v1/recommend says where its time went: the hops in order, each >= 0, their sum
    within the replica's own total, and the total within what the client waited."""
    from raypipe.serve.timing import HOPS, parse_server_timing

    for body in ({"history": history, "domain": DOMAIN, "k": 5}, {"history": ["toys/NOPE"], "domain": DOMAIN, "k": 3}):
        t0 = time.perf_counter()
        r = post(app_url, "/v1/recommend", body)
        client_ms = (time.perf_counter() - t0) * 1000
        assert r.status_code == 200, r.text
        hops = parse_server_timing(r.headers["Server-Timing"])
        assert list(hops) == [*HOPS, "app", "gc"] and min(hops.values()) >= 0.0
        assert hops["gc"] <= hops["app"] + 0.05  # pauses while the request was in the replica
        assert hops["encode"] > 0.0 and hops["retrieve"] > 0.0 and hops["rerank"] == 0.0  # no reranker here
        assert sum(hops[h] for h in HOPS) <= hops["app"] + 0.05 and hops["app"] <= client_ms
    # a refused request never reached the hops: no header
    bad = post(app_url, "/v1/recommend", {"history": [], "domain": "garden"})
    assert bad.status_code == 422 and "Server-Timing" not in bad.headers


def test_unknown_ids_skipped_and_listed(app_url, history) -> None:
    body = post(app_url, "/recommend", {"history": ["toys/NOPE", *history, "nowhere/x"], "domain": DOMAIN,
                                        "k": 3}).json()
    assert body["skipped_items"] == ["toys/NOPE", "nowhere/x"] and body["used_items"] == len(history)
    assert body["fallback"] is None and len(body["items"]) == 3


def test_no_known_item_falls_back_to_domain_popularity(app_url, tiny_dataset, model_view) -> None:
    index = model_view[1]
    body = post(app_url, "/recommend", {"history": ["toys/NOPE"], "domain": DOMAIN, "k": 4}).json()
    assert body["fallback"] == "popular" and body["skipped_items"] == ["toys/NOPE"] and body["used_items"] == 0
    inter = pd.read_parquet(tiny_dataset / "interactions.parquet", columns=["item_id"])
    counts = inter["item_id"].value_counts()
    dom = [i for i in index.item_ids if index.domains[index.lookup([i])[0] - 1] == DOMAIN]
    expected = sorted(dom, key=lambda i: -counts.get(i, 0))[:4]  # stable: index order among ties
    assert [i["item_id"] for i in body["items"]] == expected
    assert [i["score"] for i in body["items"]] == [float(counts[i]) for i in expected]
    empty = post(app_url, "/recommend", {"history": [], "domain": DOMAIN, "k": 4}).json()
    assert empty["fallback"] == "popular" and [i["item_id"] for i in empty["items"]] == expected


def test_onboarded_item_is_matched_and_recommendable_at_once(app_url, history, model_view) -> None:
    model, index, enc, vecs = model_view
    new = {"item_id": "toys/NEW-ZEPHYR-1", "domain": DOMAIN, "title": "zephyr glacier telescope puzzle kit",
           "category": "puzzles", "price": 12.5}
    r = post(app_url, "/items", {"items": [new]})
    assert r.status_code == 201, r.text
    out = r.json()["items"][0]
    assert out["item_id"] == new["item_id"] and len(out["neighbours"]) == 10
    assert out["method"] == "cdim" and out["views"] == ["text"]
    w = np.array([n["weight"] for n in out["neighbours"]])
    assert w.sum() == pytest.approx(1.0, abs=1e-5) and (w >= 0).all()
    assert all(n["item_id"].split("/")[0] in ("books", "movies", "electronics") for n in out["neighbours"])
    # /match: the new item's own text finds it first, with cosine ~1
    m = post(app_url, "/match", {"text": new["title"], "k": 5}).json()["items"]
    assert m[0]["item_id"] == new["item_id"] and m[0]["onboarded"] is True and m[0]["score"] > 0.99
    assert all(not x["onboarded"] for x in m[1:]) and m[1]["score"] < m[0]["score"]
    got = requests.get(f"{app_url}/items/{new['item_id']}", timeout=10).json()
    assert got["onboarded"] is True and got["title"] == new["title"] and got["price"] == 12.5
    # recommendable at once, scored with the eq.-9 embedding: sum_j w_j * v_j of its neighbours
    emb = sum(n["weight"] * vecs[index.lookup([n["item_id"]])[0] - 1] for n in out["neighbours"])
    u = enc.encode([history])[0].vector
    rec = post(app_url, "/recommend", {"history": history, "domain": DOMAIN, "k": 100}).json()["items"]
    mine = [i for i in rec if i["item_id"] == new["item_id"]]
    assert len(mine) == 1 and mine[0]["score"] == pytest.approx(float(emb @ u), rel=1e-3, abs=1e-4)
    h = requests.get(f"{app_url}/healthz", timeout=10).json()
    assert h["catalogue"]["onboarded_items"] >= 1
    # onboarding the same id again, or a pre-trained id, is a conflict
    dup = post(app_url, "/items", {"items": [new]})
    assert dup.status_code == 409 and dup.json()["error"] == "duplicate_item"
    pre = post(app_url, "/items", {"items": [{**new, "item_id": history[0]}]})
    assert pre.status_code == 409 and pre.json()["detail"]["item_ids"] == [history[0]]


def test_get_known_item(app_url, history) -> None:
    got = requests.get(f"{app_url}/items/{history[0]}", timeout=10)
    assert got.status_code == 200 and got.json()["domain"] == DOMAIN and got.json()["onboarded"] is False
    assert got.json()["popularity"] > 0


def test_v1_paths_answer_as_the_unversioned_ones(app_url, history) -> None:
    body = {"history": history, "domain": DOMAIN, "k": 5}
    assert post(app_url, "/v1/recommend", body).json() == post(app_url, "/recommend", body).json()
    v1 = requests.get(f"{app_url}/v1/items/{history[0]}", timeout=10)
    assert v1.status_code == 200 and v1.json() == requests.get(f"{app_url}/items/{history[0]}", timeout=10).json()
    health = requests.get(f"{app_url}/v1/health", timeout=10).json()
    assert health["status"] == "ok" and health["catalogue"]["trained_items"] > 200
    paths = set(requests.get(f"{app_url}/openapi.json", timeout=10).json()["paths"])
    for p in ("/recommend", "/items", "/domains", "/match", "/events", "/explain"):
        assert {p, f"/v1{p}"} <= paths
    assert {"/v1/health", "/v1/items/{item_id}/similar", "/v1/items/{item_id}", "/v1/rank"} <= paths
    wrong = post(app_url, "/v1/recommend", {"history": "x", "domain": DOMAIN})
    assert wrong.status_code == 422 and wrong.json()["error"] == "invalid_request"


def test_rank_orders_the_clients_candidates_by_the_models_exact_scores(app_url, history, model_view) -> None:
    _, index, enc, vecs = model_view
    rows = np.flatnonzero(index.domains == DOMAIN)
    cands = [str(index.item_ids[r]) for r in rows[:12]] + [str(index.item_ids[np.flatnonzero(index.domains != DOMAIN)[0]])]
    r = post(app_url, "/v1/rank", {"history": history, "candidates": cands + ["toys/NOPE"]})
    assert r.status_code == 200, r.text
    body = r.json()
    u = enc.encode([history])[0].vector
    exact = sorted(cands, key=lambda i: -float(vecs[index.lookup([i])[0] - 1] @ u))
    assert [i["item_id"] for i in body["items"]] == exact  # every known candidate, any domain, best first
    assert [i["score"] for i in body["items"]] == pytest.approx(
        [float(vecs[index.lookup([i])[0] - 1] @ u) for i in exact], rel=1e-4, abs=1e-5)
    assert body["unknown_candidates"] == ["toys/NOPE"] and body["fallback"] is None and body["reranked"] is False
    assert body["used_items"] == len(history)
    # no known history item: the candidates by popularity, as /recommend's fallback
    cold = post(app_url, "/v1/rank", {"history": ["toys/NOPE"], "candidates": cands[:5]}).json()
    assert cold["fallback"] == "popular" and cold["skipped_items"] == ["toys/NOPE"]
    pops = [requests.get(f"{app_url}/items/{i}", timeout=10).json()["popularity"] for i in cands[:5]]
    assert [i["score"] for i in cold["items"]] == sorted(map(float, pops), reverse=True)
    dup = post(app_url, "/v1/rank", {"history": history, "candidates": [cands[0], cands[0]]})
    assert dup.status_code == 422 and dup.json()["error"] == "duplicate_candidates"
    empty = post(app_url, "/v1/rank", {"history": history, "candidates": []})
    assert empty.status_code == 422 and empty.json()["error"] == "invalid_request"


def test_similar_items_are_the_exact_nearest_of_the_items_own_domain(app_url, history, model_view) -> None:
    _, index, _, vecs = model_view
    item = history[-1]
    r = requests.get(f"{app_url}/v1/items/{item}/similar", params={"k": 5}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item_id"] == item and body["domain"] == DOMAIN and body["k"] == 5
    ids = [h["item_id"] for h in body["items"]]
    # exact inner-product neighbours of the item's own vector in its domain, the item left out
    rows = np.flatnonzero(index.domains == DOMAIN)
    v = vecs[index.lookup([item])[0] - 1]
    order = [index.item_ids[rows[j]] for j in np.argsort(-(vecs[rows] @ v)) if index.item_ids[rows[j]] != item]
    assert ids == order[:5]
    assert [h["score"] for h in body["items"]] == sorted((h["score"] for h in body["items"]), reverse=True)
    missing = requests.get(f"{app_url}/v1/items/toys/NOPE/similar", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_item"
    too_many = requests.get(f"{app_url}/v1/items/{item}/similar", params={"k": 0}, timeout=10)
    assert too_many.status_code == 422 and too_many.json()["error"] == "invalid_request"


@pytest.mark.parametrize("case,status,error,field", [
    ("malformed_json", 400, "malformed_json", None),
    ("history_not_list", 422, "invalid_request", "history"),
    ("k_is_string", 422, "invalid_request", "k"),
    ("k_zero", 422, "invalid_request", "k"),
    ("k_too_large", 422, "invalid_request", "k"),
    ("unknown_field", 422, "invalid_request", "exclude_histroy"),
    ("body_is_list", 422, "invalid_request", None),
    ("unknown_domain", 422, "unknown_domain", None),
    ("oversized", 413, "body_too_large", None),
    ("oversized_chunked", 413, "body_too_large", None),
    ("invalid_utf8", 400, "bad_request", None),
])
def test_bad_recommend_requests_are_4xx_json(app_url, case, status, error, field) -> None:
    url = f"{app_url}/recommend"
    hdr = {"content-type": "application/json"}
    big = '{"history": [' + ",".join(['"x' * 1 + "y" * 200 + '"'] * 400) + '], "k": 5}'
    sends = {
        "malformed_json": lambda: requests.post(url, data='{"history": ["a", ', headers=hdr, timeout=10),
        "history_not_list": lambda: requests.post(url, json={"history": "books/a", "k": 5}, timeout=10),
        "k_is_string": lambda: requests.post(url, json={"history": [], "k": "5"}, timeout=10),
        "k_zero": lambda: requests.post(url, json={"history": [], "k": 0}, timeout=10),
        "k_too_large": lambda: requests.post(url, json={"history": [], "k": 10_000}, timeout=10),
        "unknown_field": lambda: requests.post(url, json={"history": [], "exclude_histroy": False}, timeout=10),
        "body_is_list": lambda: requests.post(url, json=[1, 2], timeout=10),
        "unknown_domain": lambda: requests.post(url, json={"history": [], "domain": "garden"}, timeout=10),
        "oversized": lambda: requests.post(url, data=big, headers=hdr, timeout=10),
        "oversized_chunked": lambda: requests.post(url, data=(c.encode() for c in [big[:40000], big[40000:]]),
                                                   headers=hdr, timeout=10),
        "invalid_utf8": lambda: requests.post(url, data=b'{"history": ["\xff"]}', headers=hdr, timeout=10),
    }
    r = sends[case]()
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == error and body["detail"]
    if field is not None:
        assert any(field in p["loc"] for p in body["detail"]), body


EIGHT_MB = b'{"history": ["' + b"x" * (8 * 1024 * 1024) + b'"]}'
JSON = {"content-type": "application/json"}


def post_whole_body(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, dict, str | None]:
    """POST with http.client, which sends the whole body before it reads the answer and raises a send error
    (urllib3, under ``requests``, swallows one and reads the answer anyway)."""
    conn.request("POST", path, body=body, headers=JSON)
    r = conn.getresponse()
    return r.status, json.loads(r.read()), r.getheader("connection")


def test_oversized_bodies_always_get_their_413(app_url) -> None:
    """8 MB bodies through Serve's proxy each get their 413 JSON answer, never a connection reset.  The
    413 used to close the connection with the body unread: 4 of 30 such POSTs one at a time, 22 of 30
    four at a time, were reset before the client could read the answer (docs/ARCHITECTURE.md, "Serving")."""
    u = urlsplit(app_url)
    path = f"{u.path}/v1/recommend"

    def one(_: int) -> tuple:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        try:
            status, body, _ = post_whole_body(conn, path, EIGHT_MB)
            return status, body["error"]
        except OSError as e:  # ConnectionResetError, BrokenPipeError
            return type(e).__name__, None
        finally:
            conn.close()

    one_at_a_time = [one(i) for i in range(10)]
    with ThreadPoolExecutor(4) as pool:
        four_at_a_time = list(pool.map(one, range(8)))
    assert one_at_a_time + four_at_a_time == [(413, "body_too_large")] * 18
    # requests: declared and streamed (chunked) bodies
    for data in (EIGHT_MB, (EIGHT_MB[i:i + 65536] for i in range(0, len(EIGHT_MB), 65536))):
        r = requests.post(f"{app_url}/v1/recommend", data=data, headers=JSON, timeout=60)
        assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    # the connection stays open: the server read and dropped the rest of the body, and answers the next request
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        status, body, connection = post_whole_body(conn, path, EIGHT_MB)
        assert status == 413 and body["error"] == "body_too_large" and connection != "close"
        status, body, _ = post_whole_body(conn, path, json.dumps({"history": [], "k": 2}).encode())
        assert status == 200 and len(body["items"]) == 2
    finally:
        conn.close()


def test_a_body_declared_over_the_drain_cap_is_refused_and_the_connection_closed(app_url) -> None:
    from raypipe.serve.errors import DRAIN_CAP_BYTES

    u = urlsplit(app_url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"POST {u.path}/v1/recommend HTTP/1.1\r\nHost: {u.hostname}\r\ncontent-type: application/json"
                  f"\r\ncontent-length: {DRAIN_CAP_BYTES + 1}\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):  # the server closes after its answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "body_too_large"


def test_other_bad_requests(app_url) -> None:
    r = requests.get(f"{app_url}/items/toys/NOPE", timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "unknown_item"
    r = requests.post(f"{app_url}/items", json={"items": [{"item_id": "toys/z", "domain": "toys"}]}, timeout=10)
    assert r.status_code == 422 and "title or category" in r.text
    # the CDIM matcher reads text: an image alone is named as unusable, and a bad image encoding is 422 too
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    r = requests.post(f"{app_url}/items", json={"items": [{"item_id": "toys/z", "domain": "toys", "image": png}]},
                      timeout=10)
    assert r.status_code == 422 and r.json()["error"] == "no_text" and r.json()["detail"]["items"] == ["items[0]"]
    r = requests.post(f"{app_url}/items", json={"items": [{"item_id": "toys/z", "domain": "toys", "title": "t",
                                                           "image": "not base64!"}]}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "image"
    r = requests.post(f"{app_url}/items", json={"items": [{"item_id": "toys/z", "domain": "garden", "title": "t"}]},
                      timeout=10)
    assert r.status_code == 422 and r.json()["error"] == "unknown_domain"
    r = requests.post(f"{app_url}/match", json={"text": "   "}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "text"
    r = requests.post(f"{app_url}/match", json={"text": "a", "k": 51}, timeout=10)
    assert r.status_code == 422
    r = requests.get(f"{app_url}/recommend", timeout=10)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    r = requests.get(f"{app_url}/nope", timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    # SASRec has no popularity term: events are refused, not silently dropped
    ev = {"events": [{"user_id": "u", "item_id": "toys/1", "timestamp": 1}]}
    r = requests.post(f"{app_url}/events", json=ev, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "no_live_popularity"
    r = requests.post(f"{app_url}/events", json={"events": [{"user_id": "u", "item_id": "toys/1"}]}, timeout=10)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "timestamp"
    # the CDIM matcher onboards by neighbours in trained domains: no new domains, and nothing is registered
    r = requests.post(f"{app_url}/domains", json={"domain": "brand-new"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "no_new_domains"
    r = requests.post(f"{app_url}/recommend", json={"history": [], "domain": "brand-new"}, timeout=10)
    assert r.status_code == 422 and r.json()["error"] == "unknown_domain"
    r = requests.post(f"{app_url}/domains", json={"domain": ""}, timeout=10)
    assert r.status_code == 422


def test_http_listens_on_loopback_only(app_url, serve_port) -> None:
    if shutil.which("ss") is None:
        pytest.skip("ss not installed")
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    binds = [line.split()[3] for line in out.splitlines() if line.split()[3].endswith(f":{serve_port}")]
    assert binds and all(b.startswith("127.0.0.1:") for b in binds), binds
    # every socket of the proxy and the replicas, including Serve's inter-deployment gRPC servers (which
    # Ray binds to [::] unless raypipe.serve.loopback pins them)
    serve_socks = [line.split()[3] for line in out.splitlines() if "ray::ServeRepli" in line or "ray::ProxyActor" in line]
    assert len(serve_socks) >= 5, out
    off = [b for b in serve_socks if not b.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))]
    assert not off, off


def test_replica_memory_finds_every_deployments_replica_process(app_url) -> None:
    """``replica_memory`` (what bench_serve records to size ``ray_actor_options.memory``) finds each
    replica's process by its title: one per deployment here, with USS ≤ RSS, and the MiniLM matcher's
    replica holding more than the ingress's."""
    from raypipe.serve.replicas import replica_memory

    mem = replica_memory("rec")
    assert set(mem) == {"Recommender", "SequenceEncoder", "ANNRetriever", "CDIMMatcher"}, mem
    for deployment, procs in mem.items():
        assert len(procs) == 1, (deployment, procs)
        assert 0 < procs[0]["uss"] <= procs[0]["rss"], (deployment, procs)
    assert mem["CDIMMatcher"][0]["uss"] > mem["Recommender"][0]["uss"], mem
    assert replica_memory("no-such-app") == {}


def test_concurrent_recommends_share_deployment_calls_and_answer_each_request(app_url, history, model_view) -> None:
    """The ingress batches concurrent /recommend requests into one encoder and one retriever call; each
    request still gets its own exact answer (different k, history lengths, and an all-unknown history)."""
    from concurrent.futures import ThreadPoolExecutor

    model, index, enc, vecs = model_view
    rows = np.flatnonzero(index.domains == DOMAIN)
    bodies = [{"history": history[-n:], "domain": DOMAIN, "k": k} for n, k in
              [(1, 3), (2, 5), (3, 7), (4, 2), (5, 9), (6, 4)] * 4]
    bodies.append({"history": ["toys/NOPE"], "domain": DOMAIN, "k": 3})
    before = requests.get(f"{app_url}/healthz", timeout=10).json()["ingress_batching"]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: post(app_url, "/recommend", b), bodies))
    health = requests.get(f"{app_url}/healthz", timeout=10).json()
    after = health["ingress_batching"]
    # the ingress replica's GC pauses (what each answer's `gc` timing draws on)
    assert set(health["ingress_gc"]) == {"gen0", "gen1", "gen2"} and health["ingress_gc"]["gen0"]["n"] > 0
    assert after["requests"] - before["requests"] == len(bodies)
    assert after["batches"] - before["batches"] < len(bodies)  # some requests shared a batch
    for body, r in zip(bodies[:-1], answers[:-1]):
        assert r.status_code == 200, r.text
        u = enc.encode([body["history"]])[0].vector
        cand = [i for i in rows if index.item_ids[i] not in set(body["history"])]
        exact = [index.item_ids[i] for i in sorted(cand, key=lambda i: -float(vecs[i] @ u))[:body["k"]]]
        assert [i["item_id"] for i in r.json()["items"]] == exact
    last = answers[-1].json()
    assert last["fallback"] == "popular" and len(last["items"]) == 3


def test_colocated_app_answers_as_the_composed_one_with_no_deployment_hops(serve_port, idp_artifacts, history,
                                                                           tmp_path_factory) -> None:
    """colocate=true: the encoder and retriever run inside the ingress replica (no SequenceEncoder or
    ANNRetriever deployment), with the same answers; onboarded items reach its retriever too."""
    from ray import serve

    from raypipe.serve.app import build_app
    from raypipe.serve.replicas import replica_names
    from raypipe.serve.timing import parse_server_timing
    from .conftest import deploy

    with pytest.raises(ValueError, match="colocate=true.*scale the Recommender"):
        build_app({"artifacts": str(idp_artifacts), "colocate": True, "num_replicas": {"SequenceEncoder": 2}})
    state = tmp_path_factory.mktemp("colo_state")
    composed = deploy("composed2", serve_port, {"artifacts": str(idp_artifacts), "state_dir": str(state)})
    colo = deploy("colo", serve_port, {"artifacts": str(idp_artifacts), "state_dir": str(state), "colocate": True})
    try:
        assert replica_names("colo", "SequenceEncoder") == [] and replica_names("colo", "ANNRetriever") == []
        assert len(replica_names("composed2", "SequenceEncoder")) == 1
        assert requests.get(f"{colo}/healthz", timeout=10).json()["serving"]["colocated"] is True
        for body in ({"history": history, "domain": DOMAIN, "k": 7}, {"history": ["toys/NOPE"], "domain": DOMAIN, "k": 3},
                     {"history": history[-2:], "k": 5}):
            a, b = post(composed, "/v1/recommend", body), post(colo, "/v1/recommend", body)
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert a.json() == b.json()
            hops = parse_server_timing(b.headers["Server-Timing"])
            assert hops["encode"] > 0.0 and hops["retrieve"] > 0.0
        # an item onboarded through the colocated app is in its (in-replica) retriever at once
        new = {"item_id": "toys/NEW-COLO-1", "domain": DOMAIN, "title": "colocated kite of glass"}
        assert post(colo, "/items", {"items": [new]}).status_code == 201
        assert requests.get(f"{colo}/items/{new['item_id']}", timeout=10).json()["onboarded"] is True
    finally:
        serve.delete("colo")
        serve.delete("composed2")
