"""bench/bench_serve.py's per-hop profile, CPU accounting and CPU probe, and bench/serve_variance.py
(hand-made results; no Ray)."""
from __future__ import annotations

import pytest

from ..scripts import load_script


def _script(name: str):
    return load_script(f"bench/{name}.py")


@pytest.fixture(scope="module")
def bench():
    return _script("bench_serve")


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


def test_machine_cpu_seconds_reads_proc_stat_fields_in_ticks() -> None:
    import os

    from raypipe.serve.replicas import machine_cpu_seconds

    tick = os.sysconf("SC_CLK_TCK")
    stat = f"cpu  {tick * 3} 0 {tick} {tick * 10} 0 0 {tick // 2} {tick * 2} 0 0\ncpu0 1 2 3\n"
    got = machine_cpu_seconds(stat)
    assert got == {"user": 3.0, "nice": 0.0, "system": 1.0, "idle": 10.0, "iowait": 0.0, "irq": 0.0,
                   "softirq": (tick // 2) / tick, "steal": 2.0}
    with pytest.raises(ValueError, match="'intr'"):
        machine_cpu_seconds("intr 1 2 3\n")
    live = machine_cpu_seconds()
    assert live["idle"] > 0 and all(v >= 0 for v in live.values())


def test_process_role_names_the_parts_of_a_serve_node() -> None:
    from raypipe.serve.replicas import process_role

    assert process_role(["ray::ServeReplica:bench:Recommender"], 1, 2) == "replica bench:Recommender"
    assert process_role(["ray::ProxyActor"], 1, 2) == "Serve HTTP proxy"
    assert process_role(["ray::ServeController"], 1, 2) == "Serve controller"
    assert process_role(["/x/ray/core/src/ray/gcs/gcs_server", "--port=1"], 1, 2) == "GCS"
    assert process_role(["/x/ray/core/src/ray/raylet/raylet", "--a"], 1, 2) == "raylet"
    agents = {process_role(["ray::DashboardAgent"], 1, 2), process_role(["ray::RuntimeEnvAgent"], 1, 2)}
    assert agents == {"Ray node agents"}
    assert process_role(["ray::IDLE"], 1, 2) == "other Ray workers"
    assert process_role(["python", "bench.py"], 7, 7) == "this process (client)"
    assert process_role(["bash"], 1, 2) is None


def test_cpu_use_turns_two_snapshots_into_cores(bench) -> None:
    m0 = {"user": 0.0, "nice": 0.0, "system": 0.0, "idle": 0.0, "iowait": 0.0, "irq": 0.0, "softirq": 0.0, "steal": 0.0}
    # 10 s on 2 CPUs = 20 CPU-s: 12 user, 2 system, 4 idle, 2 steal
    m1 = {**m0, "user": 12.0, "system": 2.0, "idle": 4.0, "steal": 2.0}
    cpu = bench.cpu_use(m0, m1, {"proxy": 1.0, "replica": 0.0}, {"proxy": 6.0, "replica": 8.0, "new": 1.0}, 10.0)
    assert cpu["busy_cores"] == pytest.approx(1.6)  # (20 - 4 idle) / 10 s: steal counts as busy
    assert cpu["steal_cores"] == pytest.approx(0.2)
    assert cpu["machine_share"]["user"] == pytest.approx(0.6)
    assert list(cpu["process_cores"].items()) == [("replica", 0.8), ("proxy", 0.5), ("new", 0.1)]
    text = bench.cpu_table(cpu)
    assert "| replica | 0.80 | – |" in text and "steal (other tenants) 0.20 cores" in text
    cpu["niceness"] = {"replica": [15], "proxy": [0, 15]}
    assert "| replica | 0.80 | 15 |" in bench.cpu_table(cpu) and "| proxy | 0.50 | 0, 15 |" in bench.cpu_table(cpu)


def test_process_niceness_sees_this_process() -> None:
    import os

    from raypipe.serve.replicas import process_niceness

    assert process_niceness()["this process (client)"] == [os.nice(0)]


def test_cpu_probe_times_both_workloads_and_leaves_torch_threads_as_they_were(bench) -> None:
    import torch

    threads = torch.get_num_threads()
    probe = bench.cpu_probe(repeats=2)
    assert set(probe) == {"python_loop_ms", "torch_matmul_ms"} and min(probe.values()) > 0.0
    assert torch.get_num_threads() == threads


@pytest.fixture(scope="module")
def variance():
    return _script("serve_variance")


def _run(busy: float, p99: float, nice: str | None, frozen: bool | None, slow_t: list[float],
         grpc: bool = False) -> dict:
    args = {"seed": 0, "config": None, **({} if frozen is None else {"no_client_gc_freeze": not frozen})}
    entry = {"RAY_worker_niceness": nice, **({"RAY_SERVE_PROXY_USE_GRPC": "1"} if grpc else {})}
    return {"args": args, "entry": entry,
            "load": {"p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": p99, "per_kind": {"recommend": {"p99_ms": p99}},
                     "cpu": {"busy_cores": busy, "steal_cores": 0.0},
                     "hop_profile": {"hops": {"encode": {"p50_ms": busy * 2}}},
                     "client_loop_lag_ms": {"max": 150.0},
                     "slowest_1pct": [{"t": t, "ms": p99, "kind": "recommend"} for t in slow_t]}}


def test_variance_rows_table_and_rank_correlation(variance, tmp_path) -> None:
    import json

    runs = {"a": _run(1.0, 30.0, "0", True, [0.1, 5.0]), "b": _run(1.5, 120.0, None, False, [0.2, 0.3, 9.0]),
            "c": _run(1.2, 50.0, "15", True, [7.0], grpc=True)}
    paths = []
    for name, d in runs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
        paths.append(tmp_path / f"{name}.json")
    assert variance.main([*map(str, paths), "--out", str(tmp_path / "v")]) == 0
    out = json.loads((tmp_path / "v.json").read_text())
    rows = {r["run"]: r for r in out["runs"]}
    assert rows["a"]["worker_niceness"] == 0 and rows["b"]["worker_niceness"] == 15  # Ray's default when unset
    assert rows["a"]["client_gc_frozen"] and not rows["b"]["client_gc_frozen"]  # runs before the option: not frozen
    assert rows["b"]["slowest_in_first_s"] == 2 and rows["c"]["slowest_in_first_s"] == 0
    assert out["spearman"]["p99_vs_busy_cores"] == pytest.approx(1.0)  # same order: 30 < 50 < 120
    assert "| b | 15 | no | no | 1.50 | 3.0 | – | 150 | 2 of 3 | 10.0 | 20.0 | 120.0 |" in (tmp_path / "v.md").read_text()
    assert [r for r in rows if rows[r]["proxy_grpc"]] == ["c"]  # only the run that set RAY_SERVE_PROXY_USE_GRPC=1
    assert "| c | 15 | yes | yes | 1.20 |" in (tmp_path / "v.md").read_text()
    assert (tmp_path / "v.png").stat().st_size > 0
    assert variance.spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="no load.cpu"):
        del runs["a"]["load"]["cpu"]
        (tmp_path / "a.json").write_text(json.dumps(runs["a"]))
        variance.row(tmp_path / "a.json")


def test_pyspy_summary_counts_each_frame_once_per_stack(tmp_path) -> None:
    import gzip

    summary = _script("pyspy_summary")
    raw = ("main (a.py:1);work (a.py:5);work (a.py:9);leaf (b.py:3) 6\n"
           "main (a.py:1);other (c.py:2) 3\n"
           " 1\n")  # py-spy's line for samples with no Python frame
    path = tmp_path / "p.txt.gz"
    path.write_bytes(gzip.compress(raw.encode()))
    stacks = summary.read_stacks(path)
    assert stacks[0] == (["main (a.py)", "work (a.py)", "work (a.py)", "leaf (b.py)"], 6)  # line numbers dropped
    assert stacks[2] == ([summary.NO_PYTHON], 1)
    s = summary.summarise(stacks, marks=("work", "other (c.py)", "absent"))
    assert s["samples"] == 10
    assert s["inclusive"]["work (a.py)"] == pytest.approx(0.6)  # the recursion counted once
    assert s["inclusive"]["main (a.py)"] == pytest.approx(0.9) and "main (a.py)" not in s["self"]
    assert s["self"]["leaf (b.py)"] == pytest.approx(0.6) and s["self"][summary.NO_PYTHON] == pytest.approx(0.1)
    assert s["marked"] == {"work": pytest.approx(0.6), "other (c.py)": pytest.approx(0.3), "absent": 0.0}
    bad = tmp_path / "bad.txt"
    bad.write_text("main (a.py:1) many\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        summary.read_stacks(bad)


def test_client_text_names_the_stalls_and_the_probe(bench) -> None:
    load = {"client_loop_lag_ms": {"tick_ms": 5.0, "p50": 0.5, "p99": 1.7, "max": 159.0, "stall_ms": 20.0,
                                   "stalls": [{"t": 0.01, "lag_ms": 159.2}]},
            "client_gc": {"gen0": {"n": 3, "max_ms": 0.2}, "gen2": {"n": 1, "max_ms": 141.5}},
            "cpu_probe": {"before_ray": {"torch_matmul_ms": 9.3}, "after_load": {"torch_matmul_ms": 9.2}}}
    text = bench.client_text(load)
    assert "max 159.0 ms; stalls over 20 ms at 0.0 s (159 ms)" in text
    assert "gen2 1 pauses, max 141.5 ms" in text and "torch_matmul_ms 9.3 / 9.2" in text


def test_plan_sends_the_explain_share_for_items_of_the_historys_domain(bench) -> None:
    import argparse
    import json

    import numpy as np

    args = argparse.Namespace(malformed_share=0.0, explain_share=0.5, explain_tokens=12)
    histories = [("toys", ["toys/a", "toys/b"]), ("books", ["books/x"])]
    by_domain = {"toys": ["toys/a", "toys/b", "toys/c"], "books": ["books/x", "books/y"]}
    reqs = bench.plan(2000, args, histories, ["toys/a"], ["books", "toys"], np.random.default_rng(0), by_domain)
    explains = [json.loads(body) for kind, _, path, body in reqs if kind == "explain" and path == "/explain"]
    assert 0.45 < len(explains) / len(reqs) < 0.55  # between 10% and 60% of the draws
    for body in explains:
        domain = next(d for d, h in histories if h == body["history"])
        assert body["item_id"] in by_domain[domain] and body["max_tokens"] == 12
    none = bench.plan(200, argparse.Namespace(malformed_share=0.0, explain_share=0.0), histories, ["toys/a"],
                      ["books", "toys"], np.random.default_rng(0))
    assert not [r for r in none if r[0] == "explain"]  # no share, no items by domain needed


def test_summary_gives_explains_their_mean_length(bench) -> None:
    results = [{"kind": "explain", "status": 200, "ms": 400.0, "tokens": 4},
               {"kind": "explain", "status": 200, "ms": 900.0, "tokens": 10},
               {"kind": "explain", "status": 504, "ms": 30_000.0},
               {"kind": "recommend", "status": 200, "ms": 20.0}]
    s = bench.summarise(results, wall=10.0, offered=0.4)
    assert s["per_kind"]["explain"]["tokens_mean"] == 7.0  # the answered ones only
    assert s["per_kind"]["explain"]["status"] == {"200": 2, "504": 1}
    assert "tokens_mean" not in s["per_kind"]["recommend"]
    assert "(mean 7.0 tokens generated)" in bench.table(s)
