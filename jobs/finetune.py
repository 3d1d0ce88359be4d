"""Fine-tune on the target domains: zero-shot (evaluate only), inductive or transductive (full).

    python jobs/finetune.py --init-from runs/pretrain-sasrec-... --mode transductive
    python jobs/finetune.py --model sasrec          # transductive from scratch: the in-domain baseline
"""
import sys

from raypipe.cli import main

if __name__ == "__main__":
    sys.exit(main("finetune", __doc__))
