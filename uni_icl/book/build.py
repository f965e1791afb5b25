"""Build the book: execute every notebook of ``_toc.yml`` (watched), then render with Jupyter Book.

``python -m uni_icl.book.build [--output DIR]`` (what ``scripts/build_book.sh`` runs):

1. The sources (``_config.yml``, ``_toc.yml``, ``book/``) are copied to ``DIR/_build/source``,
   with ``uni_icl/`` linked beside them, so pages can quote the package's code.
2. Every chapter's models are trained, or loaded, at the preset of ``UNI_ICL_PRESET`` under the runtime
   of the ``UNI_ICL_*`` variables (:mod:`uni_icl.runtime`, read once, before any work), as one
   grid on all workers (:func:`~uni_icl.parallel.train_all`): no core idles at the end of one
   chapter's grid, and no page later waits, idle and silent, on a model another page trains.
3. Each notebook of the table of contents is executed in a fresh kernel with ``book/`` as its
   working directory, under :mod:`uni_icl.book.execute`'s watchdog (a stalled notebook is retried
   once, then the build fails naming the notebook and the cell), and written with its outputs
   into the copy. The kernels inherit the build's environment, so each page's ``setup()`` reads
   the build's runtime, with two more variables: ``UNI_ICL_BOOK_BUILD=1`` tells the notebooks they
   build static pages (no progress bars and no machine paths in the output), and
   ``UNI_ICL_READ_LOG`` names the read log (step 5). Pages run as many at a time as the
   thread policy allows (:func:`pages_at_once`: workers over torch threads per process, so
   never more threads than cores); the scorecard page, which reruns every claim's chapter, starts
   when their pages have finished (:func:`execute_pages`).
4. ``jupyter-book build`` renders the copy with execution off, warnings as errors, into
   ``DIR/_build/html``; the copy is then removed, also when the build fails or is stopped.
5. Every stored entry the build read is listed in the cache's read log, with a record of the
   build (:mod:`uni_icl.results`): ``python -m uni_icl results export`` ships exactly those.

Bad input (an ``--output`` that is not a folder or a new name, or lies in the cache; an unusable
cache folder; a bad preset, worker or thread count; the ``paper`` preset on a CPU without
confirmation) is one line and exit status 2 before any work; Ctrl-C or SIGTERM is one line and exit
status 130 or 143, and the same command resumes.

The notebooks in ``book/`` are never written: they stay without outputs.

The book's Sphinx extension (MathJax served offline, author-year citations) is
:mod:`uni_icl.book.sphinx_extension`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import yaml
from nbclient.exceptions import CellExecutionError

from uni_icl.book.execute import ExecutionLimits, NotebookStalledError, execute_notebook
from uni_icl.confirm import confirm_paper_on_cpu
from uni_icl.output_paths import output_folder
from uni_icl.parallel import Job, check_cluster, train_all
from uni_icl.presets import Preset, preset_from_env
from uni_icl.results import start_read_log
from uni_icl.runtime import BOOK_BUILD_ENV, READ_LOG_ENV, Runtime, current_runtime, runtime_from_env, use_runtime
from uni_icl.scorecard import BOOK_CHAPTERS, CHAPTERS
from uni_icl.stopping import exit_status, terminate_as_interrupt
from uni_icl.storage import StorageError, cache_root, check_writable
from uni_icl.validation import NonFiniteError

ROOT = Path(__file__).resolve().parents[2]
SCORECARD_PAGE = "book/99_scorecard"  # reruns every claim's chapter (reproduce): executed after their pages


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


def book_plan(preset: Preset) -> list[Job]:
    """Every model of every chapter at ``preset``."""
    return [job for chapter in BOOK_CHAPTERS for job in chapter.training_plan(preset)]


def train_book(preset: Preset) -> list[str]:
    """Train every model of every chapter at ``preset`` that is not stored, as one grid on all workers;
    returns the labels trained (none when the cache is warm)."""
    return train_all(book_plan(preset), description=f"the book's models ({preset.name})")


def pages_at_once(runtime: Runtime) -> int:
    """How many notebooks execute at a time: workers (one per core) over torch threads per kernel."""
    return max(1, runtime.workers // runtime.threads)


def _page_code(root: Path, page: str) -> str:
    cells = json.loads((root / f"{page}.ipynb").read_text())["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def scorecard_inputs(pages: list[str], root: Path = ROOT) -> set[str]:
    """The pages that run a chapter the scorecard reruns: notebooks whose code imports one of its
    modules (``from uni_icl.experiments import learnability as lrn``, ...)."""
    modules = {chapter.__name__.rsplit(".", 1)[-1] for chapter in CHAPTERS}
    found = set()
    for page in pages:
        imported = set(
            re.findall(r"^from uni_icl\.experiments import (\w+)", _page_code(root, page), flags=re.MULTILINE)
        )
        if imported & modules:
            found.add(page)
    return found


def scorecard_pages(pages: list[str], root: Path = ROOT) -> list[str]:
    """The pages that rerun every claim's chapter, in page order: the scorecard page and any page whose
    code imports the scorecard (``from uni_icl import scorecard``: the intro's verdict boxes)."""
    found = re.compile(r"^from uni_icl import scorecard\b", flags=re.MULTILINE)
    return [page for page in pages if page == SCORECARD_PAGE or found.search(_page_code(root, page))]


def execute_pages(pages: list[str], staged: Path, limits: ExecutionLimits, at_once: int, root: Path = ROOT) -> None:
    """Execute ``pages`` (paths without suffix) into ``staged``, ``at_once`` at a time.

    The scorecard pages (:func:`scorecard_pages`) rerun every claim's chapter: beside a page of one
    of them they could wait, idle and silent, on an entry that page computes (the watchdog would
    call that a stall). So they start when every page of :func:`scorecard_inputs` has finished,
    ahead of the pages still waiting, which may run beside them. Those pages run first, in page
    order, then the others. The first failure, in page order, is raised once the running pages
    finish; pages not started by then are not started.
    """
    cards = scorecard_pages(pages, root)
    inputs = scorecard_inputs([page for page in pages if page not in cards], root)
    waiting = [page for page in pages if page in inputs] + [
        page for page in pages if page not in inputs and page not in cards
    ]
    finished: set[str] = set()
    errors: dict[str, BaseException] = {}
    changed = threading.Condition()

    def next_page() -> str | None:
        with changed:
            while not errors:
                if cards and inputs <= finished:
                    return cards.pop(0)
                if waiting:
                    return waiting.pop(0)
                if not cards:
                    return None
                changed.wait()
            return None

    def execute(page: str) -> None:
        source = root / f"{page}.ipynb"
        print(f"executing {page}.ipynb ...", flush=True)

        def log(message: str) -> None:
            print(f"{page}.ipynb: {message}", flush=True)

        seconds = execute_notebook(source, staged / f"{page}.ipynb", cwd=source.parent, limits=limits, log=log)
        print(f"executed {page}.ipynb in {seconds:.1f} s", flush=True)

    def work() -> None:
        while (page := next_page()) is not None:
            try:
                execute(page)
            except BaseException as error:
                with changed:
                    errors[page] = error
                    changed.notify_all()
                return
            with changed:
                finished.add(page)
                changed.notify_all()

    # daemon threads: Ctrl-C or SIGTERM in the main thread ends the build without waiting for the pages
    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, at_once))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[min(errors, key=pages.index)]


