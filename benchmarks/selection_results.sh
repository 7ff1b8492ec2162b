#!/usr/bin/env bash
# How the committed selection results were made (benchmarks/results/selection-{side,corner}-colour.*).
#
#   benchmarks/selection_results.sh
#
# Demo students are built once (~16-21 min each on one core) into runs/students: the first converged one
# (demo.student.FIRST_CONVERGED) for the rows before stop 12 and stop 13's grounding rows, stop 12's
# default (THREE_EPOCHS) for the replay curve, the one with twice the side share, and today's default (4
# epochs) for the last block; the world (pool 6000, both targets) and its index once into runs/bench4/world,
# copied to world2 so the two targets run at once (one qdrant-edge store per process). Completed runs are
# reused: an interrupted call can be re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
export HF_HUB_OFFLINE=1
# The cached student folder for a demo.student settings expression ($1), built when missing
student_for() {
  $py -c "from demo.student import FIRST_CONVERGED, THREE_EPOCHS, PretrainSettings, build_student
print(build_student('runs/students', settings=$1))" | tail -1
}
student=$(student_for FIRST_CONVERGED)
three_epoch_student=$(student_for THREE_EPOCHS)
side_share_student=$(student_for "PretrainSettings(epochs=3, skill_weights={'side': 2.0})")
default_student=$(student_for "PretrainSettings()")
# The world (pool 6000, both targets) and its index in $1/world, copied to $1/world2 (one store per process)
world_pair() {
  $py -c "
from tutorloop.agents import api
from tutorloop.demo.build import build_world
for task in ('corner-colour', 'side-colour'):
    w = build_world('$1/world', pool_size=6000, targets=[task], n_val=200, n_test=500,
                    n_generic_per_skill=50, with_student=False, progress=False)
api.ensure_index(api.IndexConfig(pool=w.pool, image_root=w.image_root, store='$1/world/index'))"
  [ -d "$1/world2" ] || cp -r "$1/world" "$1/world2"
}
world_pair runs/bench4
common=(--out runs/bench4 --student "$student" --rounds 2 --epochs 3 --max-diagnoses 8 --budgets 0.05 --no-full-pool)
$py benchmarks/selection.py --target corner-colour --world runs/bench4/world "${common[@]}" --seeds 0,1,2 \
    --strategies random,failures,oracle-map,failures-known,oracle-map-known --results runs/bench4/tmp-corner-colour &
$py benchmarks/selection.py --target side-colour --world runs/bench4/world2 "${common[@]}" --seeds 0,1,2 \
    --strategies random,failures,oracle-map,oracle-map-known --results runs/bench4/tmp-side-colour
wait
# SmolLM2 on its own skill map: one seed (its map naming + 8 diagnoses per round took ~10 min on the 2 cores)
for task in corner-colour side-colour; do
  $py benchmarks/selection.py --target $task --world runs/bench4/world2 "${common[@]}" --seeds 0 \
      --strategies teacher-map --results runs/bench4/tmp-$task
done
# Stop 11: the re-rank scorers against relevance only (side-colour, 5 %); 10 % rows; SmolLM2 diagnosing
# freely and full-pool training (side-colour, seed 0: the CPU allowed one each)
$py benchmarks/selection.py --target side-colour --world runs/bench4/world2 "${common[@]}" --seeds 0,1,2 \
    --strategies failures --scorers none,perplexity,image_grounding,el2n,answer_entropy,entropy \
    --results runs/bench4/tmp-side-colour
base=(--out runs/bench4 --student "$student" --rounds 2 --epochs 3 --max-diagnoses 8)
common10=("${base[@]}" --budgets 0.1 --no-full-pool)
$py benchmarks/selection.py --target corner-colour --world runs/bench4/world "${common10[@]}" --seeds 0,1,2 \
    --strategies random,failures,oracle-map --results runs/bench4/tmp-corner-colour
$py benchmarks/selection.py --target side-colour --world runs/bench4/world2 "${common10[@]}" --seeds 0,1,2 \
    --strategies failures --results runs/bench4/tmp-side-colour
$py benchmarks/selection.py --target side-colour --world runs/bench4/world2 "${base[@]}" --budgets 0.05 --seeds 0 \
    --strategies random --results runs/bench4/tmp-side-colour
