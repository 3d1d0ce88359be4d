"""Sweep a paper's published grid with Ray Tune: ``python jobs/tune.py --help`` (the code, its usage and
examples: :mod:`raypipe.tune.cli`; also ``raypipe tune``).  On a cluster: ray job submit -- python jobs/tune.py ...
"""
import sys

from raypipe.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
