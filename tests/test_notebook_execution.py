"""The watched notebook executor: a stalled cell fails with its notebook and cell named, after one
retry; a long silent computation does not; outputs come back; the build never waits unbounded."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from uni_icl.book.build import (
    SCORECARD_PAGE,
    OneLineParser,
    execute_pages,
    main,
    pages_at_once,
    scorecard_inputs,
    scorecard_pages,
    toc_files,
)
from uni_icl.book.execute import ExecutionLimits, NotebookStalledError, execute_notebook
from uni_icl.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]


def notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_outputs_are_written_and_the_source_is_untouched(tmp_path: Path) -> None:
    source = notebook(tmp_path / "ok.ipynb", "print(6 * 7)")
    destination = tmp_path / "out" / "ok.ipynb"
    execute_notebook(source, destination, cwd=tmp_path, log=lambda _: None)
    executed = nbformat.read(destination, as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "42"
    assert nbformat.read(source, as_version=4).cells[0].outputs == []


def test_a_silent_idle_cell_fails_naming_notebook_and_cell_after_one_retry(tmp_path: Path) -> None:
    """The hang's signature (kernel idle, nothing sent) is caught within the stated silence."""
    source = notebook(tmp_path / "hang.ipynb", "x = 1", "import time\ntime.sleep(3600)")
    attempts: list[str] = []
    with pytest.raises(NotebookStalledError) as caught:
        execute_notebook(
            source, tmp_path / "out.ipynb", cwd=tmp_path, limits=ExecutionLimits(silence_s=3), log=attempts.append
        )
    message = str(caught.value)
    assert "hang.ipynb" in message and "cell 1" in message and "time.sleep(3600)" not in message
    assert "'import time'" in message and "idle kernel for 3 s" in message
    assert len(attempts) == 2 and all("attempt" in line for line in attempts)
    assert not (tmp_path / "out.ipynb").exists()


def test_a_silent_busy_cell_is_not_a_stall(tmp_path: Path) -> None:
    """A computation that prints nothing but keeps the kernel's CPU busy runs to the end."""
    busy = "import time\nend = time.monotonic() + 6\nwhile time.monotonic() < end:\n    sum(range(1000))\nprint('done')"
    source = notebook(tmp_path / "busy.ipynb", busy)
    execute_notebook(source, tmp_path / "out.ipynb", cwd=tmp_path, limits=ExecutionLimits(silence_s=2), log=print)
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs[0]["text"].strip() == "done"


def test_a_silent_cell_waiting_on_busy_child_processes_is_not_a_stall(tmp_path: Path) -> None:
    """Training on worker processes (the parallel trainer) leaves the kernel itself idle and silent in
    a built book: the CPU of its child processes counts as the kernel computing."""
    child = "import time\nend = time.monotonic() + 6\nwhile time.monotonic() < end:\n    sum(range(1000))"
    cell = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {child!r}], check=True)\nprint('done')"
    source = notebook(tmp_path / "workers.ipynb", cell)
    execute_notebook(source, tmp_path / "out.ipynb", cwd=tmp_path, limits=ExecutionLimits(silence_s=2), log=print)
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs[0]["text"].strip() == "done"


def test_a_cell_past_its_time_limit_fails(tmp_path: Path) -> None:
    busy = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    sum(range(1000))"
    source = notebook(tmp_path / "long.ipynb", busy)
    limits = ExecutionLimits(silence_s=30, cell_timeout_s=3)
    with pytest.raises(NotebookStalledError, match="still running after 3 s"):
        execute_notebook(source, tmp_path / "out.ipynb", cwd=tmp_path, limits=limits, attempts=1, log=print)


