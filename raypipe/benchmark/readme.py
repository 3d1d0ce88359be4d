"""Write the leaderboard block of README.md from a leaderboard report (never typed by hand).

    python -m raypipe.benchmark.readme                       # bench/results/leaderboard.json -> README.md
    python -m raypipe.benchmark.readme --check               # exit 1 when README's block is stale
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from raypipe.benchmark.report import readme_block, replace_readme_block
from raypipe.io import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", type=Path, default=Path("bench/results/leaderboard.json"))
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when the README differs")
    args = p.parse_args(argv)
    board = json.loads(args.board.read_text())
    text = args.readme.read_text()
    board_path = args.board.resolve()
    label = str(board_path.relative_to(ROOT)) if board_path.is_relative_to(ROOT) else str(args.board)
    new = replace_readme_block(text, readme_block(board, label))
    if args.check:
        if new != text:
            print(f"{args.readme}: the leaderboard block is not the one {args.board} gives; run "
                  "python -m raypipe.benchmark.readme", file=sys.stderr)
            return 1
        return 0
    if new != text:
        write_text_atomic(args.readme, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
