"""The HTTP API's OpenAPI documentation beyond the models: per endpoint, its success example and the error
responses it can give (only those statuses, each with an example of each of its codes).

The request and response models carry their own examples (:mod:`raypipe.serve.schemas`);
:func:`responses` puts a model's example on the endpoint's success response and lists its errors, so
that ``/docs`` and ``/openapi.json`` show what each endpoint answers.  The codes and their statuses are
the closed set :data:`raypipe.serve.schemas.ErrorCode` / :data:`raypipe.serve.errors.ERROR_STATUS`.
"""
from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from raypipe.serve.errors import ERROR_STATUS
from raypipe.serve.schemas import ErrorResponse

#: an example ``detail`` of every error code
ERROR_DETAILS: dict[str, Any] = {
    "bad_request": "There was an error parsing the body",
    "malformed_json": "the request body is not valid JSON: JSON decode error",
    "no_live_popularity": "the served model (SASRec) has no popularity term to update",
    "no_new_domains": "the served model (SASRec) onboards items by CDIM neighbours of its trained domains; a new "
                      "domain needs a content model (UniM2Rec, UniSRec, PreRec)",
    "no_reranker": "no generative model is served: start the app with reranker_run=<a UniMP run directory>",
    "no_text_matcher": "POST /match is the CDIM matcher's text search; this app onboards items through the served "
                       "content model (onboarding=content)",
    "not_generative": "the reranking model (SASRec) does not generate explanations",
    "not_found": "Not Found",
    "unknown_item": "no item 'toys/NOPE'",
    "method_not_allowed": "Method Not Allowed",
    "not_acceptable": "Not Acceptable",
    "conflict": "Conflict",
    "duplicate_domain": "domain 'garden' already exists",
    "duplicate_item": {"item_ids": ["toys/NEW-1"], "reason": "item id(s) already in the catalogue: ['toys/NEW-1']"},
    "body_too_large": "body of 8388608 bytes exceeds the limit of 65536 bytes",
    "unsupported_media_type": "Unsupported Media Type",
    "invalid_request": [{"loc": ["body", "k"], "msg": "Input should be greater than or equal to 1",
                         "type": "greater_than_equal"}],
    "duplicate_candidates": {"candidates": ["toys/B0J1K2L3M4"]},
    "invalid_events": [{"loc": ["body", "events", 0, "item_id"],
                        "msg": "unknown item 'toys/NOPE' (neither trained nor onboarded)", "type": "unknown_item"}],
    "invalid_image": [{"field": "items[0].image", "reason": "not a PNG or JPEG image"}],
    "no_text": {"items": ["items[0]"], "reason": "the CDIM matcher reads an item's title or category; an image "
                                                "alone cannot be matched"},
    "unknown_domain": "unknown domain 'garden'; known: ['books', 'toys'] (POST /domains adds one, for a content "
                      "model)",
    "too_many_requests": "Too Many Requests",
    "internal_error": "ValueError",
    "unavailable": "RayActorError: a replica is unavailable, retry later",
    "timeout": "no explanation within 30 s",
}

#: what any endpoint with a JSON body can answer before it runs: a body that cannot be read or parsed,
#: a body over ``max_body_bytes``, a body that does not validate
BODY = ("bad_request", "malformed_json", "body_too_large", "invalid_request")

#: what any path can answer, documented on none: an unknown path or method, a bug
ANY_PATH = ("not_found", "method_not_allowed", "internal_error")

#: the error codes each endpoint can answer (its errors, the deployments' error values it re-raises, 503
#: ``unavailable`` when it calls a deployment), besides :data:`ANY_PATH`.  The body limit applies to any
#: request, but 413 is listed only where a body is expected (a GET or DELETE with a body is the client's bug)
ENDPOINT_ERRORS: dict[str, tuple[str, ...]] = {
    "recommend": (*BODY, "unknown_domain", "unavailable"),
    "rank": (*BODY, "duplicate_candidates", "unavailable"),
    "onboard": (*BODY, "unknown_domain", "no_text", "invalid_image", "duplicate_item", "unavailable"),
    "add_domain": (*BODY, "no_new_domains", "duplicate_domain"),
    "match": (*BODY, "no_text_matcher", "unavailable"),
    "events": (*BODY, "no_live_popularity", "unknown_domain", "invalid_events", "unavailable"),
    "explain": (*BODY, "no_reranker", "not_generative", "unknown_item", "unavailable", "timeout"),
    "similar_items": ("invalid_request", "unknown_item", "unavailable"),
    "get_item": ("unknown_item", "unavailable"),
    "delete_item": ("unknown_item", "unavailable"),
    "health": ("unavailable",),
}

