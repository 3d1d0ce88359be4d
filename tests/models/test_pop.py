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
