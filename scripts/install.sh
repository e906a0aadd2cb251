#!/usr/bin/env bash
# Create .venv and install complexity-tracker with the CPU build of torch 2.13.0 and optuna-dashboard
# (the `dashboard` extra, always installed so that the `dashboard` command a study prints works).
# Usage: scripts/install.sh [EXTRAS], e.g. `test` or `postgres,test`.  Idempotent: a second run
# only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
EXTRAS="dashboard${1:+,$1}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# torch first, pinned to the CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
    # On machines without the local CPU wheel, set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
    "${PIP[@]}" install "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
"${PIP[@]}" install -e ".[$EXTRAS]"
