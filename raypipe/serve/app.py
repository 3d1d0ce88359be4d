"""Ray Serve application: FastAPI ingress → sequence encoder, ANN retriever, item onboarder [, reranker].

    serve run serve_apps/recommender.yaml                                  # the config file (127.0.0.1:8000)
    serve run raypipe.serve.app:build_app artifacts=runs/idp               # app builder, key=value args
    serve deploy serve_apps/recommender.yaml                              # onto a running cluster

The app is part of the installed package: replicas import ``raypipe.serve.app``, no ``PYTHONPATH`` needed
(``serve_apps.recommender`` re-exports it under its former path).

Deployments (composed with ``DeploymentHandle``s; the logic lives in :mod:`raypipe.serve`):

* ``Recommender`` — the FastAPI ingress (OpenAPI at ``/docs``, ``/openapi.json``); validates requests
  and turns every bad one into a 4xx JSON ``{"error", "detail"}``;
* ``SequenceEncoder`` — the trained run's ``user_repr`` over histories, batched with ``@serve.batch``;
* ``ANNRetriever`` — hnswlib over the run's item vectors, one graph per domain, popularity fallback,
  item look-ups, onboarded items applied from the shared log before every read; with a live-popularity
  model (PreRec) also the ``POST /events`` counts (:mod:`raypipe.serve.popularity`), applied from their
  shared log likewise;
* ``CDIMMatcher`` — text → CDIM vector → top-m pre-trained items → eq. 9 ID embedding → onboarding log;
  or, for a served model with the ``content_items`` capability (UniM2Rec, UniSRec, PreRec), ``ContentOnboarder`` —
  the item's own text and image → live feature views → the model's projectors → onboarding log;
* ``Reranker`` (optional) — a second model re-scores the candidates: the run ``reranker_run=<run dir>``
  names, else the served bundle's own reranker (``raypipe bundle ... --reranker RUN_DIR``, read from the
  bundle alone: no dataset on the node; each node's copy for a bundle given by URI).  An explicit
  ``reranker_run=`` wins over the bundle's.

``colocate=true`` runs the encoder's and the retriever's classes inside each ``Recommender`` replica
instead (:mod:`raypipe.serve.local`): no deployment hop per ``/recommend``.  Every answered
``/recommend`` carries a ``Server-Timing`` header with its hops (:mod:`raypipe.serve.timing`).
"""


import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Response
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from raypipe.serve import errors
from raypipe.serve.errors import ApiError, error_result, raise_if_error
from raypipe.serve.loopback import pin_internal_grpc_to_loopback
from raypipe.serve.timing import HEADER as SERVER_TIMING, GcClock, HopTimer
from raypipe.serve import openapi
from raypipe.serve.openapi import HEALTH_EXAMPLE, responses
from raypipe.serve.schemas import (
    DEFAULT_MAX_BODY_BYTES, MAX_K, DeleteResponse, DomainRequest, DomainResponse, EventsRequest, EventsResponse, ExplainRequest, ExplainResponse, ItemOut,
    MatchRequest, MatchResponse,
    OnboardRequest, OnboardResponse,
    RankRequest, RankResponse, RecommenderArgs, RecommendRequest, RecommendResponse, SimilarResponse,
)

log = logging.getLogger("raypipe.serve.app")

api = FastAPI(title="raypipe recommender", version="1.0",
              description="Sequential recommendation with live cold-start items (IDP's CDIM matcher, or the served content "
                          "model's projectors for UniM2Rec, UniSRec and PreRec).")
api.state.max_body_bytes = DEFAULT_MAX_BODY_BYTES
errors.install(api, limit=lambda: api.state.max_body_bytes)
openapi.install(api)
# each endpoint's success example and the error responses it can give (raypipe.serve.openapi.ENDPOINT_ERRORS)
DOCS = {"recommend": responses("recommend", RecommendResponse), "rank": responses("rank", RankResponse),
        "onboard": responses("onboard", OnboardResponse, 201),
        "add_domain": responses("add_domain", DomainResponse, 201),
        "match": responses("match", MatchResponse), "events": responses("events", EventsResponse),
        "explain": responses("explain", ExplainResponse),
        "similar_items": responses("similar_items", SimilarResponse),
        "get_item": responses("get_item", ItemOut), "delete_item": responses("delete_item", DeleteResponse),
        "health": responses("health", HEALTH_EXAMPLE)}


