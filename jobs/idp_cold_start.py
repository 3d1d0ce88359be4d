"""Inner-domain cold start with IDP (IDP §3.8): 10% of a domain's items lose every interaction, the model
is trained without them, CDIM generates their ID embeddings from the warm items, and the untouched model
is evaluated on the test users whose held-out item is cold.

    python jobs/idp_cold_start.py                                   # target domains of builtin:small
    python jobs/idp_cold_start.py --dataset movielens:ml-100k --name idp-cold-ml100k
"""
from __future__ import annotations

import argparse
import logging
import sys

from raypipe.config import ConfigError, with_overrides
from raypipe.pipelines.cold_start import ColdStartConfig, format_cold_start, run_cold_start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="builtin:small")
    p.add_argument("--domains", help="comma list (default: the dataset's target domains)")
    p.add_argument("--cold-share", type=float, default=0.1)
    p.add_argument("--storage-path", default="runs")
    p.add_argument("--name", default="idp-cold")
    p.add_argument("--top-m", type=int, default=10)
    p.add_argument("--train", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the SASRec run")
    p.add_argument("--address", help="Ray address (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    args = p.parse_args(argv)
    if not 0 < args.cold_share < 1 or args.top_m < 1:
        p.error("--cold-share must be in (0, 1) and --top-m >= 1")
    try:
        train = with_overrides(ColdStartConfig().train, args.train)
    except ConfigError as e:
        p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = ColdStartConfig(dataset=args.dataset, domains=args.domains.split(",") if args.domains else None,
                              cold_share=args.cold_share, storage_path=args.storage_path, name=args.name,
                              top_m=args.top_m, train=train)
    except ValueError as e:  # a --storage-path URI, named
        p.error(str(e))
    from raypipe.runtime import init_ray

    init_ray(address=args.address)
    res = run_cold_start(cfg)
    print(f"\nInner-domain cold start on {res['dataset']} {res['domains']}: {res['n_cold']} cold items "
          f"({res['timings_s']['total']:.0f}s)")
    print(format_cold_start(res["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
