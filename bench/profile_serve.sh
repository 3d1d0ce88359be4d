#!/usr/bin/env bash
# Sample Serve's HTTP proxy and the ingress replica with py-spy while bench/bench_serve.py loads them.
#
#   bash bench/profile_serve.sh OUT_PREFIX [bench_serve.py arguments ...]
#   bash bench/profile_serve.sh bench/results/serve_pyspy --size small --via-proxy --colocate \
#       --requests 4000 --max-seconds 60 --fault-seconds 0            # add --proxy-grpc for the gRPC proxy
#
# Writes OUT_PREFIX_proxy.txt.gz and OUT_PREFIX_replica.txt.gz (py-spy collapsed stacks, 100 Hz for 25 s
# from 8 s into the load, --nonblocking so the sampled processes are not paused), OUT_PREFIX_run.json (the
# benchmark's own JSON) and prints bench/pyspy_summary.py's tables.  Needs py-spy (pip install py-spy).
set -euo pipefail
out=${1:?usage: profile_serve.sh OUT_PREFIX [bench_serve.py args ...]}
shift
command -v py-spy > /dev/null || { echo "py-spy not found: pip install py-spy" >&2; exit 2; }
log=$(mktemp)
python bench/bench_serve.py "$@" --out "${out}_run.json" > "$log" 2>&1 &
bench=$!
until grep -q "load target" "$log"; do
    kill -0 "$bench" 2> /dev/null || { cat "$log" >&2; exit 1; }
    sleep 1
done
sleep 8  # past the warm-up requests, into the measured load
proxy=$(pgrep -f "^ray::ProxyActor" | head -1)
replica=$(pgrep -f "^ray::ServeReplica:bench:Recommender" | head -1)
for role in proxy replica; do
    pid=${!role}
    py-spy record --pid "$pid" --rate 100 --duration 25 --nonblocking --format raw \
        --output "${out}_${role}.txt" > /dev/null 2>&1 &
done
wait
gzip -f "${out}_proxy.txt" "${out}_replica.txt"
python bench/pyspy_summary.py "${out}_proxy.txt.gz" "${out}_replica.txt.gz"
