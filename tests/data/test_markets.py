"""The embedded markets benchmark: deterministic, products shared across markets under market ids,
no user in two markets, different catalogue sizes and popularity regimes, drift, the unseen subset."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raypipe.data.markets import MARKETS, generate, product_key, unseen_items
from raypipe.data.registry import resolve_dataset
from raypipe.data.schema import DataValidationError


def test_markets_share_products_not_users() -> None:
    items, inter, info = generate("tiny")
    items2, inter2, _ = generate("tiny")
    assert items.equals(items2) and inter.equals(inter2)  # deterministic
    it, ev = items.to_pandas(), inter.to_pandas()
    assert [d.name for d in info.domains] == [m.name for m in MARKETS]
    assert (ev.groupby("user_id")["domain"].nunique() == 1).all()  # one market per user
    # the same product (same text) is sold under a market-specific id in several markets
    it["product"] = it["item_id"].map(product_key)
    multi = it.groupby("product")["domain"].nunique()
    assert (multi > 1).mean() > 0.5
    one = it[it["product"] == multi.idxmax()]
    assert one["title"].nunique() == 1 and one["item_id"].nunique() == len(one)
    assert all(i.startswith(d + "/") for i, d in zip(ev["item_id"], ev["domain"]))
    # catalogue sizes and traffic differ between markets
    sizes = it.groupby("domain").size()
    assert sizes.max() > 1.5 * sizes.min()
    assert ev.groupby("domain").size().max() > 3 * ev.groupby("domain").size().min()


def test_popularity_drifts_over_time() -> None:
    _, inter, _ = generate("small")
    ev = inter.to_pandas()
    ev = ev[ev["domain"] == "ca"]
    t = ev["timestamp"]
    early = ev[t < t.quantile(0.3)]["item_id"].value_counts().head(20).index
    late = ev[t > t.quantile(0.7)]["item_id"].value_counts().head(20).index
    assert len(set(early) & set(late)) < 10  # the top items of the start are mostly not those of the end


def test_unseen_items_are_products_no_source_sells() -> None:
    ids = np.array(["in/P1", "ca/P2", "au/P1", "au/P3", "mx/P2", "mx/P4"], dtype=object)
    doms = np.array([i.split("/")[0] for i in ids], dtype=object)
    assert unseen_items(ids, doms, ["in", "ca"]).tolist() == [3, 5]


def test_registry_generates_markets(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAYPIPE_DATA", str(tmp_path))
    path = resolve_dataset("markets:tiny")
    assert path == tmp_path / "markets-tiny" and (path / "interactions.parquet").exists()
    assert len(pd.read_parquet(path / "items.parquet")) == len(generate("tiny")[0])
    with pytest.raises(DataValidationError, match="unknown markets size 'huge'"):
        resolve_dataset("markets:huge")


def test_main_writes_into_an_empty_dir_keeps_its_own_and_refuses_anything_else(tmp_path, capsys) -> None:
    from raypipe.data import markets

    out = tmp_path / "m"
    out.mkdir()  # an existing empty directory is accepted
    assert markets.main(["--size", "tiny", "--out", str(out)]) == 0
    written = (out / "dataset.json").stat().st_mtime_ns
    assert markets.main(["--size", "tiny", "--out", str(out)]) == 0  # the same benchmark: kept as is
    assert (out / "dataset.json").stat().st_mtime_ns == written
    with pytest.raises(SystemExit) as e:  # another seed: refused without --force
        markets.main(["--size", "tiny", "--seed", "1", "--out", str(out)])
    assert e.value.code == 2 and "--force" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as e:
        markets.main(["--size", "tiny", "--out", str(foreign), "--force"])
    assert e.value.code == 2 and str(foreign) in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine" and not (foreign / "dataset.json").exists()