$py benchmarks/selection.py --target side-colour --world runs/bench4/world2 "${common[@]}" --seeds 0 \
    --strategies teacher --results runs/bench4/tmp-side-colour
[ -e runs/bench4/world/index-map-model ] || cp -r runs/bench4/world2/index-map-model runs/bench4/world/
$py benchmarks/selection.py --target corner-colour --world runs/bench4/world "${base[@]}" --budgets 0.05,0.1 --no-full-pool --seeds 0,1,2 \
    --report-only --strategies random,failures,teacher-map,oracle-map,failures-known,oracle-map-known \
    --note "made by benchmarks/selection_results.sh on 2 shared CPU cores; teacher-map: seed 0 only; 10%: random, failures, oracle-map"
$py benchmarks/selection.py --target side-colour --world runs/bench4/world "${base[@]}" --budgets 0.05,0.1 --seeds 0,1,2 \
    --report-only --strategies random,failures,teacher,teacher-map,oracle-map,oracle-map-known \
    --scorers none,perplexity,image_grounding,el2n,answer_entropy,entropy \
    --note "made by benchmarks/selection_results.sh on 2 shared CPU cores; teacher and teacher-map: seed 0 only; 10%: failures only; full-pool: seed 0"
# Stop 12: on that stop's default student (sine-cosine, lr 5e-4, 3 epochs: THREE_EPOCHS), the replay trade-off curve with the product's defaults together (held-out stop, scorer none),
# side-colour 5 %, known share 0 (the failures row) / 0.15 / 0.3 (the default) / 0.5 / 0.7; a fresh world and index
# in runs/bench6 (copied to world2 for the second process).
world_pair runs/bench6
curve=(--target side-colour --out runs/bench6 --student "$three_epoch_student" --rounds 2 --epochs 20 --early-stop --scorer none
       --max-diagnoses 8 --budgets 0.05 --no-full-pool --strategies failures --known-shares 0.15,0.3,0.5,0.7)
$py benchmarks/selection.py "${curve[@]}" --world runs/bench6/world --seeds 0,1 --results runs/bench6/tmp &
# the second process starts once the first has saved the task's zero-shot round (it appears whole)
until [ -f runs/bench6/side-colour/zero-shot/round_00/metrics.json ]; do sleep 10; done
$py benchmarks/selection.py "${curve[@]}" --world runs/bench6/world2 --seeds 2 --results runs/bench6/tmp
wait
$py benchmarks/selection.py "${curve[@]}" --world runs/bench6/world --seeds 0,1,2 --report-only \
    --results benchmarks/results/curve --note "made by benchmarks/selection_results.sh on 2 shared CPU cores"
# The student with twice the side share (it clears the skill bars on both kernel paths): the defaults
# together on it (its failures row and known share 0.3), 3 seeds
$py benchmarks/selection.py --target side-colour --out runs/bench7 --student "$side_share_student" --rounds 2 --epochs 20 \
    --early-stop --scorer none --max-diagnoses 8 --budgets 0.05 --no-full-pool --strategies failures --known-shares 0.3 \
    --world runs/bench6/world2 --seeds 0,1,2 --results benchmarks/results/side-share-student \
    --note "the product's defaults together on the student with twice the side share (held-out stop, scorer none, known share 0.3)"
# Stop 13, the teacher grounded in a skill map (issue 13), on the first converged student in runs/bench4:
# 2 % rows of random / failures / the oracle (the 5 % ones are the first block's), SmolLM2 choosing among
# the 3 nearest skills of its own map (seed 0) and of a map named by the pool's source tags (3 seeds, 2 and
# 5 %), then one report per target with both budgets in benchmarks/results/grounding
two=(--out runs/bench4 --student "$student" --rounds 2 --epochs 3 --max-diagnoses 8 --budgets 0.02 --no-full-pool)
for task in side-colour corner-colour; do
  $py benchmarks/selection.py --target $task --world runs/bench4/world "${two[@]}" --seeds 0,1,2 \
      --strategies random,failures,oracle-map --results runs/bench4/tmp-$task
  $py benchmarks/selection.py --target $task --world runs/bench4/world2 "${common[@]}" --seeds 0 \
      --strategies teacher-map-top3 --results runs/bench4/tmp-$task
  for budget in 0.05 0.02; do
    $py benchmarks/selection.py --target $task --world runs/bench4/world2 "${base[@]}" --budgets $budget --no-full-pool \
        --seeds 0,1,2 --strategies teacher-tagmap-top3 --results runs/bench4/tmp-$task
  done
