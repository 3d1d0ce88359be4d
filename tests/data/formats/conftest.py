"""Shared fixtures for the format-reader tests: the hand-written fixture files and small helpers."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Callable

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fx() -> Path:
    """The directory of hand-written fixtures in the real formats."""
    return FIXTURES


@pytest.fixture
def gzipped(tmp_path: Path) -> Callable[[Path, str], Path]:
    """Copy a fixture into ``tmp_path`` gzip-compressed under ``name`` (which should end in .gz)."""

    def make(src: Path, name: str) -> Path:
        dst = tmp_path / name
        with open(src, "rb") as f, gzip.open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
        return dst

    return make
