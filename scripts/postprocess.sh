#!/usr/bin/env bash
# Edit the emotion of a video or a preprocessed clip dir end to end: edit -> render -> blend -> mp4.
#   scripts/postprocess.sh <video or clip dir> --emotion happy|--reference <clip dir>|--timeline "0:neutral,2:happy"
#       [--intensity 1.0] [--runs-root runs] [--manipulator RUN] [--renderer warp|warp_refine|RUN | --actor ID]
#       [--side-by-side] [--out FILE]
# The mp4 has every source frame, the source's frame rate and the source's audio stream (copied).
# Every option: scripts/postprocess.sh --help (python -m postprocessing.pipeline).
set -euo pipefail
source "$(dirname "$0")/env.sh"
if [ $# -lt 2 ] && [ "${1:-}" != "--help" ] && [ "${1:-}" != "-h" ]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
exec python -m postprocessing.pipeline "$@"