def _on_this_node(spec: dict[str, Any]) -> dict[str, Any]:
    from raypipe.serve.artifacts import on_this_node

    return on_this_node(spec)


@serve.deployment
class SequenceEncoder:
    def __init__(self, spec: dict[str, Any], max_batch: int, batch_wait_s: float) -> None:
        spec = _on_this_node(spec)  # a bundle or run in storage: this node's copy
        pin_internal_grpc_to_loopback()
        from raypipe.serve.artifacts import load_model
        from raypipe.serve.encoder import HistoryEncoder

        model, index, cfg = load_model(spec["run_dir"])
        self.encoder = HistoryEncoder(model, index, cfg.data.max_len)
        self.live_items = None
        if spec["onboarding"] == "content" and hasattr(model, "extend_items"):
            from pathlib import Path

            from raypipe.serve.content import LiveHistoryItems
            from raypipe.serve.onboarding import LOG_FILE, OnboardingLog

            # content-onboarded items may appear in histories: the encoder reads their logged views
            self.live_items = LiveHistoryItems(model, self.encoder, OnboardingLog(Path(spec["state_dir"]) / LOG_FILE),
                                               sorted(set(index.domains)))
        self.encode_many.set_max_batch_size(max_batch)
        self.encode_many.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.001)
    async def encode_many(self, groups: list[list[list[str]]]) -> list[list[dict[str, Any]]]:
        """Groups of histories (one group = one ingress batch); concurrent groups run as one model batch."""
        if self.live_items is not None:
            self.live_items.sync()
        flat = [e.to_dict() for e in self.encoder.encode([h for g in groups for h in g])]
        out, i = [], 0
        for g in groups:
            out.append(flat[i:i + len(g)])
            i += len(g)
        return out


