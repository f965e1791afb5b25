#!/usr/bin/env bash
# CI's check of the real book (README.md, "Shipped results"): when the shipped quick results are
# current with the code, build the quick book from them (nothing trains) into a temporary folder,
# open every page in headless Chromium (tests/test_rendering.py on that build), and retrain two
# small shipped models from scratch to check them (results verify). When some entries are stale,
# say so in one line and skip: rebuilding them takes hours (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${UNI_ICL_VENV:-.venv}/bin/activate"
export UNI_ICL_PRESET=quick
if [ ! -f results/quick/manifest.json ]; then
  echo "shipped results: none under results/quick; the quick book is not checked"
  exit 0
fi
export UNI_ICL_CACHE="${UNI_ICL_CACHE:-$(mktemp -d)}/shipped-check"
status="$(python -m uni_icl results status --preset quick)"
echo "$status"
if ! echo "$status" | tail -n 1 | grep -q "every chapter is current"; then
  echo "shipped results: stale for this code ($(echo "$status" | tail -n 1)); the quick book is not checked, rerun scripts/build_book.sh and 'python -m uni_icl results export'"
  exit 0
fi
out="$(mktemp -d)"
started=$(date +%s)
bash scripts/build_book.sh --output "$out"
echo "quick book built from the shipped results in $(( $(date +%s) - started )) s"
UNI_ICL_BOOK_HTML="$out/_build/html" python -m pytest -q tests/test_rendering.py
python -m uni_icl results verify --preset quick --sample 2 --max-seconds 60
