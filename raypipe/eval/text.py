"""Text-generation metrics (UniMP's explanation task): corpus BLEU-4 and ROUGE-1 / ROUGE-L F1.

Tokens are lower-cased words and punctuation marks (``re.findall(r"\\w+|[^\\w\\s]")``).  BLEU is
Papineni et al.'s corpus BLEU (clipped n-gram precisions pooled over the corpus, geometric mean of
n = 1..4, brevity penalty) with add-one smoothing of the n > 1 precisions (Lin & Och 2004, "smoothing
1"), so short texts without a 4-gram match do not give 0; ROUGE-1 is unigram-overlap F1 and ROUGE-L the
longest-common-subsequence F1, each averaged over the pairs.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _ngrams(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("corpus_bleu needs as many hypotheses as references, at least one")
    match = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for h, r in zip(hypotheses, references):
        ht, rt = tokens(h), tokens(r)
        hyp_len += len(ht)
        ref_len += len(rt)
        for n in range(1, max_n + 1):
            hc, rc = _ngrams(ht, n), _ngrams(rt, n)
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(len(ht) - n + 1, 0)
    if hyp_len == 0 or match[0] == 0:
        return 0.0
    logp = math.log(match[0] / total[0])
    for n in range(1, max_n):
        logp += math.log((match[n] + 1) / (total[n] + 1))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(logp / max_n)


def _f1(overlap: int, n_hyp: int, n_ref: int) -> float:
    if overlap == 0:
        return 0.0
    p, r = overlap / n_hyp, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge1(hypothesis: str, reference: str) -> float:
    h, r = Counter(tokens(hypothesis)), Counter(tokens(reference))
    return _f1(sum((h & r).values()), sum(h.values()), sum(r.values()))


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    h, r = tokens(hypothesis), tokens(reference)
    return _f1(_lcs(h, r), len(h), len(r))


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``bleu4``, ``rouge1``, ``rougeL`` (the ROUGEs averaged over pairs) and ``n``."""
    n = len(hypotheses)
    return {"bleu4": corpus_bleu(hypotheses, references),
            "rouge1": sum(rouge1(h, r) for h, r in zip(hypotheses, references)) / n,
            "rougeL": sum(rouge_l(h, r) for h, r in zip(hypotheses, references)) / n, "n": float(n)}
