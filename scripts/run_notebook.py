"""Execute one notebook the way the book build does (working directory book/), without saving outputs.

Usage: python scripts/run_notebook.py book/02_learnability.ipynb  (preset from $UNI_ICL_PRESET)
"""

import sys
import time
from pathlib import Path

import nbclient
import nbformat


def main(path: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    nbclient.NotebookClient(
        notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(Path(path).parent)}}
    ).execute()
    print(f"{path}: executed in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1])
