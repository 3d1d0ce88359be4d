"""Evaluate a trained run (or a non-learned baseline) on the target domains, no training.

    python jobs/evaluate.py --init-from runs/finetune-sasrec-... eval.protocol=sampled eval.n_neg=100
    python jobs/evaluate.py --model pop
"""
import sys

from raypipe.cli import main

if __name__ == "__main__":
    sys.exit(main("evaluate", __doc__))
