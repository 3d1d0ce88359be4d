"""Evaluation: ranking metrics and the protocols every model is evaluated through.

``metrics`` holds HR/Recall, NDCG, MRR @K and PreRec's Recall@K% / r-NDCG@K% (eq. 7-9);
``protocols`` holds :func:`evaluate` (full ranking, sampled candidates, re-ranking, unseen-item subset)
and popularity-group evaluation.
"""

from raypipe.eval.metrics import (
    PRE_REC_A,
    PRE_REC_B,
    compute_metrics,
    hit_rate,
    k_percent_cutoff,
    metric_names,
    ndcg,
    r_ndcg_at_k_percent,
    recall,
    recall_at_k_percent,
    reciprocal_rank,
)
from raypipe.eval.protocols import (
    EvalConfig,
    EvalSet,
    ScoreFn,
    compute_ranks,
    evaluate,
    evaluate_groups,
    evaluate_popularity_groups,
    popularity_groups,
    sample_negatives,
)

__all__ = [
    "PRE_REC_A",
    "PRE_REC_B",
    "EvalConfig",
    "EvalSet",
    "ScoreFn",
    "compute_metrics",
    "compute_ranks",
    "evaluate",
    "evaluate_groups",
    "evaluate_popularity_groups",
    "hit_rate",
    "k_percent_cutoff",
    "metric_names",
    "ndcg",
    "popularity_groups",
    "r_ndcg_at_k_percent",
    "recall",
    "recall_at_k_percent",
    "reciprocal_rank",
    "sample_negatives",
]