def test_a_cell_error_fails_at_once(tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    source = notebook(tmp_path / "error.ipynb", "raise ValueError('boom')")
    attempts: list[str] = []
    with pytest.raises(CellExecutionError, match="boom"):
        execute_notebook(source, tmp_path / "out.ipynb", cwd=tmp_path, log=attempts.append)
    assert attempts == []


@pytest.mark.parametrize("field", ["silence_s", "cell_timeout_s"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ExecutionLimits(**{field: 0})


def test_bad_build_arguments_give_one_line_and_status_2(capsys) -> None:
    assert isinstance(OneLineParser(), OneLineParser)
    assert main(["--silence", "-1"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    with pytest.raises(SystemExit) as exit_:
        main(["--silence", "soon"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_a_bad_preset_or_worker_count_gives_one_line_and_status_2_before_any_work(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    for name, value, allowed in [("UNI_ICL_PRESET", "huge", "quick"), ("UNI_ICL_WORKERS", "two", "positive integer")]:
        monkeypatch.setenv(name, value)
        assert main(["--output", str(tmp_path / "site")]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and allowed in error
        monkeypatch.delenv(name)
    assert not (tmp_path / "site").exists()


def test_pages_at_once_never_asks_for_more_threads_than_workers() -> None:
    assert pages_at_once(Runtime(workers=2)) == 2
    assert pages_at_once(Runtime(workers=2, threads=2)) == 1
    assert pages_at_once(Runtime(workers=4, threads=2)) == 2
    assert pages_at_once(Runtime(workers=1, threads=4)) == 1


def timed_page(root: Path, page: str, log: Path, seconds: float, *, imports: str = "") -> str:
    """A notebook at ``root/page.ipynb`` that appends (page, start, end) to ``log`` around a sleep,
    then runs ``imports`` in a second cell (how a page shows which chapters it runs)."""
    cell = (
        f"import time\nstart = time.time()\ntime.sleep({seconds})\n"
        f"with open({str(log)!r}, 'a') as f:\n    f.write(f'{page} {{start}} {{time.time()}}\\n')"
    )
    notebook(root / f"{page}.ipynb", cell, *([imports] if imports else []))
    return page


def intervals(log: Path) -> dict[str, tuple[float, float]]:
    return {page: (float(a), float(b)) for page, a, b in (line.split() for line in log.read_text().splitlines())}


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


@pytest.mark.parametrize("at_once", [1, 2])
def test_the_scorecard_page_starts_after_the_claim_pages_and_before_the_others(tmp_path: Path, at_once: int) -> None:
    (tmp_path / "book").mkdir()
    log = tmp_path / "times.txt"
    claim = "from uni_icl.experiments import selection"
    pages = [
        timed_page(tmp_path, "book/00_other", log, 3),
        timed_page(tmp_path, "book/01_a", log, 3, imports=claim),
        timed_page(tmp_path, "book/02_b", log, 3, imports=claim.replace("selection", "m2icl")),
        timed_page(tmp_path, SCORECARD_PAGE, log, 3),
        timed_page(tmp_path, "book/90_last", log, 3),
    ]
    assert scorecard_inputs(pages, tmp_path) == {"book/01_a", "book/02_b"}
    execute_pages(pages, tmp_path / "staged", ExecutionLimits(), at_once, root=tmp_path)
    times = intervals(log)
    first, second, card = times["book/01_a"], times["book/02_b"], times[SCORECARD_PAGE]
    assert (overlap(first, second) > 1.0) if at_once == 2 else (overlap(first, second) < 0)
    assert card[0] >= max(first[1], second[1])  # never beside a claim page
    assert card[0] < times["book/90_last"][0]  # ahead of the pages still waiting
    if at_once == 2:
        assert max(overlap(card, times[page]) for page in ("book/00_other", "book/90_last")) > 1.0
    assert all((tmp_path / "staged" / f"{page}.ipynb").exists() for page in pages)


def test_the_scorecard_inputs_are_the_claim_chapters_pages() -> None:
    pages = [page for page in toc_files(ROOT) if (ROOT / f"{page}.ipynb").exists()]
    inputs = scorecard_inputs(pages, ROOT)
    assert inputs == {page for page in pages if page.split("/")[-1][:2] in {"01", "02", "03", "04", "05", "06"}}


def test_the_scorecard_pages_are_the_intro_and_the_scorecard() -> None:
    """The intro shows every claim's verdict box (it reruns the claims, as the scorecard page does): both
    wait for the claim chapters' pages."""
    pages = [page for page in toc_files(ROOT) if (ROOT / f"{page}.ipynb").exists()]
    assert scorecard_pages(pages, ROOT) == ["book/00_intro", SCORECARD_PAGE]


def test_a_failing_page_fails_the_build_and_later_pages_do_not_start(tmp_path: Path) -> None:
    from nbclient.exceptions import CellExecutionError

    (tmp_path / "book").mkdir()
    notebook(tmp_path / "book" / "01_bad.ipynb", "raise ValueError('boom')")
    later = timed_page(tmp_path, "book/02_later", tmp_path / "times.txt", 0)
    with pytest.raises(CellExecutionError, match="boom"):
        execute_pages(["book/01_bad", later], tmp_path / "staged", ExecutionLimits(), 1, root=tmp_path)
    assert not (tmp_path / "times.txt").exists() and not (tmp_path / "staged" / f"{later}.ipynb").exists()


def test_toc_files_lists_every_notebook_in_order() -> None:
    pages = toc_files(ROOT)
    assert pages[0] == "book/00_intro"
    notebooks = sorted(path.with_suffix("").relative_to(ROOT).as_posix() for path in (ROOT / "book").glob("*.ipynb"))
    assert sorted(page for page in pages if (ROOT / f"{page}.ipynb").exists()) == notebooks


@pytest.mark.slow
def test_book_notebooks_finish_three_times_with_a_core_kept_busy() -> None:
    """Every notebook of the book, executed three times beside a busy process, finishes."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stress_notebooks.py"), "--rounds", "3"],
        capture_output=True,
        text=True,
        timeout=2400,
        cwd=ROOT,
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "stress: 3 of 3 rounds finished"
