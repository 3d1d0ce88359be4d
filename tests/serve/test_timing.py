"""The Server-Timing header of /v1/recommend: the hop clock and the header parser (no Ray)."""
from __future__ import annotations

import pytest

from raypipe.serve.timing import HOPS, GcClock, HopTimer, parse_server_timing


def test_header_lists_every_hop_then_app_from_arrival() -> None:
    t = HopTimer(arrival=10.0, gc0=100.0)
    t.span("queue", 10.0, 10.002)
    t.span("encode", 10.002, 10.0065)
    t.span("retrieve", 10.0065, 10.009)
    t.span("respond", 10.009, 10.0095)
    header = t.header(now=10.0105, gc_total=101.25)
    assert header == ("queue;dur=2.00, encode;dur=4.50, retrieve;dur=2.50, rerank;dur=0.00, respond;dur=0.50, "
                      "app;dur=10.50, gc;dur=1.25")
    parsed = parse_server_timing(header)
    assert list(parsed) == [*HOPS, "app", "gc"]
    assert sum(parsed[h] for h in HOPS) == pytest.approx(9.5) and parsed["app"] == pytest.approx(10.5)


def test_gc_clock_counts_the_pauses_of_this_process_and_a_request_sees_those_in_its_lifetime() -> None:
    import gc

    clock = GcClock.installed()
    assert GcClock.installed() is clock and gc.callbacks.count(clock) == 1  # one per process
    before = clock.summary()["gen2"]["n"]
    t = HopTimer()
    assert t.gc0 == clock.total_ms
    garbage = [[i] for i in range(200_000)]  # tracked containers: a full collection has to walk them
    gc.collect()
    del garbage
    after = clock.summary()["gen2"]
    assert after["n"] >= before + 1 and after["max_ms"] > 0.0  # the explicit one, and any the allocations set off
    assert parse_server_timing(t.header())["gc"] == pytest.approx(clock.total_ms - t.gc0, abs=0.01)
    assert clock.total_ms - t.gc0 > 0.0
    # a request that saw no collection reports 0
    assert parse_server_timing(HopTimer().header(gc_total=clock.total_ms))["gc"] == 0.0


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
