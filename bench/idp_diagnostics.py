"""IDP diagnostics quoted in docs/RESULTS.md, computed from the data and (optionally) a finished IDP run.

* **title overlap**: the share of target items whose text (the ``plain`` template CDIM encodes) occurs
  verbatim among the texts of the pool CDIM searches, i.e. the source items with text of the
  pre-training item index (what the pipeline's hnswlib index holds);
* **eq. 9 weights** (needs ``--run``): for each transfer of the run (``transfer_raw``: the untuned
  encoder, ``transfer_cdim``: the tuned CDIM), the mean weight of the top neighbour and the mean
  number of neighbours with non-zero weight (uniform weights are 1/m).

    python bench/idp_diagnostics.py --dataset builtin:small --run runs/idp --out bench/results/idp_diagnostics_small.json
    python bench/idp_diagnostics.py --dataset movielens:ml-1m --target-dataset movielens:ml-100k \\
        --out bench/results/idp_diagnostics_ml1m_to_ml100k.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raypipe.data.dataset import CanonicalDataset
from raypipe.data.prepare import prepare_for
from raypipe.data.registry import resolve_dataset
from raypipe.io import write_json_atomic
from raypipe.pipelines.idp import IDPConfig, Texts


def title_overlap(dataset: str, target_dataset: str | None) -> dict[str, Any]:
    cfg = IDPConfig(dataset=dataset, target_dataset=target_dataset)
    src_path = resolve_dataset(dataset)
    tgt_path = resolve_dataset(target_dataset) if target_dataset else src_path
    pre = prepare_for(dataclasses.replace(cfg.pretrain.data, dataset=str(src_path)))
    tgt = pre if tgt_path == src_path else prepare_for(dataclasses.replace(cfg.finetune.data, dataset=str(tgt_path)))
    src_info = CanonicalDataset.open(src_path).info
    src_domains = set(src_info.source_domains or src_info.target_domains)
    tgt_domains = set(CanonicalDataset.open(tgt_path).info.target_domains)
    pool_ids = [str(i) for i, d in zip(pre.index.item_ids, pre.index.domains) if d in src_domains]
    target_ids = [str(i) for i, d in zip(tgt.index.item_ids, tgt.index.domains) if d in tgt_domains]
    pool = {t for t in Texts.of(src_path, pool_ids).texts if t}
    target = [t for t in Texts.of(tgt_path, target_ids).texts if t]
    verbatim = sum(t in pool for t in target)
    lowered = {t.lower().strip() for t in pool}
    return {"pool_distinct_texts": len(pool), "pool_items": len(pool_ids), "target_items_with_text": len(target),
            "target_texts_in_pool_verbatim": verbatim, "share_verbatim": verbatim / max(len(target), 1),
            "share_case_insensitive": sum(t.lower().strip() in lowered for t in target) / max(len(target), 1),
            "pool": "source items with text of the pre-training item index (what CDIM's hnswlib index holds)"}


def eq9_weights(run: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in ("raw", "cdim"):
        f = run / f"transfer_{tag}" / "generated.parquet"
        if not f.exists():
            continue
        w = np.stack(pd.read_parquet(f)["weights"].map(np.asarray).to_list())
        out[tag] = {"items": int(len(w)), "m": int(w.shape[1]), "mean_top1_weight": float(w[:, 0].mean()),
                    "uniform_weight": 1.0 / w.shape[1], "mean_nonzero_weights": float((w > 0).sum(1).mean())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="builtin:small")
    p.add_argument("--target-dataset")
    p.add_argument("--run", type=Path, help="a finished jobs/idp.py run directory (for the eq. 9 weights)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    result: dict[str, Any] = {"dataset": args.dataset, "target_dataset": args.target_dataset,
                              "title_overlap": title_overlap(args.dataset, args.target_dataset)}
    if args.run is not None:
        result["run"] = str(args.run)
        result["eq9_weights"] = eq9_weights(args.run)
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
