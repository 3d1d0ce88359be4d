"""How long a short Ray Train run waits for its controller's polls: the same run at two poll intervals.

Ray Train V2's controller collects each worker's ``ray.train.report`` when it polls the workers, every
``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` seconds (Ray's default 2 s; raypipe's jobs use 0.5 s, see
``raypipe.runtime``), and a worker's report queue holds one result.  This benchmark trains the same SASRec
on the embedded ``tiny`` benchmark (10 epochs of under a second each, the size of the test suite's runs)
with each interval, alternating, each run in its own local Ray (the controller reads the variable when it
starts).  Recorded per run: the wall time of ``run_experiment``, its training part (Ray Train's ``fit``
with validation), the loop's own epoch seconds (training rows / ``samples_per_s``), and the test metrics,
which must not depend on the interval.  Run on a quiet machine::

    python bench/bench_train_poll.py [--intervals 2.0,0.5] [--repeats 2] [--epochs 10] \
        [--out bench/results/train_poll]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_train_poll")


def one_run(interval: str, dataset: Path, storage: Path, epochs: int) -> dict[str, Any]:
    """A run in this process, in a fresh local Ray whose job environment carries ``interval``."""
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = interval
    from raypipe.config import load_config
    from raypipe.runtime import init_ray
    from raypipe.train.run import run_experiment

    init_ray(num_cpus=2, object_store_mb=384, log_to_driver=False)
    cfg = load_config(None, [f"data.dataset={dataset}", f"run.storage_path={storage}", f"train.epochs={epochs}",
                             "train.patience=100", "model.name=sasrec", "model.hidden=32", "train.batch_size=64",
                             "train.lr=3e-3", f"run.name=poll{interval}-{time.time_ns()}"])
    t0 = time.perf_counter()
    res = run_experiment(cfg)
    wall = time.perf_counter() - t0
    loop = sum(h["train_rows"] / h["samples_per_s"] for h in res.history)
    return {"interval_s": float(interval), "wall_s": wall, "train_s": res.train_seconds, "epoch_loop_s": loop,
            "epochs": len(res.history), "test_ndcg@10": {d: m["ndcg@10"] for d, m in res.test.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--intervals", default="2.0,0.5", help="poll intervals to compare, seconds")
    p.add_argument("--repeats", type=int, default=2, help="runs per interval (alternated)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_poll")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one run, JSON on stdout's last line
    p.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--storage", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one is not None:
        print(json.dumps(one_run(a.one, a.dataset, a.storage, a.epochs)), flush=True)
        return
    intervals = [str(float(x)) for x in a.intervals.split(",")]
    if a.repeats < 1 or a.epochs < 1 or any(float(x) <= 0 for x in intervals):
        p.error("--repeats and --epochs must be >= 1 and every interval > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.data import builtin
    from raypipe.io import write_json_atomic, write_text_atomic

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = builtin.write(Path(tmp) / "tiny", "tiny")
        for r in range(a.repeats):
            for interval in intervals:
                cmd = [sys.executable, __file__, "--one", interval, "--dataset", str(dataset),
                       "--storage", str(Path(tmp) / "runs"), "--epochs", str(a.epochs)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                run = {"repeat": r, **json.loads(out.strip().splitlines()[-1])}
                log.info("interval %s s, repeat %d: wall %.1f s, training %.1f s, epoch loops %.1f s",
                         interval, r, run["wall_s"], run["train_s"], run["epoch_loop_s"])
                runs.append(run)
    summary = {}
    for interval in intervals:
        rs = [x for x in runs if x["interval_s"] == float(interval)]
        summary[interval] = {k: sum(x[k] for x in rs) / len(rs) for k in ("wall_s", "train_s", "epoch_loop_s")}
    result = {"epochs": a.epochs, "repeats": a.repeats, "runs": runs, "mean": summary,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json_atomic(a.out.with_suffix(".json"), result)
    lines = [f"SASRec on builtin tiny, {a.epochs} epochs, one Ray Train worker; means of {a.repeats} runs", "",
             "| poll interval (s) | run wall (s) | training (s) | epoch loops (s) |", "|---:|---:|---:|---:|"]
    lines += [f"| {i} | {m['wall_s']:.1f} | {m['train_s']:.1f} | {m['epoch_loop_s']:.1f} |" for i, m in summary.items()]
    write_text_atomic(a.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
