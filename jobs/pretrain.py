"""Pre-train a sequential recommender on the source domains with Ray Train.

    python jobs/pretrain.py                                   # SASRec on the embedded benchmark
    python jobs/pretrain.py --model bert4rec --num-workers 2 train.lr=3e-4
    ray job submit --working-dir . -- python jobs/pretrain.py --storage-path /shared/runs
"""
import sys

from raypipe.cli import main

if __name__ == "__main__":
    sys.exit(main("pretrain", __doc__))
