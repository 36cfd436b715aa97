#!/usr/bin/env bash
# A process reward model for `--scorer prm:http://HOST:8001/v1#Qwen2.5-Math-PRM-7B`: vLLM's pooling runner,
# which answers POST /pooling (task token_classify) with one [p_negative, p_positive] pair per step tag.
#   MODEL=Qwen/Qwen2.5-Math-PRM-7B PORT=8001 GPU=1 integrations/vllm/serve-prm.sh
set -euo pipefail
MODEL="${MODEL:-Qwen/Qwen2.5-Math-PRM-7B}"
PORT="${PORT:-8001}"
export CUDA_VISIBLE_DEVICES="${GPU:-1}"
exec vllm serve "$MODEL" \
  --port "$PORT" \
  --served-model-name "$(basename "$MODEL")" \
  --runner pooling \
  --max-model-len "${MAX_MODEL_LEN:-4096}" \
  --gpu-memory-utilization "${GPU_MEMORY:-0.90}" \
  --trust-remote-code
