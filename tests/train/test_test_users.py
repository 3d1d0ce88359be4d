"""``eval.test_users``: a fixed sample of each domain's test users, the same for every run of a comparison."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raypipe.config import ConfigError, load_config
from raypipe.eval.metrics import ndcg
from raypipe.rundir import load_ranks
from raypipe.train.run import judged_set, prepare_for, run_experiment


def _pop(tiny_dataset: Path, tmp_path: Path, name: str, *overrides: str):
    cfg = load_config(None, [f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path}", "model.name=pop",
                             "run.stage=finetune", f"run.name={name}", *overrides])
    return cfg, run_experiment(cfg)


def test_a_capped_run_judges_the_same_sample_whatever_the_training_seed(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg, capped = _pop(tiny_dataset, tmp_path, "capped", "eval.test_users=7")
    _, other_seed = _pop(tiny_dataset, tmp_path, "seed1", "eval.test_users=7", "train.seed=1")
    _, full = _pop(tiny_dataset, tmp_path, "full")
    prep = prepare_for(cfg.data)
    ranks, ranks_seed1, ranks_full = (load_ranks(r.run_dir) for r in (capped, other_seed, full))
    for d, users in ranks.items():
        all_users = set(str(u) for u in prep.eval_set("test", d, cfg.data.max_len).user_ids)
        assert len(all_users) > 7
        assert capped.test[d]["n_users"] == 7 == len(users)
        assert set(users) == set(ranks_seed1[d]) and set(users) < all_users
        assert full.test[d]["n_users"] == len(all_users) == len(ranks_full[d])
        # the capped metric is the full run's per-user values averaged over the sample
        sample = np.array([ranks_full[d][u] for u in users])
        assert capped.test[d]["ndcg@10"] == pytest.approx(float(ndcg(sample, 10).mean()))
        # the sample is the helper's, in the eval set's order
        es = judged_set(prep, d, cfg)
        assert [str(u) for u in es.user_ids] == list(users)
        # all_users ignores the cap: every test user, as the uncapped run judged them
        assert [str(u) for u in judged_set(prep, d, cfg, all_users=True).user_ids] == list(ranks_full[d])


def test_a_cap_of_zero_is_refused_before_anything_runs() -> None:
    with pytest.raises(ConfigError, match="eval.test_users"):
        load_config(None, ["eval.test_users=0"])


def test_repeated_targets_flag_the_judged_users_whose_target_is_in_their_history(tiny_dataset: Path) -> None:
    from raypipe.train.run import repeated_targets

    cfg = load_config(None, [f"data.dataset={tiny_dataset}", "model.name=pop", "eval.test_users=7"])
    prep = prepare_for(cfg.data)
    capped = repeated_targets(prep, ["toys"], cfg)["toys"]
    full = repeated_targets(prep, ["toys"], cfg, all_users=True)["toys"]
    es = judged_set(prep, "toys", cfg, all_users=True)
    assert len(capped) == 7 and set(capped) < set(full) and len(full) == es.n_users
    hand = {str(u): int(t) in {int(x) for x in h if x > 0} for u, h, t in zip(es.user_ids, es.history, es.target)}
    assert full == hand and 0 < sum(hand.values()) < len(hand)
