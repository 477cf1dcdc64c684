#!/usr/bin/env bash
# Create .venv and install clicktune with everything it needs (CPU torch pinned first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an open requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==${CLICKTUNE_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "clicktune installed in .venv"
