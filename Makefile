# dsm5_hpo — one command per habit. `make` (or `make help`) lists them.
#
# Versions come from poetry.lock only. `make install` installs them with pip, which is fast here:
# torch first (the CPU build on a machine without a GPU when pip is configured with one, e.g. a
# local wheel directory or TORCH_PIP_ARGS; the CUDA build where nvidia-smi exists), then every
# other locked package with --no-deps, then this project in editable mode, then `pip check`.

SHELL := /bin/sh
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
ARGS ?=
MLFLOW_PORT ?= 5000
# The UIs listen on loopback only unless told otherwise (they expose every metric and param).
MLFLOW_HOST ?= 127.0.0.1
DASHBOARD_PORT ?= 8080
DASHBOARD_HOST ?= 127.0.0.1
# make predict INPUT=posts.csv [OUTPUT=predictions.jsonl] [MODEL=experiments/study_<uuid>/best_model]
INPUT ?=
OUTPUT ?=
MODEL ?=
# make dashboard / report / status: one study (default: the newest)
STUDY ?=
# Extra pip options for the torch step only, e.g. a CPU-only index on a machine without a GPU.
TORCH_PIP_ARGS ?=
# Poetry for `make lock`: the project's wrapper (../shared/tools/poetry) run by a Python that has
# Poetry installed (POETRY_PYTHON), or any plain `poetry`: make lock POETRY=poetry
POETRY_PYTHON ?= python3
POETRY_WRAPPER ?= ../shared/tools/poetry
POETRY ?= $(if $(wildcard $(POETRY_WRAPPER)),$(POETRY_PYTHON) $(POETRY_WRAPPER),poetry)

BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
LOCK_TOOL := scripts/lock_requirements.py
LINT_PATHS := $(wildcard src tests scripts benchmarks)

.PHONY: help install train resume evaluate predict status report cleanup sync bench mlflow-ui dashboard test test-fast \
	lint format lock clean clean-all

help: ## List the targets
	@echo "usage: make <target> [ARGS='hydra.overrides or --flags']"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "}; {printf "  %-15s %s\n", $$1, $$2}'

install: $(STAMP) ## Create the venv (VENV=.venv) and install the locked versions, unless up to date

$(STAMP): pyproject.toml poetry.lock $(LOCK_TOOL)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), f"Python 3.11 or 3.12 needed, not {sys.version.split()[0]}"'
	$(PY) $(LOCK_TOOL) --groups main,dev > $(VENV)/requirements-all.txt
	$(PY) $(LOCK_TOOL) --groups main,dev --without-torch > $(VENV)/requirements-no-torch.txt
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo ">>> nvidia-smi found: installing the CUDA build of $$($(PY) $(LOCK_TOOL) --only torch)"; \
	else \
		echo ">>> no GPU: installing the CPU build of $$($(PY) $(LOCK_TOOL) --only torch) if pip offers one"; \
	fi
	$(PIP) install $(TORCH_PIP_ARGS) -c $(VENV)/requirements-all.txt "$$($(PY) $(LOCK_TOOL) --only torch)"
	$(PIP) install --quiet --no-deps -r $(VENV)/requirements-no-torch.txt
	$(PIP) install --quiet --no-deps -e .
	$(PIP) check
	@$(PY) -c 'import torch; print(">>> torch", torch.__version__, "cuda available:", torch.cuda.is_available())'
	@touch $@

train: $(STAMP) ## Start a study with configs/hpo_study.yaml (ARGS: Hydra overrides)
	$(PY) -m dsm5_hpo.cli.train --config configs/hpo_study.yaml $(ARGS)

resume: $(STAMP) ## Continue the newest interrupted study (ARGS="--study-id ID" for another one)
	$(PY) -m dsm5_hpo.cli.train --resume $(ARGS)

evaluate: $(STAMP) ## Evaluate the study's best model on the test split (JSON report)
	$(PY) -m dsm5_hpo.cli.evaluate $(ARGS)

predict: $(STAMP) ## Criteria + evidence for new posts: INPUT=posts.csv|.jsonl|.txt [OUTPUT=out.jsonl] [MODEL=dir]
	@test -n "$(INPUT)" || { echo "usage: make predict INPUT=posts.csv [OUTPUT=predictions.jsonl] [MODEL=experiments/study_<uuid>/best_model]" >&2; exit 2; }
	$(PY) -m dsm5_hpo.cli.predict --input "$(INPUT)" $(if $(OUTPUT),--output "$(OUTPUT)") $(if $(MODEL),--model "$(MODEL)") $(ARGS)

status: $(STAMP) ## Table of the studies, or of one study's trials (STUDY=ID or STUDY=latest); safe while one runs
	$(PY) -m dsm5_hpo.cli.status $(if $(STUDY),--study-id $(STUDY)) $(ARGS)

report: $(STAMP) ## Redraw a study's plots and summary_report.json (STUDY=ID, default the newest)
	$(PY) -m dsm5_hpo.cli.report $(if $(STUDY),--study-id $(STUDY)) $(ARGS)

