#!/usr/bin/env bash
# Run LangChain's standard chat-model integration suite on AdaptiveChatModel and on ChatOpenAI, against the same
# vLLM CPU server in one run, and print the pass/fail/skip counts side by side.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
scripts/vllm-cpu.sh start
export ADAPTIVE_TTC_VLLM_URL="$(scripts/vllm-cpu.sh url)" ADAPTIVE_TTC_VLLM_MODEL="$(scripts/vllm-cpu.sh model)"
export ADAPTIVE_TTC_COMPARE_OPENAI=1
for cls in TestAdaptiveChatModelIntegration TestChatOpenAIReference; do
  echo "== $cls"
  "$BIN/pytest" "tests/integration_tests/test_standard.py::$cls" -q -p no:randomly -rfE 2>&1 | tail -n 40
done
