#!/usr/bin/env bash
# Run LangChain's standard chat-model integration suite on AdaptiveChatModel, on ChatOpenAI, and on ChatOpenAI
# pointed at `adaptive-ttc serve` (in front of the same server), against the same vLLM CPU server in one run, and
# print the pass/fail/skip counts side by side.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
scripts/vllm-cpu.sh start
export ADAPTIVE_TTC_VLLM_URL="$(scripts/vllm-cpu.sh url)" ADAPTIVE_TTC_VLLM_MODEL="$(scripts/vllm-cpu.sh model)"
export ADAPTIVE_TTC_COMPARE_OPENAI=1
for target in test_standard.py::TestAdaptiveChatModelIntegration test_standard.py::TestChatOpenAIReference \
  test_server_standard.py::TestChatOpenAIThroughServer; do
  echo "== $target"
  "$BIN/pytest" "tests/integration_tests/$target" -q -p no:randomly -rfE 2>&1 | tail -n 40
done
