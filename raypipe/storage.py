"""Where runs are stored: a local path (as always) or a URI of a ``pyarrow.fs`` filesystem (``s3://``,
``gs://``, ``file://`` ...), the one place that knows the difference.

* **Writers** (:func:`raypipe.train.run.run_experiment`, Tune) hand the URI to Ray Train / Tune, whose
  checkpoints go straight there, and write raypipe's own run files into a local staging directory
  (:func:`staging_dir`), published when the run has finished (:func:`publish_run`): every file is uploaded
  whole (a temporary name then a rename where the filesystem renames; a single object upload on object
  stores, which appears only once complete), and ``metrics.json``, the run's commit file, goes last -- and is
  removed first when a run of that name is published again.  A run in storage is finished iff its
  ``metrics.json`` is there.
* **Readers** (``--init-from``, :func:`raypipe.train.run.load_run`) call :func:`local_path`: a URI run is
  downloaded once into a local cache (``$RAYPIPE_CACHE``, else ``$XDG_CACHE_HOME/raypipe``, else
  ``~/.cache/raypipe``; ``runs/<name>-<hash>/``) without Ray Train's checkpoints, and downloaded again only
  when its commit file changed.  A download goes into a temporary directory that replaces the cached copy
  whole, and is checked against the commit file afterwards, so it never mixes two versions of a run.

Plain paths are returned untouched by every function here: local runs behave exactly as before.
Checking a URI (:func:`check`) builds its filesystem, which for ``s3://`` resolves the bucket's region (a
network call unless the URI names ``?region=``): an unreachable bucket is rejected there.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import pyarrow.fs

log = logging.getLogger(__name__)

__all__ = ["SCHEMES", "StorageError", "is_uri", "check_scheme", "check", "resolve", "reject_uri", "join", "exists",
           "is_nonempty_dir", "upload_dir", "download_dir", "cache_root", "cache_dir", "staging_dir",
           "publish_run", "fetch_run", "stored_run", "local_path"]

#: the URI schemes ``pyarrow.fs.FileSystem.from_uri`` understands (pyarrow 26)
SCHEMES = frozenset({"file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})
#: filesystems whose objects appear only once their upload completed (no rename needed, none cheap)
_OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: the stamp of a cached run: the URI and its commit file's size and modification time
STAMP_FILE = ".raypipe-source.json"


class StorageError(ValueError):
    """A storage URI that cannot be used (unknown scheme, filesystem that cannot be built, missing run)."""


def is_uri(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is ``scheme://...`` (anything else is a local path, as before)."""
    return path is not None and _URI.match(str(path)) is not None


def check_scheme(uri: str) -> None:
    """Raise :class:`StorageError` unless ``uri`` is a local path or has a scheme pyarrow knows (no I/O)."""
    m = _URI.match(str(uri))
    if m is not None and m.group(1) not in SCHEMES:
        raise StorageError(f"unsupported URI scheme {m.group(1)!r} in {uri!r}: use a local path or one of "
                           f"{', '.join(s + '://' for s in sorted(SCHEMES - {'local'}))}")


def resolve(uri: str) -> tuple["pyarrow.fs.FileSystem", str]:
    """``(filesystem, path)`` of a URI (or a local path), built by ``pyarrow.fs.FileSystem.from_uri``;
    :class:`StorageError` with pyarrow's first line when it cannot be built."""
    import pyarrow.fs

    check_scheme(str(uri))
    if not is_uri(uri):
        return pyarrow.fs.LocalFileSystem(), str(Path(uri).resolve())
    return _from_uri(str(uri))


@functools.lru_cache(maxsize=256)
def _from_uri(uri: str) -> tuple["pyarrow.fs.FileSystem", str]:
    """Built once per URI (for ``s3://`` without ``?region=`` building asks the bucket for its region)."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    except Exception as e:  # ArrowInvalid, OSError (no credentials, unreachable bucket, no libjvm ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"cannot open {uri!r}: {first}") from None
    return fs, path.rstrip("/") or path


def check(uri: str) -> None:
    """Raise :class:`StorageError` unless ``uri`` (a URI; local paths pass) names a usable filesystem."""
    if is_uri(uri):
        resolve(uri)
    else:
        check_scheme(uri)


def reject_uri(path: str | os.PathLike[str], what: str, key: str = "storage_path (--storage-path)") -> None:
    """Raise :class:`StorageError` naming ``key`` when ``path`` is a URI: ``what`` reads and writes local
    directories only."""
    if is_uri(path):
        raise StorageError(f"{key}: {what} writes local (or shared) directories; {str(path)!r} is a URI "
                           "(URIs are taken by pretrain, finetune, evaluate and tune)")


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """``base/part/...`` for a local path or a URI (a URI's query, e.g. ``?region=``, stays at the end)."""
    if not is_uri(base):
        return str(Path(base, *parts))
    s = urlsplit(str(base))
    path = "/".join([s.path.rstrip("/"), *(p.strip("/") for p in parts)])
    return urlunsplit((s.scheme, s.netloc, path, s.query, s.fragment))


def _parent(uri: str) -> tuple[str, str]:
    s = urlsplit(uri)
    head, _, name = s.path.rstrip("/").rpartition("/")
    return urlunsplit((s.scheme, s.netloc, head, s.query, s.fragment)), name


def _info(uri: str) -> "pyarrow.fs.FileInfo":
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether a file or directory is at ``uri`` (a local path: ``Path.exists``)."""
    import pyarrow.fs

    if not is_uri(uri):
        return Path(uri).exists()
    return _info(str(uri)).type != pyarrow.fs.FileType.NotFound


def is_nonempty_dir(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is a directory holding something."""
    import pyarrow.fs

    if not is_uri(uri):
        p = Path(uri)
        return p.is_dir() and any(p.iterdir())
    fs, path = resolve(str(uri))
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return False
    return bool(fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=False)))


