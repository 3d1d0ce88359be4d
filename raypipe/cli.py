"""The command line shared by ``jobs/pretrain.py``, ``jobs/finetune.py`` and ``jobs/evaluate.py``.

``--config YAML`` then dotted overrides (``train.lr=3e-4``, as trailing arguments or ``--set``), then the
shortcut flags (``--model``, ``--dataset``, ``--num-workers``, ``--use-gpu``, ``--storage-path`` ...).
Invalid values are rejected with a message naming the key, before Ray starts.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from raypipe.config import ConfigError, ExperimentConfig, load_config


def experiment_parser(stage: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"jobs/{stage}.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. train.lr=3e-4")
    p.add_argument("--config", help="YAML experiment config (raypipe.config.ExperimentConfig)")
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override (repeatable)")
    p.add_argument("--model", help="a registered model (python -m raypipe.models lists them with their options)")
    p.add_argument("--dataset", help="builtin:<tiny|small|large>, movielens:<ml-1m|ml-100k> or a dataset dir")
    p.add_argument("--num-workers", type=int, help="Ray Train workers (DDP)")
    p.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker")
    p.add_argument("--storage-path", help="where run directories go (shared storage on a cluster)")
    p.add_argument("--name", help="run name (re-using a name resumes that run from its last checkpoint)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--features", help="feature store directory for content-based models")
    if stage in ("finetune", "evaluate"):
        p.add_argument("--init-from", help="run directory (or model.pt) of the pre-trained model")
    if stage == "finetune":
        p.add_argument("--mode", choices=["zero-shot", "inductive", "transductive"])
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace, stage: str) -> ExperimentConfig:
    flags = {
        "model.name": args.model, "data.dataset": args.dataset, "train.num_workers": args.num_workers,
        "train.use_gpu": args.use_gpu, "run.storage_path": args.storage_path, "run.name": args.name,
        "train.epochs": args.epochs, "data.features": args.features,
        "run.init_from": getattr(args, "init_from", None), "run.mode": getattr(args, "mode", None),
    }
    overrides = [f"run.stage={stage}"] + list(args.overrides) + list(args.set_)
    overrides += [f"{k}={v}" for k, v in flags.items() if v is not None]
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))
    if cfg.train.num_workers < 1:
        parser.error(f"--num-workers must be >= 1, got {cfg.train.num_workers}")
    if cfg.train.epochs < 0:
        parser.error(f"train.epochs must be >= 0, got {cfg.train.epochs}")
    from raypipe.models.registry import get_spec

    learned = get_spec(cfg.model.name).trainable
    needs_init = stage == "evaluate" or (stage == "finetune" and cfg.run.mode != "transductive")
    if learned and needs_init and cfg.run.init_from is None:
        parser.error(f"{stage} ({cfg.run.mode}) of {cfg.model.name} needs --init-from (a pre-trained run "
                     "directory); transductive fine-tuning without it trains from scratch")
    return cfg


def main(stage: str, description: str, argv: Sequence[str] | None = None) -> int:
    """Parse → config → one library call → results table.  Returns the process exit code."""
    parser = experiment_parser(stage, description)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    cfg = config_from_args(parser, args, stage)
    from raypipe.runtime import init_ray
    from raypipe.train.run import format_results, run_experiment

    init_ray(address=args.address)
    from raypipe.features.ondemand import ensure_features

    cfg = ensure_features(cfg)
    res = run_experiment(cfg)
    print(f"\n{stage} {cfg.model.name} on {cfg.data.dataset} -> {res.run_dir}")
    if res.best_epoch is not None:
        print(f"best epoch {res.best_epoch} ({cfg.train.metric}); trained {res.train_seconds:.1f}s")
    print(format_results(res))
    return 0
