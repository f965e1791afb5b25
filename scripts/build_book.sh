#!/usr/bin/env bash
# The main command (README.md): run the experiments at $UNI_ICL_PRESET (default quick).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${UNI_ICL_VENV:-.venv}/bin/activate"
export UNI_ICL_PRESET="${UNI_ICL_PRESET:-quick}"
python -m uni_icl run learnability
