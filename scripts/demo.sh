#!/usr/bin/env bash
# The main job on the embedded default: toy MEAD -> preprocess -> train (demo preset) -> for one held-out
# neutral clip per actor, edit to two emotions -> render -> blend -> mp4 + side-by-side video.
# Output paths and per-stage times are printed at the end. Finished stages are skipped on a re-run.
set -euo pipefail
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
stage "preprocess ($PROCESSED)" python -m preprocessing.run "$DATA" train out_dir="$PROCESSED" --preview
stage "train (configs/experiments/demo.yaml)" python -m common.experiment configs/experiments/demo.yaml \
  data_dir="$PROCESSED" runs_root="$RUNS"

outputs=()
for actor in $(python -c "import json,sys; print(' '.join(sorted({c['actor'] for c in json.load(open(sys.argv[1]))['clips'] if c['split']=='test' and c.get('emotion')=='neutral'})))" "$PROCESSED/clips.json"); do
  clip=$(python -c "import json,sys; print(sorted(c['dir'] for c in json.load(open(sys.argv[1]))['clips'] if c['split']=='test' and c.get('emotion')=='neutral' and c['actor']==sys.argv[2])[-1])" "$PROCESSED/clips.json" "$actor")
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
