"""Execute every notebook of the book several times while another process keeps a core busy.

The condition under which a smoke build once hung (issue: "the test command always finishes").
Each round executes the notebooks of ``_toc.yml`` in order under the build's watchdog
(:mod:`uni_icl.book.execute`) and reports its wall time. Round 1 starts from an empty cache and
runs without progress bars (as the build does); later rounds load from that cache with the
progress-bar widgets on (as a live kernel does), which sends many more messages per cell.

Usage: python scripts/stress_notebooks.py [--rounds 3] [--preset smoke] [--silence 120]
The last line reads ``stress: R of R rounds finished`` (exit 0) or names the notebook and cell
that stalled (exit 1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from uni_icl.book.build import ROOT, toc_files
from uni_icl.book.execute import ExecutionLimits, NotebookStalledError, execute_notebook
from uni_icl.runtime import BOOK_BUILD_ENV

BUSY_LOOP = "while True:\n    pass"


def run_round(round_index: int, output: Path, limits: ExecutionLimits) -> float:
    os.environ[BOOK_BUILD_ENV] = "1" if round_index == 1 else "0"  # rounds 2+: live, with progress widgets
    started = time.monotonic()
    for page in toc_files(ROOT):
        source = ROOT / f"{page}.ipynb"
        if source.exists():
            seconds = execute_notebook(source, output / f"{page}.ipynb", cwd=source.parent, limits=limits)
            print(f"  round {round_index}: {page} in {seconds:.1f} s", flush=True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="smoke", choices=("smoke", "quick", "paper"))
    parser.add_argument("--silence", type=float, default=120.0)
    args = parser.parse_args()
    limits = ExecutionLimits(silence_s=args.silence)
    scratch = Path(tempfile.mkdtemp(prefix="uni_icl_stress_"))
    os.environ["UNI_ICL_PRESET"] = args.preset
    os.environ["UNI_ICL_CACHE"] = str(scratch / "cache")
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    finished = 0
    try:
        for round_index in range(1, args.rounds + 1):
            seconds = run_round(round_index, scratch / f"round{round_index}", limits)
            finished += 1
            print(f"round {round_index} finished in {seconds:.0f} s with one core kept busy", flush=True)
    except NotebookStalledError as error:
        print(f"stress: round {finished + 1} stalled: {error}")
        return 1
    finally:
        busy.kill()
        busy.wait()
    print(f"stress: {finished} of {args.rounds} rounds finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
