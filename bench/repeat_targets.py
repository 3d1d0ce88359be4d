"""How many test targets repeat an item of the user's history, and a benchmark's results split by them.

    python bench/repeat_targets.py --datasets builtin:tiny,builtin:small --out bench/results/repeat_targets
    python bench/repeat_targets.py --split bench/results/upsr.json --ref sasrec --out bench/results/upsr_repeat_split

Every protocol excludes a user's seen items from the ranking but never the target, so a target the user
already took competes only with the items they have not: a model that ranks the history's items first
(or a small catalogue) scores well on those users without predicting anything new. This counts them on
the judged test users of each domain (``EvalSet.target_seen``, the default SASRec protocol), with each
domain's item count.

``--split RESULTS.json``: every run in a benchmark's results that kept its per-user test ranks (a
``"ranks": {domain: {user: rank}}`` entry, as ``bench_upsr.py`` writes them) is split into the users whose
target repeats a history item and the others (``raypipe.eval.repeats.split_by_repeat``); the flags come
from the part's ``dataset`` with its ``max_len`` (the history the protocol excluded; ``--max-len`` where
the part does not record it). With ``--ref NAME``, each run is paired against the run ``NAME`` of the same
group of runs, per domain and per split (paired bootstrap of per-user NDCG@10). Writes ``<out>.json``
and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.io import write_json_atomic, write_text_atomic  # noqa: E402


def repeat_shares(dataset: str) -> dict[str, dict[str, Any]]:
    """``{domain: {"users", "items", "repeat_share"}}`` of ``dataset``'s judged test users."""
    from raypipe.config import load_config
    from raypipe.train.run import prepare_for, repeated_targets

    cfg = load_config(None, ["model.name=sasrec", f"data.dataset={dataset}"])
    prep = prepare_for(cfg.data)
    flags = repeated_targets(prep, list(prep.domains), cfg)
    return {d: {"users": len(f), "items": int(len(prep.index.domain_items(d))),
                "repeat_share": float(np.mean(list(f.values())))} for d, f in flags.items()}


def rank_entries(node: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, dict[str, float]]]]:
    """Every ``"ranks": {domain: {user: rank}}`` entry under ``node`` with its key path (a ``None`` or
    ``"inf"`` rank is a miss)."""
    found: list[tuple[tuple[str, ...], dict[str, dict[str, float]]]] = []
    if isinstance(node, dict):
        r = node.get("ranks")
        if isinstance(r, dict) and r and all(isinstance(v, dict) for v in r.values()):
            found.append((path, {d: {str(u): math.inf if x is None else float(x) for u, x in users.items()}
                                 for d, users in r.items()}))
        for k, v in node.items():
            if k != "ranks":
                found += rank_entries(v, (*path, str(k)))
    return found


def split_results(results: dict[str, Any], ref: str | None, max_len: int | None, seed: int = 0) -> dict[str, Any]:
    """:func:`raypipe.eval.repeats.split_by_repeat` of every run with ranks in each part of ``results``
    that names its ``dataset``; with ``ref``, each run − the ``ref`` run of the same group, per split."""
    from raypipe.config import load_config
    from raypipe.eval.repeats import split_by_repeat
    from raypipe.eval.significance import paired_ndcg
    from raypipe.train.run import prepare_for, repeated_targets

    out: dict[str, Any] = {}
    for part, body in results.items():
        if not isinstance(body, dict) or "dataset" not in body:
            continue
        n = body.get("max_len") or max_len
        if n is None:
            raise SystemExit(f"{part}: the results do not record max_len; pass --max-len")
        cfg = load_config(None, ["model.name=sasrec", f"data.dataset={body['dataset']}", f"data.max_len={n}"])
        prep = prepare_for(cfg.data)
        flags = repeated_targets(prep, list(prep.domains), cfg, all_users=True)
        entries = rank_entries(body)
        res: dict[str, Any] = {"dataset": body["dataset"], "max_len": n, "runs": {}, "paired": {}}
        for path, ranks in entries:
            res["runs"]["/".join(path)] = split_by_repeat({"run": ranks}, flags)["run"]
        by_path = dict(entries)
        for path, ranks in entries:
            ref_path = (*path[:-1], ref) if ref else None
            if ref_path is None or ref_path == path or ref_path not in by_path:
                continue
            other = by_path[ref_path]
            pairs: dict[str, Any] = {}
            for d, users in ranks.items():
                for group, want in (("repeat", True), ("other", False)):
                    us = [u for u in users if u in other.get(d, {}) and flags.get(d, {}).get(u) is want]
                    if us:
                        pairs.setdefault(d, {})[group] = paired_ndcg(users, other[d], us, seed=seed).as_dict()
            res["paired"]["/".join(path)] = pairs
        out[part] = res
    return out


def split_markdown(res: dict[str, Any], ref: str | None) -> str:
    lines = ["# Results split by repeated targets", ""]
    for part, body in res.items():
        lines += [f"## {part} ({body['dataset']}, history of {body['max_len']})", "",
                  "| Run | Domain | Repeated N@10 (n) | Other N@10 (n) |"
                  + (f" Repeated − {ref} (p) | Other − {ref} (p) |" if ref else ""),
                  "|---|---|---:|---:|" + ("---:|---:|" if ref else "")]
        for name, per in body["runs"].items():
            for d, g in per.items():
                row = f"| {name} | {d} | {g['repeat']['ndcg@10']:.4f} ({g['repeat']['n']}) | {g['other']['ndcg@10']:.4f} ({g['other']['n']}) |"
                if ref:
                    pr = body["paired"].get(name, {}).get(d, {})
                    row += "".join(f" {pr[k]['diff']:+.4f} (p={pr[k]['p_value']:.3f}) |" if k in pr else " – |"
                                   for k in ("repeat", "other"))
                lines.append(row)
        lines.append("")
    return "\n".join(lines)


def markdown(res: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["# Test targets that repeat a history item", "", "| Dataset | Domain | Items | Test users | Repeat share |",
             "|---|---|---:|---:|---:|"]
    for ds, per in res.items():
        lines += [f"| {ds} | {d} | {v['items']} | {v['users']} | {v['repeat_share']:.1%} |" for d, v in per.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="builtin:tiny,builtin:small", help="comma-separated datasets")
    p.add_argument("--split", help="a benchmark's results JSON whose runs kept per-user ranks")
    p.add_argument("--ref", help="with --split: pair every run against this run of its group (e.g. sasrec)")
    p.add_argument("--max-len", type=int, help="with --split: the history length, where the results lack it")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", default="bench/results/repeat_targets")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.split:
        path = Path(args.split)
        if not path.is_file():
            p.error(f"--split {path}: no such file")
        res = split_results(json.loads(path.read_text()), args.ref, args.max_len, args.seed)
        if not res:
            p.error(f"--split {path}: no part names a dataset")
        text = split_markdown(res, args.ref)
    else:
        res = {ds: repeat_shares(ds) for ds in args.datasets.split(",")}
        text = markdown(res)
    write_json_atomic(out.with_suffix(".json"), res)
    write_text_atomic(out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
