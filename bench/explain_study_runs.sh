#!/bin/bash
# Backbones of the explain study (docs/explain.md), trained one after another, nice'd.
# Budget (stated in docs/explain.md): the builtin digits (4,000 training images, 28 px), 5 epochs of 256 images
# (80 steps), warm-up 1 epoch, seed 0; tinycnn runs log filter health every epoch (--filters-every 1).
# Resumable: a finished run (backbone.safetensors) is skipped, an interrupted one (checkpoints/last.pt) resumed.
set -u
cd "$(dirname "$0")/.."
PY="nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src ${PYTHON:-python} -m pretrainlab"
R=${RUNS:-runs/explain-study}
C="--data builtin --epochs 5 --batch-size 256 --warmup-epochs 1 --no-progress"
run() {  # run NAME ARGS...: pre-train into $R/NAME unless it is finished
  local name=$1; shift
  [[ $name =~ ${ONLY:-.} ]] || return 0  # ONLY=cnn- trains the CNNs alone
  [ -f "$R/$name/backbone.safetensors" ] && return
  if [ -f "$R/$name/checkpoints/last.pt" ]; then
    $PY pretrain "$@" $C --out "$R/$name" --resume
  else
    rm -rf "$R/$name"
    $PY pretrain "$@" $C --out "$R/$name"
  fi
}
run cnn-simclr --method simclr --backbone tinycnn --filters-every 1
run cnn-supervised --method supervised --backbone tinycnn --filters-every 1
run vit-mae --method mae --backbone vit_nano_patch4
run vit-supervised --method supervised --backbone vit_nano_patch4 --optimizer adamw --lr 5e-4 --weight-decay 0.05
run vit-dino --method dino --backbone vit_nano_patch4 --optimizer adamw --lr 5e-4 --weight-decay 0.04 --grad-clip 3 \
    --option hidden_dim=512 --option bottleneck_dim=128 --option out_dim=1024 --option momentum=0.99 \
    --option local_count=2 --option head_batch_norm=false
run vit-nmi_had --method nmi_had --backbone vit_nano_patch4 --option teacher=$R/vit-mae
