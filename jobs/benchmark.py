"""Run the leaderboard: ``python jobs/benchmark.py --help`` (the code, its usage and examples:
:mod:`raypipe.benchmark.cli`; also ``raypipe benchmark``).  On a cluster: ray job submit -- python jobs/benchmark.py ...
"""
import sys

from raypipe.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