@serve.deployment
class ANNRetriever:
    def __init__(self, spec: dict[str, Any], ef_search: int, M: int, ef_construction: int,
                 popularity_clock: float | None = None) -> None:
        spec = _on_this_node(spec)  # a bundle or run in storage: this node's copy
        pin_internal_grpc_to_loopback()
        from pathlib import Path

        from raypipe.serve.artifacts import (
            item_vectors, load_model, serving_attributes, serving_events, serving_popularity, weights_key,
        )
        from raypipe.serve.catalogue import Catalogue
        from raypipe.serve.deletions import DELETIONS_FILE, DeletionLog
        from raypipe.serve.domains import DOMAINS_FILE, DomainRegistry
        from raypipe.serve.onboarding import LOG_FILE, OnboardingLog
        from raypipe.serve.popularity import EVENTS_FILE, ServedPopularity

        model, index, _ = load_model(spec["run_dir"])
        state = Path(spec["state_dir"])
        live = bool(spec["live_popularity"])
        if live:  # the interactions with their times, read once: the seed of the live counts and the totals
            events = serving_events(spec, index)  # from the bundle or the dataset
            counts = np.bincount(events[0], minlength=len(index) + 1)
        else:
            counts = serving_popularity(spec, index)
        key = weights_key(Path(spec["run_dir"]) / "model.pt", extra=["ip", M, ef_construction])
        self.catalogue = Catalogue(
            list(index.item_ids), list(index.domains), item_vectors(model, len(index)), counts[1:],
            serving_attributes(spec, index), OnboardingLog(state / LOG_FILE), ef_search=ef_search, M=M,
            ef_construction=ef_construction,
            # live popularity rewrites the graphs after start-up: a disk cache would hold stale terms
            cache_dir=None if live else state / "ann" / key, deletion_log=DeletionLog(state / DELETIONS_FILE))
        self.registry = DomainRegistry(state / DOMAINS_FILE, index.domains)
        self.popularity = None
        if live:
            clock = (lambda: float(popularity_clock)) if popularity_clock is not None else time.time
            self.popularity = ServedPopularity(model, list(index.item_ids), list(index.domains), self.catalogue,
                                               events, str(state / EVENTS_FILE), clock)

    def _sync(self) -> None:
        """Domains added and, with live popularity, events and items logged since the last read."""
        for d in self.registry.poll():
            self.catalogue.add_domain(d)
        if self.popularity is not None:
            self.popularity.refresh()

    async def retrieve(self, queries: list[dict[str, Any]]) -> list[Any]:
        """Many look-ups in one call (an ingress batch): ``{"vector", "domain", "k", "exclude"}`` each; a
        ``None`` vector gets the domain's popular items.  Per-query errors come back as error values."""
        from raypipe.serve.catalogue import UnknownDomainError

        self._sync()
        out: list[Any] = []
        for q in queries:
            try:
                if q["vector"] is None:
                    out.append(self.catalogue.popular_items(q["domain"], q["k"], q["exclude"]))
                else:
                    out.append(self.catalogue.search(q["vector"], q["domain"], q["k"], q["exclude"]))
            except UnknownDomainError as e:
                out.append(error_result(422, "unknown_domain", str(e)))
        return out

    async def add_events(self, events: list[dict[str, Any]]) -> Any:
        from raypipe.serve.popularity import EventValidationError

        if self.popularity is None:
            return error_result(400, "no_live_popularity", "the served model has no popularity term to update")
        self._sync()
        try:
            return self.popularity.add(events)
        except EventValidationError as e:
            return error_result(422, "invalid_events", e.problems)

    async def get_item(self, item_id: str) -> Any:
        self._sync()
        item = self.catalogue.get(item_id)
        return item if item is not None else error_result(404, "unknown_item", f"no item {item_id!r}")

    async def score_items(self, vector: Any, item_ids: list[str]) -> dict[str, Any]:
        self._sync()
        scored, unknown = self.catalogue.score_items(vector, item_ids)
        return {"items": [{"item_id": i, "domain": d, "score": sc} for i, d, sc in scored], "unknown": unknown}

    async def delete_item(self, item_id: str) -> Any:
        """Log the item's deletion (every replica applies it before its next answer); 404 when not served."""
        from raypipe.serve.deletions import AlreadyDeletedError

        self._sync()
        found = self.catalogue.item_vector(item_id)
        if found is None:
            return error_result(404, "unknown_item", f"no item {item_id!r}")
        try:
            self.catalogue.deletion_log.delete(item_id)  # type: ignore[union-attr]
        except AlreadyDeletedError:  # deleted by another replica meanwhile
            return error_result(404, "unknown_item", f"no item {item_id!r}")
        self._sync()
        return {"item_id": item_id, "domain": found[1], "deleted": True}

    async def similar(self, item_id: str, k: int) -> Any:
        self._sync()
        found = self.catalogue.similar(item_id, k)
        if found is None:
            return error_result(404, "unknown_item", f"no item {item_id!r}")
        domain, hits = found
        return {"item_id": item_id, "domain": domain, "k": k,
                "items": [{"item_id": i, "domain": d, "score": sc} for i, d, sc in hits]}

    async def stats(self) -> dict[str, Any]:
        self._sync()
        if self.popularity is None:
            return self.catalogue.stats()
        return {**self.catalogue.stats(), "live_popularity": self.popularity.stats()}


