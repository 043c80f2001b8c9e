# Two commands on a fresh machine:  `make demo` (set up + main job)  and  `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench bench-coda

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# Coda on the embedded synthetic organs (no download): checkpoint, exported backbone, one-line summary.
demo: setup
	$(BIN)/organfm pretrain --config configs/coda.yaml trainer.max_steps=$(or $(STEPS),96)

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/throughput.py

# The Coda ablation on real data (../shared/data): one pretraining run per arm and seed, ~12 min each on 2 cores.
bench-coda: setup
	$(BIN)/python benchmarks/coda_ablation.py --scale cpu-1k
