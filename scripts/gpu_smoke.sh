#!/usr/bin/env bash
# GPU readiness in at most ~10 minutes on one GPU: XLA whole-step baseline and joint steps at 192x192 in
# fp32 and mixed_bfloat16, a mini pipeline (baseline -> pseudo-labels -> PLC) with one test evaluation;
# prints the step times as JSON (and writes it to OUT_JSON if given). Pass the JSON to
# `scripts/reproduce.sh --dry_run` as STEP_TIMES=... for projected GPU hours.
#
#   scripts/gpu_smoke.sh [--cpu] [OUT_JSON]     --cpu: the same on the CPU at tiny sizes (the test suite)
#   Environment: PYTHON (default .venv/bin/python), DATA_DIR (preprocessed synthetic data to reuse)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
args=()
if [ "${1:-}" = --cpu ]; then args+=(--cpu); shift; fi
[ $# -ge 1 ] && args+=(--out "$1")
[ -n "${DATA_DIR:-}" ] && args+=(--data_dir "$DATA_DIR")
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec "$PYTHON" -m bench.gpu_smoke "${args[@]}"
