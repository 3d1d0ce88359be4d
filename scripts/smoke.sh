#!/usr/bin/env bash
# `make smoke`: a first look at the whole pipeline on the embedded `tiny` benchmark (360 items, 300 users),
# one epoch per training stage, through the same entry points as the real jobs:
#
#   1. raypipe data   generate the tiny benchmark (3 source, 3 target domains)
#   2. raypipe idp    text features (Ray Data) -> SASRec pre-training on the source domains (Ray Train)
#                     -> CDIM -> ID transfer to the target domains (hnswlib) -> fine-tuning -> evaluation
#   3. (SMOKE_EVALUATE=1) raypipe evaluate on the fine-tuned run, which must reproduce step 2's numbers
#
# Everything goes under SMOKE_DIR (default runs/smoke), which is emptied first and touches no other run; the
# step logs are in SMOKE_DIR/logs.  Exits non-zero, naming the step and its log, on any failure.  The numbers
# are not meaningful (one epoch on a toy catalogue): the point is that every stage runs end to end.
# Environment: VENV (default .venv), SMOKE_DIR, SMOKE_EVALUATE=1 to add step 3 (about 45 s more).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
OUT="${SMOKE_DIR:-runs/smoke}"
RAYPIPE="$VENV/bin/raypipe"
PY="$VENV/bin/python"
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_DEDUP_LOGS=0

if [[ ! -x "$RAYPIPE" ]]; then
  echo "smoke: $RAYPIPE not found; run 'make install' (or 'make smoke', which installs first)" >&2
  exit 1
fi
# SMOKE_DIR is emptied: only a directory this script made (marker file), or a missing / empty one.
MARKER="$OUT/.raypipe-smoke"
if [[ -d "$OUT" && ! -e "$MARKER" && -n "$(ls -A "$OUT")" ]]; then
  echo "smoke: $OUT exists and was not made by scripts/smoke.sh; refusing to empty it (set SMOKE_DIR)" >&2
  exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT/logs"
touch "$MARKER"
OUT_ABS="$(cd "$OUT" && pwd)"

START=$SECONDS
step() {  # step NAME COMMAND...: run it with its output in $OUT/logs/NAME.log; on failure show the log's tail
  local name=$1
  shift
  local log="$OUT/logs/$name.log" t0=$SECONDS
  echo "smoke: [$name] $*"
  if ! "$@" >"$log" 2>&1; then
    echo "smoke: FAILED at step '$name' after $((SECONDS - t0)) s; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    echo "smoke: FAILED (step '$name'; all logs in $OUT_ABS/logs)" >&2
    exit 1
  fi
  echo "smoke: [$name] done in $((SECONDS - t0)) s"
}

DATA="$OUT/data/tiny"
step data "$RAYPIPE" data --size tiny --out "$DATA"
step idp "$RAYPIPE" idp --dataset "$DATA" --storage-path "$OUT" --name idp --variants idp \
  --pretrain train.epochs=1 train.patience=1 --finetune train.epochs=1 train.patience=1 \
  --cdim-train train.epochs=1
if [[ "${SMOKE_EVALUATE:-0}" == 1 ]]; then
  step evaluate "$RAYPIPE" evaluate --init-from "$OUT/idp/idp" --dataset "$DATA" --storage-path "$OUT" \
    --name evaluate
fi

# The results must be there, finite, for every target domain (and step 3 must agree with step 2).
"$PY" - "$OUT" <<'EOF' || { echo "smoke: FAILED (results check; logs in $OUT_ABS/logs)" >&2; exit 1; }
import json, math, sys
from pathlib import Path

out = Path(sys.argv[1])
res = json.loads((out / "idp" / "results.json").read_text())["results"]["idp"]
assert set(res) == {"toys", "kitchen", "sports"}, f"target domains in results.json: {sorted(res)}"
for domain, m in res.items():
    for k in ("full_ndcg@10", "full_hr@10"):
        assert math.isfinite(m[k]) and 0.0 <= m[k] <= 1.0, (domain, k, m[k])
ev = out / "evaluate" / "metrics.json"
if ev.exists():
    test = json.loads(ev.read_text())["test"]
    for domain, m in res.items():
        got = test[domain]["ndcg@10"]
        assert abs(got - m["full_ndcg@10"]) < 1e-4, (domain, got, m["full_ndcg@10"])
EOF

echo
cat "$OUT/idp/results.md"
echo
echo "smoke: OK in $((SECONDS - START)) s. One epoch per stage: the numbers only show that every stage ran;"
echo "       the sampled-99 columns are nan because tiny's target catalogues have under 100 items (full ranking: last columns)."
echo "smoke: outputs in $OUT_ABS:"
echo "  data/tiny/         the generated dataset"
echo "  idp/features/      text features (MiniLM, Ray Data)"
echo "  idp/pretrain/      SASRec pre-trained on books, electronics, movies"
echo "  idp/cdim/, idp/transfer_cdim/   the ID matcher and the target items' transferred IDs"
echo "  idp/idp/           the fine-tuned model (model.pt, metrics.json, test_ranks.json)"
echo "  idp/results.{md,json,png}       the evaluation above"
[[ -d "$OUT/evaluate" ]] && echo "  evaluate/          raypipe evaluate on idp/idp (same numbers)"
echo "  logs/              one log per step"
