#!/usr/bin/env bash
# The test command (README.md): lint, then the test suite, in the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${UNI_ICL_VENV:-.venv}/bin/activate"
ruff check uni_icl tests scripts
ruff format --check uni_icl tests scripts
python -m pytest "$@"
