"""The format-name registry a job uses (``--format amazon2018``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.data import formats


def test_registry_names_every_reader():
    assert formats.available_formats() == [
        "amazon", "amazon2014", "amazon2018", "amazon2023", "movielens", "online_retail", "recbole",
        "recbole_multi", "xmarket", "xmarket_market"]
    assert formats.get_reader("amazon2018") is formats.read_amazon2018
    assert formats.get_reader("online_retail") is formats.read_online_retail
    with pytest.raises(ValueError, match="known formats: amazon, amazon2014"):
        formats.get_reader("amazon2019")


def test_read_format_dispatches(fx: Path, tmp_path: Path):
    res = formats.read_format("recbole", fx / "recbole" / "toy" / "toy.inter", None, tmp_path / "ds", domain="toy")
    assert res.n_interactions == 4 and res.n_bare_items == 3