done
# SmolLM2 diagnosing freely at 5 %, 3 seeds (the first block ran seed 0 on side-colour only)
for task in side-colour corner-colour; do
  $py benchmarks/selection.py --target $task --world runs/bench4/world2 "${common[@]}" --seeds 0,1,2 \
      --strategies teacher --results runs/bench4/tmp-$task
done
for kind in model tag-source; do
  [ -e runs/bench4/world/index-map-$kind ] || cp -r runs/bench4/world2/index-map-$kind runs/bench4/world/
done
for task in side-colour corner-colour; do
  $py benchmarks/selection.py --target $task --world runs/bench4/world "${base[@]}" --budgets 0.02,0.05 --no-full-pool \
      --seeds 0,1,2 --report-only --strategies random,failures,teacher,teacher-map-top3,teacher-tagmap-top3,oracle-map \
      --results benchmarks/results/grounding \
      --note "made by benchmarks/selection_results.sh on 2 shared CPU cores; teacher-map-top3: seed 0 at 5 % only"
done
# Stop 13, today's default student (4 epochs): the product's defaults together (held-out stop, scorer none,
# known share 0.3) against known share 0: side-colour at 5 and 10 %, corner-colour at 5 %, 3 seeds
defaults=(--out runs/bench8 --student "$default_student" --rounds 2 --epochs 20 --early-stop --scorer none --max-diagnoses 8
          --no-full-pool --strategies failures --known-shares 0.3 --world runs/bench6/world2 --seeds 0,1,2
          --results benchmarks/results/default-student
          --note "the product's defaults together on the 4-epoch student (held-out stop, scorer none, known share 0.3)")
$py benchmarks/selection.py --target side-colour --budgets 0.05,0.1 "${defaults[@]}"
$py benchmarks/selection.py --target corner-colour --budgets 0.05 "${defaults[@]}"
# Stop 14, anchors (training/lora.py Anchors; issue 14): today's default student, the product's defaults with the
# anchor weight varied (0 = the failures-known row, pinned off; 0.3, 1, 3), side-colour at 5 % (5 seeds) and 10 %
# (weights 0 and 1, 3 seeds), corner-colour at 5 % (weights 0 and 1, 3 seeds); built on an Intel Xeon (AVX-512),
# whose student differs from the AMD machine's (count 0.86 against 0.76), so these rows are compared only among
# themselves and with their own zero-shot. Same world and index as stop 12's (runs/bench6).
anchors=(--out runs/bench9 --student "$default_student" --rounds 2 --epochs 20 --early-stop --scorer none --max-diagnoses 8
         --no-full-pool --strategies failures-known --results benchmarks/results/anchors)
$py benchmarks/selection.py --target side-colour --budgets 0.05 --seeds 0,1,2,3,4 --anchor-weights 0.3,1,3 \
    --world runs/bench6/world2 "${anchors[@]}" &
$py benchmarks/selection.py --target corner-colour --budgets 0.05 --seeds 0,1,2 --anchor-weights 1 \
    --world runs/bench6/world "${anchors[@]}"
wait
$py -c "from demo.build import build_world
build_world('runs/bench6/world', pool_size=6000, targets=['size-colour'], n_val=200, n_test=500,
            n_generic_per_skill=50, with_student=False, progress=False)"
$py benchmarks/selection.py --target size-colour --budgets 0.05 --seeds 0,1,2 --anchor-weights 1 \
    --world runs/bench6/world "${anchors[@]}"
$py benchmarks/selection.py --target side-colour --budgets 0.1 --seeds 0,1,2 --anchor-weights 1 \
    --world runs/bench6/world2 "${anchors[@]}"
$py benchmarks/selection.py --target side-colour --budgets 0.05,0.1 --seeds 0,1,2,3,4 --anchor-weights 0.3,1,3 \
    --world runs/bench6/world2 --report-only "${anchors[@]}" \
    --note "stop 14 (Intel Xeon, AVX-512): the product's defaults (held-out stop, scorer none, known share 0.3) with the anchor weight varied; the -known row is weight 0; 10 %: seeds 0-2, weights 0 and 1"
