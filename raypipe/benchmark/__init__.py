"""The leaderboard: every method and baseline judged on the same splits, users and candidates
(:mod:`raypipe.benchmark.cli` is ``jobs/benchmark.py`` and ``raypipe benchmark``)."""
