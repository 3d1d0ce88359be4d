"""bench/bench_serve.py's per-hop profile from Server-Timing headers (hand-made results, no Ray)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serve", ROOT / "bench" / "bench_serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _hops(app: float, encode: float) -> dict[str, float]:
    return {"queue": 1.0, "encode": encode, "retrieve": 2.0, "rerank": 0.0, "respond": 0.5, "app": app}


def test_profile_of_answered_recommends_only(bench) -> None:
    results = [{"kind": "recommend", "status": 200, "ms": 10.0 + i, "t": 0.0, "hops": _hops(8.0 + i, 3.0 + i)}
               for i in range(100)]
    # left out: another kind, an error, a request without the header
    results += [{"kind": "match", "status": 200, "ms": 99.0, "t": 0.0, "hops": _hops(1.0, 1.0)},
                {"kind": "recommend", "status": 503, "ms": 99.0, "t": 0.0, "hops": None},
                {"kind": "recommend", "status": 200, "ms": 99.0, "t": 0.0, "hops": None}]
    p = bench.hop_profile(results)
    assert p["n"] == 100
    assert p["hops"]["encode"]["p50_ms"] == pytest.approx(52.5)  # 3..102, median of 100 values
    assert p["hops"]["queue"]["p99_ms"] == pytest.approx(1.0)
    assert p["hops"]["outside_app"]["mean_ms"] == pytest.approx(2.0)  # client 10+i - app 8+i
    assert p["hops"]["app_other"]["p99_ms"] == pytest.approx(1.5)  # app 8+i - hops (1 + 3+i + 2 + 0 + 0.5)
    assert p["hops"]["client"]["p99_ms"] == pytest.approx(108.01)
    # the slowest 1% is the one request of 109 ms: its encode hop took 102 ms
    assert p["slowest_1pct_mean_ms"]["encode"] == pytest.approx(102.0)
    assert "| encode | 52.5 | 52.5 |" in bench.hop_table(p)


def test_no_timed_answers_no_profile(bench) -> None:
    assert bench.hop_profile([{"kind": "recommend", "status": 200, "ms": 5.0, "t": 0.0, "hops": None}]) is None


def test_memory_table_has_a_row_per_deployment_and_a_column_per_moment(bench) -> None:
    mib = 2**20
    memory = {"after_setup": {"Recommender": [{"pid": 1, "rss": 300 * mib, "uss": 120 * mib}]},
              "after_load": {"Recommender": [{"pid": 1, "rss": 310 * mib, "uss": 130 * mib},
                                             {"pid": 2, "rss": 305 * mib, "uss": 125 * mib}],
                             "SequenceEncoder": [{"pid": 3, "rss": 500 * mib, "uss": 200 * mib}]}}
    lines = bench.memory_table(memory).splitlines()
    assert lines[0] == "| Deployment | after_setup | after_load |"
    assert lines[2] == "| Recommender | 300 / 120 | 310 / 130, 305 / 125 |"
    assert lines[3] == "| SequenceEncoder | – | 500 / 200 |"
