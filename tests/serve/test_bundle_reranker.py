"""A serving bundle with the reranker slot's model (``raypipe bundle ... --reranker RUN_DIR``): a tiny UPSR run
bundled with the tiny IDP pipeline's served model; its files in the manifest; bad ``--reranker`` arguments
refused before anything is written; the app started on the bundle alone (dataset, pipeline and UPSR run
moved away) reranks exactly as the same app with ``reranker_run=`` the original run; a bundle in storage
gives each node its own copy of the reranker."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import requests

from raypipe import commands
from raypipe.data.sequences import ItemIndex
from raypipe.serve.artifacts import ServingSpec, is_run_dir, load_reranker
from raypipe.serve.bundle import BUNDLE_FILE, BundleError, export_bundle, read_manifest, verify_bundle
from raypipe.serve.rerank import ModelReranker
from raypipe.serve.timing import parse_server_timing

from .conftest import deploy
from .test_bundle import DOMAIN, busiest_history, moved_away, served_model
from .test_content_app import u2r_run  # noqa: F401 -- the module-scoped UniM2Rec run fixture (slow test)

RERANK_DEPTH = 3  # the app's default: the reranker sees k * 3 candidates


@pytest.fixture(scope="module")
def upsr_run(ray_local, tiny_dataset: Path, tmp_path_factory) -> Path:
    """A tiny UPSR run (random small T5 with its catalogue-trained tokenizer, one short epoch) on tiny."""
    from raypipe.config import load_config
    from raypipe.train.run import run_experiment

    cfg = load_config(None, ["model.name=upsr", f"data.dataset={tiny_dataset}", "model.backbone=t5-random",
                             "model.vocab_size=600", "model.d_model=64", "model.d_ff=128", "model.num_layers=2",
                             "model.num_heads=2", "train.epochs=1", "train.max_rows=64", "train.valid_users=20",
                             "train.optim.grad_accum=1", "eval.test_users=20", "run.stage=finetune",
                             f"run.storage_path={tmp_path_factory.mktemp('upsr_runs')}", "run.name=upsr"])
    return run_experiment(cfg).run_dir


@pytest.fixture(scope="module")
def rbundle(idp_artifacts: Path, upsr_run: Path, tmp_path_factory) -> Path:
    return export_bundle(idp_artifacts, tmp_path_factory.mktemp("rbundles") / "idp-upsr", reranker=upsr_run)


def _scores(run: Path, history: list[int], candidates: list[list[int]]) -> np.ndarray:
    """The reranker slot's model of ``run`` (as the Reranker deployment loads it) scoring candidates."""
    import torch

    from raypipe.data.sequences import pad_left

    model, _, cfg = load_reranker(run)
    with torch.inference_mode():
        return model.score(torch.as_tensor(pad_left([np.asarray(history)], cfg.data.max_len)),
                           torch.as_tensor(candidates)).numpy()


def _code(argv: list[str]) -> int:
    try:
        return commands.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_the_bundle_carries_the_reranker_run_and_its_item_texts(rbundle: Path, upsr_run: Path,
                                                                tiny_dataset: Path, tmp_path: Path) -> None:
    from raypipe.serve.launch import check_recommender_args

    m = verify_bundle(rbundle)
    r = m["reranker"]
    assert m["format"] == "raypipe.bundle/1" and m["model"] == "sasrec"
    uindex = ItemIndex.load(upsr_run / "item_index.parquet")
    assert (r["model"], r["num_items"], r["source"]["run_dir"]) == ("upsr", len(uindex), str(upsr_run))
    assert "scorer" in r["capabilities"] and r["dataset"] == "dataset" and r["features"] is None
    rr = rbundle / "reranker"
    assert {f"reranker/{f}" for f in ("config.yaml", "model.pt", "item_index.parquet", "metrics.json",
                                      "dataset/items.parquet", "dataset/interactions.parquet",
                                      "dataset/dataset.json")} <= set(m["files"])
    for f in ("config.yaml", "model.pt", "item_index.parquet"):
        assert (rr / f).read_bytes() == (upsr_run / f).read_bytes(), f
    # the dataset reduced to what the catalogue reads: the indexed items' texts, their interactions' times
    items = pq.read_table(rr / "dataset" / "items.parquet").to_pandas().set_index("item_id")
    assert sorted(items.index) == sorted(uindex.item_ids) and not {"image", "image_path"} & set(items.columns)
    src = pd.read_parquet(tiny_dataset / "items.parquet").set_index("item_id").loc[items.index]
    for c in ("title", "category", "brand", "description", "price", "domain"):
        pd.testing.assert_series_equal(items[c], src[c], check_names=False)
    inter = pd.read_parquet(rr / "dataset" / "interactions.parquet")
    want = pd.read_parquet(tiny_dataset / "interactions.parquet")
    want = want[want["item_id"].isin(set(uindex.item_ids))]
    assert r["interactions"] == len(inter) == len(want) > 0
    assert sorted(zip(inter["item_id"], inter["timestamp"])) == sorted(zip(want["item_id"], want["timestamp"]))
    assert inter["rating"].isna().all() and inter["review"].isna().all()
    # it resolves as the spec's reranker; the launcher counts the Reranker deployment in
    spec = ServingSpec.resolve(rbundle)
    assert spec.reranker_run == str(rr) and is_run_dir(rr)
    assert "Reranker" in check_recommender_args({"artifacts": str(rbundle)}, "test")
    # its files are hashed like every other
    copy = tmp_path / "copy"
    shutil.copytree(rbundle, copy)
    data = bytearray((copy / "reranker" / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "reranker" / "model.pt").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="reranker/model.pt does not match its SHA-256"):
        verify_bundle(copy)


