#!/usr/bin/env bash
# scripts/local_cluster.sh up|down|status|env [--dir DIR] [...]: a head + worker node processes on 127.0.0.1.
# A thin wrapper over scripts/local_cluster.py (see its docstring); uses the project's .venv when present.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" "$here/local_cluster.py" "$@"
