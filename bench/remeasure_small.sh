#!/usr/bin/env bash
# Re-measure the embedded-benchmark results of docs/RESULTS.md on the current protocol (seen = the
# whole history, training windows over whole sequences) and copy each raw result into bench/results/.
#   bash bench/remeasure_small.sh [main|variants|cold|cold_m1|sanity|all]
# Each step writes its run under runs/ (ignored by git) and its raw files under bench/results/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
what=${1:-all}
keep() {  # keep <run dir> <bench/results subdir> <files...>
  local src=$1 dst=bench/results/$2; shift 2
  mkdir -p "$dst"
  for f in "$@"; do cp "$src/$f" "$dst/$f"; done
}
if [[ $what == main || $what == all ]]; then
  rm -rf runs/remeasure-idp
  start=$SECONDS
  mkdir -p runs
  $PY jobs/idp.py --name remeasure-idp 2> runs/remeasure-idp.stderr | tee bench/results/idp_small_main.log
  { echo "wall clock of the whole job (Ray start included): $((SECONDS - start)) s"
    echo "console lines 'Failed to query Ray Train Controller': $(grep -c 'Failed to query Ray Train Controller' runs/remeasure-idp.stderr || true)"
  } | tee -a bench/results/idp_small_main.log
  keep runs/remeasure-idp idp_small_main results.json results.md results.png curves.png
fi
if [[ $what == variants || $what == all ]]; then  # the five other variants, reusing the main job's stages
  $PY jobs/idp.py --name remeasure-idp --variants all 2> runs/remeasure-idp-all.stderr | tee bench/results/idp_small_all.log
  keep runs/remeasure-idp idp_small_all results.json results.md results.png curves.png
fi
if [[ $what == cold || $what == all ]]; then
  rm -rf runs/remeasure-cold
  $PY jobs/idp_cold_start.py --name remeasure-cold 2> runs/remeasure-cold.stderr | tee bench/results/idp_cold_start_small.log
  keep runs/remeasure-cold idp_cold_start_small cold_start.json cold_start.md
fi
if [[ $what == cold_m1 || $what == all ]]; then
  rm -rf runs/remeasure-cold-m1
  $PY jobs/idp_cold_start.py --name remeasure-cold-m1 --top-m 1 2> runs/remeasure-cold-m1.stderr \
    | tee bench/results/idp_cold_start_small_m1.log
  keep runs/remeasure-cold-m1 idp_cold_start_small_m1 cold_start.json cold_start.md
fi
if [[ $what == sanity || $what == all ]]; then
  $PY bench/bench_sanity.py --size small --out bench/results/sanity.json
fi
