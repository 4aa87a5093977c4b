#!/usr/bin/env bash
# Reproduce the MedIA 2023 table for one dataset and label setting: preprocess, then for every label
# combination the split has (e.g. ACDC tr8: c1..c3) and every seed run all six rows of the paper
# (baseline, gcl_lcl, selftrain_gcl_lcl, plc_gcl_lcl, plc_intra, plc) with the release's behaviour and the
# paper's iteration counts (--preset paper), evaluate on the test patients, and end with our mean ± std
# beside the paper's number for every row (OUT/results/reference.md). Meant for a GPU (README "GPU");
# every stage resumes when rerun. --dry_run prints the commands, the iterations and the projected hours
# and runs nothing (RAW_DIR need not exist then).
#
#   scripts/reproduce.sh [--dry_run] DATASET RAW_DIR OUT [TR]
#     DATASET  acdc | prostate_md | mmwhs
#     RAW_DIR  the data as its owners distribute it (README "Data"); LAYOUT=original_cropped or
#              LAYOUT=ssl4mis_h5 reads the preprocessed ACDC copies instead
#     OUT      output folder: OUT/prep (preprocessed), OUT/runs/<tr>_<comb>_s<seed>/..., OUT/results
#     TR       label setting (default tr1)
#   Environment: METHODS (default: the six rows; plc_plus adds the port's variant), SEEDS (default 0),
#   COMBS (default: every combination of TR), N4 (1: N4 bias correction), LAYOUT (default raw),
#   PYTHON (default .venv/bin/python), STEP_TIMES (measured step times for --dry_run, e.g. the JSON of
#   scripts/gpu_smoke.sh), EXTRA (flags for every stage, e.g. "--extra=--precision=mixed_bfloat16").
set -euo pipefail
DRY=()
if [ "${1:-}" = --dry_run ]; then DRY=(--dry_run); shift; fi
if [ $# -lt 3 ]; then
  sed -n '2,19p' "$0" >&2
  exit 2
fi
DATASET=$1 RAW=$2 OUT=$3 TR=${4:-tr1}
SEEDS=${SEEDS:-0} LAYOUT=${LAYOUT:-raw} PYTHON=${PYTHON:-.venv/bin/python}
case "$DATASET" in acdc|prostate_md|mmwhs) ;; *) echo "DATASET: $DATASET is not acdc, prostate_md or mmwhs" >&2; exit 2;; esac
[ ${#DRY[@]} -gt 0 ] || [ -d "$RAW" ] || { echo "RAW_DIR: $RAW is not a directory" >&2; exit 2; }
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
PREP="$OUT/prep"
if [ ${#DRY[@]} -eq 0 ] && [ ! -f "$PREP/dataset.json" ]; then
  n4=(); [ "${N4:-0}" = 1 ] && n4=(--n4)
  "$PYTHON" -m data.preprocess --dataset "$DATASET" --layout "$LAYOUT" --raw_dir "$RAW" --out_dir "$PREP" "${n4[@]}"
fi
opts=(--dataset "$DATASET" --data_dir "$PREP" --out_dir "$OUT" --no_of_tr_imgs "$TR" --seeds "$SEEDS")
[ -n "${METHODS:-}" ] && opts+=(--methods "$METHODS")
[ -n "${COMBS:-}" ] && opts+=(--combs "$COMBS")
[ -n "${STEP_TIMES:-}" ] && opts+=(--step_times "$STEP_TIMES")
[ "$LAYOUT" = original_cropped ] && opts+=(--allow_missing)  # patient 090 is absent from that copy
# shellcheck disable=SC2086  # EXTRA holds several flags
"$PYTHON" -m training.reproduction "${opts[@]}" ${EXTRA:-} "${DRY[@]}"
