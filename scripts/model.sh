#!/usr/bin/env bash
# make model: the bundled manipulator (models/spfem-toy, what scripts/postprocess.sh edits with when no run of
# yours exists) by its recipe: toy MEAD (W001, W002: the public-domain astronaut and Grace Hopper portraits) ->
# preprocess -> train (configs/experiments/model.yaml: the demo's metric, retrieval index and SCMCL manipulator,
# the manipulator trained longer) -> export. Shares its data with `make demo`; its runs are runs/model (finished
# stages are skipped on a re-run). When the folder exists already, the
# run is checked against its recorded recipe (config and training-set digest) and nothing is written;
# REPLACE=1 writes the new weights over it (do that only when the real-face panel improves: MODEL_CARD.md).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
DATA="${TOY_MEAD:-data/toy_mead}"
PROCESSED="${PROCESSED:-data/processed/toy_mead}"
RUNS="${RUNS:-runs/model}"
MODEL="${MODEL:-models/spfem-toy}"
source scripts/stage.sh

stage "toy MEAD ($DATA)" python -m preprocessing.toy_mead --out "$DATA"
# landmarks=truth: the toy set's true points, not FaceMesh's reading of them (which sees a fraction of the brows and
# lids that carry sadness, anger, fear and surprise: python -m preprocessing.toy_mead.fidelity, docs/toy_mead.md)
stage "preprocess ($PROCESSED)" python -m preprocessing.run "$DATA" train out_dir="$PROCESSED" landmarks=truth
stage "train (configs/experiments/model.yaml)" python -m common.experiment configs/experiments/model.yaml \
  data_dir="$PROCESSED" runs_root="$RUNS"
if [ -f "$MODEL/model.json" ] && [ -z "${REPLACE:-}" ]; then
  stage "check against $MODEL" python -m manipulator.export "$RUNS/manipulator/scmcl" --out "$MODEL" --check
  echo "$MODEL kept (REPLACE=1 make model writes this run's weights over it)"
else
  stage "export to $MODEL" python -m manipulator.export "$RUNS/manipulator/scmcl" --out "$MODEL"
fi
print_stage_times
echo "  total                              $SECONDS s"
echo "real-face panel of it: python -m evaluation.panel --manipulator $MODEL --out runs/panel_model"
