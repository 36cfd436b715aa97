# Two commands from a fresh clone: `make demo` and `make test`. Everything installs into .venv (and .venv-vllm).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration vllm-start vllm-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a looser pin would pull a multi-GB CUDA build on a bare machine.
	$(BIN)/python -m pip install --quiet torch==2.13.0
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
	$(BIN)/pytest tests/unit_tests --disable-socket --allow-unix-socket

vllm-start: $(STAMP)
	scripts/vllm-cpu.sh start

vllm-stop:
	scripts/vllm-cpu.sh stop

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache .mypy_cache .ruff_cache
