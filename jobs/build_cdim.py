"""Train IDP's Cross-domain ID Matcher on a pre-trained run and generate ID embeddings for every new item.

    python jobs/build_cdim.py --pretrain-run runs/idp/pretrain                 # same dataset's target domains
    python jobs/build_cdim.py --dataset movielens:ml-1m --target-dataset movielens:ml-100k --name ml

Writes <storage-path>/<name>/cdim/ (encoder weights, training curve), transfer_cdim/index/ (hnswlib over
the source items' CDIM vectors) and transfer_cdim/generated.parquet (per new item: generated ID
embedding, its top-m source items and eq. 9 weights).  Without --pretrain-run the pre-training stage runs
first (SASRec-BPR, as in jobs/idp.py).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.pipelines.idp import IDPConfig, IDPPipeline


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="builtin:small")
    p.add_argument("--target-dataset")
    p.add_argument("--pretrain-run", type=Path, help="a finished pre-training run directory")
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--name", default="idp")
    p.add_argument("--top-m", type=int, default=10)
    p.add_argument("--no-behaviour", action="store_true", help="IDP w/o BCL: the raw encoder as matcher")
    p.add_argument("--cdim-train", nargs="*", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.pretrain_run is not None and not (args.pretrain_run / "model.pt").exists():
        p.error(f"--pretrain-run {args.pretrain_run}: no model.pt (is it a finished run directory?)")
    if args.top_m < 1:
        p.error("--top-m must be >= 1")
    try:
        cfg = IDPConfig(dataset=args.dataset, target_dataset=args.target_dataset, storage_path=args.storage_path,
                        name=args.name, variants=[], top_m=args.top_m).with_overrides(cdim_train=args.cdim_train)
    except ValueError as e:  # ConfigError included: a bad override, named
        p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.runtime import init_ray

    init_ray()
    pipe = IDPPipeline(cfg)
    pre_run = args.pretrain_run or pipe.pretrain()
    source, target, texts = pipe.catalogue(pre_run)
    tag = "raw" if args.no_behaviour else "cdim"
    matcher = None if args.no_behaviour else pipe.cdim(pre_run, texts, source)
    generated = pipe.transfer(matcher, tag, pre_run, texts, source, target)
    table = pd.read_parquet(pipe.root / f"transfer_{tag}" / "generated.parquet")
    top1 = np.array([w[0] for w in table["weights"]])
    print(f"\nCDIM ({tag}) on {pipe.dataset} -> {pipe.target}")
    print("| source items | target items | with generated ID | mean top-1 eq.9 weight | output |")
    print("|---:|---:|---:|---:|---|")
    print(f"| {len(source):,} | {len(target):,} | {len(generated):,} | {top1.mean():.3f} | "
          f"{pipe.root / f'transfer_{tag}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
