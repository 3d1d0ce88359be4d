"""Extract item features with Ray Data into a feature store: ``python jobs/extract_features.py --help`` (the
code, its usage and examples: :mod:`raypipe.features.cli`; also ``raypipe features``).
On a cluster: ray job submit --working-dir . -- python jobs/extract_features.py --dataset ... --out ...
"""
import sys

from raypipe.features.cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