def test_a_bundle_without_a_reranker_serves_none(idp_artifacts: Path, tmp_path: Path) -> None:
    """A bundle exported without --reranker, and one written before bundles had a ``reranker`` entry."""
    from raypipe.serve.launch import check_recommender_args

    b = export_bundle(idp_artifacts, tmp_path / "plain")
    assert verify_bundle(b)["reranker"] is None and not (b / "reranker").exists()
    assert ServingSpec.resolve(b).reranker_run is None
    manifest = json.loads((b / BUNDLE_FILE).read_text())
    del manifest["reranker"]
    (b / BUNDLE_FILE).write_text(json.dumps(manifest))
    assert ServingSpec.resolve(b).reranker_run is None and "reranker" not in read_manifest(b)
    assert "Reranker" not in check_recommender_args({"artifacts": str(b)}, "test")


def test_a_bad_reranker_is_refused_before_anything_is_written(
        idp_artifacts: Path, upsr_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    unfinished = runs / "unfinished"  # a copy of the UPSR run without its metrics.json
    shutil.copytree(upsr_run, unfinished, ignore=shutil.ignore_patterns("checkpoint_*", "metrics.json"))
    short = runs / "short"  # a copy whose item index lacks the last item the bundled model serves
    shutil.copytree(upsr_run, short, ignore=shutil.ignore_patterns("checkpoint_*"))
    index = ItemIndex.load(upsr_run / "item_index.parquet")
    ItemIndex(index.item_ids[:-1], index.domains[:-1]).save(short / "item_index.parquet")
    served = ServingSpec.resolve(idp_artifacts).num_items
    cases = [
        (tmp_path / "nope", f"--reranker: {tmp_path / 'nope'} does not exist"),
        (idp_artifacts / "cdim", "is a run of cdim (no capabilities); the reranker slot needs a model with the "
                                 "scorer capability"),
        (unfinished, f"--reranker: {unfinished} is not a finished run directory (no metrics.json)"),
        (short, f"--reranker: {short} does not know 1 of the {served} items the bundled model serves "
                f"(e.g. {index.item_ids[-1]!r})"),
    ]
    for i, (bad, named) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(BundleError, match="--reranker") as e:
            export_bundle(idp_artifacts, out, reranker=bad)
        assert named in str(e.value)
        assert _code(["bundle", str(idp_artifacts), "--out", str(out), "--reranker", str(bad)]) == 2, bad
        err = capsys.readouterr().err
        assert named in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no bundle, no temporary directory


def test_the_app_reranks_from_the_bundle_alone_as_with_the_original_run(
        serve_port: int, rbundle: Path, idp_artifacts: Path, upsr_run: Path, tiny_dataset: Path,
        tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import serve

    index, enc, vecs = served_model(rbundle)  # the bundled retrieval model: the candidates, computed here
    _, history = busiest_history(tiny_dataset, index)
    rows = np.flatnonzero(index.domains == DOMAIN)
    u = enc.encode([history])[0].vector
    shortlist = [(index.item_ids[rows[j]], float(vecs[rows[j]] @ u)) for j in np.argsort(-(vecs[rows] @ u))
                 if index.item_ids[rows[j]] not in history][:5 * RERANK_DEPTH]
    candidates = [{"item_id": i, "domain": DOMAIN, "score": s} for i, s in shortlist]
    body = {"history": history, "domain": DOMAIN, "k": 5}
    monkeypatch.setenv("RAYPIPE_DATA", str(tmp_path_factory.mktemp("no-data")))
    with moved_away(tiny_dataset, idp_artifacts, upsr_run):
        assert not tiny_dataset.exists() and not upsr_run.exists()
        # the bundled reranker rebuilds here from the bundle alone: what the served answer must be
        rmodel, rindex, rcfg = load_reranker(rbundle / "reranker")
        want = ModelReranker(rmodel, rindex, rcfg.data.max_len).rerank(history, candidates)[:5]
        assert [c["item_id"] for c in want] != [c["item_id"] for c in candidates[:5]]  # it reorders
        url = deploy("rbundled", serve_port, {"artifacts": str(rbundle),
                                              "state_dir": str(tmp_path_factory.mktemp("rbundle-state"))})
        try:
            h = requests.get(f"{url}/v1/health", timeout=10).json()
            assert h["serving"]["reranker"] == str(rbundle / "reranker") and h["serving"]["bundle"] == str(rbundle)
            r = requests.post(f"{url}/v1/recommend", json=body, timeout=120)
            assert r.status_code == 200, r.text
            bundled = r.json()
            hops = parse_server_timing(r.headers["Server-Timing"])  # the reranker's hop is timed too
            assert hops["rerank"] > 0.0 and hops["rerank"] + hops["encode"] + hops["retrieve"] <= hops["app"]
            ranked = requests.post(f"{url}/v1/rank", json={"history": history, "candidates": [
                c["item_id"] for c in candidates]}, timeout=120).json()
        finally:
            serve.delete("rbundled")
    assert bundled["reranked"] is True and bundled["fallback"] is None
    assert [(i["item_id"], i["score"]) for i in bundled["items"]] == [
        (c["item_id"], pytest.approx(c["score"], abs=1e-5)) for c in want]
    assert ranked["reranked"] is True and [i["item_id"] for i in ranked["items"]][:5] == [
        c["item_id"] for c in want]
    # the same app with reranker_run= the original run (its dataset back on the machine): the explicit
    # argument wins over the bundle's reranker, and the answer is the same, item for item
    url = deploy("rrun", serve_port, {"artifacts": str(rbundle), "reranker_run": str(upsr_run),
                                      "state_dir": str(tmp_path_factory.mktemp("rrun-state"))})
    try:
        assert requests.get(f"{url}/v1/health", timeout=10).json()["serving"]["reranker"] == str(upsr_run)
        original = requests.post(f"{url}/v1/recommend", json=body, timeout=120).json()
    finally:
        serve.delete("rrun")
    assert original["reranked"] is True
    assert [(i["item_id"], i["domain"]) for i in bundled["items"]] == [
        (i["item_id"], i["domain"]) for i in original["items"]]
    assert [i["score"] for i in bundled["items"]] == pytest.approx([i["score"] for i in original["items"]],
                                                                   abs=1e-5)


def test_a_bundle_in_storage_gives_each_node_its_own_reranker(
        idp_artifacts: Path, upsr_run: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from raypipe.serve.artifacts import on_this_node

    uri = (tmp_path / "store" / "idp-upsr").as_uri()
    monkeypatch.setenv("RAYPIPE_CACHE", str(tmp_path / "node-a"))
    assert _code(["bundle", str(idp_artifacts), "--reranker", str(upsr_run), "--out", uri]) == 0
    assert verify_bundle(tmp_path / "store" / "idp-upsr")["reranker"]["model"] == "upsr"
    spec = ServingSpec.resolve(uri)
    assert spec.reranker_run and spec.reranker_run.startswith(str(tmp_path / "node-a"))
    monkeypatch.setenv("RAYPIPE_CACHE", str(tmp_path / "node-b"))
    b = on_this_node(spec.to_dict())
    assert b["reranker_run"] == str(Path(b["local_copy"]) / "reranker")
    assert b["reranker_run"].startswith(str(tmp_path / "node-b")) and is_run_dir(Path(b["reranker_run"]))
    history, cands = [3, 5, 8], [[1, 2, 4, 9, 12, 20]]
    want = _scores(upsr_run, history, cands)
    with moved_away(tiny_dataset, upsr_run):  # node B's copy scores as the run, with no dataset
        np.testing.assert_allclose(_scores(Path(b["reranker_run"]), history, cands), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_content_reranker_carries_its_feature_views(idp_artifacts: Path, u2r_run: Path, tiny_store: Path,
                                                      tiny_dataset: Path, tmp_path: Path) -> None:
    """UniM2Rec in the reranker slot (text, image and a derived cross view): the bundle holds the store's views
    and the run's aligner under reranker/; with the store and the dataset moved away it scores as the run."""
    b = export_bundle(idp_artifacts, tmp_path / "u2r", reranker=u2r_run)
    r = verify_bundle(b)["reranker"]
    assert r["model"] == "unim2rec" and r["features"] == "features" and r["feature_views"] == ["image", "text"]
    assert (b / "reranker" / "cross_aligner.pt").is_file() and (b / "reranker" / "features" / "manifest.json").is_file()
    history, cands = [3, 5, 8], [[1, 2, 4, 9, 12, 20]]
    want = _scores(u2r_run, history, cands)
    with moved_away(tiny_store, tiny_dataset):
        np.testing.assert_allclose(_scores(b / "reranker", history, cands), want, rtol=1e-5, atol=1e-6)
