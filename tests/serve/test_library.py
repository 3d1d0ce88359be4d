"""raypipe.serve without Ray: the onboarding log, the catalogue (ANN + popularity), the Serve config file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from raypipe.serve.catalogue import Catalogue, UnknownDomainError
from raypipe.serve.onboarding import DuplicateItemError, OnboardingLog

ROOT = Path(__file__).resolve().parents[2]


def rec(item_id: str, domain: str, vec) -> dict:
    return {"item_id": item_id, "domain": domain, "attributes": {"title": item_id}, "id_embedding": [float(x) for x in vec],
            "cdim_vector": [float(x) for x in vec]}


def test_log_is_shared_between_readers_and_refuses_duplicates(tmp_path: Path) -> None:
    a, b = OnboardingLog(tmp_path / "log.jsonl"), OnboardingLog(tmp_path / "log.jsonl")
    a.append([rec("t/1", "t", [1.0, 0.0])])
    assert [r["item_id"] for r in b.poll()] == ["t/1"] and b.poll() == []
    with pytest.raises(DuplicateItemError):
        b.append([rec("t/1", "t", [0.0, 1.0])])  # b's catch-up under the lock sees a's id
    with pytest.raises(DuplicateItemError):
        b.append([rec("t/2", "t", [0.0, 1.0])], taken=lambda i: i == "t/2")
    # a torn last line (a crash mid-write) is skipped, later records still arrive
    with open(tmp_path / "log.jsonl", "ab") as f:
        f.write(b'{"item_id": "t/9", "dom')
    b.append([rec("t/3", "t", [0.5, 0.5])])
    assert [r["item_id"] for r in a.poll()] == ["t/1", "t/3"] and a.count == 2


def test_catalogue_search_popularity_and_live_items(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    vecs = rng.normal(size=(n, 16)).astype(np.float32)
    ids = [f"{'a' if i < 200 else 'b'}/{i}" for i in range(n)]
    doms = [i.split("/")[0] for i in ids]
    counts = rng.integers(0, 5, size=n)
    log = OnboardingLog(tmp_path / "log.jsonl")
    cat = Catalogue(ids, doms, vecs, counts, None, log, ef_search=300, cache_dir=tmp_path / "ann")
    u = rng.normal(size=16).astype(np.float32)
    got = cat.search(u, "a", 10, exclude=["a/0", "a/1"])
    scores = vecs[:200] @ u
    exact = [ids[j] for j in np.argsort(-scores) if ids[j] not in ("a/0", "a/1")][:10]
    assert [g[0] for g in got] == exact and all(g[1] == "a" for g in got)
    both = cat.search(u, None, 5)
    assert [g[0] for g in both] == [ids[j] for j in np.argsort(-(vecs @ u))[:5]]
    pop = cat.popular_items("b", 5, exclude=[])
    rows = np.arange(200, 300)
    assert [p[0] for p in pop] == [ids[r] for r in rows[np.argsort(-counts[rows], kind="stable")][:5]]
    with pytest.raises(UnknownDomainError):
        cat.search(u, "zzz", 3)
    # an item appended to the log by another process is searchable on the next call
    OnboardingLog(tmp_path / "log.jsonl").append([rec("b/new", "b", 10 * u)])
    assert cat.search(u, "b", 1)[0][0] == "b/new" and cat.get("b/new")["onboarded"] is True
    assert cat.stats()["onboarded_items"] == 1
    # a second catalogue loads the cached graphs and agrees
    again = Catalogue(ids, doms, vecs, counts, None, OnboardingLog(tmp_path / "log.jsonl"), ef_search=300,
                      cache_dir=tmp_path / "ann")
    assert [g[0] for g in again.search(u, "a", 10, exclude=["a/0", "a/1"])] == exact


def test_similar_items_of_trained_and_onboarded_items(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(120, 8)).astype(np.float32)
    ids = [f"{'a' if i < 80 else 'b'}/{i}" for i in range(120)]
    cat = Catalogue(ids, [i.split("/")[0] for i in ids], vecs, None, None, OnboardingLog(tmp_path / "log.jsonl"),
                    ef_search=200)
    domain, got = cat.similar("a/3", 6)
    assert domain == "a"
    exact = [ids[j] for j in np.argsort(-(vecs[:80] @ vecs[3])) if j != 3][:6]
    assert [g[0] for g in got] == exact and all(g[1] == "a" for g in got)  # its own domain, itself left out
    # an onboarded item's neighbours: by its logged vector, in its domain; it is also a neighbour of others
    OnboardingLog(tmp_path / "log.jsonl").append([rec("b/new", "b", 5 * vecs[100])])
    assert [g[0] for g in cat.similar("b/new", 1)[1]] == ["b/100"]
    assert cat.similar("b/100", 1)[1][0][0] == "b/new"
    assert cat.similar("nope", 3) is None


def test_a_deleted_item_leaves_every_answer_on_every_replica(tmp_path: Path) -> None:
    from raypipe.serve.deletions import AlreadyDeletedError, DeletionLog

    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(60, 8)).astype(np.float32)
    ids = [f"a/{i}" for i in range(60)]
    counts = np.arange(60)[::-1]  # a/0 the most popular
    onboarding = tmp_path / "log.jsonl"

    def replica() -> Catalogue:
        return Catalogue(ids, ["a"] * 60, vecs, counts, None, OnboardingLog(onboarding), ef_search=200,
                         deletion_log=DeletionLog(tmp_path / "deleted.jsonl"))

    one, two = replica(), replica()
    OnboardingLog(onboarding).append([rec("a/new", "a", 3 * vecs[7])])
    u = vecs[5]
    top = [g[0] for g in one.search(u, "a", 3)]
    assert top[0] == "a/5" and one.get("a/new") is not None
    log = DeletionLog(tmp_path / "deleted.jsonl")
    log.delete("a/5")
    log.delete("a/new")
    with pytest.raises(AlreadyDeletedError):
        DeletionLog(tmp_path / "deleted.jsonl").delete("a/5")
    for cat in (one, two, replica()):  # replicas running before, and one started after
        assert "a/5" not in [g[0] for g in cat.search(u, "a", 10)]
        assert "a/new" not in [g[0] for g in cat.search(vecs[7], "a", 10)]
        assert cat.get("a/5") is None and cat.get("a/new") is None and cat.similar("a/5", 3) is None
        assert "a/5" not in [g[0] for g in cat.similar("a/4", 59)[1]]
        scored, unknown = cat.score_items(u, ["a/5", "a/6", "a/new"])
        assert [g[0] for g in scored] == ["a/6"] and unknown == ["a/5", "a/new"]
        assert cat.stats()["deleted_items"] == 2 and cat.stats()["items"] == 59
    assert [p[0] for p in one.popular_items("a", 3)] == ["a/0", "a/1", "a/2"]
    one.deletion_log.delete("a/0")  # through the replica's own log (as the app's DELETE does)
    assert [p[0] for p in one.popular_items("a", 3)] == ["a/1", "a/2", "a/3"]
    # a popularity update rewrites the graphs' vectors: it must not bring a deleted item back
    one.apply_popularity(np.linspace(0, 1, 60, dtype=np.float32), counts, 0.0)
    assert "a/5" not in [g[0] for g in one.search(u, "a", 59)] and "a/0" not in [g[0] for g in one.search(u, "a", 59)]
    assert [p[0] for p in one.popular_items("a", 2)] == ["a/1", "a/2"]


def test_serve_config_is_valid_and_binds_loopback() -> None:
    from ray.serve.schema import ServeDeploySchema

    cfg = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve_apps" / "recommender.yaml").read_text()))
    assert cfg.http_options.host == "127.0.0.1"
    app = cfg.applications[0]
    assert app.import_path == "raypipe.serve.app:build_app"
    names = {d.name for d in app.deployments}
    assert names == {"Recommender", "SequenceEncoder", "ANNRetriever", "CDIMMatcher"}
    assert all(d.autoscaling_config for d in app.deployments)


def test_the_app_imports_from_the_installed_package_without_pythonpath(tmp_path: Path) -> None:
    """What ``serve run raypipe.serve.app:build_app`` and every replica import: from any directory, with no
    ``PYTHONPATH``; the deployments' classes live in the package (replicas unpickle them from there), and
    the former path ``serve_apps.recommender`` is the same app."""
    import os
    import subprocess
    import sys

    code = ("import json, raypipe.serve.app as a; from ray.serve import Deployment; "
            "d = {n: v.func_or_class.__module__ for n, v in vars(a).items() if isinstance(v, Deployment)}; "
            "print(json.dumps({'builder': callable(a.build_app), 'deployments': d}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["builder"] is True
    assert {"Recommender", "SequenceEncoder", "ANNRetriever", "CDIMMatcher"} <= set(got["deployments"])
    assert set(got["deployments"].values()) == {"raypipe.serve.app"}
    former = subprocess.run([sys.executable, "-c", "import serve_apps.recommender"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert former.returncode != 0  # the former path needs the checkout on the path, the package does not
    import raypipe.serve.app as app
    import serve_apps.recommender as shim  # from the repository root (pytest's rootdir is on sys.path)

    assert shim.build_app is app.build_app and shim.Recommender is app.Recommender
