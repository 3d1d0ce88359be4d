"""Item text templates of the papers.

* ``plain``: the title alone (IDP, PreRec's SBERT input falls back to category when there is no title).
* ``upsr_pretrain`` (UPSR §3.2, C→T): ``(category: <category>) <title>``
* ``upsr_finetune`` (UPSR §3.2, C→T→DPT): ``(category: C) T (brand: B) (price: P) (description: D)``
* ``upsr:<order>`` (UPSR §4.5, Tables 5-8): the attributes named by the letters of ``<order>``, in that
  order: ``C`` the category, ``T`` the title, ``D`` the DPT (brand, price, description), e.g. ``upsr:T``,
  ``upsr:TCD``, ``upsr:DCT``; ``upsr:CT`` is ``upsr_pretrain`` and ``upsr:CTD`` is ``upsr_finetune``.
* ``unimp`` (UniMP §3.1, Flatten(I_e)): ``[IMG] title: T category: C brand: B price: P description: D [EOC]``
  (``[IMG]`` only when the item has an image).
* UPSR's prompt (§3.3.2) over a history: :func:`upsr_prompt`.

Each template takes a mapping with the canonical item columns (missing or null fields are skipped),
and an optional ``max_tokens`` with a ``tokenize`` callable to cut every item text to a token budget
(UPSR: 40 tokens per item).  Without a tokenizer, whitespace words are the tokens.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

IMG_TOKEN = "[IMG]"
EOC_TOKEN = "[EOC]"
MASK_ITEM = "<masked_item>"
UPSR_PROMPT_HEAD = "Given the following purchase history of user: "
UPSR_PROMPT_TAIL = ", predict masked item purchased by the user?"

Tokenize = Callable[[str], Sequence[Any]]
Detokenize = Callable[[Sequence[Any]], str]


def _val(item: Mapping[str, Any], key: str) -> str | None:
    v = item.get(key)
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return f"{v:.2f}"
    s = str(v).strip()
    return s or None


def truncate_tokens(text: str, max_tokens: int | None, tokenize: Tokenize | None = None,
                    detokenize: Detokenize | None = None) -> str:
    """Cut ``text`` to ``max_tokens`` tokens (whitespace words unless a tokenizer pair is given)."""
    if max_tokens is None:
        return text
    if tokenize is None or detokenize is None:
        words = text.split()
        return " ".join(words[:max_tokens])
    toks = tokenize(text)
    return text if len(toks) <= max_tokens else detokenize(toks[:max_tokens])


def plain(item: Mapping[str, Any], **_: Any) -> str:
    """The title; the category when there is no title; empty when neither exists."""
    return _val(item, "title") or _val(item, "category") or ""


UPSR_ATTRIBUTES = "CTD"


def _upsr_part(item: Mapping[str, Any], letter: str) -> list[str]:
    if letter == "C":
        return [f"(category: {c})"] if (c := _val(item, "category")) is not None else []
    if letter == "T":
        return [t] if (t := _val(item, "title")) is not None else []
    return [f"({key}: {v})" for key in ("brand", "price", "description") if (v := _val(item, key)) is not None]


def upsr_order(order: str) -> str:
    """Validate a UPSR attribute order (letters of ``C``, ``T``, ``D``, each at most once)."""
    if not order or set(order) - set(UPSR_ATTRIBUTES) or len(set(order)) != len(order):
        raise ValueError(f"UPSR attribute order {order!r}: use each of C (category), T (title), D (brand, "
                         "price, description) at most once, e.g. CT, CTD, TCD")
    return order


def upsr_attributes(item: Mapping[str, Any], order: str, max_tokens: int | None = None,
                    tokenize: Tokenize | None = None, detokenize: Detokenize | None = None) -> str:
    """UPSR's item text from the attributes of ``order`` (§3.3.1, §4.5), cut to ``max_tokens``."""
    parts = [p for letter in upsr_order(order) for p in _upsr_part(item, letter)]
    return truncate_tokens(" ".join(parts), max_tokens, tokenize, detokenize)


def upsr_pretrain(item: Mapping[str, Any], max_tokens: int | None = None, tokenize: Tokenize | None = None,
                  detokenize: Detokenize | None = None) -> str:
    """UPSR pre-training representation, category → title."""
    return upsr_attributes(item, "CT", max_tokens, tokenize, detokenize)


def upsr_finetune(item: Mapping[str, Any], max_tokens: int | None = None, tokenize: Tokenize | None = None,
                  detokenize: Detokenize | None = None) -> str:
    """UPSR fine-tuning representation, category → title → DPT (brand, price, description)."""
    return upsr_attributes(item, "CTD", max_tokens, tokenize, detokenize)


def unimp(item: Mapping[str, Any], max_tokens: int | None = None, tokenize: Tokenize | None = None,
          detokenize: Detokenize | None = None) -> str:
    """UniMP Flatten(I_e) = {[IMG], k1, v1, ..., km, vm, [EOC]}; values cut to the token budget each."""
    parts = []
    if item.get("image") is not None or item.get("image_path") is not None:
        parts.append(IMG_TOKEN)
    for key in ("title", "category", "brand", "price", "description"):
        if (v := _val(item, key)) is not None:
            parts.append(f"{key}: {truncate_tokens(v, max_tokens, tokenize, detokenize)}")
    parts.append(EOC_TOKEN)
    return " ".join(parts)


TEMPLATES: dict[str, Callable[..., str]] = {
    "plain": plain,
    "upsr_pretrain": upsr_pretrain,
    "upsr_finetune": upsr_finetune,
    "unimp": unimp,
}


def check_template(template: str) -> str:
    """``template`` if it names a template (one of :data:`TEMPLATES` or ``upsr:<order>``), else a
    ValueError listing them."""
    if template.startswith("upsr:"):
        upsr_order(template.removeprefix("upsr:"))
    elif template not in TEMPLATES:
        raise ValueError(f"unknown text template {template!r}; choose from {sorted(TEMPLATES)} or "
                         "upsr:<order> (e.g. upsr:TCD)")
    return template


def render(template: str, item: Mapping[str, Any], **kwargs: Any) -> str:
    if check_template(template).startswith("upsr:"):
        return upsr_attributes(item, template.removeprefix("upsr:"), **kwargs)
    return TEMPLATES[template](item, **kwargs)


def upsr_prompt(item_texts: Sequence[str], masked: bool = True) -> str:
    """UPSR §3.3.2: ``Given the following purchase history of user: t1, ..., tn, <masked_item>, predict
    masked item purchased by the user?``"""
    body = list(item_texts) + ([MASK_ITEM] if masked else [])
    return UPSR_PROMPT_HEAD + ", ".join(body) + UPSR_PROMPT_TAIL
