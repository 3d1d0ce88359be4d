"""Live cold-start items: the CDIM matcher (IDP eq. 8–9 at serving time) and the onboarding log.

Onboarding a new item (``POST /items``):

1. its text (the ``plain`` template: title, else category — the text CDIM was trained on) is encoded
   by CDIM (eq. 4);
2. its top-``m`` pre-trained items are found in the hnswlib index over the pre-trained items' CDIM
   vectors (eq. 8);
3. its ID embedding is the eq. 9 similarity-weighted mean of those items' vectors in the *served*
   model's item space (:func:`raypipe.models.idp.generate_id_embeddings`; with the pre-training run
   served these are exactly the pre-trained ID embeddings of the paper, with a fine-tuned run the
   fine-tuned rows of the same items, so the generated vector lives in the space the user vectors
   are scored in);
4. one record per item is appended to :class:`OnboardingLog`; every retriever and matcher replica
   applies new records before answering its next request, so the item is recommendable and
   matchable at once on every replica, and survives replica restarts.

The log is one JSON-lines file under the app's state directory (:class:`raypipe.serve.jsonlog.JsonLinesLog`:
appends under an exclusive ``flock``, one ``write`` per batch; readers only consume complete lines);
duplicate ids are refused under the lock.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from raypipe.data.text import render
from raypipe.index import HNSWIndex
from raypipe.models.idp import generate_id_embeddings
from raypipe.serve.jsonlog import JsonLinesLog

log = logging.getLogger(__name__)

LOG_FILE = "onboarded.jsonl"


class DuplicateItemError(ValueError):
    def __init__(self, ids: Sequence[str]) -> None:
        super().__init__(f"item id(s) already in the catalogue: {list(ids)}")
        self.ids = list(ids)


class OnboardingLog(JsonLinesLog):
    """Append-only JSON-lines log of onboarded items, shared by all replicas through the file system."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._pending: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.count = 0

    def _read_new(self) -> list[dict[str, Any]]:
        out = []
        for rec in self.read_new():
            if rec.get("item_id") in self.ids:
                continue
            self.ids.add(rec["item_id"])
            out.append(rec)
        self.count += len(out)
        return out

    def poll(self) -> list[dict[str, Any]]:
        """Records appended (by anyone) since the last poll, oldest first.  Costs one ``stat`` when idle."""
        new = self._pending + self._read_new()
        self._pending = []
        return new

    def append(self, records: Sequence[dict[str, Any]], taken: Callable[[str], bool] = lambda _: False) -> None:
        """Append ``records`` atomically unless an id is already logged or ``taken`` (e.g. pre-trained).
        Raises :class:`DuplicateItemError` (nothing is written then).  Call :meth:`poll` to apply them."""
        def check() -> None:
            self._pending += self._read_new()  # catch up under the lock: ids others just logged
            dup = [r["item_id"] for r in records if r["item_id"] in self.ids or taken(r["item_id"])]
            if dup:
                raise DuplicateItemError(dup)

        self.append_locked(records, check)


def record_vector(record: Mapping[str, Any]) -> list[float]:
    """An onboarded item's scoring vector in the served model's item space: CDIM's generated ID embedding
    (eq. 9), or a content model's projected contents (``vector``, :mod:`raypipe.serve.content`)."""
    return record["vector"] if "vector" in record else record["id_embedding"]


def item_text(attributes: Mapping[str, Any]) -> str:
    """The text CDIM reads for an item: IDP's ``plain`` template (title, else category)."""
    return render("plain", attributes)


# ------------------------------------------------------------------------------------------ loading
def load_cdim(cdim_dir: str | None, config: Mapping[str, Any] | None = None):
    """CDIM with the tuned weights of ``cdim_dir`` (as the IDP pipeline saves them), or the packaged
    MiniLM untuned when ``cdim_dir`` is None."""
    import torch

    from raypipe.models.cdim import CDIM, CDIMConfig

    cfg = CDIMConfig(**{k: v for k, v in dict(config or {}).items() if k in CDIMConfig.__dataclass_fields__})
    model = CDIM(cfg)
    if cdim_dir is not None:
        state = torch.load(Path(cdim_dir) / "model.pt", map_location="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"{cdim_dir}/model.pt does not fit CDIM({cfg}): unexpected keys {unexpected[:5]}")
    return model.eval()


def pretrained_cdim_index(cdim, item_ids: Sequence[str], texts: Sequence[str], cache: Path | None,
                          max_items: int | None = None, seed: int = 0, ef_search: int = 64) -> HNSWIndex:
    """An hnswlib (cosine) index over the CDIM vectors of pre-trained items that have text (eq. 8),
    cached at ``cache``.  ``max_items`` keeps a seeded random subset (documented wherever used)."""
    if cache is not None and (cache / "meta.json").is_file():
        return HNSWIndex.load(cache, verify_checksums=False)
    pairs = [(i, t) for i, t in zip(item_ids, texts) if t]
    if max_items is not None and len(pairs) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(pairs), size=max_items, replace=False))
        pairs = [pairs[j] for j in keep]
    t0 = time.time()
    vecs = cdim.encode_texts([t for _, t in pairs])
    index = HNSWIndex.build(vecs, [i for i, _ in pairs], space="cosine", ef_search=ef_search,
                            metadata={"what": "CDIM vectors of pre-trained items", "n": len(pairs)})
    log.info("encoded %d pre-trained item texts with CDIM in %.1fs", len(pairs), time.time() - t0)
    if cache is not None:
        index.save(cache)
    return index