@serve.deployment
class CDIMMatcher:
    def __init__(self, spec: dict[str, Any], top_m: int, ef_search: int, max_items: int | None,
                 max_batch: int) -> None:
        spec = _on_this_node(spec)  # a bundle or run in storage: this node's copy
        pin_internal_grpc_to_loopback()
        from pathlib import Path

        from raypipe.index import HNSWIndex
        from raypipe.serve.artifacts import has_item_texts, item_vectors, load_model, serving_attributes, weights_key
        from raypipe.serve.onboarding import LOG_FILE, Matcher, OnboardingLog, item_text, load_cdim, \
            pretrained_cdim_index

        self.cdim = load_cdim(spec["cdim_dir"], spec["cdim_config"])
        model, index, _ = load_model(spec["run_dir"])
        state = Path(spec["state_dir"])
        if spec["cdim_index"]:
            pretrained = HNSWIndex.load(spec["cdim_index"], verify_checksums=False)
        else:
            if not has_item_texts(spec):
                raise FileNotFoundError("no CDIM index saved and no dataset or bundle to read pre-trained item "
                                        "texts from")
            keep = np.isin(index.domains, spec["pretrained_domains"])
            ids = list(index.item_ids[keep])
            attrs = serving_attributes(spec, index).loc[ids]
            texts = [item_text(r) for r in attrs.reset_index().to_dict("records")]
            cdim_w = Path(spec["cdim_dir"]) / "model.pt" if spec["cdim_dir"] else None
            key = weights_key(cdim_w, extra=[ids[:3], len(ids), max_items, spec["cdim_config"]])
            pretrained = pretrained_cdim_index(self.cdim, ids, texts, state / "cdim_index" / key, max_items)
        pretrained.set_ef(max(ef_search, 4 * top_m))
        self.matcher = Matcher(self.encode_texts, pretrained, list(index.item_ids), item_vectors(model, len(index)),
                               dict(zip(index.item_ids, index.domains)), OnboardingLog(state / LOG_FILE), top_m)
        from raypipe.serve.deletions import DELETIONS_FILE, DeletionLog

        self.deletions = DeletionLog(state / DELETIONS_FILE)  # deleted items leave /match's answers
        self.embed.set_max_batch_size(max_batch)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return self.cdim.encode_texts(texts)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def embed(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.cdim.encode_texts(texts))

    async def match(self, text: str, k: int, include_onboarded: bool) -> list[dict[str, Any]]:
        vec = await self.embed(text)
        self.deletions.poll()
        gone = self.deletions.ids
        hits = self.matcher.match(vec[None, :], k + len(gone), include_onboarded)[0]
        return [asdict(m) for m in hits if m.item_id not in gone][:k]

    async def onboard(self, items: list[dict[str, Any]]) -> Any:
        from raypipe.serve.onboarding import DuplicateItemError

        try:
            records, version = self.matcher.onboard(items)
        except DuplicateItemError as e:
            return error_result(409, "duplicate_item", {"item_ids": e.ids, "reason": str(e)})
        return {"items": [{"item_id": r["item_id"], "domain": r["domain"], "method": "cdim", "views": ["text"],
                           "neighbours": [{"item_id": n, "similarity": s, "weight": w}
                                          for n, s, w in zip(r["neighbours"], r["similarities"], r["weights"])]}
                          for r in records], "catalogue_version": version}

    async def stats(self) -> dict[str, Any]:
        return {"method": "cdim", "pretrained_items": len(self.matcher.pretrained),
                "onboarded_items": self.matcher.sync(), "top_m": self.matcher.top_m}


