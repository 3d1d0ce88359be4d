import numpy as np
import torch

from raypipe.eval.protocols import EvalSet, evaluate
from raypipe.models.pop import ContentLastItem, Pop, Random


def test_pop_scores_counts_for_shared_and_per_row_candidates() -> None:
    m = Pop(np.array([0, 5, 1, 9]))
    h = torch.tensor([[0, 1], [2, 3]])
    assert m.score(h, torch.tensor([1, 3])).tolist() == [[5.0, 9.0], [5.0, 9.0]]
    assert m.score(h, torch.tensor([[2, 1], [3, 3]])).tolist() == [[1.0, 5.0], [9.0, 9.0]]


def test_content_last_item_uses_the_most_recent_item() -> None:
    v = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    m = ContentLastItem(v)
    s = m.score(torch.tensor([[1, 2], [0, 1]]), torch.tensor([1, 2, 3]))
    assert torch.allclose(s, torch.tensor([[0.0, 1.0, 0.8], [1.0, 0.0, 0.6]]))


def test_random_is_a_uniform_ranking_through_evaluate() -> None:
    n = 4000
    es = EvalSet(history=np.zeros((n, 1), np.int64), target=np.ones(n, np.int64), catalogue=np.arange(1, 11))
    r = evaluate(Random().score, es, ks=(1,), exclude_seen=False)
    assert abs(r["hr@1"] - 0.1) < 0.02  # 1 in 10 by chance


def test_recent_pop_counts_the_window_before_each_recommendation() -> None:
    import pandas as pd
    import pytest

    from raypipe.data.catalogue import ItemCatalogue
    from raypipe.data.sequences import ItemIndex
    from raypipe.models.pop import PopConfig, RecentPop
    from raypipe.models.registry import build_model

    day, t0 = 86_400, 1_700_000_000
    index = ItemIndex.build(pd.Series(["a/0", "a/1", "a/2"]), pd.Series(["a"] * 3))
    # day 0: item 1 twice; day 1: item 2; day 3: item 3 three times
    items = np.array([1, 1, 2, 3, 3, 3])
    ts = t0 + day * np.array([0, 0, 1, 3, 3, 3]) + 10
    model = build_model(PopConfig(window_days=2), ItemCatalogue(index, events=(items, ts)))
    assert isinstance(model, RecentPop)
    h = torch.zeros((4, 1), dtype=torch.long)
    when = torch.tensor([t0 + 10, t0 + day + 20, t0 + 2 * day + 20, t0 + 4 * day + 20])
    s = model.score(h, torch.tensor([1, 2, 3]), time=when)
    # day 0 sees nothing; day 1 sees day 0; day 2 sees days 0-1; day 4 sees days 2-3 (not day 1)
    assert s.tolist() == [[0, 0, 0], [2, 0, 0], [2, 1, 0], [0, 0, 3]]
    assert model.score(h[:1], torch.tensor([[3, 1]])).tolist() == [[3, 0]]  # no time: the latest window
    with pytest.raises(ValueError, match="window_days"):
        PopConfig(window_days=0)