# ------------------------------------------------------------------------------------------ matcher
@dataclass
class Match:
    item_id: str
    domain: str | None
    score: float
    onboarded: bool


class _Rows(Mapping[str, np.ndarray]):
    """Item id → row of the served model's item vectors (what eq. 9 averages)."""

    def __init__(self, position: Mapping[str, int], table: np.ndarray) -> None:
        self.position, self.table = position, table

    def __getitem__(self, key: str) -> np.ndarray:
        return self.table[self.position[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.position)

    def __len__(self) -> int:
        return len(self.position)


class Matcher:
    """CDIM matching and onboarding over a fixed pre-trained index plus live onboarded items.

    Args:
        encode: texts → L2-normalised CDIM vectors ``[n, dc]`` (the CDIM encoder).
        pretrained: hnswlib cosine index over the pre-trained items' CDIM vectors (eq. 8's search space).
        item_ids / item_vectors: the served model's item index and scoring vectors (row i = item_ids[i]).
        domain_of: item id → domain of every pre-trained item.
        log: the shared onboarding log.
        top_m: eq. 8's m.
    """

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], pretrained: HNSWIndex,
                 item_ids: Sequence[str], item_vectors: np.ndarray, domain_of: Mapping[str, str],
                 onboarding_log: OnboardingLog, top_m: int = 10) -> None:
        self.encode = encode
        self.pretrained = pretrained
        position = {iid: i for i, iid in enumerate(item_ids)}
        self.known = position
        usable = [i for i in pretrained.ids if i in position]
        if len(usable) < len(pretrained):
            log.warning("%d of %d items in the CDIM index are not in the served model; they are not matched",
                        len(pretrained) - len(usable), len(pretrained))
            self._allowed: set[str] | None = set(usable)
        else:
            self._allowed = None
        if not usable:
            raise ValueError("no item of the CDIM index is known to the served model")
        self.rows = _Rows({i: position[i] for i in usable}, item_vectors)
        self.domain_of = dict(domain_of)
        self.log = onboarding_log
        self.top_m = int(top_m)
        self.onboarded = HNSWIndex(space="cosine", dim=pretrained.dim, ef_search=64)
        self.onboarded_domain: dict[str, str] = {}
        self.sync()

    @property
    def count(self) -> int:
        return self.log.count

    def sync(self) -> int:
        """Apply records other replicas logged; returns the log's record count."""
        new = [r for r in self.log.poll() if "cdim_vector" in r]  # content-onboarded items have no CDIM vector
        if new:
            self.onboarded.add_items(np.asarray([r["cdim_vector"] for r in new], np.float32),
                                     [r["item_id"] for r in new])
            self.onboarded_domain.update({r["item_id"]: r["domain"] for r in new})
        return self.log.count

    def _query_pretrained(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pretrained.query(vecs, k, filter_ids=self._allowed)

    def match(self, vecs: np.ndarray, k: int, include_onboarded: bool = True) -> list[list[Match]]:
        """Nearest pre-trained (and onboarded) items by CDIM cosine similarity, best first."""
        self.sync()
        ids, scores = self._query_pretrained(vecs, k)
        out = [[Match(str(i), self.domain_of.get(str(i)), float(s), False) for i, s in zip(ri, rs)]
               for ri, rs in zip(ids, scores)]
        if include_onboarded and len(self.onboarded):
            oids, oscores = self.onboarded.query(vecs, min(k, len(self.onboarded)))
            for row, ri, rs in zip(out, oids, oscores):
                row += [Match(str(i), self.onboarded_domain.get(str(i)), float(s), True) for i, s in zip(ri, rs)]
                row.sort(key=lambda m: -m.score)
                del row[k:]
        return out

    def onboard(self, items: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """Generate ID embeddings (eq. 8–9) for ``items`` (dicts with item_id, domain and attributes),
        append them to the log and apply it.  Raises :class:`DuplicateItemError`."""
        self.sync()
        dup = [it["item_id"] for it in items if it["item_id"] in self.known or it["item_id"] in self.log.ids]
        if dup:
            raise DuplicateItemError(dup)
        texts = [item_text(it.get("attributes", {})) for it in items]
        vecs = self.encode(texts)
        search = _Filtered(self)
        gen = generate_id_embeddings([it["item_id"] for it in items], vecs, search, self.rows, self.top_m)
        sims = search.last_scores
        now = time.time()
        records = [{
            "item_id": it["item_id"], "domain": it["domain"], "attributes": dict(it.get("attributes", {})),
            "text": text, "id_embedding": gen.embeddings[j].tolist(), "cdim_vector": vecs[j].tolist(),
            "neighbours": [str(x) for x in gen.neighbours[j]], "similarities": [float(x) for x in sims[j]],
            "weights": [float(x) for x in gen.weights[j]], "created": now,
        } for j, (it, text) in enumerate(zip(items, texts))]
        self.log.append(records, taken=self.known.__contains__)
        return records, self.sync()


class _Filtered:
    """The pre-trained index restricted to items the served model knows (eq. 8's search)."""

    def __init__(self, matcher: Matcher) -> None:
        self.m = matcher
        self.last_scores = np.zeros((0, 0), np.float32)

    def query(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids, self.last_scores = self.m._query_pretrained(vectors, k)
        return ids, self.last_scores
