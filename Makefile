# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PKGS := libgl1-mesa-dri libegl1 libegl-mesa0 libgles2 libgl1 xvfb xauth xdotool ffmpeg

.PHONY: setup demo test test-fast lint bench clean system

setup: $(STAMP)

# System packages for Mesa EGL, Xvfb and ffprobe: installed when root, printed otherwise.
system:
	@if [ "$$(id -u)" = "0" ]; then \
	  if ! dpkg -s $(APT_PKGS) >/dev/null 2>&1; then \
	    echo "installing system packages: $(APT_PKGS)"; \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	  fi; \
	else \
	  dpkg -s $(APT_PKGS) >/dev/null 2>&1 || echo "not root: please run  sudo apt-get install -y $(APT_PKGS)"; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@# CPU torch wheel first where there is no CUDA, so pip never pulls the CUDA build.
	@if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q torch; \
	  else $(BIN)/pip install -q torch==2.13.0; fi; \
	fi
	@$(BIN)/pip install -q -e ".[backend,cluster,dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dreamjourney demo --out journey.mp4

# Python keeps the project's compiled bytecode (in the ignored __pycache__ folders) even where
# the environment sets PYTHONDONTWRITEBYTECODE: otherwise every pytest worker and every process
# a test starts (serve, explore, the endpoint child) compiles the project's modules again, and
# pytest rewrites every test module's asserts again (13 s against 5.6 s to collect the fast
# set, per worker, on this 2-core machine).
unexport PYTHONDONTWRITEBYTECODE

PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider

# Two pytest workers, a test file each at a time (TEST_WORKERS=0 runs them in one process).
# Two Xvfb tests that measured motion over a fixed time failed beside serve-heavy tests on the
# other worker; they now wait on the screen (see tests/test_path_editor_xvfb.py).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile

# Everything but the tests marked slow (end-to-end runs, real windows): 64-67 s on a quiet 2-core
# machine (the goal is 90 s; beside other work it took 95-104 s).
# Two pytest workers, a test file each at a time (module fixtures start once); FAST_WORKERS=0
# runs them in one process.
FAST_WORKERS ?= 2
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" -n $(FAST_WORKERS) --dist loadfile

# ruff, then mypy on protocol/, backend/ and explorer/ (configured in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