def _hidden(rel: str) -> bool:
    """Temporary files, markers and the cache stamp: local to the machine that wrote them."""
    return any(part.startswith(".") for part in rel.split("/"))


def _put(src: Path, fs: "pyarrow.fs.FileSystem", dst: str) -> None:
    """Upload one file so that ``dst`` is never seen half-written."""
    import pyarrow.fs

    kwargs = {"use_threads": False} if fs.type_name == "s3" else {}  # arrow#32372: threaded S3 uploads
    local = pyarrow.fs.LocalFileSystem()
    if fs.type_name in _OBJECT_STORES:  # an object appears only when its upload completed
        pyarrow.fs.copy_files(str(src), dst, source_filesystem=local, destination_filesystem=fs, **kwargs)
        return
    head, _, name = dst.rpartition("/")
    if head:
        fs.create_dir(head, recursive=True)
    tmp = f"{head}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if head else f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pyarrow.fs.copy_files(str(src), tmp, source_filesystem=local, destination_filesystem=fs, **kwargs)
        fs.move(tmp, dst)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except Exception:  # noqa: BLE001 -- already gone
            pass
        raise


def upload_dir(local: str | os.PathLike[str], uri: str, last: str | None = None,
               files: Sequence[str] | None = None) -> list[str]:
    """Upload the files of the local directory ``local`` (or only ``files``, relative paths) into ``uri``
    (merged with what is there), each file whole, ``last`` (a top-level file name) after all the others and
    removed first when present, so that ``last`` marks a complete upload.  Hidden files stay local.
    Returns the relative paths uploaded."""
    import pyarrow.fs

    local = Path(local)
    fs, root = resolve(uri)
    if files is None:
        files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    files = [f for f in files if not _hidden(f)]
    if last is not None:
        if fs.get_file_info(f"{root}/{last}").type != pyarrow.fs.FileType.NotFound:
            fs.delete_file(f"{root}/{last}")
        files = [f for f in files if f != last] + ([last] if (local / last).is_file() else [])
    for rel in files:
        _put(local / rel, fs, f"{root}/{rel}")
    return files


def download_dir(uri: str, local: str | os.PathLike[str], skip: Callable[[str], bool] = _hidden) -> list[str]:
    """Download the directory ``uri`` into ``local``, which it replaces whole once every file is there
    (a reader of ``local`` sees the old copy or the new one).  ``skip(relative_path)``: files to leave
    (default: hidden ones).  Returns the relative paths downloaded."""
    from raypipe.io import replace_dir

    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent))
    try:
        files = _download_into(uri, tmp, skip)
        replace_dir(tmp, local)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return files


def _download_into(uri: str, out: Path, skip: Callable[[str], bool]) -> list[str]:
    import pyarrow.fs

    fs, root = resolve(uri)
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        raise FileNotFoundError(f"{uri}: no such directory")
    local = pyarrow.fs.LocalFileSystem()
    files = []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        rel = info.path[len(root):].lstrip("/")
        if info.type != pyarrow.fs.FileType.File or skip(rel):
            continue
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(info.path, str(out / rel), source_filesystem=fs, destination_filesystem=local)
        files.append(rel)
    return sorted(files)


# ---- run directories --------------------------------------------------------------------------------

