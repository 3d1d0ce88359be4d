"""The whole IDP pipeline on one dataset: features → pre-train → CDIM → transfer → fine-tune → evaluate
(``jobs/idp.py`` and ``raypipe idp``).

    python jobs/idp.py                                   # the embedded benchmark, main variants
    python jobs/idp.py --variants all --name idp-all     # every variant and ablation
    python jobs/idp.py --pretrain train.epochs=30 --finetune train.lr=3e-4
    python jobs/idp.py --name idp-s1 --shared-from idp --finetune train.seed=1   # another fine-tuning seed

Stages whose outputs exist under <storage-path>/<name>/ are reused, so a re-run resumes.  Stage
overrides are dotted keys of the stage's ExperimentConfig, checked before Ray starts.
"""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from raypipe.cli import HelpFormatter
from raypipe.config import ConfigError
from raypipe.pipelines.idp import MAIN_VARIANTS, VARIANTS, IDPConfig, format_report, run_idp, shared_source


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--dataset", default="builtin:small")
    p.add_argument("--target-dataset", help="transfer to another dataset (e.g. movielens:ml-100k) "
                                            "(default: the same dataset's target domains)")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--name", default="idp")
    p.add_argument("--variants", default=",".join(MAIN_VARIANTS), help=f"comma list or 'all' of {list(VARIANTS)}")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers of every stage")
    p.add_argument("--top-m", type=int, default=10)
    p.add_argument("--pretrain", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the pre-training run")
    p.add_argument("--finetune", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of every fine-tuning run")
    p.add_argument("--cdim-train", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the CDIM run")
    p.add_argument("--cdim", nargs="*", default=[], metavar="KEY=VALUE",
                   help="CDIM model settings, e.g. trainable_layers=2 k_neighbours=10 (fields of CDIMConfig)")
    p.add_argument("--cdim-pairs", type=int, default=1,
                   help="behaviour positives per source item (of its k ID neighbours) in CDIM's training data")
    p.add_argument("--shared-from", metavar="NAME",
                   help="copy the features, pre-training, CDIM and transfer of the finished pipeline NAME "
                        "(same storage path; refused unless its dataset, pretrain, cdim, cdim-train and top-m "
                        "settings are these), e.g. to fine-tune more seeds over one pre-training")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    return p


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    p = parser(prog)
    args = p.parse_args(argv)
    variants = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    if args.num_workers < 1 or args.top_m < 1 or args.cdim_pairs < 1:
        p.error("--num-workers, --top-m and --cdim-pairs must be >= 1")
    from raypipe.data.registry import check_dataset_spec
    from raypipe.data.schema import DataValidationError

    for flag, spec in (("--dataset", args.dataset), ("--target-dataset", args.target_dataset)):
        try:
            if spec is not None:
                check_dataset_spec(spec)
        except DataValidationError as e:
            p.error(f"{flag}: {e}")
    workers = [f"train.num_workers={args.num_workers}"]
    try:
        cfg = IDPConfig(dataset=args.dataset, target_dataset=args.target_dataset, storage_path=args.storage_path,
                        name=args.name, variants=variants, top_m=args.top_m,
                        shared_from=args.shared_from).with_overrides(
            pretrain=args.pretrain, finetune=args.finetune, cdim_train=[*workers, *args.cdim_train],
            cdim=[f"pairs_per_item={args.cdim_pairs}", *args.cdim], both=workers)
        shared_source(cfg)
    except (ConfigError, ValueError) as e:
        p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.runtime import init_ray

    init_ray(address=args.address)
    res = run_idp(cfg)
    print(f"\nIDP on {res['dataset']} ({res['total_s']:.0f}s; stages {res['timings_s']})")
    print(format_report(res["results"]))
    return 0
