#!/usr/bin/env bash
# The main job on the embedded default: toy MEAD -> preprocess -> train (demo preset: metric, retrieval index,
# SCMCL manipulator) -> for one held-out neutral clip per actor, edit to two emotions -> render with the
# training-free warp renderer -> mp4 + side-by-side video.
# Output paths and per-stage times are printed at the end. Finished stages are skipped on a re-run.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$(dirname "$0")/.."
OUT="${DEMO_OUT:-demo_out}"
DATA="${TOY_MEAD:-data/toy_mead}"
PROCESSED="${PROCESSED:-data/processed/toy_mead}"
RUNS="${RUNS:-runs/demo}"
EMOTIONS=(${DEMO_EMOTIONS:-happy angry})
mkdir -p "$OUT"
source scripts/stage.sh

stage "self-check" python -m common.selfcheck --out "$OUT"
stage "toy MEAD ($DATA)" python -m preprocessing.toy_mead --out "$DATA"
# landmarks=truth: the toy set's true points, not FaceMesh's reading of them (which sees a fraction of the brows and
# lids that carry sadness, anger, fear and surprise: python -m preprocessing.toy_mead.fidelity, docs/toy_mead.md)
stage "preprocess ($PROCESSED)" python -m preprocessing.run "$DATA" train out_dir="$PROCESSED" landmarks=truth
stage "train (configs/experiments/demo.yaml)" python -m common.experiment configs/experiments/demo.yaml \
  data_dir="$PROCESSED" runs_root="$RUNS"

outputs=()
held_out=("$PROCESSED" split=test emotion=neutral)  # per actor: its last held-out neutral clip
for actor in $(python -m preprocessing.list_clips "${held_out[@]}" field=actor); do
  clip=$(python -m preprocessing.list_clips "${held_out[@]}" actor="$actor" per_actor=last)
  for emotion in "${EMOTIONS[@]}"; do
    mp4="$OUT/${actor}_$(basename "$clip")_${emotion}.mp4"
    stage "edit $actor $clip -> $emotion" python -m postprocessing.pipeline "$PROCESSED/$clip" --emotion "$emotion" \
      --runs-root "$RUNS" --side-by-side --out "$mp4"
    outputs+=("$mp4" "${mp4%.mp4}_side_by_side.mp4")
  done
done

print_stage_times
echo "  total                              $SECONDS s"
echo "== outputs"
printf '  %s\n' "$OUT/selfcheck_turntable.mp4" "${outputs[@]}"
