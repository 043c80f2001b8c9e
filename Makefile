# Two commands on a fresh machine:  `make demo` (set up + main job)  and  `make test` (set up + tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench bench-coda bench-learning

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# The small Coda recipe on the embedded synthetic organs (no download): checkpoint, exported backbone, and a
# summary line with the health verdict and the kNN monitor at step 0 and at the end.
demo: setup
	$(BIN)/organfm pretrain --config configs/small/coda.yaml $(if $(STEPS),trainer.max_steps=$(STEPS))

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/throughput.py

# The Coda ablation on real data (../shared/data): one pretraining run per arm and seed, ~12 min each on 2 cores.
bench-coda: setup
	$(BIN)/python benchmarks/coda_ablation.py --scale cpu-1k

# Does each method learn at the small scale? Every small recipe, 2 pretraining seeds (docs/results.md).
bench-learning: setup
	$(BIN)/python benchmarks/learning.py
