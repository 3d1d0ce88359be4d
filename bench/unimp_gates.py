"""The tanh gates of a UniMP run's gated cross-attention blocks (how much the image pathway can move the LM).

    python bench/unimp_gates.py runs/bench_unimp/s0-unimp --out bench/results/unimp_gates.json

The gates start at 0 (a new block leaves the frozen LM unchanged); |tanh(gate)| near 0 after training
means the images barely reach the LM's hidden states.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.io import write_json_atomic  # noqa: E402


def gates(run_dir: Path) -> dict[str, float]:
    import torch

    state = torch.load(run_dir / "model.pt", map_location="cpu")
    return {k: math.tanh(float(v.flatten()[0])) for k, v in state.items() if k.endswith(("attn_gate", "ff_gate"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    g = gates(args.run)
    if not g:
        raise SystemExit(f"{args.run}/model.pt has no gated cross-attention (fusion other than 'cross'?)")
    metrics = json.loads((args.run / "metrics.json").read_text())
    out = {"run": str(args.run), "best_epoch": metrics.get("best_epoch"), "gates": len(g),
           "max_abs_tanh": max(abs(v) for v in g.values()), "mean_abs_tanh": sum(abs(v) for v in g.values()) / len(g),
           "tanh": g}
    write_json_atomic(args.out, out)
    print(json.dumps({k: v for k, v in out.items() if k != "tanh"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