@serve.deployment
class ContentOnboarder:
    """New items through the served content model's item encoder (UniM2Rec / UniSRec: inductive; PreRec: f_e): their
    text and image are encoded live with the feature store's encoders (:mod:`raypipe.serve.content`)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        spec = _on_this_node(spec)  # a bundle or run in storage: this node's copy
        pin_internal_grpc_to_loopback()
        from pathlib import Path

        from raypipe.serve.artifacts import content_onboarder
        from raypipe.serve.onboarding import LOG_FILE

        self.onboarder = content_onboarder(spec["run_dir"], Path(spec["state_dir"]) / LOG_FILE)

    async def onboard(self, items: list[dict[str, Any]]) -> Any:
        from raypipe.features.live import ImageInputError
        from raypipe.serve.onboarding import DuplicateItemError

        try:
            records, version = self.onboarder.onboard(items)
        except DuplicateItemError as e:
            return error_result(409, "duplicate_item", {"item_ids": e.ids, "reason": str(e)})
        except ImageInputError as e:
            return error_result(422, "invalid_image", [{"field": f"items[{i}].image", "reason": m}
                                                       for i, m in e.problems.items()])
        return {"items": [{"item_id": r["item_id"], "domain": r["domain"], "method": "content", "views": r["views"]}
                          for r in records], "catalogue_version": version}

    async def match(self, text: str, k: int, include_onboarded: bool) -> Any:
        return error_result(400, "no_text_matcher", "POST /match is the CDIM matcher's text search; this app "
                            "onboards items through the served content model (onboarding=content)")

    async def stats(self) -> dict[str, Any]:
        return {"method": "content", "views": self.onboarder.encoder.views,
                "onboarded_items": self.onboarder.sync()}


@serve.deployment
class Reranker:
    def __init__(self, spec: dict[str, Any], run_dir: str | None = None) -> None:
        """``run_dir`` (``reranker_run=``), else the spec's bundled reranker (this node's copy of a bundle in
        storage)."""
        if run_dir is None:
            run_dir = _on_this_node(spec)["reranker_run"]
        pin_internal_grpc_to_loopback()
        from raypipe.serve.artifacts import load_reranker
        from raypipe.serve.rerank import ModelReranker

        model, index, cfg = load_reranker(run_dir)  # with its dataset: a bundle's own, else the run's
        self.reranker = ModelReranker(model, index, cfg.data.max_len)

    async def rerank(self, history: list[str], candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self.reranker.rerank(history, candidates)

    async def explain(self, history: list[str], item_id: str, max_tokens: int) -> dict[str, Any]:
        return self.reranker.explain(history, item_id, max_tokens)


@serve.deployment
@serve.ingress(api)
class Recommender:
    def __init__(self, encoder: DeploymentHandle, retriever: DeploymentHandle, matcher: DeploymentHandle,
                 reranker: DeploymentHandle | None, domains: list[str], description: dict[str, Any],
                 retries: int, rerank_depth: int, max_body_bytes: int, max_batch: int = 32,
                 batch_wait_s: float = 0.002, explain_timeout_s: float = 30.0, *, state_dir: str,
                 colocated: dict[str, Any] | None = None) -> None:
        pin_internal_grpc_to_loopback()
        from pathlib import Path

        from raypipe.serve.domains import DOMAINS_FILE, DomainRegistry

        if colocated is not None:  # build_app(colocate=True): encoder and retriever inside this replica
            from raypipe.serve.local import local_instance

            encoder = local_instance(SequenceEncoder, colocated["spec"], *colocated["encoder"])
            retriever = local_instance(ANNRetriever, colocated["spec"], *colocated["retriever"])
        self.encoder, self.retriever, self.matcher, self.reranker = encoder, retriever, matcher, reranker
        self.domains = DomainRegistry(Path(state_dir) / DOMAINS_FILE, domains)
        self.description = description
        self.retries, self.rerank_depth = retries, rerank_depth
        self.explain_timeout_s = explain_timeout_s
        api.state.max_body_bytes = max_body_bytes
        self._recommend_batch.set_max_batch_size(max_batch)
        self._recommend_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.batches = {"batches": 0, "requests": 0}  # this replica's /recommend batching, in /healthz
        GcClock.installed()  # this replica's GC pauses: each answer's `gc` timing and /healthz's ingress_gc

    async def _call(self, method: Any, *args: Any, idempotent: bool = True) -> Any:
        """Call a deployment; retry idempotent calls whose replica died (Serve routes the retry to a live
        replica); a call that still fails is 503, never a hang."""
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return raise_if_error(await method.remote(*args))
            except (RayActorError, DeploymentUnavailableError, BackPressureError) as e:
                log.warning("%s failed (%s), attempt %d/%d", method, type(e).__name__, attempt + 1, attempts)
                last = e
        raise ApiError(503, "unavailable", f"{type(last).__name__}: a replica is unavailable, retry later")

    def _check_domain(self, domain: str | None) -> None:
        if domain is not None and not self.domains.known(domain):
            raise ApiError(422, "unknown_domain", f"unknown domain {domain!r}; known: {self.domains.names()} "
                           "(POST /domains adds one, for a content model)")

    @api.post("/v1/recommend", response_model=RecommendResponse, responses=DOCS["recommend"])
    @api.post("/recommend", response_model=RecommendResponse, responses=DOCS["recommend"])
    async def recommend(self, req: RecommendRequest, response: Response) -> RecommendResponse:
        """Top-k items for a history of item ids (unknown ids skipped; none known → popular items).  The
        answer's ``Server-Timing`` header gives each hop's milliseconds (:mod:`raypipe.serve.timing`)."""
        timer = HopTimer()
        self._check_domain(req.domain)
        out = await self._recommend_batch((req, timer))
        if isinstance(out, ApiError):
            raise out
        response.headers[SERVER_TIMING] = timer.header()
        return out

    # several batches in flight: a batch mostly waits on the encoder and retriever replicas
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=8)
    async def _recommend_batch(self, batch: list[tuple[RecommendRequest, HopTimer]]
                               ) -> list[RecommendResponse | ApiError]:
        """Concurrent /recommend requests share one encoder call and one retriever call: on 2 CPUs each
        deployment hop costs milliseconds of CPU, so per-request hops would cap the app far below 100 QPS."""
        reqs = [r for r, _ in batch]
        self.batches["batches"] += 1
        self.batches["requests"] += len(reqs)
        t0 = time.perf_counter()
        try:
            encs = await self._call(self.encoder.encode_many, [list(r.history) for r in reqs])
            t1 = time.perf_counter()
            queries = [{"vector": e["vector"], "domain": r.domain,
                        "k": r.k * self.rerank_depth if self.reranker is not None and e["vector"] is not None else r.k,
                        "exclude": list(r.history) if r.exclude_history else []} for r, e in zip(reqs, encs)]
            results = await self._call(self.retriever.retrieve, queries)
            t2 = time.perf_counter()
        except ApiError as e:
            return [e] * len(reqs)
        for _, timer in batch:
            timer.span("queue", timer.arrival, t0)
            timer.span("encode", t0, t1)
            timer.span("retrieve", t1, t2)
        return list(await asyncio.gather(*(self._respond(r, e, h, timer)
                                           for (r, timer), e, h in zip(batch, encs, results))))

    async def _respond(self, req: RecommendRequest, enc: dict[str, Any], hits: Any,
                       timer: HopTimer) -> RecommendResponse | ApiError:
        t0 = time.perf_counter()
        reranking = 0.0
        try:
            hits = raise_if_error(hits)
            fallback = "popular" if enc["vector"] is None else None
            items = [{"item_id": i, "domain": d, "score": s} for i, d, s in hits]
            reranked = False
            if self.reranker is not None and fallback is None:
                t_r = time.perf_counter()
                items, reranked = (await self._call(self.reranker.rerank, list(req.history), items))[:req.k], True
                reranking = time.perf_counter() - t_r
                timer.span("rerank", t_r, t_r + reranking)
        except ApiError as e:
            return e
        out = RecommendResponse(items=items[:req.k], domain=req.domain, k=req.k, fallback=fallback,
                                used_items=enc["used"], skipped_items=enc["skipped"], reranked=reranked)
        timer.span("respond", t0, time.perf_counter() - reranking)
        return out

    @api.post("/v1/rank", response_model=RankResponse, responses=DOCS["rank"])
    async def rank(self, req: RankRequest) -> RankResponse:
        """The client's own candidates ranked for a history: the served model's user vector against their item
        vectors (no history item known: by popularity), then the reranker slot's model if one is served."""
        seen: set[str] = set()
        dup = sorted({c for c in req.candidates if c in seen or seen.add(c)})  # type: ignore[func-returns-value]
        if dup:
            raise ApiError(422, "duplicate_candidates", {"candidates": dup})
        (enc,) = await self._call(self.encoder.encode_many, [list(req.history)])
        got = await self._call(self.retriever.score_items, enc["vector"], list(req.candidates))
        items, reranked = got["items"], False
        if self.reranker is not None and enc["vector"] is not None and len(items) > 1:
            items, reranked = await self._call(self.reranker.rerank, list(req.history), items), True
        return RankResponse(items=items, unknown_candidates=got["unknown"],
                            fallback="popular" if enc["vector"] is None else None, used_items=enc["used"],
                            skipped_items=enc["skipped"], reranked=reranked)

    @api.post("/v1/items", status_code=201, response_model=OnboardResponse, responses=DOCS["onboard"])
    @api.post("/items", status_code=201, response_model=OnboardResponse, responses=DOCS["onboard"])
    async def onboard(self, req: OnboardRequest) -> OnboardResponse:
        """Onboard new items, live in the retriever at once.  ``onboarding=cdim`` (IDP): the item's text →
        CDIM → top-m pre-trained items → generated ID embedding (eq. 8-9); ``onboarding=content`` (UniM2Rec,
        UniSRec): the item's own text and image → the served model's projectors."""
        for it in req.items:
            self._check_domain(it.domain)
        content = self.description.get("onboarding") == "content"
        if not content:
            no_text = [f"items[{i}]" for i, it in enumerate(req.items) if not it.has_text()]
            if no_text:
                raise ApiError(422, "no_text", {"items": no_text, "reason": "the CDIM matcher reads an item's "
                                                "title or category; an image alone cannot be matched"})
        items = [{"item_id": it.item_id, "domain": it.domain,
                  "attributes": it.attributes() if content else it.model_dump(exclude={"item_id", "domain", "image"})}
                 for it in req.items]
        return OnboardResponse(**await self._call(self.matcher.onboard, items, idempotent=False))

    @api.post("/v1/domains", status_code=201, response_model=DomainResponse, responses=DOCS["add_domain"])
    @api.post("/domains", status_code=201, response_model=DomainResponse, responses=DOCS["add_domain"])
    async def add_domain(self, req: DomainRequest) -> DomainResponse:
        """Add a domain the model was not trained on (a new market or category), served zero-shot: onboard
        its items with ``POST /items``, count its interactions with ``POST /events``.  Content models only
        (``onboarding=content``): their item vectors need no training in the domain."""
        from raypipe.serve.domains import DuplicateDomainError

        if self.description.get("onboarding") != "content":
            raise ApiError(400, "no_new_domains", f"the served model ({self.description.get('model')}) onboards "
                           "items by CDIM neighbours of its trained domains; a new domain needs a content model "
                           "(UniM2Rec, UniSRec, PreRec)")
        try:
            self.domains.register(req.domain)
        except DuplicateDomainError as e:
            raise ApiError(409, "duplicate_domain", str(e)) from None
        return DomainResponse(domain=req.domain, domains=self.domains.names())

    @api.post("/v1/match", response_model=MatchResponse, responses=DOCS["match"])
    @api.post("/match", response_model=MatchResponse, responses=DOCS["match"])
    async def match(self, req: MatchRequest) -> MatchResponse:
        """Nearest pre-trained (and onboarded) items of a text by CDIM similarity."""
        return MatchResponse(items=await self._call(self.matcher.match, req.text, req.k, req.include_onboarded))

    @api.post("/v1/events", response_model=EventsResponse, responses=DOCS["events"])
    @api.post("/events", response_model=EventsResponse, responses=DOCS["events"])
    async def events(self, req: EventsRequest) -> EventsResponse:
        """Record interactions: with a live-popularity model (PreRec) they move its popularity term (Z) and
        the popular fallback from the next time slot on, on every retriever replica."""
        if not self.description.get("live_popularity"):
            raise ApiError(400, "no_live_popularity", f"the served model ({self.description.get('model')}) has "
                           "no popularity term to update")
        for e in req.events:
            self._check_domain(e.domain)
        out = await self._call(self.retriever.add_events, [e.model_dump() for e in req.events], idempotent=False)
        return EventsResponse(**out)

    @api.post("/v1/explain", response_model=ExplainResponse, responses=DOCS["explain"])
    @api.post("/explain", response_model=ExplainResponse, responses=DOCS["explain"])
    async def explain(self, req: ExplainRequest) -> ExplainResponse:
        """Why ``item_id`` may suit the user of ``history``: generated by the reranker slot's model when it
        is generative (UniMP), at most ``max_tokens`` tokens; 504 after ``explain_timeout_s``."""
        if self.reranker is None:
            raise ApiError(400, "no_reranker", "no generative model is served: start the app with "
                           "reranker_run=<a UniMP run directory>")
        try:
            out = await asyncio.wait_for(self._call(self.reranker.explain, list(req.history), req.item_id,
                                                    req.max_tokens), timeout=self.explain_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, "timeout", f"no explanation within {self.explain_timeout_s:g} s") from None
        return ExplainResponse(**out)

    # before the item route: its {item_id:path} would take ".../similar" as part of an id
    @api.get("/v1/items/{item_id:path}/similar", response_model=SimilarResponse, responses=DOCS["similar_items"])
    async def similar_items(self, item_id: str, k: int = Query(10, ge=1, le=MAX_K)) -> SimilarResponse:
        """The items nearest to ``item_id`` in its domain (trained or onboarded), by the served model's item
        vectors: "customers who liked this may like"; the item itself left out."""
        return SimilarResponse(**await self._call(self.retriever.similar, item_id, k))

    @api.delete("/v1/items/{item_id:path}", response_model=DeleteResponse, responses=DOCS["delete_item"])
    @api.delete("/items/{item_id:path}", response_model=DeleteResponse, responses=DOCS["delete_item"])
    async def delete_item(self, item_id: str) -> DeleteResponse:
        """Remove an item (trained or onboarded) from recommendations, the fallback, /rank, /similar, /match and
        look-ups, on every replica at once.  Its id stays reserved (it cannot be onboarded again)."""
        return DeleteResponse(**await self._call(self.retriever.delete_item, item_id, idempotent=False))

    @api.get("/v1/items/{item_id:path}", response_model=ItemOut, responses=DOCS["get_item"])
    @api.get("/items/{item_id:path}", response_model=ItemOut, responses=DOCS["get_item"])
    async def get_item(self, item_id: str) -> ItemOut:
        return ItemOut(**await self._call(self.retriever.get_item, item_id))

    @api.get("/v1/health", responses=DOCS["health"])
    @api.get("/healthz", responses=DOCS["health"])
    async def healthz(self) -> dict[str, Any]:
        return {"status": "ok", "catalogue": await self._call(self.retriever.stats),
                "matcher": await self._call(self.matcher.stats), "serving": self.description,
                "ingress_batching": dict(self.batches), "ingress_gc": GcClock.installed().summary()}


