"""BLEU and ROUGE against hand computations."""
from __future__ import annotations

import math

import pytest

from raypipe.eval.text import corpus_bleu, rouge1, rouge_l, text_scores, tokens


def test_tokens_split_words_and_punctuation() -> None:
    assert tokens("Lovely floral Cap.") == ["lovely", "floral", "cap", "."]


def test_identical_texts_score_one() -> None:
    s = text_scores(["a fine red cap ."], ["A fine red cap."])
    assert s["bleu4"] == pytest.approx(1.0) and s["rouge1"] == 1.0 and s["rougeL"] == 1.0


def test_bleu_by_hand() -> None:
    # hyp "the cat sat" vs ref "the cat sat down": p1 = 3/3, p2 = (2+1)/(2+1), p3 = (1+1)/(1+1),
    # p4 = (0+1)/(0+1); brevity penalty exp(1 - 4/3)
    assert corpus_bleu(["the cat sat"], ["the cat sat down"]) == pytest.approx(math.exp(1 - 4 / 3))
    # hyp "cat the" vs ref "the cat": p1 = 1, p2 = (0+1)/(1+1), p3 = p4 = 1/1; no penalty (equal length)
    assert corpus_bleu(["cat the"], ["the cat"]) == pytest.approx(0.5 ** 0.25)
    assert corpus_bleu(["dog"], ["the cat"]) == 0.0


def test_rouge_by_hand() -> None:
    # overlap {the, cat} = 2; P = 2/3, R = 2/4 -> F1 = 4/7
    assert rouge1("the cat sat", "the big cat ran") == pytest.approx(4 / 7)
    # LCS("a b c d", "a c b d") = 3 (a b d / a c d) -> P = R = 3/4
    assert rouge_l("a b c d", "a c b d") == pytest.approx(0.75)
    assert rouge_l("", "a") == 0.0
