# Activation × optimizer × depth study. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXP    ?= grid
ARGS   ?=
PYTEST_ARGS ?=
REPORT_ARGS ?=
# parallel jobs of make sweep: one per GPU that nvidia-smi lists (each job takes its own, study/devices.py), else 1
JOBS   ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU '); [ "$${n:-0}" -gt 0 ] && echo $$n || echo 1)
TEST_JOBS ?= 2
HOST   ?= 127.0.0.1
PORT   ?= 5000
URI    ?= sqlite:///$(CURDIR)/mlflow.db
ARTIFACTS ?= $(CURDIR)/mlartifacts
SERVER_ARGS ?=
# MLflow 3's job runner (GenAI jobs; 8 more processes with `mlflow server`): the study uses none
MLFLOW_JOBS ?= false
LAUNCH := $(if $(filter 1,$(JOBS)),,hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS))
TF_PIN := $(shell grep -E '^tensorflow==' requirements.txt)

.PHONY: help install data sweep smoke test test-fast lint replay report figures reproduce reproduce-all ui server bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed, found " + sys.version' 
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "nvidia-smi found: installing TensorFlow's CUDA build"; \
	  $(PY) -m pip install -q "$(subst tensorflow==,tensorflow[and-cuda]==,$(TF_PIN))"; fi
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned requirements and the package (once)

data: $(STAMP) ## make Fashion-MNIST available (download, else Debian's dataset-fashion-mnist)
	@$(PY) -m study.data || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist with apt-get"; \
	    (apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }) >/dev/null \
	    && $(PY) -m study.data; \
	  else exit 1; fi; }

sweep: data ## run preset EXP (default grid) into URI, JOBS in parallel (default: one per GPU, else 1), Hydra overrides ARGS; then the report
	$(PY) -m study.train -m experiment=$(EXP) tracking.uri=$(URI) $(LAUNCH) $(ARGS); status=$$?; \
	$(PY) scripts/make_report.py --tracking-uri $(URI) $(REPORT_ARGS) && exit $$status

report: $(STAMP) ## tables, figures and REPORT.md of the latest sweep in URI, or of FROM=<report folder> alone (REPORT_ARGS for more)
	$(PY) scripts/make_report.py $(if $(FROM),--from $(FROM),--tracking-uri $(URI)) $(REPORT_ARGS)

figures: $(STAMP) ## redraw every committed report under reports/ from its own tables (no store needed)
	@set -eo pipefail; for d in reports/*/tables/meta.json; do d=$${d%/tables/meta.json}; \
	  $(PY) scripts/make_report.py --from $$d $(REPORT_ARGS) 2>&1 | grep -E '^(report written|error|warning)'; done

reproduce: data ## rerun the sweep of FROM=reports/<folder> into reproductions/ (resumable) and compare with it
	@test -n "$(FROM)" || { echo "error: FROM=reports/<folder> is required"; exit 2; }
	$(PY) scripts/reproduce.py --from $(FROM) --jobs $(JOBS) $(REPRODUCE_ARGS)

reproduce-all: data ## make reproduce for every committed report, cheapest (shortest committed wall time) first
	@$(PY) -c 'import json, pathlib; ms = [(json.loads(p.read_text()).get("sweep/wall_time_s") or 0, p.parent.parent) for p in pathlib.Path("reports").glob("*/tables/meta.json")]; print(*[str(f) for _, f in sorted(ms)])' \
	  | tr ' ' '\n' | { status=0; while read -r d; do $(PY) scripts/reproduce.py --from $$d --jobs $(JOBS) $(REPRODUCE_ARGS) || status=1; done; exit $$status; }

smoke: $(STAMP) ## a 1-minute sweep on synthetic data (experiment=smoke), then its report
	$(MAKE) --no-print-directory sweep EXP=smoke

test: data ## run the test suite (fast and slow tests), TEST_JOBS pytest workers (default 2), pytest options PYTEST_ARGS
	@test -z "$(ARGS)" || { echo "error: ARGS holds Hydra overrides for make sweep; pytest options go in PYTEST_ARGS"; exit 2; }
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadgroup $(PYTEST_ARGS)

test-fast: data ## the tests without the `slow` marker (no sweeps, servers, launchers): the inner loop
	@test -z "$(ARGS)" || { echo "error: ARGS holds Hydra overrides for make sweep; pytest options go in PYTEST_ARGS"; exit 2; }
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadgroup -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (configured in pyproject.toml): lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

replay: $(STAMP) ## replay metrics spilled while the store was lost (unsent_metrics_*.jsonl here) into URI
	$(PY) scripts/replay_unsent.py --tracking-uri $(URI) $(FILES)

ui: $(STAMP) ## open the MLflow UI on the local store (127.0.0.1:5000; HOST=, PORT= to change)
	@$(PY) scripts/ui_link.py --tracking-uri $(URI) --host $(HOST) --port $(PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(MLFLOW_JOBS) $(VENV)/bin/mlflow ui --backend-store-uri $(URI) --host $(HOST) --port $(PORT)

server: $(STAMP) ## MLflow tracking server over URI on 127.0.0.1:5000, serving artifacts from ARTIFACTS (use tracking=server)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$(MLFLOW_JOBS) $(VENV)/bin/mlflow server --backend-store-uri $(URI) --artifacts-destination $(ARTIFACTS) \
	  --serve-artifacts --host $(HOST) --port $(PORT) $(SERVER_ARGS)

bench: data ## benchmarks: a grid cell against plain Keras, diagnostics overhead, sweep speedup with 2 jobs, report time
	$(PY) scripts/bench_cell.py
	$(PY) scripts/bench_overhead.py
	$(PY) scripts/bench_curvature.py
	$(PY) scripts/bench_sweep.py
	$(PY) scripts/bench_report.py --tracking-uri $(URI)

clean: ## remove Hydra output folders and caches (keeps .venv, mlflow.db and mlartifacts)
	rm -rf outputs multirun .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
