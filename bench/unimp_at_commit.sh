#!/usr/bin/env bash
# Train a small UniMP configuration (seed 0, 1 epoch, 8 users, builtin:tiny) with the code of one commit,
# optionally with a patch applied, and keep its metrics: how the UniMP re-run's shift was traced to
# SmolLM2's first-use conversion inside Ray Train workers (docs/RESULTS.md, issue 19).
#
#   bash bench/unimp_at_commit.sh COMMIT OUT_PREFIX [PATCH]
#
# Run from the repository root with the venv active and data/ prepared (builtin-tiny, the SmolLM2
# folder). The run keeps the relative RAYPIPE_DATA=data the commit-era benchmarks used: before fa03ef6
# every Ray Train worker resolved it in its own directory and so converted SmolLM2 afresh.
# Writes OUT_PREFIX_metrics.json and OUT_PREFIX.log.
set -euo pipefail
commit=${1:?commit}
out=${2:?output prefix}
patch=${3:-}
root=$(pwd)
wt=$(mktemp -d /tmp/raypipe-at-XXXXXX)
runs=$(mktemp -d /tmp/raypipe-at-runs-XXXXXX)
trap 'git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || true; rm -rf "$runs"' EXIT
git worktree add -f --detach "$wt" "$commit" -q
ln -s "$root/data" "$wt/data"
if [[ -n "$patch" ]]; then git -C "$wt" apply "$root/$patch"; fi
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAYPIPE_DATA=data
(cd "$wt" && PYTHONPATH="$wt" python jobs/pretrain.py --model unimp --dataset builtin:tiny --storage-path "$runs" \
    train.epochs=1 model.max_users=8 train.valid_users=8 eval.test_users=8 train.seed=0 train.torch_threads=2 \
    train.cpus_per_worker=2 data.event_attrs="[ratings, reviews]" train.batch_size=8) 2>&1 \
    | grep -av "\[A" | grep -av "split(1, equal\|Loading weights\|de-quantizing GGUF" > "$root/$out.log"
cp "$runs"/*/metrics.json "$root/${out}_metrics.json"
python - "$root/${out}_metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print("train_loss", repr(m["history"][0]["train_loss"]), "test ndcg@10",
      {d: round(v["ndcg@10"], 4) for d, v in m["test"].items()})
PY