#: an example of ``GET /v1/health`` (``/healthz``), whose answer has no model
HEALTH_EXAMPLE = {
    "status": "ok",
    "catalogue": {"items": 1201, "trained_items": 1200, "onboarded_items": 1, "deleted_items": 0,
                  "domains": ["books", "toys"], "per_domain": {"books": 700, "toys": 501}},
    "matcher": {"method": "cdim", "pretrained_items": 700, "onboarded_items": 1, "top_m": 10},
    "serving": {"run_dir": "/srv/runs/idp/idp_zero_shot", "model": "SASRec", "stage": "zero_shot",
                "mode": "cross", "live_popularity": False, "onboarding": "cdim", "cdim": "/srv/runs/idp/cdim",
                "reranker": None},
    "ingress_batching": {"batches": 120, "requests": 311},
    "ingress_gc": {"gen0": {"n": 412, "total_ms": 61.2, "max_ms": 1.9},
                   "gen1": {"n": 37, "total_ms": 20.4, "max_ms": 2.3},
                   "gen2": {"n": 1, "total_ms": 151.8, "max_ms": 151.8}},
}


def example_of(model: type[BaseModel]) -> Any:
    """The first example a model declares in its ``json_schema_extra``."""
    extra = model.model_config.get("json_schema_extra")
    if not isinstance(extra, dict) or not extra.get("examples"):
        raise ValueError(f"{model.__name__} has no example")
    return extra["examples"][0]


def error_responses(codes: tuple[str, ...] | list[str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries of these error codes: one per status, with an example per code."""
    unknown = [c for c in codes if c not in ERROR_STATUS]
    if unknown:
        raise ValueError(f"unknown error codes {unknown}: add them to ErrorCode and ERROR_STATUS")
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({ERROR_STATUS[c] for c in codes}):
        mine = [c for c in codes if ERROR_STATUS[c] == status]
        out[status] = {
            "model": ErrorResponse,
            "description": f"{HTTPStatus(status).phrase}: " + ", ".join(f"`{c}`" for c in mine),
            "content": {"application/json": {"examples": {
                c: {"summary": c, "value": {"error": c, "detail": ERROR_DETAILS[c]}} for c in mine}}},
        }
    return out


def responses(endpoint: str, ok: type[BaseModel] | dict[str, Any], status: int = 200) -> dict[int | str, Any]:
    """``responses=`` of an endpoint: its success example (``ok``: a model with an example, or the example)
    and the error responses of :data:`ENDPOINT_ERRORS` ``[endpoint]``."""
    example = ok if isinstance(ok, dict) else example_of(ok)
    return {status: {"content": {"application/json": {"example": example}}},
            **error_responses(ENDPOINT_ERRORS[endpoint])}


def install(app: FastAPI) -> None:
    """Generate ``app``'s schema without FastAPI's default 422 ``HTTPValidationError`` response, which
    FastAPI adds to every endpoint with parameters: this API answers validation errors as 422
    ``invalid_request`` (:class:`~raypipe.serve.schemas.ErrorResponse`, listed by :func:`responses` where
    they can occur), and an endpoint whose only parameter is a free ``{item_id}`` cannot fail validation."""
    generate = app.openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            for ops in spec.get("paths", {}).values():
                for op in ops.values():
                    default = op.get("responses", {}).get("422", {})
                    ref = default.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                    if ref.endswith("/HTTPValidationError"):
                        del op["responses"]["422"]
            schemas = spec.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
