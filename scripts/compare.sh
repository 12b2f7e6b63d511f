#!/usr/bin/env bash
# The method comparison of the evaluation suite, on the demo's data and runs (run `make demo` first):
# retrieval index of the demo's metric (if missing or stale) -> emotion classifier (train split only) -> manipulators,
# one run per seed, demo budget: NED baseline, SCMCL's full objective (paired + correlation, lambda_corr=1 from
# step CORR_START, its gradient capped at the paired term's),
# and the ablations paired-only (lambda_corr=0: the default configs/manipulator/scmcl.yaml) and corr-only
# (lambda_paired=0) -> python -m evaluation.run -> <out>/report.md + report.json, with the reference
# rows (source, reconstruction, target) in every table. NED and SCMCL are evaluated in every setting, the
# ablations in ABLATION_SETTINGS.
# Every stage resumes: finished manipulator runs are not retrained, finished outputs are not re-evaluated.
# Environment: SEEDS ("1 2 3"), CORR_START (1000), SETTINGS ("same_id cross_id label"), ABLATION_SETTINGS ("label"; "" drops the
# ablations), PROCESSED, RUNS (the demo's runs root), RENDERERS ("warp", or a folder of neural renderer runs
# such as runs/demo/renderer), EVAL_RUNS (where the comparison's runs go), OUT (report folder); extra arguments
# go to evaluation.run (e.g. --arcface PATH --syncnet PATH --inception PATH --device cuda).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
PROCESSED="${PROCESSED:-data/processed/toy_mead}"
RUNS="${RUNS:-runs/demo}"
EVAL_RUNS="${EVAL_RUNS:-runs/eval}"
OUT="${OUT:-$EVAL_RUNS/report}"
SEEDS=(${SEEDS:-1 2 3})
SETTINGS=(${SETTINGS:-same_id cross_id label})
ABLATION_SETTINGS="${ABLATION_SETTINGS-label}"
RENDERERS="${RENDERERS:-warp}"
METRIC="$RUNS/metric/joint"

needs=("$PROCESSED/clips.json" "$METRIC")
[ "$RENDERERS" = warp ] || needs+=("$RENDERERS")
for need in "${needs[@]}"; do
  if [ ! -e "$need" ]; then
    echo "compare: $need is missing; run 'make demo' first (or set PROCESSED / RUNS to your own)" >&2
    exit 2
  fi
done

source scripts/stage.sh

# the index must be the demo metric's current checkpoint's (the SCMCL runs refuse another); built when missing
# or stale
if ! python -c "import sys; from manipulator.metric.index import RetrievalIndex, default_index_dir as d
RetrievalIndex(d(sys.argv[1], sys.argv[2])).check_metric(sys.argv[2])" "$PROCESSED" "$METRIC" 2>/dev/null; then
  stage "retrieval index" python -m manipulator.metric.index data_dir="$PROCESSED" metric_run="$METRIC"
fi
if [ ! -f "$EVAL_RUNS/classifier/classifier.pt" ]; then
  stage "emotion classifier" python -m evaluation.classifier --data "$PROCESSED" --out "$EVAL_RUNS/classifier"
fi
# name, manipulator config, overrides
# The full objective and corr-only train on the demo metric whatever its diagnosis says (allow_failing_metric,
# recorded in their checkpoints): the comparison measures them; the report prints the metric's diagnosis.
# The full objective switches its correlation term on halfway (fine-tuning the paired-only manipulator of its
# first half, at equal steps); corr-only has no paired term to cap its gradient by.
corr="scmcl.lambda_corr=1 scmcl.allow_failing_metric=true"
methods=("ned_baseline ned_baseline" "scmcl scmcl $corr scmcl.corr_start=${CORR_START:-1000}")
if [ -n "$ABLATION_SETTINGS" ]; then
  methods+=("paired_only scmcl scmcl.lambda_corr=0" "corr_only scmcl scmcl.lambda_paired=0 $corr scmcl.corr_max_grad_ratio=null")
fi
specs=()
for entry in "${methods[@]}"; do
  read -r method config overrides <<< "$entry"  # overrides: the rest of the line
  runs=()
  for seed in "${SEEDS[@]}"; do
    name="${method}_s${seed}"
    stage "manipulator $name" python -m manipulator.train --config "configs/manipulator/$config.yaml" \
      --config configs/manipulator/demo.yaml engine.runs_root="$EVAL_RUNS" engine.name="$name" engine.seed="$seed" \
      data_dir="$PROCESSED" scmcl.metric_run="$METRIC" ${overrides:-}
    runs+=("$EVAL_RUNS/manipulator/$name")
  done
  only=""
  case "$method" in paired_only|corr_only) only="@${ABLATION_SETTINGS// /+}" ;; esac
  specs+=("$method$only=$(IFS=,; echo "${runs[*]}")")
done
if [ ! -f "$METRIC/diagnosis.json" ]; then
  stage "metric diagnosis" python -m manipulator.metric.diagnose "$METRIC" data_dir="$PROCESSED"
fi
stage "evaluation (${SETTINGS[*]})" python -m evaluation.run --runs "${specs[@]}" --renderers "$RENDERERS" \
  --classifier "$EVAL_RUNS/classifier" --setting "${SETTINGS[@]}" --out "$OUT" "$@"

print_stage_times
python -c "import json, sys; from manipulator.metric.diagnose import format_report
print(format_report(json.load(open(sys.argv[1]))))" "$METRIC/diagnosis.json"
echo "report: $OUT/report.md"
