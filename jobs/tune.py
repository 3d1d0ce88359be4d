"""Sweep a paper's published grid with Ray Tune (one Ray Train run per trial); the code is
:mod:`raypipe.tune.cli` (also ``raypipe tune``).

    python jobs/tune.py --space tune_spaces/idp.yaml                        # IDP's lr grid on builtin:small
    python jobs/tune.py --space tune_spaces/sasrec.yaml --dataset builtin:tiny train.epochs=3 --scheduler asha
    python jobs/tune.py --space tune_spaces/idp.yaml --name idp-lr --resume  # finish an interrupted sweep
    python jobs/tune.py --space tune_spaces/prerec.yaml --only train.lr=3e-4,3e-3   # narrow an axis

Writes <storage-path>/<name>/{results.csv, results.md, best_config.yaml, metric_vs_axes.png}; each trial's
Train run is under <storage-path>/<name>/trials/<trial_id>/.  On a cluster: ray job submit -- python jobs/tune.py ...
"""
import sys

from raypipe.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
