#!/usr/bin/env bash
# One-GPU check of pretrainlab (under 8 minutes on one current GPU): the full SimCLR step vs the bare compiled
# two-view backbone step, a short CIFAR-10 SimCLR pre-training with its kNN, and the gauntlet's time; one JSON out.
#
#   bash bench/gpu_check.sh [OUT.json] [more bench.gpu_check flags, e.g. --epochs 20 --data npz:/path/cifar.npz]
#   TINY=1 bash bench/gpu_check.sh out.json      # CPU smoke run with tiny sizes (the test suite runs this)
#
# PYTHON selects the interpreter (default: python). Needs pretrainlab installed (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check.json}"
shift || true
tiny=()
if [[ -n "${TINY:-}" ]]; then
    tiny=(--tiny)
fi
exec "${PYTHON:-python}" -m bench.gpu_check --out "$out" "${tiny[@]}" "$@"
