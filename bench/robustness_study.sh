#!/bin/bash
# The study behind docs/robustness.md (Fashion-MNIST; every command nice'd and single-threaded for a shared CPU).
#   bash bench/robustness_study.sh [OUT]        (default OUT=runs/study; finished steps are skipped on a rerun)
# Needs ../shared/data/fashion_mnist.npz (or pass FM=npz:PATH). Pre-training, then robust accuracy, then the
# encoder attacks and the defences; results in OUT/robustness.db, figures in OUT/figures/NAME and RUN/attack/.
set -u
OUT=${1:-runs/study}
FM=${FM:-npz:$(cd "$(dirname "$0")/../.." && pwd)/shared/data/fashion_mnist.npz}
export OMP_NUM_THREADS=1
PL="nice -n 10 python -m pretrainlab"
mkdir -p "$OUT"

pretrain() { [ -f "$OUT/$1/backbone.safetensors" ] || $PL pretrain --method "$2" --backbone tinycnn --data "$3" \
  --batch-size 256 --seed 0 --out "$OUT/$1" --no-progress "${@:4}"; }
pretrain simclr-fm simclr "$FM" --max-train 10000 --epochs 10 --warmup-epochs 1
pretrain supervised-fm supervised "$FM" --max-train 10000 --epochs 10 --warmup-epochs 1
pretrain simclr-digits simclr builtin --epochs 20 --warmup-epochs 2

BASE="--data $FM --max-train 5000 --max-test 200 --store $OUT/robustness.db --no-progress --seed 0"
INPUT="--attack pgd,autoattack --eps 1/255,2/255,4/255,8/255 --option steps=20"
run() { name=$1; shift; [ -f "$OUT/done.$name" ] && return; echo "== $name"
  /usr/bin/time -f "$name %e s wall" $PL attack "$@" $BASE --figures "$OUT/figures/$name" && touch "$OUT/done.$name"; }
run random timm:tinycnn $INPUT
run simclr "$OUT/simclr-fm" $INPUT
run supervised "$OUT/supervised-fm" $INPUT
run simclr-finetuned "$OUT/simclr-fm" --head finetune $INPUT
run simclr-adv-pgd "$OUT/simclr-fm" --defence adv_finetune --option adv_method=pgd --option adv_out="$OUT/simclr-fm-adv-pgd" $INPUT
run simclr-adv-trades "$OUT/simclr-fm" --defence adv_finetune --option adv_method=trades --option adv_out="$OUT/simclr-fm-adv-trades" $INPUT
UNIVERSAL="--attack universal --eps 8/255 --option universal_steps=300 --option other_data=builtin"
run universal-simclr "$OUT/simclr-fm" $UNIVERSAL --option transfer="$OUT/supervised-fm"
run universal-supervised "$OUT/supervised-fm" $UNIVERSAL --option transfer="$OUT/simclr-fm"
run feature-simclr "$OUT/simclr-fm" --attack feature --eps 4/255,8/255,16/255 --option feature_pairs=200
run feature-supervised "$OUT/supervised-fm" --attack feature --eps 4/255,8/255,16/255 --option feature_pairs=200
run fooling-simclr "$OUT/simclr-fm" --attack fooling --option fooling_generations=500
run fooling-supervised "$OUT/supervised-fm" --attack fooling --option fooling_generations=500
run raw-simclr "$OUT/simclr-fm" --defence raw_isp $INPUT --option raw_isp_steps=600
run digits-alone "$OUT/simclr-digits" $INPUT
run fusion-simclr "$OUT/simclr-fm" --defence fusion:"$OUT/simclr-digits" $INPUT
python -m pretrainlab compare --store "$OUT/robustness.db" --format markdown