def build(output: Path, limits: ExecutionLimits, preset: Preset, root: Path = ROOT) -> float:
    """Train the book's models, execute and render the book into ``output/_build/html`` (under the
    installed runtime); returns the wall time in seconds."""
    started = time.monotonic()
    staged = output / "_build" / "source"
    try:
        stage_sources(root, staged)
        reads = start_read_log(preset.name)  # what the pages read: what `results export` ships
        # the kernels started below inherit these; this process reads its runtime's fields instead
        os.environ[BOOK_BUILD_ENV], os.environ[READ_LOG_ENV] = "1", str(reads.log)
        runtime = replace(current_runtime(), static_pages=True, read_log=reads.log)
        with use_runtime(runtime):
            trained = train_book(preset)
        print(f"trained {len(trained)} models in {time.monotonic() - started:.0f} s", flush=True)
        pages = [page for page in toc_files(root) if (root / f"{page}.ipynb").exists()]
        execute_pages(pages, staged, limits, pages_at_once(runtime), root)
        jupyter_book = Path(sys.executable).parent / "jupyter-book"
        command = [str(jupyter_book), "build", str(staged), "--path-output", str(output), "--all", "-W", "--keep-going"]
        subprocess.run(command, check=True)
        reads.finish(time.monotonic() - started)
    finally:  # the staged copy is only needed while building: never left behind, whatever ends the build
        shutil.rmtree(staged, ignore_errors=True)
        os.environ.pop(READ_LOG_ENV, None)
    return time.monotonic() - started


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments end with one line naming the problem and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m uni_icl.book.build", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT), help="folder that receives _build/ (default: the repository)")
    parser.add_argument(
        "--silence", type=float, default=ExecutionLimits.silence_s, help="seconds a cell may be silent and idle"
    )
    parser.add_argument(
        "--cell-timeout", type=float, default=ExecutionLimits.cell_timeout_s, help="seconds a cell may run"
    )
    args = parser.parse_args(argv)
    with terminate_as_interrupt():
        try:
            return _checked_build(args)
        except KeyboardInterrupt as interrupt:
            where = str(interrupt) or "finished models and results are kept"
            print(f"interrupted: {where}; run the same command again to resume", file=sys.stderr)
            return exit_status(interrupt)


def _checked_build(args: argparse.Namespace) -> int:
    """Check every input (one line and exit status 2 if one is bad), then build; returns the exit status."""
    try:
        limits = ExecutionLimits(silence_s=args.silence, cell_timeout_s=args.cell_timeout)
        preset = preset_from_env()
        runtime = runtime_from_env()
        with use_runtime(runtime):
            output = output_folder(args.output)
            confirm_paper_on_cpu(preset, lambda: book_plan(preset))
            check_writable(cache_root())
            check_cluster(runtime)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with use_runtime(runtime):
            seconds = build(output, limits, preset)
    except (StorageError, NonFiniteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NotebookStalledError as error:
        print(f"error: the book did not build: {error}", file=sys.stderr)
        return 1
    except CellExecutionError as error:
        print(f"error: a cell raised an exception, the book did not build:\n{error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        print(f"error: jupyter-book build failed (exit status {error.returncode})", file=sys.stderr)
        return 1
    print(f"book built in {seconds:.0f} s (wall time); open {output / '_build' / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
