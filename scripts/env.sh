# Sourced by every script: run the project's own Python environment from any shell. The repository's .venv
# (made by `make setup`) comes first on PATH; without it, the active `python` must have the project's packages
# (a conda env from environment.yml), or the script stops with one line saying how to get them.
_spfem_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$_spfem_root/.venv/bin/python" ]; then
  export PATH="$_spfem_root/.venv/bin:$PATH"
elif ! python -c "import av, numpy, omegaconf, tqdm" >/dev/null 2>&1; then
  echo "$(basename "$0"): the project's Python environment is missing: run 'make setup' in $_spfem_root (creates .venv), or activate the conda env from environment.yml" >&2
  exit 2
fi
