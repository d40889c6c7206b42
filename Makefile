# The two commands a new user needs: `make demo` (the engine's main job) and `make test` (the tests).
# Both create the virtual environment and install the project when it is missing or out of date.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DATAENGINE_HOME ?= $(CURDIR)/.engine
export GX_ANALYTICS_ENABLED := False

.PHONY: demo test airflow install bootstrap-model bench clean

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
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

## bootstrap-model: retrain sam_tiny v0 from scratch within 60 minutes on this machine (its step times are measured
## first; the shipped v0's fixed 1800-step recipe: add `--time-budget-minutes 0`)
bootstrap-model: $(VENV)/.installed
	$(BIN)/dataengine bootstrap-model --out dataengine/assets/sam_tiny_v0.pt

## bench: the benchmark scripts (they print ratios against the reference)
bench: $(VENV)/.installed
	$(BIN)/python bench/amg.py

clean:
	rm -rf $(DATAENGINE_HOME)
