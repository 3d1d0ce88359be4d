"""Sweep a paper's published grid with Ray Tune (one Ray Train run per trial): ``jobs/tune.py`` and
``raypipe tune``.

    python jobs/tune.py --space tune_spaces/idp.yaml                        # IDP's lr grid on builtin:small
    python jobs/tune.py --space tune_spaces/sasrec.yaml --dataset builtin:tiny train.epochs=3 --scheduler asha
    python jobs/tune.py --space tune_spaces/idp.yaml --name idp-lr --resume  # finish an interrupted sweep
    python jobs/tune.py --space tune_spaces/prerec.yaml --only train.lr=3e-4,3e-3   # narrow an axis

Writes <storage-path>/<name>/{results.csv, results.md, best_config.yaml, metric_vs_axes.png}; each trial's
Train run is under <storage-path>/<name>/trials/<trial_id>/.  On a cluster: ray job submit -- python jobs/tune.py ...
--storage-path may be a URI (s3://bucket/tune, gs://..., file:///...): the report is then written into a local
copy of the experiment directory (~/.cache/raypipe/runs/) and uploaded.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from raypipe import storage
from raypipe.cli import HelpFormatter
from raypipe.config import ConfigError
from raypipe.tune.report import write_report
from raypipe.tune.spaces import SpaceError, load_space
from raypipe.tune.sweep import SweepConfig, restrict, run_sweep


def _value(text: str) -> Any:
    """A command-line value: YAML scalar, with numbers like 3e-4 (a string to YAML 1.1) read as numbers."""
    v = yaml.safe_load(text)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def parse_only(items: list[str], parser: argparse.ArgumentParser) -> dict[str, list]:
    only = {}
    for item in items:
        key, sep, vals = item.partition("=")
        if not sep or not vals:
            parser.error(f"--only expects KEY=V1,V2,..., got {item!r}")
        only[key] = [_value(v) for v in vals.split(",")]
    return only


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides for every trial")
    p.add_argument("--space", required=True, help="tune_spaces/<model>.yaml")
    p.add_argument("--dataset", help="builtin:<size>, movielens:<name> or a dataset dir (default: builtin:small)")
    p.add_argument("--name", help="experiment name (default: <space file stem>)")
    p.add_argument("--storage-path", default="runs/tune",
                   help="experiments go here: a path (shared storage on a cluster) or a URI (s3://, gs://, file://)")
    p.add_argument("--max-concurrent", type=int, default=1, help="trials running at once")
    p.add_argument("--num-workers", type=int, help="Ray Train workers per trial (default: the space's, else 1)")
    p.add_argument("--scheduler", choices=["asha", "none"],
                   help="override the space's scheduler (default: the space's)")
    p.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                   help="sweep only these published values of an axis (repeatable)")
    p.add_argument("--resume", action="store_true", help="restore the experiment: finished trials are not rerun")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    p = parser(prog)
    args = p.parse_args(argv)
    if args.max_concurrent < 1:
        p.error("--max-concurrent must be >= 1")
    from raypipe.data.registry import check_dataset_spec
    from raypipe.data.schema import DataValidationError

    try:
        space = restrict(load_space(args.space), parse_only(args.only, p))
        space.require_built()
        overrides = list(args.overrides)
        dataset = str(Path(args.dataset).resolve()) if args.dataset and Path(args.dataset).exists() else args.dataset
        overrides += [f"data.dataset={dataset}"] if dataset else []
        overrides += [f"train.num_workers={args.num_workers}"] if args.num_workers else []
        probe_cfg = space.config(space.points()[0], overrides)  # reject bad overrides before Ray starts
        check_dataset_spec(probe_cfg.data.dataset)
    except (SpaceError, ConfigError) as e:
        p.error(str(e))
    except DataValidationError as e:
        p.error(f"data.dataset (--dataset): {e}")
    try:  # a URI's filesystem is built now (an unknown scheme, unreachable bucket ... exit 2 before Ray)
        storage.check(args.storage_path)
    except storage.StorageError as e:
        p.error(f"--storage-path: {e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.runtime import init_ray

    init_ray(address=args.address)
    from raypipe.features.ondemand import ensure_features

    # the feature views the model reads, extracted once here (not by every trial) when no store is named
    probe = ensure_features(probe_cfg)
    if probe.data.features is not None:
        overrides += [f"data.features={Path(probe.data.features).resolve()}",
                      f"data.feature_views=[{','.join(probe.data.feature_views)}]"]
    # Absolute paths, and the sweep runs from its storage directory: under `ray job submit --working-dir`
    # the driver starts inside Ray's unpacked working-dir package, which another node sharing the same
    # disk re-creates when it first sets up the job (one-machine clusters; see scripts/clusterlib.py).
    # A URI storage path: the same from a local directory of this machine.
    name = args.name or space.path.stem
    if storage.is_uri(args.storage_path):
        storage_path, workdir = args.storage_path, storage.cache_dir(storage.join(args.storage_path, name))
    else:
        workdir = Path(args.storage_path).resolve()
        storage_path = str(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    sc = SweepConfig(space=space, name=name, storage_path=storage_path,
                     overrides=overrides, max_concurrent=args.max_concurrent, scheduler=args.scheduler,
                     resume=args.resume)
    res = run_sweep(sc)
    paths = write_report(res.experiment_dir, res.rows, space, res.metric, res.mode, overrides)
    shown: dict[str, object] = dict(paths)
    if res.experiment_uri is not None:
        storage.upload_dir(res.experiment_dir, res.experiment_uri, files=[Path(v).name for v in paths.values()])
        shown = {k: f"{storage.join(res.experiment_uri, k)} (local copy {v})" for k, v in paths.items()}
    print("\n" + paths["results.md"].read_text())
    print("\n".join(f"{k}: {v}" for k, v in shown.items()))
    failed = [r["trial_id"] for r in res.rows if r["status"] == "error"]
    if failed:
        print(f"\n{len(failed)} trial(s) failed: {failed} (errors in results.csv; --resume reruns them)", file=sys.stderr)
        return 1
    return 0
