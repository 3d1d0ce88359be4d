"""Zero-shot evaluation of PreRec from a pre-training checkpoint (session 7's interrupted markets:small run).

bench/bench_prerec.py was stopped for lack of session time while PreRec pre-trained; this evaluates the
best checkpoint it had written (after epoch 0) on the target markets exactly as the bench's zero-shot
step does.  Paths are those of that run (``RAYPIPE_DATA=/tmp/rpdata``, ``--runs /tmp/bps``).
"""
import json, sys
from pathlib import Path
sys.path.insert(0, "/work/main")
from raypipe.config import load_config
from raypipe.runtime import init_ray
from raypipe.train.run import run_experiment
ck = [p for p in sorted(Path("/tmp/bps/s0-prerec-pre").glob("checkpoint_*")) if p.is_dir()][-1] / "best_model.pt"
over = ["data.dataset=markets:small", "data.split=user_433", "data.split_seed=0", "train.seed=0",
        "data.features=/tmp/rpdata/markets-small/features", "data.max_len=20", "eval.k_percents=[1]",
        "train.metric=r_ndcg@1%", "train.valid_average=domains", "run.storage_path=/tmp/bps",
        "model.name=prerec", "model.hidden=64", "model.n_neg=256", "run.stage=finetune", "run.mode=zero-shot",
        f"run.init_from={ck}", "run.name=s0-prerec-epoch0"]
init_ray()
res = run_experiment(load_config(None, over))
print(json.dumps({d: {k: m[k] for k in ("recall@1%", "r_ndcg@1%", "ndcg@10", "n_users")} for d, m in res.test.items()}))
