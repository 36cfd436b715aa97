# Two commands from a fresh clone: `make demo` and `make test`. Everything installs into .venv (and .venv-vllm).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where pip finds torch. Empty (the default): the machine's pip configuration decides. On a machine whose pip uses
# the public index (pypi.org), `torch==2.13.0` there is the multi-GB CUDA build; for the CPU build run
#   make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (the same for `make test`, which passes it on to scripts/vllm-cpu.sh for .venv-vllm).
TORCH_INDEX_URL ?=
export TORCH_INDEX_URL
TORCH_INDEX := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

.PHONY: demo test lint typecheck unit integration vllm-start vllm-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned, from TORCH_INDEX_URL when set (see above); the extras then find it installed.
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX) torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,eval,server]'
	touch $@

demo: $(STAMP)
	$(BIN)/adaptive-ttc demo $(DEMO_ARGS)

test: $(STAMP)
	scripts/test.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples integrations
	$(BIN)/ruff format --check src tests benchmarks examples integrations

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit_tests --disable-socket --allow-unix-socket --allow-hosts=127.0.0.1,localhost

# Integration tests only: starts the vLLM CPU server (unless one answers already), runs tests/integration_tests.
integration: $(STAMP)
	scripts/test.sh integration

vllm-start: $(STAMP)
	scripts/vllm-cpu.sh start

vllm-stop:
	scripts/vllm-cpu.sh stop

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache .mypy_cache .ruff_cache
