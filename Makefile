# plmbench: `make sweep` runs the default ablation grid offline at smoke scale; `make test` runs the test suite.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXPERIMENT ?= albert
SCALE ?= smoke
ARGS ?=
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: help install test test-full sweep table bench gpu-check data lint clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, as its own step: an open range could pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install plmbench with its dev tools

test: $(STAMP) ## the test suite (offline, CPU, < 15 min on 2 cores)
	$(OFFLINE) $(BIN)/python -m pytest -m "not slow" $(ARGS)

test-full: $(STAMP) ## every test, slow ones included
	$(OFFLINE) $(BIN)/python -m pytest $(ARGS)

sweep: $(STAMP) ## run an experiment grid: make sweep [EXPERIMENT=albert SCALE=smoke ARGS='...']
	$(BIN)/plmbench sweep experiment=$(EXPERIMENT) scale=$(SCALE) $(ARGS)

table: $(STAMP) ## render results/<experiment>/table.{md,csv,png}: make table [EXPERIMENT=albert]
	$(BIN)/plmbench table experiment=$(EXPERIMENT) $(ARGS)

bench: $(STAMP) ## training-step throughput, ours vs Hugging Face (results/bench/)
	$(OFFLINE) $(BIN)/plmbench bench $(ARGS)

# No venv on a GPU machine lent without network: the python there (torch, lightning, transformers) with src/ on
# its path, plus any wheels carried in .whl/ (unpacked into .whl/site, nothing installed system-wide).
GPU_CHECK_PY = $(if $(wildcard $(BIN)/python),$(BIN)/python,PYTHONPATH=src$(if $(wildcard .whl),:.whl/site) $(PYTHON))

gpu-check: ## MFU, bf16/flash/compile equivalence, short Table 5 sweep (results/gpu_check/); tiny on CPU
	@if [ ! -x $(BIN)/python ] && ls .whl/*.whl >/dev/null 2>&1; then \
		$(PYTHON) -m pip install --quiet --no-index --no-deps --target .whl/site .whl/*.whl; fi
	$(OFFLINE) $(GPU_CHECK_PY) -m plmbench.commands.gpu_check $(ARGS)

data: $(STAMP) ## build the embedded offline corpus and proxy tasks from Debian packages
	$(BIN)/plmbench data

lint: $(STAMP) ## ruff
	$(BIN)/ruff check src tests

clean: ## remove caches, runs and results (keeps .venv and data/)
	rm -rf .cache runs results outputs multirun wandb lightning_logs .pytest_cache
