"""How many test targets repeat an item of the user's history, per domain of a dataset.

    python bench/repeat_targets.py --datasets builtin:tiny,builtin:small --out bench/results/repeat_targets

Every protocol excludes a user's seen items from the ranking but never the target, so a target the user
already took competes only with the items they have not: a model that ranks the history's items first
(or a small catalogue) scores well on those users without predicting anything new. This counts them on
the judged test users of each domain (``EvalSet.target_seen``, the default SASRec protocol), with each
domain's item count. Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.io import write_json_atomic, write_text_atomic  # noqa: E402


def repeat_shares(dataset: str) -> dict[str, dict[str, Any]]:
    """``{domain: {"users", "items", "repeat_share"}}`` of ``dataset``'s judged test users."""
    from raypipe.config import load_config
    from raypipe.train.run import judged_set, prepare_for

    cfg = load_config(None, ["model.name=sasrec", f"data.dataset={dataset}"])
    prep = prepare_for(cfg.data)
    out: dict[str, dict[str, Any]] = {}
    for d in prep.domains:
        es = judged_set(prep, d, cfg)
        out[d] = {"users": es.n_users, "items": int(len(prep.index.domain_items(d))),
                  "repeat_share": float(es.target_seen().mean())}
    return out


def markdown(res: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["# Test targets that repeat a history item", "", "| Dataset | Domain | Items | Test users | Repeat share |",
             "|---|---|---:|---:|---:|"]
    for ds, per in res.items():
        lines += [f"| {ds} | {d} | {v['items']} | {v['users']} | {v['repeat_share']:.1%} |" for d, v in per.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="builtin:tiny,builtin:small", help="comma-separated datasets")
    p.add_argument("--out", default="bench/results/repeat_targets")
    args = p.parse_args(argv)
    res = {ds: repeat_shares(ds) for ds in args.datasets.split(",")}
    out = Path(args.out)
    write_json_atomic(out.with_suffix(".json"), res)
    write_text_atomic(out.with_suffix(".md"), markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