MAX_ONGOING = {"Recommender": 256, "SequenceEncoder": 64, "ANNRetriever": 64, "CDIMMatcher": 16,
               "ContentOnboarder": 16, "Reranker": 64}


def build_app(args: RecommenderArgs) -> Application:
    """The application builder (``import_path: raypipe.serve.app:build_app``)."""
    from raypipe.serve.artifacts import ServingSpec

    if not isinstance(args, RecommenderArgs):
        args = RecommenderArgs.model_validate(args)
    spec = ServingSpec.resolve(args.artifacts, variant=args.variant, cdim_dir=args.cdim_dir,
                               cdim_index=args.cdim_index, state_dir=args.state_dir, dataset=args.dataset,
                               onboarding=args.onboarding)
    s = spec.to_dict()
    replicas = dict(args.num_replicas or {})
    unknown = set(replicas) - set(MAX_ONGOING)
    if unknown:
        raise ValueError(f"num_replicas: unknown deployment(s) {sorted(unknown)}")

    def opts(name: str) -> dict[str, Any]:
        # Serve's default of 5 ongoing requests per replica makes the proxy queue and re-probe replicas
        # under load (CPU it cannot spare on 2 cores); the ingress must admit enough requests to batch them.
        # the default: a Serve config's `ray_actor_options` for the deployment replace it as a whole
        o: dict[str, Any] = {"ray_actor_options": {"num_cpus": args.num_cpus},
                             "max_ongoing_requests": MAX_ONGOING[name]}
        if name in replicas:
            o["num_replicas"] = replicas[name]
        return o

    encoder_args = (args.encoder_max_batch, args.encoder_batch_wait_s)
    retriever_args = (args.ef_search, args.hnsw_m, args.ef_construction, args.popularity_clock)
    colocated = None
    if args.colocate:
        if {"SequenceEncoder", "ANNRetriever"} & set(replicas):
            raise ValueError("num_replicas: with colocate=true the SequenceEncoder and ANNRetriever run inside "
                             "each Recommender replica; scale the Recommender instead")
        encoder = retriever = None
        colocated = {"spec": s, "encoder": encoder_args, "retriever": retriever_args}
    else:
        encoder = SequenceEncoder.options(**opts("SequenceEncoder")).bind(s, *encoder_args)
        retriever = ANNRetriever.options(**opts("ANNRetriever")).bind(s, *retriever_args)
    if spec.onboarding == "content":
        matcher = ContentOnboarder.options(**opts("ContentOnboarder")).bind(s)
    else:
        matcher = CDIMMatcher.options(**opts("CDIMMatcher")).bind(s, args.top_m, args.ef_search, args.matcher_max_items,
                                                                  args.matcher_max_batch)
    # an explicit reranker_run= wins over the bundle's reranker
    reranker_run = args.reranker_run or spec.reranker_run
    reranker = Reranker.options(**opts("Reranker")).bind(s, args.reranker_run) if reranker_run else None
    description = {**spec.description, "reranker": reranker_run, "colocated": args.colocate}
    return Recommender.options(**opts("Recommender")).bind(encoder, retriever, matcher, reranker, spec.domains,
                                                           description, args.retries, args.rerank_depth,
                                                           args.max_body_bytes, args.ingress_max_batch,
                                                           args.ingress_batch_wait_s, args.explain_timeout_s,
                                                           state_dir=spec.state_dir, colocated=colocated)
