#!/usr/bin/env bash
# Reproduce the MedIA 2023 protocol for one dataset and label setting: preprocess, then for every
# label combination run baseline -> pseudo-labels -> PLC (and, with METHODS including gcl_lcl, the
# 2020 pre-training + fine-tuning) with the papers' iteration counts (--preset paper), evaluate on
# the test patients, and end with our mean ± std beside the paper's number (evaluation.aggregate
# --reference medIA2023). Meant for a GPU (README "GPU"); every stage resumes when rerun.
#
#   scripts/reproduce.sh DATASET RAW_DIR OUT [TR] [COMBS]
#     DATASET  acdc | prostate_md | mmwhs
#     RAW_DIR  the data as its owners distribute it (README "Data"); LAYOUT=original_cropped or
#              LAYOUT=ssl4mis_h5 reads the preprocessed ACDC copies instead
#     OUT      output folder: OUT/prep (preprocessed), OUT/runs/<tr>_<comb>/..., OUT/results
#     TR       label setting (default tr1); COMBS comma-separated combinations (default c1,c2,c3,c4,c5)
#   Environment: METHODS (default baseline,plc), SEEDS (default 0), N4 (1: N4 bias correction),
#   LAYOUT (default raw), PYTHON (default .venv/bin/python), EXTRA (flags for every stage,
#   e.g. "--extra=--precision=mixed_bfloat16").
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,18p' "$0" >&2
  exit 2
fi
DATASET=$1 RAW=$2 OUT=$3 TR=${4:-tr1} COMBS=${5:-c1,c2,c3,c4,c5}
METHODS=${METHODS:-baseline,plc} SEEDS=${SEEDS:-0} LAYOUT=${LAYOUT:-raw} PYTHON=${PYTHON:-.venv/bin/python}
case "$DATASET" in acdc|prostate_md|mmwhs) ;; *) echo "DATASET: $DATASET is not acdc, prostate_md or mmwhs" >&2; exit 2;; esac
[ -d "$RAW" ] || { echo "RAW_DIR: $RAW is not a directory" >&2; exit 2; }
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
PREP="$OUT/prep"
if [ ! -f "$PREP/dataset.json" ]; then
  n4=(); [ "${N4:-0}" = 1 ] && n4=(--n4)
  "$PYTHON" -m data.preprocess --dataset "$DATASET" --layout "$LAYOUT" --raw_dir "$RAW" --out_dir "$PREP" "${n4[@]}"
fi
missing=()
[ "$LAYOUT" = original_cropped ] && missing=(--allow_missing)  # patient 090 is absent from that copy
workdirs=()
for seed in ${SEEDS//,/ }; do
  for comb in ${COMBS//,/ }; do
    runs="$OUT/runs/${TR}_${comb}_s${seed}"
    "$PYTHON" run_pipeline.py --dataset "$DATASET" --data_dir "$PREP" --out_dir "$runs" --preset paper \
      --no_of_tr_imgs "$TR" --comb_tr_imgs "$comb" --methods "$METHODS" --seed "$seed" ${EXTRA:-} "${missing[@]}"
    for m in ${METHODS//,/ }; do
      case $m in baseline) workdirs+=("baseline=$runs/baseline");; plc) workdirs+=("plc=$runs/plc");;
                 gcl_lcl) workdirs+=("gcl_lcl=$runs/gcl_lcl_ft");; esac
    done
  done
done
"$PYTHON" -m evaluation.aggregate --out "$OUT/results" --reference medIA2023 "${workdirs[@]}"
