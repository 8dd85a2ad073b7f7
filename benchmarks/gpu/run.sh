#!/usr/bin/env bash
# The prepared GPU run (benchmarks/gpu/README.md): run it first whenever an H100/H200 is lent.
#   bash benchmarks/gpu/run.sh data/cifar10-jpeg.tar.gz [OUT]     # at most ~9 minutes
#   bash benchmarks/gpu/run.sh --smoke [OUT]                       # any machine, seconds
# Writes OUT/gpu.json and OUT/gpu.log (OUT defaults to $OUT, else runs/gpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"   # no install needed (the GPU machine has torch, not robustlens)
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if [ "${1:-}" = "--smoke" ]; then
  shift
  exec "$PY" benchmarks/gpu/run.py --smoke --out "${1:-${OUT:-runs/gpu}}"
fi
DATA=${1:?usage: run.sh DATA.tar.gz [OUT] | run.sh --smoke [OUT]}
exec "$PY" benchmarks/gpu/run.py "$DATA" --out "${2:-${OUT:-runs/gpu}}"
