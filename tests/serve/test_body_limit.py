"""The body-size middleware at the ASGI level (no Ray): declared and streamed bodies, the drain cap."""
from __future__ import annotations

import asyncio
import json

import pytest

from raypipe.serve import errors
from raypipe.serve.errors import BodySizeLimit


async def _app(scope: dict, receive, send) -> None:  # echoes the body's length
    msg = await receive()
    raw = json.dumps({"n": len(msg["body"])}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": raw})


def _call(chunks: list[bytes] | int, limit: int, headers: list[tuple[bytes, bytes]] = ()) -> tuple[dict, list[dict], int]:
    """Run the middleware on a streamed body (``chunks``; an int: that many 10-byte chunks, endless for the
    middleware's purposes); its response start, the messages sent, and how many chunks it read."""
    n = len(chunks) if isinstance(chunks, list) else chunks
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        if read > n:
            return {"type": "http.disconnect"}
        body = chunks[read - 1] if isinstance(chunks, list) else b"x" * 10
        return {"type": "http.request", "body": body, "more_body": read < n}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimit(_app, lambda: limit)({"type": "http", "headers": list(headers)}, receive, send))
    return (sent[0] if sent else {}), sent, read


def test_a_streamed_body_within_the_limit_reaches_the_app_whole() -> None:
    start, sent, _ = _call([b"abc", b"defg"], limit=10)
    assert start["status"] == 200 and json.loads(sent[1]["body"]) == {"n": 7}


def test_a_streamed_body_past_the_limit_is_drained_to_its_end_then_answered_413_keeping_the_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "DRAIN_CAP_BYTES", 100)
    start, sent, read = _call([b"x" * 10] * 8, limit=25)  # 80 bytes: ends before the cap
    assert start["status"] == 413 and read == 8  # every chunk read (dropped), none left for the server
    assert (b"connection", b"close") not in start["headers"]
    assert json.loads(sent[1]["body"])["error"] == "body_too_large"


def test_an_endless_streamed_body_is_cut_at_the_drain_cap_and_the_connection_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "DRAIN_CAP_BYTES", 100)
    start, sent, read = _call(10_000, limit=25)  # 100,000 bytes streamed
    assert start["status"] == 413 and (b"connection", b"close") in start["headers"]
    assert read == 11  # 110 bytes > the 100-byte cap: no more is read
    assert json.loads(sent[1]["body"])["error"] == "body_too_large"


def test_a_client_gone_while_draining_gets_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "DRAIN_CAP_BYTES", 1000)
    chunks = [b"x" * 10] * 5
    n = {"read": 0}

    async def receive() -> dict:
        n["read"] += 1
        if n["read"] > 5:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[0], "more_body": True}  # never says it ended

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(BodySizeLimit(_app, lambda: 25)({"type": "http", "headers": []}, receive, send))
    assert sent == [] and n["read"] == 6


def test_a_declared_oversized_body_is_answered_at_once() -> None:
    start, _, read = _call([b"x" * 10] * 3, limit=25, headers=[(b"content-length", b"30")])
    assert start["status"] == 413 and read == 0
