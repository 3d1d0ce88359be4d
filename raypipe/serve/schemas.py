"""The HTTP API's request and response models (pydantic v2) and the Serve application's arguments.

Requests are validated strictly: unknown fields, wrong JSON types (``"k": "10"``, ``"history": "a"``),
out-of-range numbers and oversized lists are rejected with 422 before any deployment is called.

Every request and response model carries an example (``json_schema_extra``), shown in the OpenAPI schema;
:data:`ErrorCode` is the closed set of error codes the API answers with.
"""
from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

MAX_K = 100
MAX_HISTORY = 200
MAX_NEW_ITEMS = 64
MAX_TEXT = 2000
MAX_MATCH_K = 50
MAX_EVENTS = 1000
DEFAULT_MAX_BODY_BYTES = 64 * 1024

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Domain = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=512)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(_Strict):
    """``history``: item ids, oldest first (unknown ids are skipped and reported)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"history": ["toys/B0A1B2C3D4", "toys/B0E5F6G7H8"], "domain": "toys", "k": 3, "exclude_history": True}]})

    history: list[ItemId] = Field(default_factory=list, max_length=MAX_HISTORY)
    domain: Domain | None = Field(None, description="recommend only items of this domain (None: any domain)")
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_history: bool = True


class ScoredItem(BaseModel):
    item_id: str
    domain: str
    score: float = Field(description="dot product of user and item vectors; popularity count in a fallback")


class RecommendResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [{"item_id": "toys/B0J1K2L3M4", "domain": "toys", "score": 4.18},
                   {"item_id": "toys/B0N5P6Q7R8", "domain": "toys", "score": 3.95},
                   {"item_id": "toys/B0S9T1U2V3", "domain": "toys", "score": 3.71}],
         "domain": "toys", "k": 3, "fallback": None, "used_items": 2, "skipped_items": [], "reranked": False}]})

    items: list[ScoredItem]
    domain: str | None
    k: int
    fallback: Literal["popular"] | None = Field(
        None, description="'popular' when no history item was known to the model")
    used_items: int = Field(description="history items the sequence encoder used")
    skipped_items: list[str] = Field(description="history ids the model does not know (skipped)")
    reranked: bool = False


class NewItem(_Strict):
    item_id: ItemId
    domain: Domain
    title: ShortText | None = None
    category: ShortText | None = None
    brand: ShortText | None = None
    description: Annotated[str, StringConstraints(max_length=MAX_TEXT)] | None = None
    price: float | None = Field(None, ge=0.0)
    image: str | None = Field(None, description="the item's picture, PNG or JPEG bytes in base64 (read by content "
                                                "models such as UniM2Rec; the CDIM matcher reads text only)")

    @field_validator("price")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("price must be finite")
        return v

    @field_validator("image")
    @classmethod
    def _base64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                raw = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("image must be base64-encoded PNG or JPEG bytes") from None
            if not raw:
                raise ValueError("image is empty")
        return v

    @model_validator(mode="after")
    def _has_content(self) -> "NewItem":
        if not ((self.title or "").strip() or (self.category or "").strip() or self.image):
            raise ValueError("an item needs a non-empty title or category, or an image")
        return self

    def has_text(self) -> bool:
        return bool((self.title or "").strip() or (self.category or "").strip())

    def attributes(self) -> dict:
        return self.model_dump(exclude={"item_id", "domain"})


class OnboardRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [{"item_id": "toys/NEW-1", "domain": "toys", "title": "ocean wave kite", "category": "Toys > Outdoor",
                    "brand": "Skyline", "price": 9.5}]}]})

    items: list[NewItem] = Field(min_length=1, max_length=MAX_NEW_ITEMS)

    @model_validator(mode="after")
    def _unique(self) -> "OnboardRequest":
        seen: set[str] = set()
        for it in self.items:
            if it.item_id in seen:
                raise ValueError(f"item_id {it.item_id!r} appears twice in the request")
            seen.add(it.item_id)
        return self


class Neighbour(BaseModel):
    item_id: str
    similarity: float
    weight: float = Field(description="IDP eq. 9 weight of this pre-trained item")


class OnboardedItemOut(BaseModel):
    item_id: str
    domain: str
    method: Literal["cdim", "content"] = Field(
        description="cdim: IDP's generated ID embedding from the item's text (eq. 8-9); content: the served "
                    "content model's projection of the item's own views (UniM2Rec, UniSRec, PreRec)")
    views: list[str] = Field(description="the item's inputs that shaped its vector (text, image, cross)")
    neighbours: list[Neighbour] = Field(default_factory=list, description="cdim: the pre-trained items averaged")


class OnboardResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [{"item_id": "toys/NEW-1", "domain": "toys", "method": "cdim", "views": ["text"],
                    "neighbours": [{"item_id": "toys/B0J1K2L3M4", "similarity": 0.82, "weight": 0.36},
                                   {"item_id": "toys/B0S9T1U2V3", "similarity": 0.74, "weight": 0.33}]}],
         "catalogue_version": 1}]})

    items: list[OnboardedItemOut]
    catalogue_version: int = Field(description="number of items onboarded so far (all replicas)")


class DomainRequest(_Strict):
    """A domain the served model was not trained on (a new market, category or platform)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"domain": "garden"}]})

    domain: Domain


class DomainResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"domain": "garden",
                                                                "domains": ["books", "garden", "toys"]}]})

    domain: str
    domains: list[str] = Field(description="every domain served now: the model's and those added")


class MatchRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": "ocean wave kite", "k": 2, "include_onboarded": True}]})

    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT)]
    k: int = Field(10, ge=1, le=MAX_MATCH_K)
    include_onboarded: bool = True

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be blank")
        return v


class MatchedItem(BaseModel):
    item_id: str
    domain: str | None
    score: float = Field(description="cosine similarity of CDIM embeddings")
    onboarded: bool


class MatchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [{"item_id": "toys/NEW-1", "domain": "toys", "score": 0.97, "onboarded": True},
                   {"item_id": "toys/B0J1K2L3M4", "domain": "toys", "score": 0.81, "onboarded": False}]}]})

    items: list[MatchedItem]


class EventIn(_Strict):
    """One interaction: a user took ``item_id`` at ``timestamp`` (Unix seconds)."""

    user_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    item_id: ItemId
    domain: Domain | None = Field(None, description="checked against the item's domain when given")
    timestamp: int = Field(ge=0)


class EventsRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"events": [{"user_id": "u-42", "item_id": "toys/B0J1K2L3M4", "domain": "toys", "timestamp": 1767225600},
                    {"user_id": "u-7", "item_id": "toys/NEW-1", "timestamp": 1767225660}]}]})

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EventsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"accepted": 2, "stale": 0, "version": 120431}]})

    accepted: int = Field(description="events that enter a popularity window (now or from the next slot)")
    stale: int = Field(description="events too old to enter any window from now on (ignored)")
    version: int = Field(description="events counted so far by the replica that answered (seed + live)")


class ItemOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"item_id": "toys/B0J1K2L3M4", "domain": "toys", "onboarded": False, "popularity": 37,
         "recent_interactions": None, "title": "beach kite, 2 lines", "category": "Toys > Outdoor",
         "brand": "Skyline", "description": None, "price": 12.99}]})

    item_id: str
    domain: str
    onboarded: bool
    popularity: int = Field(description="the dataset's interactions with the item (0 for an onboarded item)")
    recent_interactions: int | None = Field(None, description="interactions in the popularity window before "
                                            "now (models with live popularity only)")
    title: str | None = None
    category: str | None = None
    brand: str | None = None
    description: str | None = None
    price: float | None = None


class DeleteResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"item_id": "toys/NEW-1", "domain": "toys",
                                                                "deleted": True}]})

    item_id: str
    domain: str
    deleted: bool = True


