"""The Server-Timing header of /v1/recommend: the hop clock and the header parser (no Ray)."""
from __future__ import annotations

import pytest

from raypipe.serve.timing import HOPS, HopTimer, parse_server_timing


def test_header_lists_every_hop_then_app_from_arrival() -> None:
    t = HopTimer(arrival=10.0)
    t.span("queue", 10.0, 10.002)
    t.span("encode", 10.002, 10.0065)
    t.span("retrieve", 10.0065, 10.009)
    t.span("respond", 10.009, 10.0095)
    header = t.header(now=10.0105)
    assert header == ("queue;dur=2.00, encode;dur=4.50, retrieve;dur=2.50, rerank;dur=0.00, respond;dur=0.50, "
                      "app;dur=10.50")
    parsed = parse_server_timing(header)
    assert list(parsed) == [*HOPS, "app"]
    assert sum(parsed[h] for h in HOPS) == pytest.approx(9.5) and parsed["app"] == pytest.approx(10.5)


def test_spans_of_one_hop_add_up_and_never_go_negative() -> None:
    t = HopTimer(arrival=0.0)
    t.span("rerank", 1.0, 1.25)
    t.span("rerank", 2.0, 2.5)
    t.span("queue", 3.0, 2.0)  # a clock read out of order counts as 0, not as negative time
    assert t.ms == {"rerank": pytest.approx(750.0), "queue": 0.0}
    with pytest.raises(ValueError, match="unknown hop 'decode'"):
        t.span("decode", 0.0, 1.0)


def test_parser_reads_other_servers_forms_and_names_a_bad_entry() -> None:
    assert parse_server_timing('cache;desc="Cache Read";dur=23.2, db;dur=53, missedCache') == {
        "cache": 23.2, "db": 53.0}
    assert parse_server_timing('total;dur="7.5"') == {"total": 7.5}
    assert parse_server_timing("") == {}
    with pytest.raises(ValueError, match="non-numeric dur"):
        parse_server_timing("db;dur=fast")
    with pytest.raises(ValueError, match="malformed entry"):
        parse_server_timing("a b;dur=1")
