#!/bin/sh
# Continue pretraining models/default on a GPU machine (the `device` tool of a
# later session), then evaluate it; meant to fit one <= 10-minute command.
#
# Here, first:   make -C train corpus        (work/data/tokens.npz, ~19 MB)
# There:         sh train/gpu_train.sh [MINUTES]   with carry ["train/work/data"]
# The result lands in $OUT/model (a full models/default replacement) with
# $OUT/train_log.csv and $OUT/eval.json; copy it back and review the figures
# before committing. The warm start is the committed models/default itself, so
# nothing outside the working tree is needed.
set -eu
MINUTES=${1:-7}
OUT=${OUT:-/tmp/gpu_out}
PY=${PYTHON:-python3}
DATA=train/work/data/tokens.npz
[ -f "$DATA" ] || { echo "missing $DATA: carry train/work/data" >&2; exit 2; }
mkdir -p "$OUT/work"
cp -r models/default "$OUT/model"
# batch 256 x 128 tokens: about 100x the CPU run's tokens per step; the learning
# rate is the CPU run's peak, re-warmed over 3% of the steps and decayed over
# the wall budget
$PY train/train.py --device cuda --bf16 --threads 8 --init-from models/default \
  --data "$DATA" --work "$OUT/work" --out "$OUT/model" --vocab models/default \
  --batch 256 --seq 128 --steps 20000 --warmup 0.03 --lr 2e-4 --dropout 0.1 \
  --max-minutes "$MINUTES" --time-schedule --log-every 50 --eval-every 500 \
  --ckpt-minutes 3
cp "$OUT/work/train_log.csv" "$OUT/train_log.csv"
$PY train/evaluate.py --model "$OUT/model" --json "$OUT/eval.json"
