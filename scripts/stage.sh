# Sourced by the scripts: `stage <label> <command...>` runs a command and records its wall time in `times`;
# `print_stage_times` prints them.
times=()
stage() {
  local label="$1"; shift
  echo "== $label"
  local t0=$SECONDS
  "$@"
  times+=("$(printf '%-40s %5d s' "$label" $((SECONDS - t0)))")
}
print_stage_times() {
  echo "== stage times"
  printf '  %s\n' "${times[@]}"
}