def cache_root() -> Path:
    """``$RAYPIPE_CACHE``, else ``$XDG_CACHE_HOME/raypipe``, else ``~/.cache/raypipe``."""
    if os.environ.get("RAYPIPE_CACHE"):
        return Path(os.environ["RAYPIPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "raypipe"


def cache_dir(uri: str) -> Path:
    """The local copy of the storage directory ``uri``: ``<cache>/runs/<name>-<hash of the URI>``."""
    key = str(uri).rstrip("/")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", key.rsplit("/", 1)[-1].split("?")[0]) or "root"
    return cache_root() / "runs" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def staging_dir(uri: str) -> Path:
    """A new, empty local directory where the run to be published at ``uri`` is written."""
    root = cache_root() / "staging"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{cache_dir(uri).name}.", dir=root))


def _run_files(rel: str) -> bool:
    """Whether a file of a stored run is raypipe's (not Ray Train's checkpoints and bookkeeping)."""
    top = rel.split("/", 1)[0]
    return not (top.startswith("checkpoint_") or _hidden(rel))


@dataclass(frozen=True)
class _Stamp:
    uri: str
    size: int | None
    mtime_ns: int | None

    @classmethod
    def of(cls, uri: str, commit: str | None = None) -> "_Stamp | None":
        """The stamp of the run at ``uri`` now (``None``: its commit file -- ``metrics.json`` unless
        ``commit`` names another, e.g. a serving bundle's ``bundle.json`` -- is not there: unfinished)."""
        import pyarrow.fs

        from raypipe.rundir import COMMIT_FILE

        fs, root = resolve(uri)
        info = fs.get_file_info(f"{root}/{commit or COMMIT_FILE}")
        if info.type != pyarrow.fs.FileType.File:
            return None
        return cls(uri, info.size, info.mtime_ns)

    @classmethod
    def read(cls, local: Path) -> "_Stamp | None":
        try:
            return cls(**json.loads((local / STAMP_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, local: Path) -> None:
        (local / STAMP_FILE).write_text(json.dumps(self.__dict__))


def publish_run(staging: str | os.PathLike[str], uri: str, commit: str | None = None) -> Path:
    """Upload the finished run written in ``staging`` to ``uri`` (its commit file, ``metrics.json`` unless
    ``commit`` names another, last) and keep ``staging`` as the local cached copy of ``uri``; returns that
    copy's path."""
    from raypipe.io import replace_dir
    from raypipe.rundir import COMMIT_FILE

    staging = Path(staging)
    upload_dir(staging, uri, last=commit or COMMIT_FILE)
    stamp = _Stamp.of(uri, commit)
    if stamp is not None:
        stamp.write(staging)
    dest = cache_dir(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(staging, dest)
    log.info("published the run to %s (local copy %s)", uri, dest)
    return dest


def fetch_run(uri: str, attempts: int = 3, commit: str | None = None) -> Path:
    """The local copy of the finished run at ``uri`` (finished: its commit file, ``metrics.json`` unless
    ``commit`` names another, is there), downloaded (without Ray Train's checkpoints) unless the cached copy
    is current.  :class:`FileNotFoundError` when ``uri`` holds no finished run."""
    from raypipe.rundir import COMMIT_FILE

    uri = str(uri).rstrip("/")
    dest = cache_dir(uri)
    for _ in range(attempts):
        before = _Stamp.of(uri, commit)
        if before is None:
            what = "does not exist" if not exists(uri) else f"holds no {commit or COMMIT_FILE}: it is unfinished"
            raise FileNotFoundError(f"{uri} {what}")
        if _Stamp.read(dest) == before:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            files = _download_into(uri, tmp, lambda rel: not _run_files(rel))
            if _Stamp.of(uri, commit) != before:  # published again while we read it: read it again
                shutil.rmtree(tmp, ignore_errors=True)
                continue
            before.write(tmp)
            from raypipe.io import replace_dir

            replace_dir(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("downloaded %s (%d files) into %s", uri, len(files), dest)
        return dest
    raise StorageError(f"{uri} kept changing while it was downloaded ({attempts} attempts)")


def stored_run(uri: str) -> tuple[str, str | None]:
    """``(run URI, file name or None)`` of a finished stored run or a file in one (``.../model.pt``);
    :class:`FileNotFoundError` saying why when there is none (nothing there, or an unfinished run)."""
    import pyarrow.fs

    from raypipe.rundir import COMMIT_FILE

    uri = str(uri).rstrip("/")
    kind = _info(uri).type
    if kind == pyarrow.fs.FileType.NotFound:
        raise FileNotFoundError(f"{uri} does not exist")
    run, name = _parent(uri) if kind == pyarrow.fs.FileType.File else (uri, None)
    if _Stamp.of(run) is None:
        raise FileNotFoundError(f"{run} holds no {COMMIT_FILE}: the run is unfinished (or not a run)")
    return run, name


def local_path(path: str | os.PathLike[str], fetch: bool = True) -> Path:
    """A local path for a run directory or a file in one (``model.pt``): a local path as it is; a URI's
    cached copy, fetched first (:func:`fetch_run`) unless ``fetch`` is false."""
    if not is_uri(path):
        return Path(path)
    uri = str(path).rstrip("/")
    if fetch:
        run, name = stored_run(uri)
        return fetch_run(run) / name if name else fetch_run(run)
    cached = cache_dir(uri)
    if cached.is_dir():
        return cached
    parent, name = _parent(uri)
    return cache_dir(parent) / name if (cache_dir(parent) / name).exists() else cached
