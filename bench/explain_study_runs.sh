#!/bin/bash
# Backbones of the explain study (docs/explain.md), trained one after another, nice'd.
# Budget (stated in docs/explain.md): the builtin digits (28 px), seed 0; CNNs: 4,000 training images, 5 epochs of
# 256 (75 steps), warm-up 1 epoch, filter health logged every epoch (--filters-every 1); ViTs: see VIT below.
# Resumable: a finished run (backbone.safetensors) is skipped, an interrupted one (checkpoints/last.pt) resumed.
set -u
cd "$(dirname "$0")/.."
PY="nice -n 10 env OMP_NUM_THREADS=1 PYTHONPATH=src ${PYTHON:-python} -m pretrainlab"
R=${RUNS:-runs/explain-study}
CNN="--data builtin --epochs 5 --batch-size 256 --warmup-epochs 1 --no-progress"
# ViTs: a third of the CNNs' images (2,000-image class-balanced subset, 3 epochs of 128: 48 steps), all the shared
# 2 cores left this study
VIT="--data builtin --max-train 2000 --epochs 3 --batch-size 128 --warmup-epochs 1 --no-progress"
C=$CNN
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
C=$VIT
run vit-mae --method mae --backbone vit_nano_patch4
run vit-supervised --method supervised --backbone vit_nano_patch4 --optimizer adamw --lr 5e-4 --weight-decay 0.05
run vit-dino --method dino --backbone vit_nano_patch4 --optimizer adamw --lr 5e-4 --weight-decay 0.04 --grad-clip 3 \
    --option hidden_dim=512 --option bottleneck_dim=128 --option out_dim=1024 --option momentum=0.99 \
    --option local_count=2 --option head_batch_norm=false
run vit-nmi_had --method nmi_had --backbone vit_nano_patch4 --option teacher=$R/vit-mae
# A longer supervised ViT (the 48-step runs above keep the random init's uniform attention): all 4,000 images,
# 5 epochs of 128 (155 steps), warm-up 1 epoch
C="--data builtin --epochs 5 --batch-size 128 --warmup-epochs 1 --no-progress"
run vit-supervised-long --method supervised --backbone vit_nano_patch4 --optimizer adamw --lr 1e-3 --weight-decay 0.05
