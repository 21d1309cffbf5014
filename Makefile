# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build for tests/CI; for GPUs: make TORCH_SPEC='torch' (a CUDA build) ...
TORCH_SPEC ?= torch==2.13.0
DURATION ?=
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test unit integration bench eval chaos venv data model sentiment schemas lint clean peers-env

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

.data/ml-100k/ml-100k.inter: | $(VENV)/.installed
	$(PY) -m model.data fetch .data

data: .data/ml-100k/ml-100k.inter

# The recommendation model `make run` serves: a fine-tuned version, trained once (~3 min on
# 2 cores, with a progress bar) and kept under .data/models (instructrec/served.py);
# `make eval` evaluates that same version. INSTRUCTREC_MODEL_DIR set explicitly wins
# (e.g. the packaged MiniLM's directory for zero-shot).
.data/models/LATEST: | $(VENV)/.installed .data/ml-100k/ml-100k.inter
	$(PY) -m instructrec train --out .data/models

model: .data/models/LATEST

# The headline sentiment model the alerts need: trained once (~1.5 min on 2 cores), kept
# under .data/models/sentiment. `make run ALERTS=0` runs without it (and without alerts).
ALERTS ?= 1
.data/models/sentiment/LATEST: | $(VENV)/.installed
	$(PY) -m instructrec train-sentiment --out .data/models/sentiment

sentiment: .data/models/sentiment/LATEST

run: venv data $(if $(filter 1,$(ALERTS)),sentiment) $(if $(INSTRUCTREC_MODEL_DIR),,model)
	$(if $(INSTRUCTREC_MODEL_DIR),,INSTRUCTREC_MODEL_DIR=$(CURDIR)/.data/models) \
	$(PY) -m instructrec run $(if $(DURATION),--duration $(DURATION)) $(if $(filter 1,$(ALERTS)),,--no-alerts) $(RUN_ARGS)

test: venv data peers-env
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv data
	$(PY) -m instructrec bench $(BENCH_ARGS)

chaos: venv data
	$(PY) -m instructrec chaos $(CHAOS_ARGS)

# RecBole's environment for the peers in `make eval`: the `peers` extra of pyproject.toml
# and the same CPU torch, kept apart from ours (RecBole needs numpy < 2).
PEERS_VENV := .venv-recbole
PEERS_PY := $(PEERS_VENV)/bin/python
$(PEERS_VENV)/.installed: pyproject.toml
	test -x $(PEERS_PY) || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PEERS_PY) -m pip install --quiet --disable-pip-version-check $$($(PYTHON) -c \
	  "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['project']['optional-dependencies']['peers']))")
	touch $@

peers-env: $(PEERS_VENV)/.installed

eval: venv data peers-env
	$(PY) -m instructrec eval $(EVAL_ARGS)

unit: venv data
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: venv data
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

schemas: venv
	$(PY) -m schemas.export

lint: venv
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy instructrec schemas streams workers model

clean:
	rm -rf $(VENV) $(PEERS_VENV) .data .pytest_cache .mypy_cache .ruff_cache *.egg-info
