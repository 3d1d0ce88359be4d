"""The command line shared by ``jobs/pretrain.py``, ``jobs/finetune.py`` and ``jobs/evaluate.py`` (and by
``raypipe pretrain|finetune|evaluate``, :mod:`raypipe.commands`).

``--config YAML`` then dotted overrides (``train.lr=3e-4``, as trailing arguments or ``--set``), then the
shortcut flags (``--model``, ``--dataset``, ``--num-workers``, ``--use-gpu``, ``--storage-path`` ...).
Invalid values (an unknown key or model, a value of the wrong type or out of range, a dataset or
``--init-from`` path that does not exist, a ``--storage-path`` URI whose filesystem cannot be built) are
rejected with exit code 2 and a message naming the key, before Ray starts.  ``--print-config`` prints the
resolved config as YAML and exits without starting Ray.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from raypipe.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig, RunSpec, TrainConfig, load_config


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The jobs' ``--help``: the description as written, every option with its default (unless the help
    already names it or the default is ``None``: decided elsewhere, which the help then says)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS, []) or "default" in text:
            return text
        return super()._get_help_string(action)


#: one line per stage (``raypipe --help``); the jobs pass their own docstrings as the description
STAGES: dict[str, str] = {
    "pretrain": "Pre-train a sequential recommender on the source domains with Ray Train.",
    "finetune": "Fine-tune on the target domains: zero-shot (evaluate only), inductive or transductive (full).",
    "evaluate": "Evaluate a trained run (or a non-learned baseline) on the target domains, no training.",
}


def experiment_parser(stage: str, description: str, prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or f"jobs/{stage}.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted config overrides, e.g. train.lr=3e-4 (defaults: --print-config)")
    p.add_argument("--config", help="YAML experiment config (raypipe.config.ExperimentConfig)")
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override (repeatable)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML and exit (no Ray, no training)")
    p.add_argument("--model", help="a registered model (python -m raypipe.models lists them with their options) "
                                   f"(default: {ModelConfig.name})")
    p.add_argument("--dataset", help="builtin:<tiny|small|large>, markets:<tiny|small>, movielens:<ml-1m|ml-100k> "
                                     f"or a dataset dir (default: {DataConfig.dataset})")
    p.add_argument("--num-workers", type=int, help=f"Ray Train workers (DDP) (default: {TrainConfig.num_workers})")
    p.add_argument("--use-gpu", action="store_true", default=None,
                   help=f"one GPU per worker (default: {TrainConfig.use_gpu})")
    p.add_argument("--storage-path", help="where run directories go: a path (shared storage on a cluster) or a "
                                          "URI (s3://bucket/runs, gs://..., file:///...) "
                                          f"(default: {RunSpec.storage_path})")
    p.add_argument("--name", help="run name (re-using a name resumes that run from its last checkpoint) "
                                  "(default: <stage>-<model>-<time>)")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: {TrainConfig.epochs})")
    p.add_argument("--features", help="feature store directory for content-based models "
                                      "(default: <dataset>/features, extracted on first use)")
    if stage in ("finetune", "evaluate"):
        p.add_argument("--init-from", help="run directory (or model.pt) of the pre-trained model, a path or a URI "
                                           "(downloaded once into ~/.cache/raypipe) (default: none)")
    if stage == "finetune":
        p.add_argument("--mode", choices=["zero-shot", "inductive", "transductive"],
                       help=f"(default: {RunSpec.mode})")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.epilog = ("The defaults shown are ExperimentConfig's; a model's own experiment defaults, then --config and\n"
                "the overrides, take precedence.  --print-config shows the result.")
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
    from raypipe.data.registry import check_dataset_spec
    from raypipe.data.schema import DataValidationError

    try:
        check_dataset_spec(cfg.data.dataset)
    except DataValidationError as e:
        parser.error(f"data.dataset: {e}")
    from raypipe import storage

    try:  # a URI's filesystem is built now (an unknown scheme, unreachable bucket ... exit 2 before Ray)
        storage.check(cfg.run.storage_path)
    except storage.StorageError as e:
        parser.error(f"run.storage_path (--storage-path): {e}")
    try:
        if cfg.run.init_from is not None and storage.is_uri(cfg.run.init_from):
            storage.stored_run(cfg.run.init_from)  # there, and finished (its metrics.json published)
        elif cfg.run.init_from is not None and not storage.exists(cfg.run.init_from):
            parser.error(f"run.init_from (--init-from): {cfg.run.init_from} does not exist")
    except (storage.StorageError, FileNotFoundError) as e:
        parser.error(f"run.init_from (--init-from): {e}")
    from raypipe.models.registry import get_spec

    learned = get_spec(cfg.model.name).trainable
    needs_init = stage == "evaluate" or (stage == "finetune" and cfg.run.mode != "transductive")
    if learned and needs_init and cfg.run.init_from is None:
        parser.error(f"{stage} ({cfg.run.mode}) of {cfg.model.name} needs --init-from (a pre-trained run "
                     "directory); transductive fine-tuning without it trains from scratch")
    return cfg


def main(stage: str, description: str | None = None, argv: Sequence[str] | None = None,
         prog: str | None = None) -> int:
    """Parse → config → one library call → results table.  Returns the process exit code (2, through
    ``SystemExit``, for a bad argument or config, before Ray starts)."""
    parser = experiment_parser(stage, description or STAGES[stage], prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    cfg = config_from_args(parser, args, stage)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from raypipe.runtime import init_ray
    from raypipe.train.run import format_results, run_experiment

    init_ray(address=args.address)
    from raypipe.features.ondemand import ensure_features

    cfg = ensure_features(cfg)
    res = run_experiment(cfg)
    print(f"\n{stage} {cfg.model.name} on {cfg.data.dataset} -> {res.uri or res.run_dir}")
    if res.best_epoch is not None:
        print(f"best epoch {res.best_epoch} ({cfg.train.metric}); trained {res.train_seconds:.1f}s")
    print(format_results(res))
    return 0
