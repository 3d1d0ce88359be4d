"""The meta block of result files: code version, packages, hardware, seeds."""
from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import torch

from raypipe.meta import run_meta

ROOT = Path(__file__).resolve().parents[1]


def test_meta_names_this_checkout_its_packages_and_seeds() -> None:
    m = run_meta({"train": 3, "split": 0})
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clean clone is one)
        assert m["git_commit"] == head.stdout.strip()
        assert isinstance(m["git_dirty"], bool)
    assert m["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert m["packages"]["raypipe"] == "0.1.0"
    assert m["seeds"] == {"train": 3, "split": 0}
    assert m["hardware"]["cpus"] >= 1 and m["hardware"]["memory_gib"] > 0
    assert m["hardware"]["gpus"] == ([torch.cuda.get_device_name(0)] * torch.cuda.device_count()
                                     if torch.cuda.is_available() else [])
    t = dt.datetime.fromisoformat(m["time"])
    assert abs((dt.datetime.now(dt.timezone.utc) - t).total_seconds()) < 60


def test_an_unknown_package_is_none_not_an_error() -> None:
    from raypipe.meta import package_versions

    assert package_versions(("no-such-package-raypipe",)) == {"no-such-package-raypipe": None}
