"""Training cost of UniM2Rec / UniSRec against SASRec at the same size (UniM2Rec issue: "training samples/s").

    python bench/bench_unim2rec_cost.py --dataset builtin:small --out bench/results/unim2rec_cost

Each model is built over the same catalogue with the same per-item width (``model.hidden``), layers,
heads, window and batch size, and trains on its own fine-tuning rows of the target domains (UniM2Rec:
mixed flows, fused objective over text, image and cross views; UniSRec: text, per domain; SASRec: item
IDs, per domain, cross-entropy).  One process, no Ray: Adam steps (forward, backward, update) on
batches drawn from the rows, the first ``--warmup`` steps untimed, at 1 and 2 torch threads.  Raw:
``<out>.json``; the machine should be otherwise idle (``load_1min`` is recorded).
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.config import load_config  # noqa: E402
from raypipe.io import write_json_atomic  # noqa: E402

log = logging.getLogger("bench_unim2rec_cost")
MODELS = {"sasrec": ["model.name=sasrec", "model.loss=ce", "data.flow=domain"],
          "unisrec": ["model.name=unisrec", "data.flow=domain"],
          "unim2rec": ["model.name=unim2rec", "data.flow=mixed"]}


def setup(args: argparse.Namespace, name: str):  # noqa: ANN201
    from raypipe.data.prepare import prepare_for
    from raypipe.features.ondemand import ensure_features
    from raypipe.models.registry import build_model, get_spec
    from raypipe.train.run import item_catalogue, stage_domains, training_rows

    cfg = load_config(None, MODELS[name] + [f"data.dataset={args.dataset}", f"data.max_len={args.max_len}",
                                            f"model.hidden={args.hidden}", "run.stage=finetune"])
    cfg = ensure_features(cfg)
    spec = get_spec(cfg.model.name)
    if spec.resolve is not None:
        cfg.model = spec.resolve(cfg.model, cfg)
    if getattr(cfg.model, "max_len", 0) is None:
        cfg.model.max_len = cfg.data.max_len
    prep = prepare_for(cfg.data)
    train, _ = stage_domains(cfg, prep)
    catalogue = item_catalogue(cfg, prep)
    rows = training_rows(cfg, prep, train, catalogue)
    torch.manual_seed(0)
    return build_model(cfg.model, catalogue).train(), rows


def measure(model: torch.nn.Module, rows: dict[str, np.ndarray], batch: int, steps: int, warmup: int) -> dict:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    rng = np.random.default_rng(0)
    n = len(next(iter(rows.values())))
    times = []
    for step in range(warmup + steps):
        idx = rng.choice(n, size=min(batch, n), replace=False)
        b = {k: torch.as_tensor(v[idx]) for k, v in rows.items()}
        t0 = time.perf_counter()
        loss = model.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    t = np.array(times)
    return {"median_step_s": float(np.median(t)), "samples_per_s": float(batch / np.median(t)), "steps": steps,
            "rows": n, "params": int(sum(p.numel() for p in model.parameters())),
            "trainable_params": int(sum(p.numel() for p in model.parameters() if p.requires_grad))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="builtin:small")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "unim2rec_cost")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.runtime import init_ray

    init_ray()  # feature extraction on demand (skipped when the store has the views)
    out = {"dataset": args.dataset, "args": {k: str(v) for k, v in vars(args).items()}, "runs": {},
           "load_1min_before": os.getloadavg()[0], "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                              "torch": torch.__version__}}
    for name in MODELS:
        model, rows = setup(args, name)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            r = measure(model, rows, args.batch_size, args.steps, args.warmup)
            out["runs"].setdefault(name, {})[str(threads)] = r
            log.info("%s, %d thread(s): %.0f samples/s (%d params)", name, threads, r["samples_per_s"], r["params"])
    out["load_1min_after"] = os.getloadavg()[0]
    for t in args.threads.split(","):
        base = out["runs"]["sasrec"][t]["samples_per_s"]
        out.setdefault("relative_to_sasrec", {})[t] = {m: out["runs"][m][t]["samples_per_s"] / base for m in MODELS}
    write_json_atomic(args.out.with_suffix(".json"), out)
    print(out["relative_to_sasrec"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
