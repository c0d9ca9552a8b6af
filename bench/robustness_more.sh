#!/bin/bash
# The rows of docs/robustness.md table 1b: FGSM, Square (L-inf) and PGD-L2, CW (L2) on the backbones of
# bench/robustness_study.sh, at that study's budget (heads fitted on 5,000 training images, the same 200
# class-balanced test images, seed 0). Run from the repository root with the package importable:
#   bash bench/robustness_more.sh [STUDY] [OUT]     (defaults: ../attack/runs/study, runs/robust-more)
# STUDY's run folders are only read: their weights, heads and config.yaml are linked into OUT/NAME, so records and
# figures land in OUT (OUT/robustness.db, OUT/figures/NAME). Finished steps (OUT/done.NAME) are skipped on a rerun.
# The table comes from   python -m pretrainlab compare --store OUT/robustness.db --format markdown
set -u
STUDY=$(cd "${1:-$(dirname "$0")/../../attack/runs/study}" && pwd)
OUT=${2:-runs/robust-more}
FM=${FM:-npz:$(cd "$(dirname "$0")/../.." && pwd)/shared/data/fashion_mnist.npz}
[ -f "${FM#npz:}" ] || FM=npz:$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/fashion_mnist.npz
export OMP_NUM_THREADS=1
PL="nice -n 10 python -m pretrainlab"
mkdir -p "$OUT"
for name in simclr-fm supervised-fm simclr-fm-adv-pgd; do
  mkdir -p "$OUT/$name"
  for file in backbone.safetensors classifier.safetensors config.yaml; do
    [ -f "$STUDY/$name/$file" ] && [ ! -e "$OUT/$name/$file" ] && ln -s "$STUDY/$name/$file" "$OUT/$name/$file"
  done
done

BASE="--data $FM --max-train 5000 --max-test 200 --store $OUT/robustness.db --no-progress --seed 0"
LINF="--eps 1/255,2/255,4/255,8/255"
# L2 budgets: an L-inf 8/255 change of every one of the 784 pixels has L2 norm 0.88; MNIST's customary L2 budgets are
# 1.5-2.
L2="--norm l2 --eps 0.25,0.5,1,2"
run() { name=$1; shift; [ -f "$OUT/done.$name" ] && return; echo "== $name"
  /usr/bin/time -f "$name %e s wall" $PL attack "$@" $BASE --figures "$OUT/figures/$name" && touch "$OUT/done.$name"; }
# FGSM: one signed step; Square: 1,000 queries (score-based, no gradients); PGD-L2: 20 steps; CW: 100 Adam steps,
# c=1, minimum norm (one run; each budget keeps the perturbations that fit).
for target in random:timm:tinycnn simclr:$OUT/simclr-fm supervised:$OUT/supervised-fm adv-pgd:$OUT/simclr-fm-adv-pgd; do
  label=${target%%:*}; spec=${target#*:}
  run "$label-linf" "$spec" --attack fgsm,square $LINF
  run "$label-l2" "$spec" --attack pgd,cw $L2 --option steps=20
done
# The adversarially fine-tuned model with its own head (table 2's defended model).
run adv-pgd-own-linf "$OUT/simclr-fm-adv-pgd" --head own --attack fgsm,square $LINF
run adv-pgd-own-l2 "$OUT/simclr-fm-adv-pgd" --head own --attack pgd,cw $L2 --option steps=20
python -m pretrainlab compare --store "$OUT/robustness.db" --format markdown
