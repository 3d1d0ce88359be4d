"""Serving bundles (raypipe.serve.bundle, ``raypipe bundle``): the tiny IDP pipeline exported with its model,
item vectors, popularity, attributes and CDIM files; its manifest and hashes; atomic writes and the rules
for ``--out``; and the recommender app started from the bundle alone, with the training dataset and the
pipeline directory moved away (one app start)."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pytest
import requests

from raypipe import commands
from raypipe.data.sequences import ItemIndex
from raypipe.serve.artifacts import (
    ServingSpec, is_run_dir, item_attributes, item_vectors, load_model, popularity,
)
from raypipe.serve.bundle import (
    ATTRIBUTES_FILE, BUNDLE_FILE, BundleError, export_bundle, read_events, read_manifest, read_vectors,
    verify_bundle,
)
from raypipe.serve.encoder import HistoryEncoder

from .conftest import deploy
from .test_content_app import u2r_run  # noqa: F401 -- the module-scoped UniM2Rec run fixture

DOMAIN = "toys"


@pytest.fixture(scope="module")
def source_spec(idp_artifacts: Path) -> ServingSpec:
    return ServingSpec.resolve(idp_artifacts)


@pytest.fixture(scope="module")
def bundle(idp_artifacts: Path, tmp_path_factory) -> Path:
    return export_bundle(idp_artifacts, tmp_path_factory.mktemp("bundles") / "idp")


@contextlib.contextmanager
def moved_away(*dirs: Path) -> Iterator[None]:
    """The directories renamed for the block (the session's dataset and pipeline: put back afterwards)."""
    done: list[tuple[Path, Path]] = []
    try:
        for d in dirs:
            hidden = d.with_name(d.name + ".moved-away")
            d.rename(hidden)
            done.append((d, hidden))
        yield
    finally:
        for d, hidden in reversed(done):
            hidden.rename(d)


def served_model(run: Path) -> tuple[ItemIndex, HistoryEncoder, np.ndarray]:
    """A run's (or bundle's) item index, history encoder and item vectors, as the app's deployments build them."""
    model, index, cfg = load_model(run)
    return index, HistoryEncoder(model, index, cfg.data.max_len), item_vectors(model, len(index))


def busiest_history(dataset: Path, index: ItemIndex) -> tuple[pd.DataFrame, list[str]]:
    """The dataset's :data:`DOMAIN` interactions with indexed items, and the last 6 items of its busiest user."""
    inter = pd.read_parquet(dataset / "interactions.parquet")
    inter = inter[(inter["domain"] == DOMAIN) & inter["item_id"].isin(set(index.item_ids))]
    user = inter["user_id"].value_counts().index[0]
    return inter, list(inter[inter["user_id"] == user].sort_values("timestamp")["item_id"])[-6:]


def test_the_bundle_holds_what_the_app_reads_with_its_manifest(bundle: Path, source_spec: ServingSpec,
                                                                tiny_dataset: Path) -> None:
    m = verify_bundle(bundle)  # every file's size and SHA-256
    assert m["format"] == "raypipe.bundle/1" and m["source"]["run_dir"] == source_spec.run_dir
    assert (m["model"], m["num_items"], m["domains"], m["pretrained_domains"]) == (
        source_spec.model_name, source_spec.num_items, source_spec.domains, source_spec.pretrained_domains)
    assert m["onboarding"] == "cdim" and m["cdim"] == "tuned" and m["live_popularity"] is False
    assert "retrieval" in m["capabilities"] and m["features"] is None and m["cdim_config"] == source_spec.cdim_config
    assert {"config.yaml", "model.pt", "item_index.parquet", "item_vectors.parquet", "popularity.parquet",
            ATTRIBUTES_FILE, "cdim/model.pt", "cdim_index/meta.json"} <= set(m["files"])
    assert is_run_dir(bundle) and not (bundle / "popularity_events.parquet").exists()
    assert [p.name for p in bundle.parent.iterdir()] == ["idp"]  # no temporary directory left beside it
    # the contents equal what the app computes from the run and its dataset
    model, index, _ = load_model(source_spec.run_dir)
    ids, doms, vecs = read_vectors(bundle)
    assert ids == list(index.item_ids) and doms == list(index.domains) and vecs.shape[1] == m["vector_dim"]
    np.testing.assert_array_equal(vecs, item_vectors(model, len(index)))
    from raypipe.serve.bundle import read_popularity

    np.testing.assert_array_equal(read_popularity(bundle, index), popularity(tiny_dataset, index))
    assert m["interactions"] == int(popularity(tiny_dataset, index).sum()) > 0
    from raypipe.serve.artifacts import attributes_table

    pd.testing.assert_frame_equal(attributes_table(bundle / ATTRIBUTES_FILE, index).astype(object),
                                  item_attributes(tiny_dataset, index).astype(object), check_dtype=False)
    assert (bundle / "cdim" / "model.pt").read_bytes() == (Path(source_spec.cdim_dir) / "model.pt").read_bytes()
    assert len(read_events(bundle, index)[0]) == 0


def test_a_bundle_resolves_as_a_spec_and_damage_is_named(bundle: Path, tmp_path: Path) -> None:
    spec = ServingSpec.resolve(bundle)
    assert (spec.bundle, spec.dataset, spec.run_dir) == (str(bundle), None, str(bundle))
    assert spec.cdim_dir == str(bundle / "cdim") and spec.cdim_index == str(bundle / "cdim_index")
    assert spec.state_dir == str(bundle / "serve_state") and spec.description["bundle"] == str(bundle)
    with pytest.raises(ValueError, match="variant"):
        ServingSpec.resolve(bundle, variant="pretrain")
    with pytest.raises(ValueError, match="dataset"):
        ServingSpec.resolve(bundle, dataset=tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    path = copy / "popularity.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the hash tells
    path.write_bytes(bytes(data))
    ServingSpec.resolve(copy)
    with pytest.raises(BundleError, match="popularity.parquet does not match its SHA-256"):
        verify_bundle(copy)
    path.write_bytes(bytes(data[:-10]))  # truncated: resolving already names it
    with pytest.raises(BundleError, match="popularity.parquet has"):
        ServingSpec.resolve(copy)
    manifest = json.loads((copy / BUNDLE_FILE).read_text())
    (copy / BUNDLE_FILE).write_text(json.dumps({**manifest, "format": "raypipe.bundle/99"}))
    with pytest.raises(BundleError, match="raypipe.bundle/99"):
        read_manifest(copy)


def test_out_dir_rules_and_atomic_writes(idp_artifacts: Path, tmp_path: Path, monkeypatch) -> None:
    import raypipe.serve.bundle as bundles

    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="--force"):
        export_bundle(idp_artifacts, out)
    assert (out / "notes.txt").read_text() == "keep me"
    with pytest.raises(BundleError, match="holds what the bundle is exported from"):
        export_bundle(idp_artifacts, idp_artifacts.parent, force=True)
    # a failure while writing leaves the old directory as it was and no temporary one
    monkeypatch.setattr(bundles, "_copy_features", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        export_bundle(idp_artifacts, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"] and (out / "notes.txt").is_file()
    monkeypatch.undo()
    export_bundle(idp_artifacts, out, variant="pretrain", force=True)  # replaced as a whole
    assert not (out / "notes.txt").exists() and read_manifest(out)["source"]["run_dir"].endswith("pretrain")
    assert verify_bundle(out)["source"]["variant"] == "pretrain"


def test_the_command_exports_and_names_bad_arguments(idp_artifacts: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def code(argv: list[str]) -> int:
        try:
            return commands.main(argv)
        except SystemExit as e:
            return int(e.code or 0)

    out = tmp_path / "cli"
    assert code(["bundle", str(idp_artifacts), "--out", str(out), "--variant", "idp_zero_shot"]) == 0
    assert f"raypipe serve artifacts={out}" in capsys.readouterr().out and verify_bundle(out)
    for argv, named in [
        (["bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "x")], f"artifacts: {tmp_path / 'nope'}"),
        (["bundle", str(idp_artifacts), "--out", str(out)], f"--out: {out} is not empty"),
        (["bundle", str(idp_artifacts), "--out", str(tmp_path / "y"), "--variant", "nosuch"], "nosuch"),
        (["bundle", str(idp_artifacts), "--out", str(tmp_path / "z"), "--onboarding", "content"],
         "onboarding=content"),
        (["bundle", str(idp_artifacts)], "--out"),
    ]:
        assert code(argv) == 2, argv
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]


def test_a_bundle_published_to_storage_is_served_from_each_nodes_own_copy(
        idp_artifacts: Path, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    from raypipe.serve.artifacts import on_this_node

    uri = (tmp_path / "store" / "idp-bundle").as_uri()
    monkeypatch.setenv("RAYPIPE_CACHE", str(tmp_path / "node-a"))
    assert commands.main(["bundle", str(idp_artifacts), "--out", uri]) == 0
    assert f"raypipe serve artifacts={uri}" in capsys.readouterr().out
    assert verify_bundle(tmp_path / "store" / "idp-bundle")
    with pytest.raises(SystemExit) as e:  # published once: a second export must say --force
        commands.main(["bundle", str(idp_artifacts), "--out", uri])
    assert e.value.code == 2 and f"--out: {uri} is not empty" in capsys.readouterr().err
    spec = ServingSpec.resolve(uri)  # node A (the one that builds the app): its cached copy
    a = tmp_path / "node-a"
    assert spec.source_uri == uri and spec.bundle and spec.bundle.startswith(str(a))
    assert spec.run_dir.startswith(str(a)) and spec.state_dir.startswith(str(a / "serve_state"))
    assert spec.cdim_dir and spec.cdim_dir.startswith(str(a))
    # a replica on node B: its own copy, every path moved into it
    monkeypatch.setenv("RAYPIPE_CACHE", str(tmp_path / "node-b"))
    b = on_this_node(spec.to_dict())
    for key in ("run_dir", "bundle", "cdim_dir", "cdim_index", "local_copy"):
        assert b[key].startswith(str(tmp_path / "node-b")) and Path(b[key]).exists(), key
    assert b["state_dir"] == spec.state_dir  # not inside the copy: kept
    model, index, _ = load_model(b["run_dir"])
    assert len(index) == spec.num_items
    assert on_this_node(b) == b  # current: nothing fetched or moved
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ServingSpec.resolve((tmp_path / "store" / "nothing").as_uri())


def test_the_app_serves_from_the_bundle_with_no_dataset_on_the_machine(
        serve_port: int, bundle: Path, idp_artifacts: Path, tiny_dataset: Path, tmp_path_factory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import serve

    index, enc, vecs = served_model(bundle)  # a bundle is a run directory
    inter, history = busiest_history(tiny_dataset, index)
    counts = inter["item_id"].value_counts()
    titles = pd.read_parquet(tiny_dataset / "items.parquet").set_index("item_id")["title"]
    rows = np.flatnonzero(index.domains == DOMAIN)
    pretrained = ServingSpec.resolve(bundle).pretrained_domains
    assert DOMAIN not in pretrained
    monkeypatch.setenv("RAYPIPE_DATA", str(tmp_path_factory.mktemp("no-data")))
    with moved_away(tiny_dataset, idp_artifacts):
        assert not tiny_dataset.exists() and not idp_artifacts.exists()
        url = deploy("bundled", serve_port, {"artifacts": str(bundle),
                                             "state_dir": str(tmp_path_factory.mktemp("bundle-state"))})
        try:
            h = requests.get(f"{url}/v1/health", timeout=10).json()
            assert h["serving"]["bundle"] == str(bundle) and h["serving"]["run_dir"] == str(bundle)
            assert h["serving"]["cdim"] == str(bundle / "cdim") and h["matcher"]["method"] == "cdim"
            assert h["catalogue"]["trained_items"] == len(index)
            # /v1/recommend: the exact dot-product ranking of the bundled model
            r = requests.post(f"{url}/v1/recommend", json={"history": history, "domain": DOMAIN, "k": 5}, timeout=30)
            assert r.status_code == 200, r.text
            u = enc.encode([history])[0].vector
            exact = [index.item_ids[rows[j]] for j in np.argsort(-(vecs[rows] @ u))
                     if index.item_ids[rows[j]] not in history][:5]
            assert [i["item_id"] for i in r.json()["items"]] == exact and r.json()["fallback"] is None
            # the popular fallback counts the dataset's interactions (from popularity.parquet)
            dom = [index.item_ids[i] for i in rows]
            cold = requests.post(f"{url}/v1/recommend", json={"history": ["toys/NOPE"], "domain": DOMAIN, "k": 4},
                                 timeout=30).json()
            expected = sorted(dom, key=lambda i: -counts.get(i, 0))[:4]
            assert cold["fallback"] == "popular" and [i["item_id"] for i in cold["items"]] == expected
            assert [i["score"] for i in cold["items"]] == [float(counts[i]) for i in expected]
            # attributes from item_attributes.parquet
            titled = next(i for i in history + dom if isinstance(titles.get(i), str))
            got = requests.get(f"{url}/v1/items/{titled}", timeout=10).json()
            assert got["title"] == titles[titled] and got["popularity"] == int(counts.get(titled, 0))
            # /v1/items/{id}/similar: the exact nearest of the item's domain
            item = history[-1]
            sim = requests.get(f"{url}/v1/items/{item}/similar", params={"k": 5}, timeout=10)
            assert sim.status_code == 200, sim.text
            v = vecs[index.lookup([item])[0] - 1]
            order = [index.item_ids[rows[j]] for j in np.argsort(-(vecs[rows] @ v)) if index.item_ids[rows[j]] != item]
            assert [x["item_id"] for x in sim.json()["items"]] == order[:5]
            # POST /v1/items: the bundled CDIM matcher and its index over the pre-trained items
            new = {"item_id": "toys/NEW-BUNDLED-1", "domain": DOMAIN, "title": "zephyr glacier telescope kit",
                   "category": "puzzles", "price": 3.5}
            r = requests.post(f"{url}/v1/items", json={"items": [new]}, timeout=60)
            assert r.status_code == 201, r.text
            out = r.json()["items"][0]
            assert out["method"] == "cdim" and len(out["neighbours"]) == 10
            assert {n["item_id"].split("/")[0] for n in out["neighbours"]} <= set(pretrained)
            got = requests.get(f"{url}/v1/items/{new['item_id']}", timeout=10).json()
            assert got["onboarded"] is True and got["title"] == new["title"]
            rec = requests.post(f"{url}/v1/recommend", json={"history": history, "domain": DOMAIN, "k": 100},
                                timeout=30).json()["items"]
            assert new["item_id"] in [i["item_id"] for i in rec]
        finally:
            serve.delete("bundled")
    assert tiny_dataset.is_dir() and idp_artifacts.is_dir()


@pytest.mark.slow
def test_a_content_model_bundle_carries_its_feature_views(u2r_run: Path, tiny_store: Path, tiny_dataset: Path,
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """UniM2Rec (text, image and a derived cross view): the bundle holds the store's text and image views and
    the run's aligner; with the store and the dataset moved away, the model and its content onboarder load
    from the bundle and give the same vectors as from the run."""
    from raypipe.serve.artifacts import content_onboarder

    b = export_bundle(u2r_run, tmp_path / "u2r")
    m = verify_bundle(b)
    assert m["onboarding"] == "content" and m["features"] == "features" and m["feature_views"] == ["image", "text"]
    assert (b / "cross_aligner.pt").is_file() and m["cdim"] is None and not (b / "cdim").exists()
    model, index, _ = load_model(u2r_run)
    want = item_vectors(model, len(index))
    new = [{"title": "storm kite", "category": "kites", "brand": None, "description": None, "price": 9.5,
            "image": None}]
    want_new = content_onboarder(u2r_run, tmp_path / "run-log.jsonl").vectors(new)[0]
    monkeypatch.chdir(tmp_path)
    with moved_away(tiny_store, tiny_dataset):
        spec = ServingSpec.resolve(b)
        assert spec.onboarding == "content" and spec.dataset is None
        model, index, cfg = load_model(b)
        assert cfg.data.features == str(b / "features")
        np.testing.assert_array_equal(item_vectors(model, len(index)), want)
        got_new = content_onboarder(b, tmp_path / "bundle-log.jsonl").vectors(new)[0]
        np.testing.assert_allclose(got_new, want_new, rtol=1e-5, atol=1e-6)
