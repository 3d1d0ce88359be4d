"""Inner-domain cold start (IDP §3.8) on the tiny benchmark: cold items really lose every interaction,
the untouched warm model gets generated rows for them, and only cold-target users are scored as cold."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raypipe.data.prepare import prepare
from raypipe.data.sequences import ItemIndex
from raypipe.models.idp import ITEM_TABLE_KEY
from raypipe.config import with_overrides
from raypipe.pipelines.cold_start import ColdStartConfig, evaluate_cold, pick_cold_items, run_cold_start
from raypipe.rundir import INDEX_FILE, WEIGHTS_FILE


def test_pick_cold_items_takes_the_share_of_each_domain(tiny_dataset):
    prep = prepare(tiny_dataset)
    doms = prep.info.target_domains
    cold = pick_cold_items(prep.index, doms, 0.1, seed=3)
    assert cold == pick_cold_items(prep.index, doms, 0.1, seed=3)  # seeded
    pos = {str(i): k + 1 for k, i in enumerate(prep.index.item_ids)}
    for d in doms:
        n_dom = len(prep.index.domain_items(d))
        in_dom = [c for c in cold if prep.index.domains[pos[c] - 1] == d]
        assert len(in_dom) == max(1, round(0.1 * n_dom))


def test_cold_start_end_to_end(ray_local, tiny_dataset, tmp_path):
    base = ColdStartConfig()
    cfg = ColdStartConfig(dataset=str(tiny_dataset), storage_path=str(tmp_path), name="cold", n_neg=5,
                          cold_share=0.2, top_m=3,
                          train=with_overrides(base.train, ["train.epochs=2", "train.batch_size=64",
                                                            "train.valid_users=200", "data.max_len=20",
                                                            "model.hidden=16"]),
                          cdim_train=with_overrides(base.cdim_train, ["train.epochs=1", "train.batch_size=32"]))
    res = run_cold_start(cfg)
    cold = set(res["cold_items"])
    root = tmp_path / "cold"
    warm_items = set(pq.read_table(root / "warm_data" / "interactions.parquet", columns=["item_id"])
                     .column("item_id").to_pylist())
    assert cold and not cold & warm_items  # no interaction of a cold item survives
    full = prepare(tiny_dataset)
    assert res["n_cold"] == len(cold) == sum(max(1, round(0.2 * len(full.index.domain_items(d))))
                                              for d in full.info.target_domains)
    # the generated rows are convex combinations (eq. 9) of warm rows: inside the warm rows' bounding box
    warm_run = root / "pretrain"
    table = torch.load(warm_run / WEIGHTS_FILE)[ITEM_TABLE_KEY].numpy()
    gen = pq.read_table(root / "transfer_cdim" / "generated.parquet").to_pandas()
    assert set(gen["item_id"]) <= cold
    warm_ids = list(ItemIndex.load(warm_run / INDEX_FILE).item_ids)
    pos = {str(i): k + 1 for k, i in enumerate(warm_ids)}
    for _, r in gen.iterrows():
        rows = table[[pos[n] for n in r["neighbours"]]]
        w = np.asarray(r["weights"])
        assert w.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(np.asarray(r["embedding"]), w @ rows, rtol=1e-4, atol=1e-5)
    for name in ("idp_inner", "idp_inner_wo_bcl", "random_cold", "random"):
        per = res["results"][name]
        n_cold_users = sum(per[d]["cold"]["s_n_users"] for d in per if "cold" in per[d])
        assert n_cold_users >= 1
        for d, groups in per.items():
            for g, m in groups.items():
                assert 0.0 <= m["s_ndcg@10"] <= m["s_hr@10"] <= 1.0
    # same users in every row of the comparison
    users = {name: {d: g["cold"]["s_n_users"] for d, g in per.items() if "cold" in g} for name, per in res["results"].items()}
    assert len({tuple(sorted(u.items())) for u in users.values()}) == 1
    assert (root / "cold_start.md").read_text().count("| cold |") >= 4


def test_evaluate_cold_splits_users_by_their_target(tiny_dataset):
    from raypipe.data.catalogue import ItemCatalogue
    from raypipe.models.pop import PopConfig
    from raypipe.models.registry import build_model

    prep = prepare(tiny_dataset)
    d = prep.info.target_domains[0]
    es = prep.eval_set("test", d, 20)
    target_ids = {str(prep.index.item_ids[t - 1]) for t in es.target[:3]}
    model = build_model(PopConfig(), ItemCatalogue(prep.index, prep.counts))
    out = evaluate_cold(model, prep, [d], target_ids, 20, seed=0, n_neg=10)
    n_cold = int(np.isin([str(prep.index.item_ids[t - 1]) for t in es.target], list(target_ids)).sum())
    assert out[d]["cold"]["s_n_users"] == n_cold and out[d]["cold"]["s_n_users"] + out[d]["warm"]["s_n_users"] == es.n_users
