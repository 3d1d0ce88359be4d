"""Bad requests → 4xx JSON ``{"error": <code>, "detail": <reason>}``, never a 5xx.

:func:`install` adds to a FastAPI app:

* a body-size limit (pure ASGI middleware): a ``Content-Length`` above the limit, or a streamed body
  that grows past it, is answered 413 ``body_too_large`` without calling the endpoint; a malformed
  ``Content-Length`` is 400.  The 413 keeps the connection open, so that the HTTP server (uvicorn, in
  Serve's proxy or in a direct-ingress replica) reads and discards the rest of the body at the socket
  and a client that sends its whole body before reading gets its answer; closing at once would make the
  kernel reset the connection over the unread bytes, and such a client would see a reset instead of the
  413 (see :class:`BodySizeLimit`);
* handlers: malformed JSON → 400 ``malformed_json``; validation errors (wrong types, missing fields,
  out-of-range values, unknown fields) → 422 ``invalid_request`` with one entry per problem;
  Starlette's HTTP errors → :data:`_HTTP_CODES` (404/405 → ``not_found``/``method_not_allowed``);
  :class:`ApiError` → its status; anything else → 500 ``internal_error`` (a bug, logged with its
  traceback).

Every ``error`` the app answers is one of the closed set :data:`raypipe.serve.schemas.ErrorCode` (the
OpenAPI schema lists it; ``tests/serve/test_openapi.py`` scans this package for codes outside it), each
with one HTTP status (:data:`ERROR_STATUS`).

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

from raypipe.serve.schemas import ErrorCode

log = logging.getLogger(__name__)

#: Starlette's HTTP errors (routing, FastAPI's body parsing) by status; any other 4xx is ``bad_request``,
#: any other 5xx ``internal_error``
_HTTP_CODES: dict[int, ErrorCode] = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
    413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
    503: "unavailable", 504: "timeout"}

#: the HTTP status of every error code; the keys are exactly ``ErrorCode``'s values (a Starlette error with
#: a status missing from ``_HTTP_CODES`` keeps its status, as ``bad_request`` or ``internal_error``)
ERROR_STATUS: dict[str, int] = {
    **{code: status for status, code in _HTTP_CODES.items()},
    "malformed_json": 400, "no_live_popularity": 400, "no_new_domains": 400, "no_reranker": 400,
    "no_text_matcher": 400, "not_generative": 400,
    "unknown_item": 404,
    "duplicate_domain": 409, "duplicate_item": 409,
    "duplicate_candidates": 422, "invalid_events": 422, "invalid_image": 422, "no_text": 422,
    "unknown_domain": 422,
    "internal_error": 500,
}

#: an oversized body declared (``Content-Length``) up to this size is answered 413 with the connection
#: kept open, for the HTTP server to read and discard the rest; a larger one is answered with
#: ``Connection: close`` (the client may then see a reset before it reads the 413).  A streamed (chunked)
#: body past the limit is read and dropped up to this size, then answered; if it goes on, the answer
#: closes the connection: no body, however long it streams, holds the server
DRAIN_CAP_BYTES = 64 * 1024 * 1024


class ApiError(Exception):
    """An expected request failure with its HTTP status, error code and reason."""

    def __init__(self, status: int, error: ErrorCode, detail: Any = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status, self.error, self.detail = status, error, detail


def error_body(error: ErrorCode, detail: Any = None) -> dict[str, Any]:
    return {"error": error, "detail": jsonable_encoder(detail)}


def error_result(status: int, error: ErrorCode, detail: Any = None) -> dict[str, Any]:
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
    """ASGI middleware: reject request bodies larger than ``limit()`` bytes with 413.

    The 413 is sent as soon as the size is known to be too large (at once for a declared
    ``Content-Length``; after ``limit`` bytes of a streamed body), without reading the rest through the
    app: behind Serve's proxy every body chunk the replica reads crosses a Ray call.  The answer does not
    close the connection, so uvicorn goes on reading the request's remaining bytes and drops them (its
    parser discards the body of a request whose response is complete; nothing is buffered) and the client
    finishes sending, then reads the 413.  Answering with ``Connection: close`` instead made uvicorn close
    the socket with the client's bytes unread; the kernel then resets the connection, and a client that
    was still sending (Python's ``http.client``; ``requests``/urllib3 swallow the send error and read the
    answer) saw ``ConnectionResetError`` instead of the 413 (counts in docs/ARCHITECTURE.md, "Serving").
    Exceptions, answered with ``Connection: close``: a declared body over :data:`DRAIN_CAP_BYTES` (not
    worth receiving), a malformed ``Content-Length`` (the body's end is unknown) and a streamed (chunked)
    body still going after :data:`DRAIN_CAP_BYTES`: such a body has no declared size, so it is read and
    dropped here until it ends (then the 413 keeps the connection) or passes the cap.  (``Expect:
    100-continue`` needs no case of its own: Serve's proxy, like a direct-ingress replica, reads the body
    at once, so uvicorn has sent ``100 Continue`` before the app answers.)
    """

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
                await _send_json(send, 400, error_body("bad_request", f"malformed Content-Length {declared!r}"),
                                 close=True)
                return
            if n > limit:
                await _send_json(send, 413, error_body("body_too_large", f"body of {n} bytes exceeds the "
                                                                          f"limit of {limit} bytes"),
                                 close=n > max(DRAIN_CAP_BYTES, limit))
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
                ended = await _drain(receive, message, size, max(DRAIN_CAP_BYTES, limit))
                if ended is None:
                    return  # the client went away
                await _send_json(send, 413, error_body("body_too_large", f"body exceeds the limit of {limit} bytes"),
                                 close=not ended)
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


async def _drain(receive: Callable[[], Awaitable[dict]], message: dict, size: int, cap: int) -> bool | None:
    """Read and drop a streamed body from ``message`` on (``size`` bytes read so far): ``True`` when it
    ended within ``cap`` bytes, ``False`` when it passed them, ``None`` when the client disconnected."""
    while message.get("more_body", False):
        if size > cap:
            return False
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        size += len(message.get("body", b""))
    return True


async def _send_json(send: Callable, status: int, body: dict, close: bool) -> None:
    """Answer before the request's body was read: ``close`` ends the connection after the answer (unread
    bytes then reset it); otherwise the server reads and discards the rest of the body."""
    raw = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
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
        code = _HTTP_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "bad_request")
        return JSONResponse(error_body(code, exc.detail), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - bugs only
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", type(exc).__name__), status_code=500)
