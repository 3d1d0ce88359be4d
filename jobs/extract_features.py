"""Extract text, image and cross-modal item features with Ray Data into a Parquet feature store; the
code is raypipe.features.cli (also ``raypipe features``).

    python jobs/extract_features.py --dataset builtin:small --out data/features-small
    python jobs/extract_features.py --dataset DIR --out DIR --views text --text-model /models/all-mpnet-base-v2
    python jobs/extract_features.py --dataset DIR --out DIR --image-model resnet50:/ckpt/resnet50.pth \\
        --cross-model ViT-B-32:/ckpt/clip-vit-b-32.pt --num-gpus 1 --batch-size 256
    ray job submit --working-dir . -- python jobs/extract_features.py --dataset /shared/ds --out /shared/feat

Re-running with the same settings skips finished views and resumes an interrupted one.  Encoders
without a checkpoint are randomly initialised (seeded) and flagged "random" in manifest.json.
"""
import sys

from raypipe.features.cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