# Stop 14, issue 13's 2 % side-colour rows again on the Intel machine with today's default student (the grounding
# recipe: 2 rounds x 3 fixed epochs, scorer perturbation, no known replay, no anchors), 3 seeds
two14=(--target side-colour --out runs/bench10 --student "$default_student" --rounds 2 --epochs 3 --max-diagnoses 8
       --budgets 0.02 --no-full-pool --seeds 0,1,2)
$py benchmarks/selection.py "${two14[@]}" --strategies random,failures,oracle-map --world runs/bench6/world2 \
    --results runs/bench10/tmp
$py benchmarks/selection.py "${two14[@]}" --strategies teacher-tagmap-top3 --world runs/bench6/world --results runs/bench10/tmp
[ -e runs/bench6/world/index-map-oracle ] || cp -r runs/bench6/world2/index-map-oracle runs/bench6/world/
$py benchmarks/selection.py "${two14[@]}" --strategies random,failures,teacher-tagmap-top3,oracle-map --world runs/bench6/world \
    --report-only --results benchmarks/results/grounding-stop14 \
    --note "stop 14, Intel Xeon, today's default student: issue 13's 2 % side-colour rows again (the grounding recipe: 2 rounds x 3 fixed epochs, scorer perturbation, no known replay, no anchors)"
# Stop 15, issue 13's measure on the "-choice" targets (demo/targets.py: side-colour and corner-colour asked as a
# choice among the colours, words that lead a text search to the side skill): today's default student, the
# product's round recipe (held-out stop, scorer none) with known replay and anchors pinned off (selection
# alone), 2 and 5 % (side-colour-choice also 10 %), seeds 0-2; SmolLM2 on the pool's tag map (top 3) in a second
# process on the other store; SmolLM2 diagnosing freely at 2 % on side-colour-choice; the ceiling (--target-data:
# LoRA once on budget-many samples of the target itself) on a third copy of the world.
choice=(--out runs/bench11 --student "$default_student" --rounds 2 --epochs 20 --early-stop --scorer none --max-diagnoses 8
        --no-full-pool --seeds 0,1,2)
[ -d runs/bench6/world3 ] || { cp -r runs/bench6/world runs/bench6/world3; rm -rf runs/bench6/world3/index-map-*; }
for task in side-colour-choice corner-colour-choice; do
  $py benchmarks/selection.py --target $task "${choice[@]}" --budgets 0.02,0.05 --strategies random,failures,oracle-map \
      --world runs/bench6/world2 --results runs/bench11/tmp-$task &
  until [ -f runs/bench11/$task/zero-shot/round_00/metrics.json ]; do sleep 10; done
  $py benchmarks/selection.py --target $task "${choice[@]}" --budgets 0.02,0.05 --strategies teacher-tagmap-top3 \
      --world runs/bench6/world --results runs/bench11/tmp-$task &
  $py benchmarks/selection.py --target $task "${choice[@]}" --budgets 0.02,0.05 --strategies random --target-data \
      --teacher none --world runs/bench6/world3 --results runs/bench11/tmp-$task
  wait
done
$py benchmarks/selection.py --target side-colour-choice "${choice[@]}" --budgets 0.1 --strategies random,failures,oracle-map \
    --world runs/bench6/world2 --results runs/bench11/tmp-side-colour-choice
$py benchmarks/selection.py --target side-colour-choice "${choice[@]}" --budgets 0.02 --strategies teacher \
    --world runs/bench6/world2 --results runs/bench11/tmp-side-colour-choice
for task in side-colour-choice corner-colour-choice; do
  budgets=0.02,0.05; rows=random,failures,teacher-tagmap-top3,oracle-map
  [ $task = side-colour-choice ] && budgets=0.02,0.05,0.1 && rows=$rows,teacher
  $py benchmarks/selection.py --target $task "${choice[@]}" --budgets $budgets --target-data \
      --strategies $rows --world runs/bench6/world --report-only \
      --results benchmarks/results/choice \
      --note "stop 15 (Intel Xeon): today's default student, held-out stop, scorer none, known replay and anchors off"
done
