"""HNSWIndex: agreement with exact search, score convention, live updates, domain filters, atomic save/load."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import raypipe.index.hnsw as hnsw_mod
from raypipe.index import HNSWIndex, IndexFormatError, IndexFullError, exact_search

DIM = 16


def _data(n: int, d: int = DIM, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), [f"item/{i}" for i in range(n)]


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, list[str], list[str]]:
    x, ids = _data(600)
    domains = ["books" if i % 3 == 0 else "movies" for i in range(len(ids))]
    return x, ids, domains


def _naive(x: np.ndarray, q: np.ndarray, space: str) -> np.ndarray:
    """Score matrix [q, n] written as plainly as possible (float64)."""
    x, q = x.astype(np.float64), q.astype(np.float64)
    if space == "cosine":
        return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (x / np.linalg.norm(x, axis=1, keepdims=True)).T
    if space == "ip":
        return q @ x.T
    return -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)


# ------------------------------------------------------------------------------------------- exact
@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_exact_search_is_the_plain_definition(space: str) -> None:
    x, _ = _data(300, seed=1)
    q, _ = _data(7, seed=2)
    idx, scores = exact_search(x, q, 5, space)  # hnswlib's BFIndex against the textbook definition
    ref = _naive(x, q, space)
    np.testing.assert_array_equal(idx, np.argsort(-ref, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(ref, idx, axis=1), rtol=1e-4, atol=1e-4)
    assert exact_search(x[:3], q, 10, space)[0].shape == (7, 3)  # k clamped to n


# ------------------------------------------------------------------------------------------- recall
@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_recall_at_10_is_exact_with_high_ef(space: str) -> None:
    x, ids = _data(2000, d=32, seed=3)
    q, _ = _data(100, d=32, seed=4)
    index = HNSWIndex.build(x, ids, space=space, M=16, ef_construction=200, ef_search=400)
    got_ids, got_scores = index.query(q, 10)
    ref_idx, ref_scores = exact_search(x, q, 10, space)
    ref_ids = np.asarray(ids, dtype=object)[ref_idx]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got_ids, ref_ids)])
    assert recall == 1.0
    np.testing.assert_allclose(got_scores, ref_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_scores_are_similarities_best_first(space: str, small) -> None:
    x, ids, _ = small
    index = HNSWIndex.build(x, ids, space=space, ef_search=200)
    got_ids, scores = index.query(x[:20], 8)
    assert got_ids.shape == scores.shape == (20, 8) and scores.dtype == np.float32
    assert np.all(np.diff(scores, axis=1) <= 1e-6), "scores must be descending (higher = better)"
    rows = np.array([[ids.index(i) for i in r] for r in got_ids])
    ref = np.take_along_axis(_naive(x, x[:20], space), rows, axis=1)
    np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=1e-4)
    if space in ("cosine", "l2"):  # an item is its own best match: cos = 1, -||q - x||² = 0
        assert list(got_ids[:, 0]) == ids[:20]
        np.testing.assert_allclose(scores[:, 0], 1.0 if space == "cosine" else 0.0, atol=1e-5)


def test_single_query_returns_1d_and_k_is_clamped(small) -> None:
    x, ids, _ = small
    index = HNSWIndex.build(x[:5], ids[:5])
    one_ids, one_scores = index.query(x[0], 3)
    assert one_ids.shape == one_scores.shape == (3,) and one_ids[0] == ids[0]
    many_ids, _ = index.query(x[:2], 50)
    assert many_ids.shape == (2, 5) and set(many_ids[0]) == set(ids[:5])
    with pytest.raises(ValueError, match="k must be"):
        index.query(x[0], 0)
    empty = HNSWIndex("cosine", DIM)
    e_ids, e_scores = empty.query(x[:3], 10)
    assert e_ids.shape == e_scores.shape == (3, 0)


# ------------------------------------------------------------------------------------------- updates
def test_add_items_is_findable_immediately_and_grows(small) -> None:
    x, ids, _ = small
    index = HNSWIndex.build(x[:20], ids[:20])
    assert index.capacity < 600
    index.add_items(x[20:], ids[20:])
    assert len(index) == 600 and index.capacity >= 600
    new = np.full(DIM, 3.0, dtype=np.float32)
    new[0] = -7.0
    index.add_items(new, ["fresh"])
    assert "fresh" in index and len(index) == 601
    got, score = index.query(new, 1)
    assert got[0] == "fresh" and score[0] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(index.get_vectors(["fresh"])[0], new / np.linalg.norm(new), rtol=1e-5)


def test_fixed_max_elements_is_a_hard_cap(small) -> None:
    x, ids, _ = small
    index = HNSWIndex.build(x[:10], ids[:10], max_elements=12)
    index.add_items(x[10:12], ids[10:12])
    with pytest.raises(IndexFullError, match="max_elements=12"):
        index.add_items(x[12:13], ids[12:13])
    assert len(index) == 12 and ids[12] not in index
    index.add_items(x[50:51], [ids[0]])  # replacing needs no new slot
    with pytest.raises(IndexFullError):
        HNSWIndex.build(x[:13], ids[:13], max_elements=12)


def test_re_adding_an_id_replaces_its_vector(small) -> None:
    x, ids, _ = small
    index = HNSWIndex.build(x, ids, ef_search=200)
    target, old = ids[10], x[10].copy()
    new = -old  # the opposite direction
    index.add_items(new[None], [target])
    assert len(index) == 600 and index.ids.count(target) == 1
    np.testing.assert_allclose(index.get_vectors([target])[0], new / np.linalg.norm(new), rtol=1e-5)
    got, score = index.query(new, 1)
    assert got[0] == target and score[0] == pytest.approx(1.0, abs=1e-5)
    got_old, _ = index.query(old, 10)
    assert target not in set(got_old)
    # the rest of the graph still agrees with exact search on the updated data
    x2 = x.copy()
    x2[10] = new
    q, _ = _data(50, seed=9)
    ref = np.asarray(ids, dtype=object)[exact_search(x2, q, 10, "cosine")[0]]
    got_q, _ = index.query(q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got_q, ref)]) >= 0.99


def test_mark_deleted_removes_from_results_and_re_add_revives(small) -> None:
    x, ids, domains = small
    index = HNSWIndex.build(x, ids, domains=domains, ef_search=100)
    victims = [ids[0], ids[3]]
    index.mark_deleted(victims)
    index.mark_deleted([ids[0]])  # already deleted: ignored
    assert len(index) == 598 and ids[0] not in index and ids[0] not in index.ids
    got, _ = index.query(x[[0, 3]], 20)
    assert not set(got.ravel()) & set(victims)
    got_dom, _ = index.query(x[[0, 3]], 20, domain="books")
    assert not set(got_dom.ravel()) & set(victims)
    with pytest.raises(KeyError, match="deleted"):
        index.get_vectors([ids[0]])
    with pytest.raises(KeyError, match="nope"):
        index.mark_deleted([ids[1], "nope"])
    assert ids[1] in index  # nothing changed by the failed call
    index.add_items(x[0], [ids[0]])  # no domains= needed: the id keeps "books"
    assert ids[0] in index and index.domain_of(ids[0]) == "books"
    assert index.query(x[0], 1)[0][0] == ids[0]


def test_domain_filter_returns_only_that_domain(small) -> None:
    x, ids, domains = small
    dom = np.asarray(domains)
    q, _ = _data(30, seed=5)
    for threshold in (10_000, 0):  # exact path for small domains, then hnswlib's filtered graph search
        index = HNSWIndex.build(x, ids, domains=domains, ef_search=300, exact_filter_threshold=threshold)
        for name in ("books", "movies"):
            got, scores = index.query(q, 10, domain=name)
            assert {index.domain_of(i) for i in got.ravel()} == {name}
            sub = np.flatnonzero(dom == name)
            ref_idx, ref_scores = exact_search(x[sub], q, 10, "cosine")
            ref = np.asarray(ids, dtype=object)[sub][ref_idx]
            assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)]) >= 0.99
        got_all, _ = index.query(q, 10, domain=["books", "movies"])
        assert got_all.shape == (30, 10)
    with pytest.raises(ValueError, match="unknown domain"):
        index.query(q, 10, domain="music")
    # a new domain arrives with live inserts
    index.add_items(x[:2] + 0.01, ["music/a", "music/b"], domains="music")
    got, _ = index.query(q, 10, domain="music")
    assert got.shape == (30, 2) and set(got.ravel()) == {"music/a", "music/b"}
    with pytest.raises(ValueError, match="pass domains="):
        index.add_items(x[:1], ["no-domain"])


def test_filter_ids_set_and_predicate(small) -> None:
    x, ids, _ = small
    index = HNSWIndex.build(x, ids, ef_search=100, exact_filter_threshold=0)
    allowed = set(ids[100:140]) | {"unknown-id"}
    got, _ = index.query(x[:5], 10, filter_ids=allowed)
    assert set(got.ravel()) <= allowed
    got_p, _ = index.query(x[:5], 10, filter_ids=lambda i: i.endswith("7"))
    assert all(i.endswith("7") for i in got_p.ravel()) and got_p.shape == (5, 10)
    # a predicate that leaves fewer than k items: hnswlib cannot fill k, the exact fallback clamps
    got_few, scores_few = index.query(x[:5], 10, filter_ids=lambda i: i in {ids[1], ids[2], ids[3]})
    assert got_few.shape == (5, 3) and set(got_few.ravel()) == {ids[1], ids[2], ids[3]}
    assert np.all(np.diff(scores_few, axis=1) <= 1e-6)


# ------------------------------------------------------------------------------------------- persistence
def test_save_load_roundtrip_is_identical(tmp_path: Path, small) -> None:
    x, ids, domains = small
    index = HNSWIndex.build(x, ids, domains=domains, ef_search=77, metadata={"encoder": "minilm", "run": 3})
    index.mark_deleted([ids[5]])
    q, _ = _data(40, seed=6)
    before = index.query(q, 10)
    before_dom = index.query(q, 10, domain="books")
    index.save(tmp_path / "ann")
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["index.bin", "labels.parquet", "meta.json"]
    loaded = HNSWIndex.load(tmp_path / "ann")
    assert loaded.ef_search == 77 and loaded.space == "cosine" and loaded.dim == DIM
    assert loaded.metadata == {"encoder": "minilm", "run": 3}
    assert loaded.ids == index.ids and len(loaded) == 599 and ids[5] not in loaded
    after, after_dom = loaded.query(q, 10), loaded.query(q, 10, domain="books")
    for (a_ids, a_s), (b_ids, b_s) in ((before, after), (before_dom, after_dom)):
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_array_equal(a_s, b_s)
    loaded.add_items(x[:1] * 2, ["after-load"], domains="movies")  # a loaded growable index still grows
    assert "after-load" in loaded and loaded.query(x[0], 1)[0][0] in {ids[0], "after-load"}
    # saving over an existing index replaces it
    loaded.save(tmp_path / "ann")
    assert "after-load" in HNSWIndex.load(tmp_path / "ann")
    assert [p.name for p in tmp_path.iterdir()] == ["ann"]  # no temp dirs left behind


def _edit_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "meta.json").read_text())
    meta.update(changes)
    (path / "meta.json").write_text(json.dumps(meta))


def test_load_reports_missing_or_corrupted_files(tmp_path: Path, small) -> None:
    x, ids, _ = small
    good = tmp_path / "good"
    HNSWIndex.build(x[:50], ids[:50]).save(good)

    def fresh(name: str) -> Path:
        import shutil

        return Path(shutil.copytree(good, tmp_path / name))

    with pytest.raises(FileNotFoundError, match="no HNSW index"):
        HNSWIndex.load(tmp_path / "absent")
    p = fresh("no-meta")
    (p / "meta.json").unlink()
    with pytest.raises(IndexFormatError, match="meta.json is missing"):
        HNSWIndex.load(p)
    p = fresh("bad-json")
    (p / "meta.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        HNSWIndex.load(p)
    p = fresh("dim")
    _edit_meta(p, dim=DIM + 1)
    with pytest.raises(IndexFormatError, match="dim mismatch"):
        HNSWIndex.load(p)
    p = fresh("count")
    _edit_meta(p, count=51)
    with pytest.raises(IndexFormatError, match="count"):
        HNSWIndex.load(p)
    p = fresh("version")
    _edit_meta(p, format_version=99)
    with pytest.raises(IndexFormatError, match="format_version 99"):
        HNSWIndex.load(p)
    p = fresh("no-bin")
    (p / "index.bin").unlink()
    with pytest.raises(IndexFormatError, match="index.bin is missing"):
        HNSWIndex.load(p)
    p = fresh("truncated")
    data = (p / "index.bin").read_bytes()
    (p / "index.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="corrupted"):
        HNSWIndex.load(p)
    p = fresh("flipped")
    data = bytearray((p / "index.bin").read_bytes())
    data[-5] ^= 0xFF
    (p / "index.bin").write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="SHA-256"):
        HNSWIndex.load(p)


def test_failed_save_leaves_previous_index_intact(tmp_path: Path, small, monkeypatch) -> None:
    x, ids, _ = small
    target = tmp_path / "ann"
    old = HNSWIndex.build(x[:100], ids[:100])
    old.save(target)
    expected = old.query(x[:5], 5)

    def explode(path: Path, *args, **kwargs) -> None:
        path.write_bytes(b"half a parquet file")
        raise OSError("disk full")

    monkeypatch.setattr(hnsw_mod, "_write_labels", explode)
    with pytest.raises(OSError, match="disk full"):
        HNSWIndex.build(x[100:300], ids[100:300]).save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["ann"]
    reloaded = HNSWIndex.load(target)
    assert len(reloaded) == 100
    np.testing.assert_array_equal(reloaded.query(x[:5], 5)[0], expected[0])


def test_metadata_must_be_json(small, tmp_path: Path) -> None:
    x, ids, _ = small
    with pytest.raises(ValueError, match="JSON"):
        HNSWIndex.build(x[:5], ids[:5], metadata={"bad": object()})
    index = HNSWIndex.build(x[:5], ids[:5])
    index.metadata["bad"] = float("nan")
    with pytest.raises(ValueError, match="JSON"):
        index.save(tmp_path / "ann")
    assert not (tmp_path / "ann").exists()


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_name_the_id(small) -> None:
    x, ids, _ = small
    with pytest.raises(ValueError, match=r"duplicate item id 'item/1'"):
        HNSWIndex.build(x[:3], ["item/0", "item/1", "item/1"])
    with pytest.raises(ValueError, match="row 1 is empty"):
        HNSWIndex.build(x[:2], ["a", ""])
    bad = x[:4].copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"id 'item/2' contain NaN"):
        HNSWIndex.build(bad, ids[:4])
    bad[2, 5] = np.inf
    with pytest.raises(ValueError, match=r"id 'item/2'"):
        HNSWIndex.build(bad, ids[:4])
    with pytest.raises(ValueError, match="zero vector"):
        HNSWIndex.build(np.zeros((1, DIM), np.float32), ["z"])
    HNSWIndex.build(np.zeros((1, DIM), np.float32), ["z"], space="l2")  # fine outside cosine
    with pytest.raises(ValueError, match="3 vectors but 2 ids"):
        HNSWIndex.build(x[:3], ids[:2])
    index = HNSWIndex.build(x[:10], ids[:10])
    with pytest.raises(ValueError, match=f"dim={DIM}.*d=8"):
        index.add_items(np.ones((1, 8), np.float32), ["short"])
    with pytest.raises(ValueError, match=f"dim={DIM}.*d=8"):
        index.query(np.ones(8, np.float32), 3)
    with pytest.raises(ValueError, match="query row 1"):
        index.query(np.stack([x[0], np.full(DIM, np.nan, np.float32)]), 3)
    with pytest.raises(ValueError, match="space must be"):
        HNSWIndex.build(x[:3], ids[:3], space="hamming")
    with pytest.raises(KeyError, match="missing"):
        index.get_vectors(["missing"])
    assert len(index) == 10  # none of the failures above changed it


# ------------------------------------------------------------------------------------------- threads
def test_concurrent_queries_and_adds(small) -> None:
    x, ids, _ = small
    index = HNSWIndex.build(x[:200], ids[:200], num_threads=2)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                got, _ = index.query(x[:8], 5)
                assert got.shape == (8, 5)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    for start in range(200, 600, 20):  # forces several resizes while queries run
        index.add_items(x[start : start + 20], ids[start : start + 20])
        index.mark_deleted([ids[start]])
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    assert len(index) == 580 and index.query(x[599], 1)[0][0] == ids[599]
