#!/usr/bin/env bash
# The methods table at 5x its epochs (50 instead of 10) with 2 seeds: "do the papers' orderings appear with
# more budget?" (issue 17, part 8). One row per invocation, cheapest methods first, seed 0 of every method
# before seed 1, so a partial queue already has one seed of most methods. Resumable: a finished row
# (bench/results/methods/epochs50/NAME-seedS.json) is skipped, a killed one resumes from its last checkpoint
# (runs/bench-methods/epochs50/NAME-seedS/checkpoints/last.pt, written every epoch). Run it in the long lane:
#   nohup flock /tmp/pretrainlab-long2.lock nice -n 19 env OMP_NUM_THREADS=1 bash bench/methods_budget_queue.sh > budget.log 2>&1 &
# then `python bench/methods_table.py --render` writes the finished rows into docs/methods.md.
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=/work/main/.venv/bin/python
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
EPOCHS="${EPOCHS:-50}"
METHODS="${METHODS:-simclr mocov2 rotnet byol swav spark barlowtwins vicreg simsiam dino}"
# the options the 10-epoch rows were measured with (docs/methods.md's notes column)
declare -A OPTIONS=([dino]="--option dino:hidden_dim=512 --option dino:bottleneck_dim=128 --option dino:momentum=0.99")
cd "$ROOT"
for seed in 0 1; do
  for method in $METHODS; do
    echo "$(date -u '+%F %T') ${method} seed ${seed}"
    # shellcheck disable=SC2086  # the options are several words on purpose
    "$PYTHON" bench/methods_table.py --methods "$method" --epochs "$EPOCHS" --seed "$seed" --reuse --skip-done \
      ${OPTIONS[$method]:-} || echo "$(date -u '+%F %T') ${method} seed ${seed} failed (exit $?); next row"
  done
done
echo "$(date -u '+%F %T') queue done"
