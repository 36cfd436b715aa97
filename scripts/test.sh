#!/usr/bin/env bash
# Lint, type checks, unit tests (sockets off), then integration tests against a real vLLM CPU server.
#   scripts/test.sh               everything
#   scripts/test.sh integration   the integration tests only (what `make integration` runs)
set -euo pipefail
STAGE="${1:-all}"
case "$STAGE" in all|integration) ;; *) echo "usage: $0 [integration]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
BIN=.venv/bin
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ "$STAGE" = all ]; then
  echo "== ruff"; $BIN/ruff check src tests benchmarks examples integrations; $BIN/ruff format --check src tests benchmarks examples integrations
  echo "== mypy (strict)"; $BIN/mypy
  echo "== unit tests"
  $BIN/pytest tests/unit_tests -q --disable-socket --allow-unix-socket --allow-hosts=127.0.0.1,localhost
fi

echo "== starting the vLLM CPU server, and the same model as a pooling deployment (router features)"
trap 'scripts/vllm-cpu.sh stop; scripts/vllm-cpu.sh stop-pooling' EXIT
scripts/vllm-cpu.sh start
scripts/vllm-cpu.sh start-pooling
export ADAPTIVE_TTC_VLLM_URL="$(scripts/vllm-cpu.sh url)" ADAPTIVE_TTC_VLLM_MODEL="$(scripts/vllm-cpu.sh model)"
export ADAPTIVE_TTC_VLLM_POOLING_URL="$(scripts/vllm-cpu.sh url-pooling)"
export ADAPTIVE_TTC_REQUIRE_VLLM=1
echo "== integration tests (vLLM at $ADAPTIVE_TTC_VLLM_URL, embedded model in-process)"
# --tb=native: CPython 3.11's AST constructor can raise a spurious SystemError ("recursion depth mismatch",
# cpython#106905) when pytest parses source to format a deep traceback (the xfailed LangChain tool-calling tests
# have deep ones), which aborts the whole session as an INTERNALERROR; native tracebacks parse no source.
$BIN/pytest tests/integration_tests -q --tb=native --durations=20  # the slowest, for keeping CI short
