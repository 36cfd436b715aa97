#!/usr/bin/env bash
# The policy model for adaptive-ttc on one GPU: prefix caching (beam search re-sends prefixes), tool calling.
#   MODEL=Qwen/Qwen2.5-1.5B-Instruct PORT=8000 GPU=0 integrations/vllm/serve-policy.sh
set -euo pipefail
MODEL="${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}"
PORT="${PORT:-8000}"
export CUDA_VISIBLE_DEVICES="${GPU:-0}"
exec vllm serve "$MODEL" \
  --port "$PORT" \
  --served-model-name "$(basename "$MODEL")" \
  --enable-prefix-caching \
  --max-model-len "${MAX_MODEL_LEN:-4096}" \
  --gpu-memory-utilization "${GPU_MEMORY:-0.90}" \
  --enable-auto-tool-choice --tool-call-parser hermes \
  --enable-prompt-tokens-details