MAX_RANK_CANDIDATES = 1000


class RankRequest(_Strict):
    """Score the client's own candidates for a history (``history`` as in ``/recommend``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"history": ["toys/B0A1B2C3D4"], "candidates": ["toys/B0J1K2L3M4", "books/B04CFTVGAY", "toys/NOPE"]}]})

    history: list[ItemId] = Field(default_factory=list, max_length=MAX_HISTORY)
    candidates: list[ItemId] = Field(min_length=1, max_length=MAX_RANK_CANDIDATES,
                                     description="distinct item ids, of any domains")


class RankResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [{"item_id": "toys/B0J1K2L3M4", "domain": "toys", "score": 4.18},
                   {"item_id": "books/B04CFTVGAY", "domain": "books", "score": 1.02}],
         "unknown_candidates": ["toys/NOPE"], "fallback": None, "used_items": 1, "skipped_items": [],
         "reranked": False}]})

    items: list[ScoredItem] = Field(description="the known candidates, best first")
    unknown_candidates: list[str] = Field(description="candidate ids the served catalogue does not hold (unscored)")
    fallback: Literal["popular"] | None = Field(
        None, description="'popular' when no history item was known: candidates scored by their popularity")
    used_items: int = Field(description="history items the sequence encoder used")
    skipped_items: list[str] = Field(description="history ids the model does not know (skipped)")
    reranked: bool = Field(False, description="the reranker slot's model re-scored the candidates it knows")


class SimilarResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"item_id": "toys/B0A1B2C3D4", "domain": "toys", "k": 2,
         "items": [{"item_id": "toys/B0J1K2L3M4", "domain": "toys", "score": 3.3},
                   {"item_id": "toys/NEW-1", "domain": "toys", "score": 2.9}]}]})

    item_id: str
    domain: str = Field(description="the item's domain, where its neighbours are searched")
    k: int
    items: list[ScoredItem] = Field(description="the items whose vectors score highest against the item's own "
                                    "(inner product in the served model's item space), the item itself left out")


MAX_EXPLAIN_TOKENS = 64


class ExplainRequest(_Strict):
    """``history``: item ids, oldest first (unknown ids are skipped); ``item_id``: the item to explain."""

    history: list[ItemId] = Field(default_factory=list, max_length=MAX_HISTORY)
    item_id: ItemId
    max_tokens: int = Field(32, ge=1, le=MAX_EXPLAIN_TOKENS, description="bound on the generated tokens")

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"history": ["books/B04CFTVGAY", "books/B0G054T9LV"], "item_id": "books/B0XBUREA3R", "max_tokens": 24}]})


class ExplainResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"item_id": "books/B0XBUREA3R", "explanation": "another fast-paced mystery by an author you read twice",
         "tokens": 11, "used_items": 2, "skipped_items": [], "model": "UniMP"}]})

    item_id: str
    explanation: str
    tokens: int = Field(description="generated tokens (at most max_tokens)")
    used_items: int = Field(description="history items the model used (its own history window)")
    skipped_items: list[str] = Field(description="history ids the model does not know (skipped)")
    model: str


#: every ``error`` code the API answers with, by HTTP status (raypipe.serve.errors.ERROR_STATUS maps them):
#: a closed set, listed by the OpenAPI schema; tests/serve/test_openapi.py fails on a code used in
#: raypipe/serve that is not here
ErrorCode = Literal[
    # 400
    "bad_request", "malformed_json", "no_live_popularity", "no_new_domains", "no_reranker", "no_text_matcher",
    "not_generative",
    "not_found", "unknown_item",  # 404
    "method_not_allowed",  # 405
    "not_acceptable",  # 406
    "conflict", "duplicate_domain", "duplicate_item",  # 409
    "body_too_large",  # 413
    "unsupported_media_type",  # 415
    # 422
    "invalid_request", "duplicate_candidates", "invalid_events", "invalid_image", "no_text", "unknown_domain",
    "too_many_requests",  # 429
    "internal_error",  # 500
    "unavailable",  # 503
    "timeout",  # 504
]


class ErrorResponse(BaseModel):
    """Every error answer (4xx, 5xx) of the API."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "unknown_item",
                                                                "detail": "no item 'toys/NOPE'"}]})

    error: ErrorCode = Field(description="what failed, one of a closed set of codes (stable, for programs)")
    detail: object = Field(None, description="why, for people: a reason, or the list of problems (invalid_request: "
                                             "one {loc, msg, type} per problem)")


