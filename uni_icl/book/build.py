"""Build the book: execute every notebook of ``_toc.yml`` (watched), then render with Jupyter Book.

``python -m uni_icl.book.build [--output DIR]`` (what ``scripts/build_book.sh`` runs):

1. The sources (``_config.yml``, ``_toc.yml``, ``book/``) are copied to ``DIR/_build/source``,
   with ``uni_icl/`` linked beside them, so pages can quote the package's code.
2. Each notebook of the table of contents is executed in a fresh kernel with ``book/`` as its
   working directory, under :mod:`uni_icl.book.execute`'s watchdog (a stalled notebook is retried
   once, then the build fails naming the notebook and the cell), and written with its outputs
   into the copy. ``UNI_ICL_BOOK_BUILD=1`` tells the notebooks they build static pages:
   no progress bars and no machine paths in the output.
3. ``jupyter-book build`` renders the copy with execution off, warnings as errors, into
   ``DIR/_build/html``.

The notebooks in ``book/`` are never written: they stay without outputs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from nbclient.exceptions import CellExecutionError

from uni_icl.book.notebook import BOOK_BUILD_ENV
from uni_icl.book.execute import ExecutionLimits, NotebookStalledError, execute_notebook

ROOT = Path(__file__).resolve().parents[2]


def toc_files(root: Path) -> list[str]:
    """Every page of ``_toc.yml`` in reading order, as paths without suffix relative to ``root``."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries: list[dict] | None) -> None:
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key))

    walk(toc.get("parts") or toc.get("chapters"))
    return pages


def stage_sources(root: Path, staged: Path) -> None:
    """Copy the book's sources to ``staged`` with notebook execution switched off in its config."""
    if staged.exists():
        shutil.rmtree(staged)
    shutil.copytree(root / "book", staged / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy2(root / "_toc.yml", staged / "_toc.yml")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (staged / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (staged / "uni_icl").symlink_to(root / "uni_icl", target_is_directory=True)


def build(output: Path, limits: ExecutionLimits, root: Path = ROOT) -> float:
    """Execute and render the book into ``output/_build/html``; returns the wall time in seconds."""
    started = time.monotonic()
    staged = output / "_build" / "source"
    stage_sources(root, staged)
    os.environ[BOOK_BUILD_ENV] = "1"  # inherited by every kernel started below
    for page in toc_files(root):
        source = root / f"{page}.ipynb"
        if not source.exists():
            continue
        print(f"executing {page}.ipynb ...", flush=True)
        seconds = execute_notebook(source, staged / f"{page}.ipynb", cwd=source.parent, limits=limits)
        print(f"executed {page}.ipynb in {seconds:.1f} s", flush=True)
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", str(staged), "--path-output", str(output), "--all", "-W", "--keep-going"]
    subprocess.run(command, check=True)
    return time.monotonic() - started


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end with one line naming the problem and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m uni_icl.book.build", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=ROOT, help="folder that receives _build/ (default: the repository)"
    )
    parser.add_argument(
        "--silence", type=float, default=ExecutionLimits.silence_s, help="seconds a cell may be silent and idle"
    )
    parser.add_argument(
        "--cell-timeout", type=float, default=ExecutionLimits.cell_timeout_s, help="seconds a cell may run"
    )
    args = parser.parse_args(argv)
    try:
        limits = ExecutionLimits(silence_s=args.silence, cell_timeout_s=args.cell_timeout)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        seconds = build(args.output.resolve(), limits)
    except NotebookStalledError as error:
        print(f"error: the book did not build: {error}", file=sys.stderr)
        return 1
    except CellExecutionError as error:
        print(f"error: a cell raised an exception, the book did not build:\n{error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        print(f"error: jupyter-book build failed (exit status {error.returncode})", file=sys.stderr)
        return 1
    print(f"book built in {seconds:.0f} s (wall time); open {args.output.resolve() / '_build' / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
