"""Run storage behind a URI (``raypipe.storage``), on ``file://`` URIs (no network here): upload/download
round trips, a run published commit-file last and never seen half-written, the local cache of a run read
by URI, bad URIs rejected by the CLIs with exit 2 before Ray starts, and one pre-train → fine-tune →
evaluate chain through ``--storage-path file://...`` and ``--init-from file://...``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from raypipe import commands, storage
from raypipe.rundir import COMMIT_FILE, CONFIG_FILE, INDEX_FILE, METRICS_FILE, WEIGHTS_FILE


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache root (never ~/.cache) for every test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("RAYPIPE_CACHE", str(root))
    return root


def _uri(path: Path) -> str:
    return path.resolve().as_uri()  # file:///...


def _run_files(d: Path, metrics: dict | None = None) -> Path:
    """A fake finished run directory written locally."""
    d.mkdir(parents=True, exist_ok=True)
    (d / CONFIG_FILE).write_text("run: {}\n")
    (d / WEIGHTS_FILE).write_bytes(b"\x00weights" * 1000)
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "nested.txt").write_text("nested")
    (d / ".hidden.tmp").write_text("local only")
    (d / METRICS_FILE).write_text(json.dumps(metrics or {"test": {}}))
    return d


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ---- URIs and paths ---------------------------------------------------------------------------------

def test_uris_are_told_from_paths_and_joined_before_their_query() -> None:
    assert storage.is_uri("s3://bucket/runs") and storage.is_uri("gs://b") and storage.is_uri("file:///tmp/x")
    assert not any(storage.is_uri(p) for p in ("runs", "/tmp/runs", "./s3:", "C:\\runs", None))
    assert storage.join("s3://b/runs?region=eu-west-1", "pre", "model.pt") == "s3://b/runs/pre/model.pt?region=eu-west-1"
    assert storage.join("gs://b/runs/", "pre") == "gs://b/runs/pre"
    assert storage.join("runs", "pre") == str(Path("runs", "pre"))
    # plain paths are untouched
    assert storage.local_path("runs/pre") == Path("runs/pre")
    storage.check("runs/anything")  # a local path is never checked for existence


@pytest.mark.parametrize("uri,said", [("ftp://host/runs", "unsupported URI scheme 'ftp'"),
                                      ("https://host/runs", "unsupported URI scheme 'https'"),
                                      ("file://otherhost/tmp/runs", "cannot open")])
def test_unusable_uris_are_rejected_with_the_reason(uri: str, said: str) -> None:
    with pytest.raises(storage.StorageError, match=said):
        storage.check(uri)


# ---- upload / download ------------------------------------------------------------------------------

def test_a_directory_round_trips_through_a_file_uri(tmp_path: Path) -> None:
    src = _run_files(tmp_path / "src")
    uri = _uri(tmp_path / "store" / "run")
    uploaded = storage.upload_dir(src, uri, last=COMMIT_FILE)
    assert uploaded[-1] == COMMIT_FILE and ".hidden.tmp" not in uploaded  # commit last; hidden files stay
    assert storage.exists(uri) and storage.exists(storage.join(uri, "sub", "nested.txt"))
    assert not storage.exists(storage.join(uri, ".hidden.tmp"))
    assert storage.is_nonempty_dir(uri) and not storage.is_nonempty_dir(_uri(tmp_path / "store" / "none"))
    # no temporary upload name is left behind
    assert not [p for p in (tmp_path / "store").rglob(".*")]
    out = tmp_path / "out"
    (out / "stale").mkdir(parents=True)
    storage.download_dir(uri, out)
    expected = {k: v for k, v in _tree(src).items() if not k.startswith(".")}
    assert _tree(out) == expected  # replaced whole: the stale entry is gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no download left over


def test_a_failed_file_upload_leaves_neither_the_file_nor_its_temporary(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.fs

    src = _run_files(tmp_path / "src")
    fs, root = storage.resolve(_uri(tmp_path / "store"))
    real = pyarrow.fs.copy_files

    def broken(source: str, destination: str, **kwargs: object) -> None:
        real(source, destination, **kwargs)  # the temporary is written ...
        raise OSError("connection reset")  # ... and the transfer fails before the rename

    monkeypatch.setattr(pyarrow.fs, "copy_files", broken)
    with pytest.raises(OSError, match="connection reset"):
        storage._put(src / WEIGHTS_FILE, fs, f"{root}/{WEIGHTS_FILE}")
    assert list((tmp_path / "store").iterdir()) == []


def test_a_republished_run_is_unfinished_until_its_commit_file_is_back(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    uri = _uri(tmp_path / "store" / "run")
    storage.publish_run(_run_files(tmp_path / "v1", {"v": 1}), uri)
    assert json.loads((storage.fetch_run(uri) / METRICS_FILE).read_text()) == {"v": 1}
    put = storage._put
    calls = []

    def failing(src: Path, fs, dst: str) -> None:  # noqa: ANN001
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("connection reset")
        put(src, fs, dst)

    monkeypatch.setattr(storage, "_put", failing)
    with pytest.raises(OSError, match="connection reset"):
        storage.publish_run(_run_files(tmp_path / "v2", {"v": 2}), uri)
    # the old commit file went first: readers see an unfinished run, never v1 and v2 mixed
    assert not storage.exists(storage.join(uri, COMMIT_FILE))
    with pytest.raises(FileNotFoundError, match="unfinished"):
        storage.fetch_run(uri)
    monkeypatch.setattr(storage, "_put", put)
    storage.publish_run(_run_files(tmp_path / "v3", {"v": 3}), uri)
    assert json.loads((storage.fetch_run(uri) / METRICS_FILE).read_text()) == {"v": 3}


def test_a_run_is_downloaded_once_without_ray_checkpoints_and_again_when_it_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = _run_files(tmp_path / "store" / "run", {"v": 1})
    (stored / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
    (stored / "checkpoint_2026-01-01_00-00-00.000000" / "model.pt").write_bytes(b"big")
    (stored / "checkpoint_manager_snapshot.json").write_text("{}")
    uri = _uri(stored)
    downloads = []
    real = storage._download_into
    monkeypatch.setattr(storage, "_download_into", lambda *a: downloads.append(a[0]) or real(*a))
    local = storage.fetch_run(uri)
    assert local == storage.cache_dir(uri) and local.is_relative_to(storage.cache_root())
    assert sorted(_tree(local)) == [".raypipe-source.json", CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, "sub/nested.txt"]
    assert storage.fetch_run(uri + "/") == local and len(downloads) == 1  # current: not downloaded again
    # a model.pt URI is read from its run's copy
    assert storage.local_path(storage.join(uri, WEIGHTS_FILE)) == local / WEIGHTS_FILE
    assert storage.local_path(storage.join(uri, WEIGHTS_FILE), fetch=False) == local / WEIGHTS_FILE
    (stored / METRICS_FILE).write_text(json.dumps({"v": 2, "pad": "x" * 10}))  # published again
    assert json.loads((storage.fetch_run(uri) / METRICS_FILE).read_text())["v"] == 2 and len(downloads) == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.fetch_run(_uri(tmp_path / "store" / "nothing"))


# ---- the command line -------------------------------------------------------------------------------

def _exit_code(argv: list[str]) -> int:
    try:
        return commands.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


@pytest.mark.parametrize("argv,named", [
    (["pretrain", "--storage-path", "ftp://host/runs"], "run.storage_path"),
    (["pretrain", "--storage-path", "file://otherhost/runs"], "run.storage_path (--storage-path)"),
    (["pretrain", "run.storage_path=ftp://host/runs"], "run.storage_path"),
    (["finetune", "--init-from", "ftp://host/runs/pre"], "run.init_from"),
    (["evaluate", "--init-from", "{store}/no-such-run"], "run.init_from (--init-from)"),
    (["tune", "--space", "tune_spaces/sasrec.yaml", "--storage-path", "ftp://host/tune"], "--storage-path"),
    (["idp", "--storage-path", "{store}"], "--storage-path"),
])
def test_bad_storage_uris_exit_2_before_ray_naming_the_option(argv: list[str], named: str, tmp_path: Path,
                                                              no_ray: None, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(store=_uri(tmp_path / "store")) for a in argv]
    assert _exit_code([*argv, "--dataset", "builtin:tiny"]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err


def test_an_unfinished_uri_run_is_refused_as_init_from(tmp_path: Path, no_ray: None,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    half = tmp_path / "store" / "half"  # Ray Train's checkpoints and some files, no metrics.json yet
    (half / "checkpoint_2026-01-01_00-00-00.000000").mkdir(parents=True)
    (half / WEIGHTS_FILE).write_bytes(b"w")
    for init in (_uri(half), storage.join(_uri(half), WEIGHTS_FILE)):
        assert _exit_code(["finetune", "--init-from", init, "--dataset", "builtin:tiny"]) == 2
        err = capsys.readouterr().err
        assert "run.init_from (--init-from)" in err and "unfinished" in err and "Traceback" not in err, err


def test_a_good_uri_prints_in_the_resolved_config(tmp_path: Path, no_ray: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    uri = _uri(tmp_path / "store")
    assert commands.main(["pretrain", "--print-config", "--storage-path", uri, "--dataset", "builtin:tiny"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run"]["storage_path"] == uri


def test_pretrain_finetune_evaluate_through_a_file_uri(ray_local, tiny_dataset: Path, tmp_path: Path,
                                                       cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = _uri(tmp_path / "store")
    common = ["--dataset", str(tiny_dataset), "--epochs", "1", "model.hidden=16", "train.batch_size=128",
              "train.valid_users=50"]
    assert commands.main(["pretrain", "--storage-path", store, "--name", "pre", *common]) == 0
    pre = storage.join(store, "pre")
    assert f"-> {pre}" in capsys.readouterr().out
    stored = tmp_path / "store" / "pre"
    # Ray Train's checkpoints went straight to the URI, raypipe's files were published beside them
    assert [p.name for p in stored.iterdir() if p.name.startswith("checkpoint_2")]
    for f in (CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, METRICS_FILE):
        assert (stored / f).is_file(), f
    assert not list((cache / "staging").iterdir())  # the staging directory became the cached copy
    assert (storage.cache_dir(pre) / WEIGHTS_FILE).read_bytes() == (stored / WEIGHTS_FILE).read_bytes()

    # fine-tune from the URI run, into the URI store
    assert commands.main(["finetune", "--init-from", pre, "--mode", "transductive", "--storage-path", store,
                          "--name", "ft", *common]) == 0
    ft = tmp_path / "store" / "ft"
    assert yaml.safe_load((ft / CONFIG_FILE).read_text())["run"]["init_from"] == pre  # provenance: the URI
    ft_test = json.loads((ft / METRICS_FILE).read_text())["test"]

    # evaluate the fine-tuned URI run into a local store: its weights came through unchanged
    local = tmp_path / "local"
    assert commands.main(["evaluate", "--init-from", storage.join(store, "ft"), "--storage-path", str(local),
                          "--name", "ev", "--dataset", str(tiny_dataset), "model.hidden=16"]) == 0
    ev_test = json.loads((local / "ev" / METRICS_FILE).read_text())["test"]
    assert set(ev_test) == set(ft_test)
    for domain, m in ft_test.items():
        assert ev_test[domain]["ndcg@10"] == pytest.approx(m["ndcg@10"]), domain