class RecommenderArgs(BaseModel):
    """Arguments of ``raypipe.serve.app:build_app`` (``serve run ... key=value`` or the YAML's ``args``)."""

    model_config = ConfigDict(extra="forbid")

    artifacts: str = Field(description="an IDP pipeline directory, a run directory or a serving bundle "
                                       "(raypipe bundle)")
    variant: str | None = Field(None, description="run inside an IDP pipeline directory (default idp > "
                                                  "idp_zero_shot > pretrain)")
    cdim_dir: str | None = None
    cdim_index: str | None = None
    dataset: str | None = Field(None, description="canonical dataset directory (default: the run's)")
    state_dir: str | None = Field(None, description="onboarded-item log and start-up caches "
                                                    "(default <artifacts>/serve_state)")
    top_m: int = Field(10, ge=1, le=100, description="IDP eq. 8: pre-trained items per new item")
    ef_search: int = Field(128, ge=1)
    hnsw_m: int = Field(16, ge=2)
    ef_construction: int = Field(100, ge=8)
    matcher_max_items: int | None = Field(None, ge=1, description="cap on pre-trained items the matcher "
                                                                   "encodes when no CDIM index is saved")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024)
    ingress_max_batch: int = Field(32, ge=1, description="/recommend requests the ingress groups into one "
                                                         "encoder call and one retriever call")
    ingress_batch_wait_s: float = Field(0.002, ge=0.0)
    encoder_max_batch: int = Field(8, ge=1, description="ingress batches (from any ingress replica) the "
                                                         "encoder merges into one model batch")
    encoder_batch_wait_s: float = Field(0.001, ge=0.0)
    matcher_max_batch: int = Field(16, ge=1)
    retries: int = Field(1, ge=0, le=3, description="retries of idempotent calls whose replica died")
    reranker_run: str | None = Field(None, description="optional run directory of a second model that "
                                                       "re-scores the retrieved candidates (the reranker slot); "
                                                       "default: the served bundle's reranker, if it has one")
    rerank_depth: int = Field(3, ge=1, le=10, description="the reranker sees k * rerank_depth candidates")
    explain_timeout_s: float = Field(30.0, gt=0.0, description="POST /explain answers 504 after this long")
    num_cpus: float = Field(0.1, gt=0.0, description="CPUs reserved per replica (fractional on small hosts) of the "
                            "deployments whose ray_actor_options the Serve config does not set (those replace it)")
    onboarding: Literal["auto", "cdim", "content"] = Field(
        "auto", description="how POST /items embeds a new item: cdim (IDP's matcher), content (the served "
                            "model's projectors; needs the content_items capability); auto: content when the "
                            "served model has it, else cdim")
    popularity_clock: float | None = Field(None, ge=0.0, description="a fixed Unix time live popularity "
                                           "reads as now (replays, tests); None: the wall clock")
    colocate: bool = Field(False, description="run the sequence encoder and the ANN retriever inside each "
                           "ingress replica: no deployment hop per /recommend (the latency mode on few CPUs); "
                           "they then scale with the Recommender's replicas")
    num_replicas: dict[str, int] | None = Field(
        None, description="fixed replica counts by deployment name (tests, benchmarks); the YAML's "
                          "autoscaling_config is the production setting")
