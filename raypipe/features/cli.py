"""Extract text, image and cross-modal item features with Ray Data into a Parquet feature store
(``jobs/extract_features.py`` and ``raypipe features``).

    python jobs/extract_features.py --dataset builtin:small --out data/features-small
    python jobs/extract_features.py --dataset DIR --out DIR --views text --text-model /models/all-mpnet-base-v2
    python jobs/extract_features.py --dataset DIR --out DIR --image-model resnet50:/ckpt/resnet50.pth \\
        --cross-model ViT-B-32:/ckpt/clip-vit-b-32.pt --num-gpus 1 --batch-size 256
    ray job submit --working-dir . -- python jobs/extract_features.py --dataset /shared/ds --out /shared/feat

Re-running with the same settings skips finished views and resumes an interrupted one.  Encoders
without a checkpoint are randomly initialised (seeded) and flagged "random" in manifest.json.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from raypipe.cli import HelpFormatter
from raypipe.features.encoders import DEFAULT_CROSS_MODEL, DEFAULT_IMAGE_MODEL
from raypipe.features.pipeline import VIEWS, FeatureConfig, extract_features, format_results


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog or "jobs/extract_features.py", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--dataset", required=True, help="canonical dataset directory, or builtin:<tiny|small|large>")
    p.add_argument("--out", required=True, help="feature store directory")
    p.add_argument("--views", default="text,image,cross",
                   help=f"comma-separated subset of {','.join(VIEWS)} (image_grid: UniMP's region features)")
    p.add_argument("--text-model", default=None, help="local HF / sentence-transformers directory (default: MiniLM)")
    p.add_argument("--text-template", default="plain", help="plain | upsr_pretrain | upsr_finetune | unimp")
    p.add_argument("--image-model", default=DEFAULT_IMAGE_MODEL,
                   help="efficientnet_lite0 (packaged ImageNet weights) | timm:ARCH:CKPT | resnet50[:CKPT] | "
                        "open_clip:ARCH[:CKPT] | open_clip:local-dir:DIR")
    p.add_argument("--cross-model", default=DEFAULT_CROSS_MODEL, help="open_clip ARCH[:CKPT] or local-dir:DIR")
    p.add_argument("--image-size", type=int, default=None, help="encoder input side (default: native, 224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-chunk", type=int, default=None,
                   help="images per forward pass (default: 8 on the CPU, the whole batch on a GPU)")
    p.add_argument("--num-gpus", type=float, default=None, help="GPUs per encoder actor (default: 1 if any, else 0)")
    p.add_argument("--num-actors", type=int, default=None, help="largest encoder actor pool (default: auto)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch threads per actor (default: 1)")
    p.add_argument("--rows-per-file", type=int, default=1024, help="rows per part file (resume granularity)")
    p.add_argument("--seed", type=int, default=0, help="seed of random initialisation (no checkpoint)")
    p.add_argument("--image-grid", type=int, default=3, help="regions per side of the image_grid view")
    p.add_argument("--force", action="store_true", help="recompute views that are up to date")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (ignored on a cluster)")
    p.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Returns the exit code: 2 for a bad option or dataset, before Ray starts."""
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.data.registry import check_dataset_spec, resolve_dataset
    from raypipe.data.schema import DataValidationError
    from raypipe.runtime import init_ray

    try:
        check_dataset_spec(args.dataset)
    except DataValidationError as e:
        print(f"error: --dataset: {e}", file=sys.stderr)
        return 2
    cfg = FeatureConfig(
        dataset=str(resolve_dataset(args.dataset)), out=args.out,
        views=[v.strip() for v in args.views.split(",") if v.strip()],
        text_model=args.text_model, text_template=args.text_template, image_model=args.image_model,
        cross_model=args.cross_model, image_size=args.image_size, batch_size=args.batch_size,
        image_chunk=args.image_chunk,
        num_gpus=args.num_gpus, num_actors=args.num_actors, torch_threads=args.torch_threads,
        rows_per_file=args.rows_per_file, seed=args.seed, force=args.force, image_grid=args.image_grid,
    )
    try:
        cfg.validate()
    except (ValueError, FileNotFoundError, ImportError) as e:  # ImportError: a package of the [image] extra
        print(f"error: {e}", file=sys.stderr)
        return 2
    init_ray(num_cpus=args.num_cpus, address=args.address)
    results = extract_features(cfg)
    print(f"\nfeature store {cfg.out} (manifest.json):\n")
    print(format_results(results))
    random = [r.view for r in results if r.weights == "random"]
    if random:
        print(f"\nWARNING: random-initialised encoders (no checkpoint) for: {', '.join(random)}")
    return 0

