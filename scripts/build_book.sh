#!/usr/bin/env bash
# The main command (README.md): build the whole book at $UNI_ICL_PRESET (default quick) into _build/html.
# First every chapter's models are trained as one grid on all workers (what is stored is loaded), then
# every notebook is executed, as many at a time as there are workers (the scorecard page last), and
# the book is rendered (warnings are errors); trained models and results come from, and go to, the
# train-or-load cache ($UNI_ICL_CACHE, default ~/.cache/uni_icl), so a rebuild is fast.
# Each notebook runs under a watchdog (uni_icl/book/execute.py): a cell that stays silent with an
# idle kernel for --silence seconds (default 180) fails the build naming the notebook and the cell,
# after one retry of that notebook. Extra arguments go to `python -m uni_icl.book.build`
# (e.g. --output /tmp/book, --silence 300, --cell-timeout 7200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="$(cd "${UNI_ICL_VENV:-.venv}" && pwd)"
. "$VENV/bin/activate"
export UNI_ICL_PRESET="${UNI_ICL_PRESET:-quick}"

# Notebooks must run on the "python3" kernel of this environment (where uni_icl is installed),
# whatever kernels the machine has elsewhere: JUPYTER_PATH is searched first.
export JUPYTER_PATH="$VENV/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
kernel_prefix="$(python - <<'PY'
import subprocess
from jupyter_client.kernelspec import KernelSpecManager

argv = KernelSpecManager().get_kernel_spec("python3").argv
print(subprocess.run([argv[0], "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True).stdout.strip())
PY
)"
if [ "$kernel_prefix" != "$(python -c 'import sys; print(sys.prefix)')" ]; then
  echo "error: the python3 kernel runs in '$kernel_prefix', not in $VENV; see: jupyter kernelspec list" >&2
  exit 1
fi
if [ -n "${MPLBACKEND:-}" ]; then
  echo "note: ignoring MPLBACKEND=$MPLBACKEND (a non-inline backend removes every figure from the book)"
  unset MPLBACKEND
fi

echo "building the book at preset $UNI_ICL_PRESET (cache: ${UNI_ICL_CACHE:-$HOME/.cache/uni_icl})"
python -m uni_icl.book.build "$@"
