"""The whole IDP pipeline on one dataset: features → pre-train → CDIM → transfer → fine-tune → evaluate;
the code is :mod:`raypipe.pipelines.idp_cli` (also ``raypipe idp``).

    python jobs/idp.py                                   # the embedded benchmark, main variants
    python jobs/idp.py --variants all --name idp-all     # every variant and ablation
    python jobs/idp.py --pretrain train.epochs=30 --finetune train.lr=3e-4

Stages whose outputs exist under <storage-path>/<name>/ are reused, so a re-run resumes.  Stage
overrides are dotted keys of the stage's ExperimentConfig, checked before Ray starts.
"""
import sys

from raypipe.pipelines.idp_cli import main

if __name__ == "__main__":
    sys.exit(main())
