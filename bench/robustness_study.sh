#!/bin/bash
# The study behind docs/robustness.md (Fashion-MNIST, tinycnn, seed 0; every command nice'd and single-threaded
# for a shared 2-core CPU). Run from the repository root with the package importable:
#   bash bench/robustness_study.sh [OUT]        (default OUT=runs/study; finished steps are skipped on a rerun)
# Needs ../shared/data/fashion_mnist.npz (or pass FM=npz:PATH). Results in OUT/robustness.db, figures in
# OUT/figures/NAME and the exported adversarially fine-tuned runs' attack/ folders; the tables come from
#   python -m pretrainlab compare --store OUT/robustness.db --format markdown
set -u
OUT=${1:-runs/study}
FM=${FM:-npz:$(cd "$(dirname "$0")/../.." && pwd)/shared/data/fashion_mnist.npz}
export OMP_NUM_THREADS=1
PL="nice -n 10 python -m pretrainlab"
mkdir -p "$OUT"

# Pre-training: 10,000 Fashion-MNIST training images (SimCLR and supervised, 10 epochs), and 5,000 builtin MNIST
# digits (SimCLR, 20 epochs) as the second, differently trained backbone of the fusion defence.
pretrain() { [ -f "$OUT/$1/backbone.safetensors" ] || $PL pretrain --method "$2" --backbone tinycnn --data "$3" \
  --batch-size 256 --seed 0 --out "$OUT/$1" --no-progress "${@:4}"; }
pretrain simclr-fm simclr "$FM" --max-train 10000 --epochs 10 --warmup-epochs 1
pretrain supervised-fm supervised "$FM" --max-train 10000 --epochs 10 --warmup-epochs 1
pretrain simclr-digits simclr builtin --epochs 20 --warmup-epochs 2

# Heads fitted on 5,000 training images; the same 200 class-balanced test images attacked everywhere.
BASE="--data $FM --max-train 5000 --max-test 200 --store $OUT/robustness.db --no-progress --seed 0"
EPS="--eps 1/255,2/255,4/255,8/255"
run() { name=$1; shift; [ -f "$OUT/done.$name" ] && return; echo "== $name"
  /usr/bin/time -f "$name %e s wall" $PL attack "$@" $BASE --figures "$OUT/figures/$name" && touch "$OUT/done.$name"; }
# Table 1: robust accuracy per eps, backbone + linear probe. AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square;
# 20 steps, 1,000 Square queries) costs ~1 h per backbone here, so it ran on two backbones; PGD-20 and APGD-DLR
# (20 steps) on all.
run random timm:tinycnn --attack pgd,autoattack $EPS --option steps=20
run simclr "$OUT/simclr-fm" --attack pgd,autoattack $EPS --option steps=20
run random-b timm:tinycnn --attack apgd_dlr $EPS --option steps=20
run simclr-b "$OUT/simclr-fm" --attack apgd_dlr $EPS --option steps=20
run supervised-b "$OUT/supervised-fm" --attack pgd,apgd_dlr $EPS --option steps=20
# Defence (a): PGD adversarial fine-tuning (L-inf 8/255, 5 steps, 3 epochs) and TRADES, exported as run folders,
# attacked with their own head and with a linear probe on the exported backbone; AutoAttack at 8/255 on the PGD one.
run simclr-adv-pgd "$OUT/simclr-fm" --defence adv_finetune --option adv_method=pgd --option epochs=3 \
  --option adv_out="$OUT/simclr-fm-adv-pgd" --attack pgd,apgd_dlr $EPS --option steps=20
run simclr-adv-trades "$OUT/simclr-fm" --defence adv_finetune --option adv_method=trades --option epochs=3 \
  --option adv_out="$OUT/simclr-fm-adv-trades" --attack pgd,apgd_dlr $EPS --option steps=20
run adv-pgd-autoattack "$OUT/simclr-fm-adv-pgd" --head own --attack autoattack --eps 8/255 --option steps=20
# Defence (b): RAW + ISP (400 ISP steps on clean training images); pgd and apgd_dlr become their adaptive versions
# (BPDA + EOT-PGD, AutoAttack-rand), a BPDA-identity EOT-PGD row and a naive exact-gradient PGD row; 10 steps and
# 5 EOT samples for the CPU. (In the recorded study the identity row came from a second run with --attack pgd.)
run raw-simclr "$OUT/simclr-fm" --defence raw_isp --attack pgd,apgd_dlr $EPS --option steps=10 --option eot_samples=5 \
  --option raw_isp_steps=400
# Defence (c): contextual fusion of the Fashion-MNIST SimCLR backbone and the digits SimCLR backbone.
run digits-alone "$OUT/simclr-digits" --attack pgd,apgd_dlr $EPS --option steps=20
run fusion-simclr "$OUT/simclr-fm" --defence fusion:"$OUT/simclr-digits" --attack pgd,apgd_dlr $EPS --option steps=20
# Encoder attacks: AdvEncoder (300 generator steps on 2,000 unlabeled training images), feature-space, fooling images.
run universal-simclr "$OUT/simclr-fm" --attack universal --eps 8/255 --option universal_steps=300 \
  --option other_data=builtin --option transfer="$OUT/supervised-fm"
run feature-simclr "$OUT/simclr-fm" --attack feature --eps 4/255,8/255,16/255 --option feature_pairs=100
run fooling-simclr "$OUT/simclr-fm" --attack fooling --option fooling_generations=300
run feature-pooled "$OUT/simclr-fm" --attack feature --eps 4/255,8/255,16/255 --option feature_pairs=100 \
  --option feature_layer=pooled
run feature-pooled-100 "$OUT/simclr-fm" --attack feature --eps 8/255,16/255 --option feature_pairs=100 \
  --option feature_layer=pooled --option feature_steps=100
python -m pretrainlab compare --store "$OUT/robustness.db" --format markdown
