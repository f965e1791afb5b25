#!/usr/bin/env bash
# Create .venv (if missing) and install what the project needs into it.
# torch: where none is installed, take the CPU build 2.13.0 first (on this project's machines
# it lies on disk); requirements.txt only asks for torch>=2.1, so nothing replaces it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${UNI_ICL_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
stamp="$VENV/.installed-$(cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # requirements.txt holds everything, the book's MathJax included
  "$PY" -m pip install -q -r requirements.txt
  "$PY" -m pip install -q --no-deps -e .
  "$PY" -m ipykernel install --sys-prefix --name python3 >/dev/null
  touch "$stamp"
fi
