"""Where a process's CPU samples go, from py-spy's collapsed stacks (``py-spy record --format raw``).

    py-spy record --pid <pid> --rate 100 --duration 25 --nonblocking --format raw --output proxy.txt
    python bench/pyspy_summary.py proxy.txt [more.txt.gz ...] --top 15

For each file: the share of samples whose stack passes through each function (inclusive; a function
counted once per stack however deep it recurses), the share where it is the innermost frame (self), and
the share under each ``--mark`` substring (default: the Serve proxy-protocol and metrics frames this
project's serving notes discuss).  Prints Markdown; ``--json`` writes the numbers too.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raypipe.io import write_json_atomic  # noqa: E402

#: frames whose inclusive share the serving notes report (substrings of ``function (file)``)
MARKS = ("ASGIReceiveProxy.fetch_until_disconnect", "HTTPProxy.receive_asgi_messages", "AsyncioRouter.assign_request",
         "ActorHandle._actor_method_call", "Metric._record", "get_actor (ray/_private/worker.py)",
         "SequenceEncoder.encode_many", "HNSWIndex.query", "FastAPI.__call__")
_LINE = re.compile(r":\d+\)$")
NO_PYTHON = "(no Python frame)"


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """``(frames outermost first, samples)`` per line of a collapsed-stack file; line numbers dropped."""
    import gzip

    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            raise ValueError(f"{path}:{i}: not 'frame;frame;... count': {line[:80]!r}")
        # py-spy writes an empty stack for samples in native code with no Python frame
        frames = [_LINE.sub(")", f) for f in stack.split(";")] if stack.strip() else [NO_PYTHON]
        out.append((frames, int(n)))
    return out


def summarise(stacks: list[tuple[list[str], int]], marks: tuple[str, ...] = MARKS) -> dict[str, Any]:
    total = sum(n for _, n in stacks)
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    marked: Counter[str] = Counter()
    for frames, n in stacks:
        for f in set(frames):
            inclusive[f] += n
        leaf[frames[-1]] += n
        for m in marks:
            if any(m in f for f in frames):
                marked[m] += n
    share = lambda c: {k: v / total for k, v in c.most_common()} if total else {}  # noqa: E731
    return {"samples": total, "inclusive": share(inclusive), "self": share(leaf),
            "marked": {m: marked[m] / total if total else 0.0 for m in marks}}


def table(name: str, s: dict[str, Any], top: int) -> str:
    lines = [f"### {name} ({s['samples']} samples)", "", "| Frame | inclusive | self |", "|---|---:|---:|"]
    for f, v in list(s["inclusive"].items())[:top]:
        lines.append(f"| `{f}` | {v:.1%} | {s['self'].get(f, 0.0):.1%} |")
    lines += ["", "| Marked frame | inclusive |", "|---|---:|"]
    lines += [f"| `{m}` | {v:.1%} |" for m, v in s["marked"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--mark", action="append", help="a frame substring to report (repeatable; default: MARKS)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    marks = tuple(a.mark) if a.mark else MARKS
    out = {}
    for f in a.files:
        out[f.name] = summarise(read_stacks(f), marks)
        print(table(f.name, out[f.name], a.top) + "\n")
    if a.json:
        write_json_atomic(a.json, {k: {**v, "inclusive": dict(list(v["inclusive"].items())[:200]),
                                       "self": dict(list(v["self"].items())[:200])} for k, v in out.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
