"""PreRec's training step: the shared-work loss against the direct one (same values, measured speed).

    python bench/bench_prerec_step.py --dataset markets:small --out bench/results/prerec_step

``PreRec.loss`` runs f_e once per distinct candidate of a batch and f_pop once per distinct (slot,
domain, count) key, then gathers.  The direct reference here runs both on every (row, candidate) pair,
as the equations read.  Both see the same batch and the same negatives (the generator is re-seeded); the
script asserts equal losses and gradients, then times forward + backward.  Raw: ``<out>.json``.
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
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.config import load_config  # noqa: E402
from raypipe.io import write_json_atomic  # noqa: E402

log = logging.getLogger("bench_prerec_step")


def direct_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """eq. 2/4 with f_e and f_pop applied to every (row, candidate) pair."""
    history, target, slot = batch["history"].long(), batch["target"].long(), batch["slot"].long()
    B = target.shape[0]
    neg = model.neg_lo[target][:, None] + (torch.rand(B, model.cfg.n_neg) * model.neg_span[target][:, None]).long()
    cands = torch.cat([target[:, None], neg], dim=1)
    logits = torch.einsum("bd,bcd->bc", model.user_vectors(history), model.item_vectors(cands))
    logits = logits + model.f_pop(model.factors(cands, slot[:, None])).squeeze(-1) * (cands > 0)
    hit = torch.cat([torch.zeros_like(target[:, None], dtype=torch.bool), neg == target[:, None]], dim=1)
    logits = logits.masked_fill(hit, float("-inf"))
    return F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))


def timed(fn, model, batch, reps: int) -> tuple[list[float], float, list[torch.Tensor]]:
    times = []
    for r in range(reps + 1):
        model.zero_grad()
        torch.manual_seed(r)
        t0 = time.perf_counter()
        loss = fn(batch)
        loss.backward()
        if r:  # the first is a warm-up
            times.append(time.perf_counter() - t0)
        if r == 0:
            value, grads = float(loss), [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return times, value, grads


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="markets:small")
    p.add_argument("--features", default=None, help="feature store (default: <dataset>/features)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--n-neg", type=int, default=256)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/results/prerec_step")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from raypipe.data.prepare import prepare_for
    from raypipe.data.registry import resolve_dataset
    from raypipe.models.registry import build_model
    from raypipe.train.run import item_catalogue, stage_domains, training_rows

    torch.set_num_threads(args.threads)
    data = resolve_dataset(args.dataset)
    features = args.features or str(data / "features")
    if not (Path(features) / "manifest.json").is_file():
        p.error(f"--features: no feature store at {features} (bench/bench_prerec.py writes one)")
    cfg = load_config(None, [f"data.dataset={args.dataset}", "data.split=user_433", f"data.features={features}",
                             "data.max_len=20", "model.name=prerec", f"model.hidden={args.hidden}",
                             f"model.n_neg={args.n_neg}", "model.dropout=0.0"])
    prep = prepare_for(cfg.data)
    train, _ = stage_domains(cfg, prep)
    catalogue = item_catalogue(cfg, prep, data)
    rows = training_rows(cfg, prep, train, catalogue)
    pick = np.random.default_rng(0).choice(len(rows["target"]), args.batch_size, replace=False)
    batch = {k: torch.as_tensor(v[pick]) for k, v in rows.items()}
    torch.manual_seed(0)
    model = build_model(cfg.model, catalogue).train()
    shared_t, shared_v, shared_g = timed(model.loss, model, batch, args.reps)
    direct_t, direct_v, direct_g = timed(lambda b: direct_loss(model, b), model, batch, args.reps)
    # gradients summed in another order (gathered rows) agree to float32 rounding: every element within
    # 1e-3 of the largest gradient element (f_pop's output bias has a 0 gradient: softmax is shift-invariant)
    max_grad_diff = max(float((a - b).abs().max()) for a, b in zip(shared_g, direct_g))
    max_grad = max(float(b.abs().max()) for b in direct_g)
    assert abs(shared_v - direct_v) < 1e-4 * max(1.0, abs(direct_v)), (shared_v, direct_v)
    assert max_grad_diff < 1e-3 * max_grad, (max_grad_diff, max_grad)
    out = {"dataset": args.dataset, "batch_size": args.batch_size, "hidden": args.hidden, "n_neg": args.n_neg,
           "threads": args.threads, "reps": args.reps, "training_rows": int(len(rows["target"])),
           "loss_shared": shared_v, "loss_direct": direct_v, "max_grad_abs_diff": max_grad_diff, "max_grad_abs": max_grad,
           "shared_ms": [1000 * t for t in shared_t], "direct_ms": [1000 * t for t in direct_t],
           "shared_median_ms": 1000 * float(np.median(shared_t)), "direct_median_ms": 1000 * float(np.median(direct_t)),
           "speedup_median": float(np.median(direct_t) / np.median(shared_t)),
           "machine": {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "platform": platform.platform(),
                       "torch": torch.__version__, "loadavg_at_end": os.getloadavg()}}
    write_json_atomic(Path(f"{args.out}.json"), out)
    log.info("shared %.0f ms/step, direct %.0f ms/step (%.1fx); losses %.6f / %.6f, max grad diff %.2e",
             out["shared_median_ms"], out["direct_median_ms"], out["speedup_median"], shared_v, direct_v,
             max_grad_diff)


if __name__ == "__main__":
    main()
