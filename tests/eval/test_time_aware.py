"""Time-aware scorers: the protocols hand each row's target time to a score function that takes ``time``
(and never to one that does not); validation pools users or averages domains."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from raypipe.eval.protocols import EvalSet, evaluate
from raypipe.train.loop import RankingValidator


def oracle(history: torch.Tensor, candidates: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    """Scores 1 for the candidate whose index equals the row's ``time`` (a planted oracle)."""
    c = candidates if candidates.dim() == 2 else candidates[None].expand(len(history), -1)
    return (c == time[:, None]).float()


def _set(times: np.ndarray | None, target: list[int]) -> EvalSet:
    return EvalSet(history=np.array([[0, 1]] * len(target)), target=np.array(target),
                   catalogue=np.arange(1, 21), time=times)


@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_time_reaches_the_scorer_row_by_row(protocol: str) -> None:
    target = [3, 7, 11, 19]
    m = evaluate(oracle, _set(np.array(target), target), protocol=protocol, n_neg=5, ks=(1,))
    assert m["hr@1"] == 1.0
    # a subset keeps each row's own time
    sub = _set(np.array(target), target).subset(np.array([2, 0]))
    assert sub.time.tolist() == [11, 3] and evaluate(oracle, sub, ks=(1,))["hr@1"] == 1.0
    # times pointing elsewhere: the oracle never hits (the target ranks after the planted item)
    wrong = np.array([4, 8, 12, 20])
    assert evaluate(oracle, _set(wrong, target), protocol="full", ks=(1,))["hr@1"] == 0.0


def test_scorers_without_time_never_receive_it() -> None:
    seen = []

    def plain(history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        seen.append(len(history))
        return torch.zeros(len(history), candidates.shape[-1])

    evaluate(plain, _set(np.array([1, 2]), [3, 4]))
    assert seen == [2]
    with pytest.raises(ValueError, match="time must be"):
        _set(np.array([1]), [3, 4])


class _Model(torch.nn.Module):
    def score(self, history, candidates, time):
        return oracle(history, candidates, time)


def test_validation_pools_users_or_averages_domains() -> None:
    # domain a: 3 users, the oracle always hits (ndcg 1); domain b: 1 user, its time points elsewhere
    valid = {"a": _set(np.array([3, 7, 11]), [3, 7, 11]), "b": _set(np.array([2]), [5])}
    pooled = RankingValidator(valid, "ndcg@1")(_Model(), 0, 1, torch.device("cpu"))
    mean = RankingValidator(valid, "ndcg@1", "domains")(_Model(), 0, 1, torch.device("cpu"))
    assert pooled["valid/ndcg@1"] == pytest.approx(3 / 4) and mean["valid/ndcg@1"] == pytest.approx(1 / 2)
    assert pooled["valid/a/ndcg@1"] == 1.0 and pooled["valid/b/ndcg@1"] == 0.0
    # PreRec's @K% metrics validate too: K% = 5% of 20 items is a cut-off of 1
    pct = RankingValidator(valid, "r_ndcg@5%", "domains")(_Model(), 0, 1, torch.device("cpu"))
    assert pct["valid/r_ndcg@5%"] == pytest.approx(1 / 2)
