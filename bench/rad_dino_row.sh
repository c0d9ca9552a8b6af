#!/usr/bin/env bash
# RAD-DINO's objective on the methods table (docs/methods.md): DINO with the iBOT masked-token loss on the
# table's ViT (vit_nano_patch4), at the table's budget (10 epochs of 256 on the 10,000-image Fashion-MNIST
# subset), with the ViT settings of the table's DINO ViT row (AdamW, lr 5e-4 per 256, weight decay 0.05, the
# recipe's head with a 512-wide hidden layer and a 128-d bottleneck, teacher momentum 0.99); then the same without
# iBOT (that row, dino-vit, also measured for docs/explain.md's attention table), to read what the loss adds.
# RAD-DINO (Perez-Garcia et al., arXiv 2401.10815) trains DINOv2 (DINO + iBOT + KoLeo) on chest X-rays.
# Each row runs in chunks of at most 14 minutes in the study lane; a chunk that is cut saves a checkpoint and
# the next resumes it (methods_table.py --reuse); a finished row is skipped (--skip-done).
#   nohup bash bench/rad_dino_row.sh > rad_dino.log 2>&1 &
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=/work/main/.venv/bin/python
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
COMMON=(--methods dino --backbone vit_nano_patch4 --reuse --skip-done
        --option dino:hidden_dim=512 --option dino:bottleneck_dim=128 --option dino:momentum=0.99
        --train optimizer=adamw --train lr=0.0005 --train weight_decay=0.05)
row() {  # TAG, extra options...
  local tag="$1"; shift
  for chunk in 1 2 3 4 5 6; do
    [ -f "bench/results/methods/dino-${tag}.json" ] && return 0
    echo "$(date -u '+%F %T') dino-${tag}: chunk ${chunk} waits for the study lane"
    flock /tmp/pretrainlab-study.lock nice -n 10 env OMP_NUM_THREADS=1 timeout -s TERM 840 \
      "$PYTHON" bench/methods_table.py "${COMMON[@]}" --tag "$tag" "$@"
    local status=$?
    [ "$status" -eq 0 ] || echo "$(date -u '+%F %T') dino-${tag}: chunk ${chunk} stopped (exit ${status}), resumes next chunk"
  done
}
# the patch head's output is 1,024 wide (iBOT's is as wide as the CLS head's): at 4,096 it alone cost ~7 s a step
row ibot-vit --option dino:ibot_weight=1.0 --option dino:ibot_out_dim=1024
row vit
echo "$(date -u '+%F %T') rad-dino rows done"
