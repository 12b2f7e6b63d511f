#!/usr/bin/env bash
# The method comparison of the evaluation suite, on the demo's data and runs (run `make demo` first):
# emotion classifier (train split only) -> NED-baseline and SCMCL manipulators, one run per seed, demo budget
# -> python -m evaluation.run over the reference settings -> <out>/report.md + report.json.
# Every stage resumes: finished manipulator runs are not retrained, finished outputs are not re-evaluated.
# Environment: SEEDS ("1 2 3"), SETTINGS ("same_id cross_id label"), PROCESSED, RUNS (the demo's runs root),
# RENDERERS ("warp", or a folder of neural renderer runs such as runs/demo/renderer), EVAL_RUNS (where the
# comparison's runs go), OUT (report folder); extra arguments go to evaluation.run
# (e.g. --arcface PATH --syncnet PATH --inception PATH --device cuda).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
PROCESSED="${PROCESSED:-data/processed/toy_mead}"
RUNS="${RUNS:-runs/demo}"
EVAL_RUNS="${EVAL_RUNS:-runs/eval}"
OUT="${OUT:-$EVAL_RUNS/report}"
SEEDS=(${SEEDS:-1 2 3})
SETTINGS=(${SETTINGS:-same_id cross_id label})
RENDERERS="${RENDERERS:-warp}"

needs=("$PROCESSED/clips.json" "$RUNS/metric/joint")
[ "$RENDERERS" = warp ] || needs+=("$RENDERERS")
for need in "${needs[@]}"; do
  if [ ! -e "$need" ]; then
    echo "compare: $need is missing; run 'make demo' first (or set PROCESSED / RUNS to your own)" >&2
    exit 2
  fi
done

source scripts/stage.sh

if [ ! -f "$EVAL_RUNS/classifier/classifier.pt" ]; then
  stage "emotion classifier" python -m evaluation.classifier --data "$PROCESSED" --out "$EVAL_RUNS/classifier"
fi
specs=()
for method in ned_baseline scmcl; do
  runs=()
  for seed in "${SEEDS[@]}"; do
    name="${method}_s${seed}"
    stage "manipulator $name" python -m manipulator.train --config "configs/manipulator/$method.yaml" \
      --config configs/manipulator/demo.yaml engine.runs_root="$EVAL_RUNS" engine.name="$name" engine.seed="$seed" \
      data_dir="$PROCESSED" scmcl.metric_run="$RUNS/metric/joint"
    runs+=("$EVAL_RUNS/manipulator/$name")
  done
  specs+=("$method=$(IFS=,; echo "${runs[*]}")")
done
stage "evaluation (${SETTINGS[*]})" python -m evaluation.run --runs "${specs[@]}" --renderers "$RENDERERS" \
  --classifier "$EVAL_RUNS/classifier" --setting "${SETTINGS[@]}" --out "$OUT" "$@"

print_stage_times
echo "report: $OUT/report.md"
