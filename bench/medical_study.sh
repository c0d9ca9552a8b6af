#!/usr/bin/env bash
# docs/medical.md's study, as chunks of under ~15 CPU-minutes, each taking the study lane's lock on its own so
# other studies can run between them. Resumable: rerun it and finished chunks are skipped.
#   nohup bash bench/medical_study.sh > medical.log 2>&1 &
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=/work/main/.venv/bin/python
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
chunk() {
  echo "$(date -u '+%F %T') waiting for the study lane: $*"
  flock /tmp/pretrainlab-study.lock nice -n 10 env OMP_NUM_THREADS=1 "$PYTHON" bench/medical_study.py "$@" \
    || echo "$(date -u '+%F %T') failed (exit $?): $*"
}
# about 14, 10 and 10 CPU-minutes on one thread (fewer, fuller chunks: each one queues for the lane anew)
chunk --pretrain mocov2,simclr,spark,mae_small_data,mae
chunk --evaluate all --seeds 0
chunk --evaluate all --seeds 1
"$PYTHON" bench/medical_study.py --render
echo "$(date -u '+%F %T') study done"
