#!/usr/bin/env bash
# Policy and PRM on ONE GPU (e.g. an 80 GB H100): split its memory between the two servers.
set -euo pipefail
here="$(dirname "$0")"
GPU=0 GPU_MEMORY=0.30 PORT=8000 "$here/serve-policy.sh" &
GPU=0 GPU_MEMORY=0.55 PORT=8001 "$here/serve-prm.sh" &
trap 'kill 0' EXIT
wait
