#!/usr/bin/env bash
# Train the pipeline from one experiment YAML.
#   scripts/train.sh <experiment.yaml> [key=value ...] [--plan]
# Stages (each resumes from its newest checkpoint): SCMCL metric (audio, expr, joint) -> retrieval index ->
# metric diagnosis -> manipulator -> one renderer per identity (-> optional SCMCL image-level renderer fine-tuning).
# Experiments: configs/experiments/{default,demo,tiny}.yaml. Example override: runs_root=runs/x
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ $# -lt 1 ]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
cd "$(dirname "$0")/.."
exec python -m common.experiment "$@"
