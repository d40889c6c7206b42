# The two commands a new user needs: `make demo` (the engine's main job) and `make test` (the tests).
# Both create the virtual environment and install the project when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DATAENGINE_HOME ?= $(CURDIR)/.engine
export GX_ANALYTICS_ENABLED := False

.PHONY: demo test airflow install bootstrap-model bench clean

# sam2 is a source archive whose build imports torch and would compile a CUDA extension: the pinned torch is
# installed first, then sam2 is built against it (no isolated build environment that could fetch another torch,
# no CUDA toolkit needed); the pins are read from pyproject.toml.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet setuptools wheel $$(grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"')
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --quiet --no-build-isolation $$(grep -oE '"sam2==[^"]+"' pyproject.toml | tr -d '"')
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

## demo: initialise the embedded runtime under DATAENGINE_HOME and run the engine's main job
demo: $(VENV)/.installed
	$(BIN)/dataengine demo

## test: the whole test suite (what CI runs)
test: $(VENV)/.installed
	bash tests/prepare.sh
	$(BIN)/python -m pytest -q -ra

## airflow: the Airflow UI on the embedded runtime (http://localhost:8080), with this project's DAGs
airflow: $(VENV)/.installed
	$(BIN)/dataengine init
	eval "$$($(BIN)/dataengine env)" && PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/airflow standalone

## bootstrap-model: train sam_tiny v0 on the bootstrap recipe (phase 1: 3800 steps, 142 trained minutes on this 2-core machine; phase 2: 3400 steps, about 2 hours), resumed
## from the committed state in training/bootstrap/token-head/ for MINUTES more (default 60), then write its checkpoint to BOOTSTRAP_OUT. It does not
## replace the shipped dataengine/assets/sam_tiny_v0.pt: compare first (bench/scaling_curve.py), then copy it there to ship it.
## A fresh run: `make bootstrap-model BOOTSTRAP_STATE=/tmp/fresh/state.pt`. THREADS=1 on a machine busy with other work.
BOOTSTRAP_STATE ?= training/bootstrap/token-head/state.pt
BOOTSTRAP_OUT ?= training/bootstrap/sam_tiny_v0.pt
MINUTES ?= 60
THREADS ?= 2
bootstrap-model: $(VENV)/.installed
	$(BIN)/dataengine bootstrap-model --time-budget-minutes 0 --state $(BOOTSTRAP_STATE) --threads $(THREADS) \
		--time-limit-minutes $(MINUTES) --out $(BOOTSTRAP_OUT)

## bench: the benchmark scripts (they print ratios against the reference)
bench: $(VENV)/.installed
	$(BIN)/python bench/amg.py

clean:
	rm -rf $(DATAENGINE_HOME)
