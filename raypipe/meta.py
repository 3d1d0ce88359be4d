"""The ``meta`` block of every result file: which code, packages, machine and seeds produced it.

    {"git_commit": "6ce4382...", "git_dirty": false, "time": "2026-12-05T08:14:03+00:00",
     "packages": {"raypipe": "0.1.0", "torch": "2.14.1", "ray": "2.60.0", ...},
     "hardware": {"cpus": 2, "memory_gib": 23.4, "gpus": [], "machine": "x86_64", ...},
     "python": "3.11.9", "seeds": {"train": 0, "split": 0}}

Nothing here fails: a value that cannot be read (no git checkout, a package not installed) is ``None``.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

#: the packages whose versions decide a result
PACKAGES = ("raypipe", "torch", "torchvision", "ray", "transformers", "sentence-transformers", "timm",
            "numpy", "pandas", "pyarrow", "hnswlib")
_ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (``None`` outside a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def hardware() -> dict[str, Any]:
    """CPUs this process may use, total memory, GPU names (none without CUDA), machine and OS."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory = None
    gpus: list[str] = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA set-up must not break a result file
        gpus = []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus, "memory_gib": memory, "gpus": gpus, "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "processor": platform.processor() or None}


def run_meta(seeds: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """The ``meta`` block: code version, time (UTC, ISO 8601), package versions, hardware, seeds."""
    return {**code_version(), "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "packages": package_versions(), "hardware": hardware(), "python": platform.python_version(),
            "seeds": dict(seeds or {})}
