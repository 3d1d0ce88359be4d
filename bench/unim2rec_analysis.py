"""UniM2Rec analyses over the finished runs of ``bench/bench_unim2rec.py`` (seed 0), no training:

* **Robustness to missing modalities** (UniM2Rec Fig. 3): a seeded share (0 … 100%) of *all* items lose
  their text, then (separately) their image, at evaluation only; the models were trained with every
  modality.  A removed view is a zero slot (its presence flag off); UniM2Rec's derived cross view of such
  an item is recomputed by the run's own aligner from the modality it keeps.  Compared: UniSRec and
  UniM2Rec zero-shot (contents only, no IDs: the paper's "w/o ID" setting) and fine-tuned.
* **Few-shot item groups** (Fig. 5): test users grouped by how many training interactions their target
  item has; mean NDCG@10 per group for SASRec, UniSRec and UniM2Rec (fine-tuned), from the runs'
  ``test_ranks.json``.

    python bench/unim2rec_analysis.py --storage-path runs/bench_unim2rec_small --out bench/results/unim2rec_small_analysis

Raw results: ``<out>.json``, ``<out>.md`` and the plot ``<out>.png``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.eval.metrics import ndcg  # noqa: E402
from raypipe.io import write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("unim2rec_analysis")
ROBUST = ["unisrec_zero_shot", "unim2rec_zero_shot", "unisrec", "unim2rec"]
FEW_SHOT = ["sasrec", "sasrec_own_budget", "unisrec", "unim2rec", "unim2rec_own_budget"]
EDGES = [0, 5, 10, 20, 40, np.inf]


def remove_views(model: Any, run_dir: Path, modality: str, share: float, seed: int) -> int:
    """Turn ``modality`` off for a seeded ``share`` of the items that have it (in place); recompute a derived
    cross view from what each item keeps.  Returns how many items lost it."""
    import torch

    from raypipe.features.aligned import ALIGNER_FILE, CrossAligner

    items = model.items
    if modality not in items.views:
        return 0
    present = getattr(items, f"present_{modality}")
    have = np.flatnonzero(present.numpy())
    # one seeded order per modality: a larger share removes a superset of a smaller one's items
    gone = np.random.default_rng(seed).permutation(have)[: int(round(share * len(have)))]
    present[torch.as_tensor(gone, dtype=torch.long)] = False
    if "cross" in items.views and (run_dir / ALIGNER_FILE).is_file():
        aligner = CrossAligner.load(run_dir / ALIGNER_FILE)
        t, tp = items.feat_text.numpy(), items.present_text.numpy()
        i, ip = items.feat_image.numpy(), items.present_image.numpy()
        cross, pc = aligner.cross(t, tp, i, ip)
        items.feat_cross.copy_(torch.as_tensor(cross))
        items.present_cross.copy_(torch.as_tensor(pc))
    return len(gone)


def robustness(runs: dict[str, Path], shares: list[float], seed: int) -> dict[str, Any]:
    from raypipe.train.run import evaluate_domains, load_run

    out: dict[str, Any] = {}
    for name, run_dir in runs.items():
        for modality in ("text", "image"):
            for share in shares:
                if share == 0 and modality != "text":  # nothing removed: the same evaluation as text's 0%
                    out[name].setdefault(modality, {})[str(share)] = out[name]["text"][str(share)]
                    continue
                model, prep, cfg = load_run(run_dir)
                if modality not in model.items.views:
                    continue
                n = remove_views(model, run_dir, modality, share, seed)
                t0 = time.time()
                res = evaluate_domains(model, prep, prep.info.target_domains, cfg)
                mean = float(np.mean([m["ndcg@10"] for m in res.values()]))
                out.setdefault(name, {}).setdefault(modality, {})[str(share)] = {
                    "ndcg@10": mean, "per_domain": {d: m["ndcg@10"] for d, m in res.items()}, "items_removed": n}
                log.info("%s %s -%d%%: NDCG@10 %.4f (%d items, %.0f s)", name, modality, 100 * share, mean, n,
                         time.time() - t0)
    return out


def few_shot(runs: dict[str, Path]) -> dict[str, Any]:
    from raypipe.config import load_config
    from raypipe.data.prepare import prepare_for
    from raypipe.rundir import CONFIG_FILE, load_ranks

    ref = load_config(runs["sasrec"] / CONFIG_FILE)
    prep = prepare_for(ref.data)  # per-domain flow: training counts of every item
    groups: dict[str, Any] = {"edges": [str(e) for e in EDGES], "models": {}, "users": {}}
    target_of: dict[str, dict[str, int]] = {}
    for d in prep.info.target_domains:
        es = prep.eval_set("test", d, ref.data.max_len)
        target_of[d] = dict(zip(map(str, es.user_ids), es.target.tolist()))
    for name in FEW_SHOT:
        if name not in runs:
            continue
        ranks = load_ranks(runs[name])
        vals: dict[int, list[float]] = {}
        for d, per_user in ranks.items():
            for u, r in per_user.items():
                c = prep.counts[target_of[d][u]]
                g = int(np.searchsorted(EDGES, c, side="right") - 1)
                vals.setdefault(g, []).append(float(ndcg(np.array([r]), 10)[0]))
        groups["models"][name] = {str(g): float(np.mean(v)) for g, v in sorted(vals.items())}
        groups["users"] = {str(g): len(v) for g, v in sorted(vals.items())}
    return groups


def label(g: int) -> str:
    lo, hi = EDGES[g], EDGES[g + 1]
    return f"{lo}+" if not np.isfinite(hi) else f"{lo}-{int(hi) - 1}"


def markdown(res: dict[str, Any]) -> str:
    lines = [f"UniM2Rec analyses on {res['storage_path']} (seed 0 runs; mean NDCG@10 over the target domains)", "",
             "Robustness: share of all items whose view is removed at evaluation", ""]
    shares = res["shares"]
    lines += ["| Model | Removed | " + " | ".join(f"{int(100 * s)}%" for s in shares) + " |",
              "|---|---|" + "---:|" * len(shares)]
    for name, per in res["robustness"].items():
        for modality, vals in per.items():
            lines.append(f"| {name} | {modality} | " + " | ".join(
                f"{vals[str(s)]['ndcg@10']:.4f}" if str(s) in vals else "-" for s in shares) + " |")
    fs = res["few_shot"]
    gs = sorted(int(g) for g in fs["users"])
    lines += ["", "Few-shot items: test users by the training interactions of their target item", "",
              "| Model | " + " | ".join(f"{label(g)} ({fs['users'][str(g)]} users)" for g in gs) + " |",
              "|---|" + "---:|" * len(gs)]
    for name, vals in fs["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{vals.get(str(g), float('nan')):.4f}" for g in gs) + " |")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, modality in zip(axes[:2], ("text", "image")):
        for name, per in res["robustness"].items():
            vals = per.get(modality, {})
            xs = [s for s in res["shares"] if str(s) in vals]
            if len(xs) > 1:
                ax.plot([100 * s for s in xs], [vals[str(s)]["ndcg@10"] for s in xs], marker="o", label=name)
        ax.set(title=f"{modality} removed at evaluation", xlabel="% of items", ylabel="NDCG@10 (targets)")
        ax.legend(fontsize=8)
    fs = res["few_shot"]
    gs = sorted(int(g) for g in fs["users"])
    width = 0.8 / len(fs["models"])
    for j, (name, vals) in enumerate(fs["models"].items()):
        axes[2].bar(np.arange(len(gs)) + j * width, [vals.get(str(g), 0.0) for g in gs], width, label=name)
    axes[2].set_xticks(np.arange(len(gs)) + 0.4 - width / 2, [label(g) for g in gs])
    axes[2].set(title="target item's training interactions", ylabel="NDCG@10")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--storage-path", type=Path, default=ROOT / "runs" / "bench_unim2rec_small")
    p.add_argument("--seed", type=int, default=0, help="the bench seed whose runs are analysed")
    p.add_argument("--shares", default="0,0.3,0.6,1.0")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "unim2rec_small_analysis")
    p.add_argument("--only", choices=["robustness", "few_shot"], help="recompute one part, keep the other from <out>.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runs = {v: args.storage_path / f"{v}-s{args.seed}" for v in dict.fromkeys(ROBUST + FEW_SHOT)}
    optional = {"sasrec_own_budget", "unim2rec_own_budget"}
    missing = [str(r) for v, r in runs.items() if not (r / "metrics.json").is_file() and v not in optional]
    if missing:
        p.error(f"unfinished runs: {missing} (run bench/bench_unim2rec.py first)")
    runs = {v: r for v, r in runs.items() if (r / "metrics.json").is_file()}
    import json

    import torch

    torch.set_num_threads(1)
    shares = [float(s) for s in args.shares.split(",")]
    old = json.loads(args.out.with_suffix(".json").read_text()) if args.only else {}
    res = {"storage_path": str(args.storage_path), "seed": args.seed, "shares": shares,
           "robustness": old["robustness"] if args.only == "few_shot" else
           robustness({k: runs[k] for k in ROBUST}, shares, args.seed),
           "few_shot": old["few_shot"] if args.only == "robustness" else few_shot(runs)}
    write_json_atomic(args.out.with_suffix(".json"), res)
    write_text_atomic(args.out.with_suffix(".md"), markdown(res) + "\n")
    plot(res, args.out.with_suffix(".png"))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
