#!/usr/bin/env bash
# The main job on embedded defaults: install, then `clicktune demo` (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
exec .venv/bin/clicktune demo "$@"
