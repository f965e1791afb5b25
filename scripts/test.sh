#!/usr/bin/env bash
# The test command (README.md): lint, then the test suite, in the project's virtual environment.
# The suite includes tests/test_rendering.py: it builds the whole book at the smoke preset with
# warnings as errors and opens every page in headless Chromium (Debian packages chromium and
# chromium-driver; skipped where they are missing, unless UNI_ICL_REQUIRE_BROWSER=1 as in CI).
# Arguments go to pytest (e.g. `bash scripts/test.sh tests/test_tasks.py`, or `-m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${UNI_ICL_VENV:-.venv}/bin/activate"
ruff check uni_icl tests scripts
ruff format --check uni_icl tests scripts
python -m pytest "$@"
