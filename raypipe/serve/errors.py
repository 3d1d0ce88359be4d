"""Bad requests → 4xx JSON ``{"error": <code>, "detail": <reason>}``, never a 5xx.

:func:`install` adds to a FastAPI app:

* a body-size limit (pure ASGI middleware): a ``Content-Length`` above the limit, or a streamed body
  that grows past it, is answered 413 ``body_too_large`` without calling the endpoint; a malformed
  ``Content-Length`` is 400;
* handlers: malformed JSON → 400 ``malformed_json``; validation errors (wrong types, missing fields,
  out-of-range values, unknown fields) → 422 ``invalid_request`` with one entry per problem;
  Starlette's 404/405 → ``not_found``/``method_not_allowed``; :class:`ApiError` → its status;
  anything else → 500 ``internal_error`` (a bug, logged with its traceback).

Deployments behind the ingress report expected failures as values (:func:`error_result`), not
exceptions, so that they cross Ray's process boundary intact.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable",
               409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request",
               429: "too_many_requests", 503: "unavailable", 504: "timeout"}


class ApiError(Exception):
    """An expected request failure with its HTTP status, error code and reason."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def error_body(error: str, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": jsonable_encoder(detail)}


def error_result(status: int, error: str, detail: Any = None) -> dict[str, Any]:
    """An expected failure as a value (returned by a deployment, re-raised by the ingress)."""
    return {"__error__": {"status": status, "error": error, "detail": detail}}


def raise_if_error(result: Any) -> Any:
    if isinstance(result, Mapping) and "__error__" in result:
        e = result["__error__"]
        raise ApiError(int(e["status"]), str(e["error"]), e.get("detail"))
    return result


def _problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        out.append({"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))})
    return out


class BodySizeLimit:
    """ASGI middleware: reject request bodies larger than ``limit()`` bytes with 413."""

    def __init__(self, app: Callable, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(self.limit())
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        declared = headers.get("content-length")
        if declared is not None:
            try:
                n = int(declared)
                if n < 0:
                    raise ValueError
            except ValueError:
                await _send_json(send, 400, error_body("bad_request", f"malformed Content-Length {declared!r}"))
                return
            if n > limit:
                await _send_json(send, 413, error_body("body_too_large", f"body of {n} bytes exceeds the "
                                                                          f"limit of {limit} bytes"))
                return
        # read the whole (bounded) body first, then replay it to the app
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _send_json(send, 413, error_body("body_too_large", f"body exceeds the limit of {limit} bytes"))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send: Callable, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": raw})


def install(app: FastAPI, limit: Callable[[], int]) -> None:
    """Add the body limit and the JSON error handlers to ``app`` (``limit()`` is read per request)."""
    app.add_middleware(BodySizeLimit, limit=limit)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _problems(exc)
        if any(p["type"] == "json_invalid" for p in problems):
            return JSONResponse(error_body("malformed_json", "the request body is not valid JSON: " +
                                           "; ".join(p["msg"] for p in problems)), status_code=400)
        return JSONResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.error, exc.detail), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse(error_body(code, exc.detail), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - bugs only
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", type(exc).__name__), status_code=500)
