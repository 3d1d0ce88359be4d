"""``train.max_rows``: a seeded, order-keeping sample of the training rows."""
from __future__ import annotations

import numpy as np
import pytest

from raypipe.config import ConfigError, load_config
from raypipe.train.run import subsample_rows


def test_a_seeded_sample_of_rows_keeps_columns_aligned_and_in_order() -> None:
    rows = {"seq": np.arange(100).reshape(50, 2), "target": np.arange(50) * 10}
    out = subsample_rows(rows, 20, seed=3)
    assert out["seq"].shape == (20, 2) and out["target"].shape == (20,)
    assert np.array_equal(out["seq"][:, 0] // 2 * 10, out["target"])  # the same rows in every column
    assert np.all(np.diff(out["target"]) > 0)  # original order kept
    assert np.array_equal(subsample_rows(rows, 20, seed=3)["target"], out["target"])  # deterministic
    assert not np.array_equal(subsample_rows(rows, 20, seed=4)["target"], out["target"])


def test_no_cap_or_a_cap_above_the_row_count_keeps_every_row() -> None:
    rows = {"seq": np.arange(10)}
    assert subsample_rows(rows, None, 0) is rows
    assert subsample_rows(rows, 10, 0) is rows


def test_a_non_positive_cap_is_rejected_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="train.max_rows"):
        load_config(None, ["train.max_rows=0"])
