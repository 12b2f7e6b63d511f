#!/usr/bin/env bash
# Preprocess videos into clip dirs.
#   scripts/preprocess.sh <input> <train|test|reference> [--preview] [key=value ...]
# <input>: a MEAD-layout root (toy or real), a folder of videos, or one video.
# Examples:
#   scripts/preprocess.sh data/toy_mead train out_dir=data/processed/toy_mead
#   scripts/preprocess.sh my_video.mp4 test out_dir=data/processed/mine basis_file=data/processed/toy_mead/face_model_mesh.npz
# Several machines/GPUs: torchrun --nproc_per_node N -m preprocessing.run <input> <mode> ...
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ $# -lt 2 ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
exec python -m preprocessing.run "$@"
