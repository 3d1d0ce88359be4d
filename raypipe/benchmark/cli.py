"""The leaderboard: every method and baseline, pre-train → transfer → evaluate, one protocol, one report
(``jobs/benchmark.py`` and ``raypipe benchmark``).

    python jobs/benchmark.py --size tiny --budget quick --seeds 0                 # every method, minutes
    python jobs/benchmark.py --settings builtin,movielens --budget short          # the leaderboard, 3 seeds
    python jobs/benchmark.py --methods sasrec,unisrec,unim2rec --seeds 0,1,2      # a subset (SASRec always runs)
    python jobs/benchmark.py --report-only                                         # the report from finished results
    ray job submit --working-dir . -- python jobs/benchmark.py --budget short      # the whole benchmark on a cluster

Settings: ``builtin`` (the embedded benchmark of ``--size``: pre-train on its source domains, judge its
target domains) and ``movielens`` (pre-train on MovieLens-1M, judge MovieLens-100k: titles only, so the
image methods are reported as not applicable; needs ``$RAYPIPE_DATA`` with the MovieLens files, see
``raypipe data``).  Budgets (``quick``, ``short``, ``paper``: epochs, patience, judged users, the
language models' training-row caps) are in :mod:`raypipe.benchmark.methods`.  Resumable: a method whose
result file exists is not run again (``--rejudge`` judges the finished runs again).

Writes ``<out>.json`` / ``.md`` / ``.html`` (default ``bench/results/leaderboard``) and the runs under
``<storage-path>/<setting>/``.  ``--tracker mlflow|tensorboard`` logs every training epoch
(:mod:`raypipe.benchmark.tracking`).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from raypipe.benchmark.methods import BUDGETS, METHODS, check_methods
from raypipe.benchmark.runner import BenchmarkConfig, result_path
from raypipe.cli import HelpFormatter

log = logging.getLogger(__name__)
SIZES = ("tiny", "small", "large")
SETTINGS = ("builtin", "movielens")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raypipe benchmark", description=__doc__, formatter_class=HelpFormatter)
    d = BenchmarkConfig()
    p.add_argument("--settings", default=",".join(d.settings), help=f"comma-separated, of {list(SETTINGS)}")
    p.add_argument("--size", default=d.size, choices=SIZES, help="size of the embedded benchmark")
    p.add_argument("--methods", default="all", help=f"comma-separated, of {list(METHODS)} (or all)")
    p.add_argument("--budget", default=d.budget, choices=list(BUDGETS))
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="comma-separated training seeds")
    p.add_argument("--storage-path", default=d.storage_path, help="where the runs go")
    p.add_argument("--out", type=Path, default=Path("bench/results/leaderboard"), help="the report's path stem")
    p.add_argument("--tracker", default=d.tracker, choices=["none", "mlflow", "tensorboard"])
    p.add_argument("--max-len", type=int, default=d.max_len, help="history length of every model")
    p.add_argument("--rejudge", action="store_true", help="judge the finished runs again")
    p.add_argument("--absent-shares", default=",".join(f"{x:g}" for x in d.absent_shares),
                   help="shares of the items missing each feature view in the missing-modality check "
                        "(comma-separated, in (0, 1]; empty: no check)")
    p.add_argument("--report-only", action="store_true", help="write the report from the finished result files")
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS or a local Ray)")
    return p


def config_from(args: argparse.Namespace) -> BenchmarkConfig:
    """The benchmark's config; every bad value raises ``ValueError`` naming its option."""
    from raypipe.benchmark.tracking import check_tracker

    settings = tuple(s for s in args.settings.split(",") if s)
    bad = sorted(set(settings) - set(SETTINGS))
    if bad or not settings:
        raise ValueError(f"--settings: unknown {bad or args.settings!r}; choose from {list(SETTINGS)}")
    methods = check_methods(list(METHODS) if args.methods == "all" else [m for m in args.methods.split(",") if m])
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise ValueError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: {args.seeds!r} must be distinct integers >= 0")
    if args.max_len < 1:
        raise ValueError(f"--max-len: {args.max_len} must be >= 1")
    try:
        shares = tuple(float(x) for x in args.absent_shares.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--absent-shares: {args.absent_shares!r} is not a comma-separated list of numbers") from None
    if any(not 0.0 < x <= 1.0 for x in shares) or len(set(shares)) != len(shares):
        raise ValueError(f"--absent-shares: {args.absent_shares!r} must be distinct shares in (0, 1]")
    check_tracker(args.tracker)
    return BenchmarkConfig(settings=settings, size=args.size, methods=tuple(methods), budget=args.budget, seeds=seeds,
                           storage_path=args.storage_path, max_len=args.max_len, tracker=args.tracker,
                           rejudge=args.rejudge, absent_shares=shares)


def check_data(cfg: BenchmarkConfig) -> None:
    """MovieLens must be on this machine (the embedded benchmark is generated on demand)."""
    from raypipe.data.registry import resolve_dataset

    for s in cfg.setting_list():
        if s.name.startswith("ml"):
            for spec in (s.source, s.target_dataset):
                try:
                    resolve_dataset(spec)
                except (FileNotFoundError, ValueError) as e:
                    raise ValueError(f"--settings movielens: {spec} is not available ({e}); "
                                     "set RAYPIPE_DATA to the directory `raypipe data` filled") from None


def finished_results(cfg: BenchmarkConfig) -> dict[str, dict[str, dict[str, dict]]]:
    out: dict[str, dict[str, dict[str, dict]]] = {}
    for s in cfg.setting_list():
        for seed in cfg.seeds:
            for m in cfg.methods:
                f = result_path(cfg, s, m, seed)
                if f.is_file():
                    out.setdefault(s.name, {}).setdefault(str(seed), {})[m] = json.loads(f.read_text())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        cfg = config_from(args)
        if not args.report_only:
            check_data(cfg)
    except ValueError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.benchmark.report import summarise, write_report

    if args.report_only:
        results = finished_results(cfg)
        if not results:
            p.exit(2, f"{p.prog}: error: --report-only: no finished results under {cfg.storage_path}\n")
    else:
        from raypipe.benchmark.runner import run_benchmark
        from raypipe.runtime import init_ray

        init_ray(address=args.address)
        results = run_benchmark(cfg, progress=lambda line: print(line, flush=True))
    paths = write_report(summarise(results, cfg), args.out)
    print("report:", ", ".join(str(v) for v in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

