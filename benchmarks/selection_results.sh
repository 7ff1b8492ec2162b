#!/usr/bin/env bash
# How the committed selection results were made (benchmarks/results/selection-<target>.*).
#
#   benchmarks/selection_results.sh side-colour runs/bench/world
#   benchmarks/selection_results.sh size-colour runs/bench/world2     # at the same time, in a second shell
#
# Each target needs a world folder of its own when they run at once (local Qdrant locks its store); both
# use the demo student of world seed 0, built once under runs/bench/world/students (start the first
# call alone until its student exists). Completed runs are reused, so an interrupted call can be re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
task=$1 world=$2
py=.venv/bin/python
export HF_HUB_OFFLINE=1
student=$($py -c "from demo.build import build_world; print(build_world('runs/bench/world', targets=['$task']).student)" | tail -1)
common=(--target "$task" --out runs/bench3 --world "$world" --student "$student" --rounds 2 --epochs 3 --max-diagnoses 8)
tmp=(--results "runs/bench3/tmp-$task")  # partial reports; the last call writes benchmarks/results
$py benchmarks/selection.py "${common[@]}" --strategies random,failures,teacher,failures-known,teacher-known --budgets 0.02,0.05,0.1 --seeds 0,1,2 --no-full-pool "${tmp[@]}"
$py benchmarks/selection.py "${common[@]}" --strategies random --budgets 0.02 --seeds 0 "${tmp[@]}"  # + full pool, seed 0
$py benchmarks/selection.py "${common[@]}" --strategies teacher-no-perturbation,teacher-no-clusters,teacher-no-replay \
    --budgets 0.05,0.1 --seeds 0 --no-full-pool "${tmp[@]}"
$py benchmarks/selection.py "${common[@]}" --budgets 0.02,0.05,0.1 --seeds 0,1,2 --report-only --note \
    "runs made by benchmarks/selection_results.sh: random/failures/teacher (+ -known) at 2/5/10% × seeds 0-2; ablations at 5% and 10%, seed 0; full pool seed 0 (its adapter does not depend on the target: same pool, same seed); both targets ran at once, one process each, on 2 shared CPU cores"