cleanup: $(STAMP) ## List checkpoints the retention policy lets go, and leftovers (APPLY=1 deletes them)
	$(PY) -m dsm5_hpo.cli.cleanup $(if $(APPLY),--apply) $(ARGS)

sync: $(STAMP) ## Send to MLflow the metrics earlier runs left in experiments/tracking_outbox (ARGS=overrides)
	$(PY) -m dsm5_hpo.cli.sync $(ARGS)

bench: $(STAMP) ## Run every benchmark, figures into benchmarks/results.json (QUICK=1: smoke runs)
	$(PY) benchmarks/run_all.py $(if $(QUICK),--quick)

mlflow-ui: $(STAMP) ## MLflow UI on experiments/mlflow_db (MLFLOW_HOST=127.0.0.1 MLFLOW_PORT=5000)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///experiments/mlflow_db/mlflow.db --host $(MLFLOW_HOST) --port $(MLFLOW_PORT) $(ARGS)

dashboard: $(STAMP) ## optuna-dashboard on a study (STUDY=ID, default the newest; DASHBOARD_HOST/DASHBOARD_PORT)
	$(PY) -m dsm5_hpo.cli.dashboard $(if $(STUDY),--study-id $(STUDY)) --host $(DASHBOARD_HOST) --port $(DASHBOARD_PORT) $(ARGS)

# The core packages must stay at >= 80 % line+branch coverage (the seed's target).
CORE_COVERAGE := */dsm5_hpo/training/*,*/dsm5_hpo/models/*,*/dsm5_hpo/data/*,*/dsm5_hpo/hpo/*

test: $(STAMP) ## Run the whole suite with coverage, as CI does (fails when no test runs or core coverage < 80 %)
	$(PY) -m pytest --cov=dsm5_hpo --cov-report=term-missing --cov-report=xml --durations=25 $(ARGS)
	@echo ">>> coverage of training, models, data and hpo (must be >= 80 %):"
	$(PY) -m coverage report --include='$(CORE_COVERAGE)' --fail-under=80 | grep -E '^TOTAL'

test-fast: $(STAMP) ## Unit, property and contract tests only (no integration)
	$(PY) -m pytest -m "not integration" $(ARGS)

lint: $(STAMP) ## ruff check + ruff format --check + mypy (strict on src) + the import direction
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy src
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_layers.py  # imports point down only (README, Architecture)

format: $(STAMP) ## Format the code and apply ruff's safe fixes
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

lock: ## Re-resolve poetry.lock (needs Poetry: POETRY_PYTHON=<python with poetry> or POETRY=poetry)
	$(POETRY) lock

clean: ## Remove caches and build output (keeps experiments/ and the venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis htmlcov coverage.xml .coverage .coverage.* \
		build dist src/*.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

clean-all: clean ## clean, and remove the venv too
	rm -rf $(VENV)

# ---------------------------------------------------------------------------- Docker (GPU image)
# docker/Dockerfile and docker/docker-compose.yml; README "Docker". The image's user takes the host
# user's uid/gid, so that experiments/ stays writable from both sides (1000 when make runs as root:
# the image never runs as root). DSM5_EXPERIMENTS_DIR / DSM5_DATA_DIR (absolute paths) move the mounts.
.PHONY: docker-build docker-train docker-resume docker-shell docker-workers
DOCKER ?= docker
N ?= 2
DOCKER_UID := $(if $(filter 0,$(shell id -u)),1000,$(shell id -u))
DOCKER_GID := $(if $(filter 0,$(shell id -g)),1000,$(shell id -g))
DOCKER_COMPOSE := APP_UID=$(DOCKER_UID) APP_GID=$(DOCKER_GID) $(DOCKER) compose -f docker/docker-compose.yml
# Created here, not by Docker: a bind-mount folder Docker creates belongs to root.
DOCKER_EXPERIMENTS := mkdir -p $(or $(DSM5_EXPERIMENTS_DIR),experiments)

docker-build: ## Build the GPU image (locked versions, CUDA torch, non-root user)
	$(DOCKER_COMPOSE) build trainer

docker-train: ## make train in the GPU container (ARGS: Hydra overrides; output in experiments/)
	$(DOCKER_EXPERIMENTS)
	$(DOCKER_COMPOSE) run --rm trainer python -m dsm5_hpo.cli.train --config configs/hpo_study.yaml $(ARGS)

docker-resume: ## make resume in the GPU container (ARGS="--study-id ID" for another study)
	$(DOCKER_EXPERIMENTS)
	$(DOCKER_COMPOSE) run --rm trainer python -m dsm5_hpo.cli.train --resume $(ARGS)

docker-shell: ## A bash shell in the GPU container, with the same mounts
	$(DOCKER_EXPERIMENTS)
	$(DOCKER_COMPOSE) run --rm trainer bash

docker-workers: ## PostgreSQL, an MLflow server and N GPU workers sharing them (N=2)
	$(DOCKER_EXPERIMENTS)
	$(DOCKER_COMPOSE) --profile scale up --scale worker=$(N) postgres mlflow worker
