"""The ``paper`` preset on a machine without a GPU asks before it trains: it would run for days.

:func:`confirm_paper_on_cpu` is called by the commands (``python -m uni_icl``, the book builder)
before any work. At ``paper``, on the CPU, with models still to train, it raises a ValueError of
one line: how many models, the estimated time, and how to go on (``UNI_ICL_CONFIRM_CPU_PAPER=1``, the
runtime's ``confirm_cpu_paper``).
``smoke`` and ``quick`` never ask, nor does a machine with a GPU, nor a run whose models are stored.

The estimate scales a measurement: the ``quick`` book grid's models took
:data:`QUICK_GRID_CORE_SECONDS` of training on one core each (README, "Measured build times"). A
job's ``cost`` (steps x batch, x4 for a transformer) is taken as proportional to its time, so the
models to train take about their cost / the quick grid's cost x that measurement, shared by the
workers. Early stopping and the paper models' larger widths move the real time either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from uni_icl.parallel import Job
from uni_icl.presets import PRESETS, Preset
from uni_icl.runtime import CONFIRM_ENV, current_runtime
from uni_icl.storage import is_stored

QUICK_GRID_CORE_SECONDS = 12_036.0  # the quick book grid's training times, summed (2-core machine, README)


def confirm_paper_on_cpu(preset: Preset, plan: Callable[[], Sequence[Job]]) -> None:
    """Raise a ValueError (one line) if the jobs of ``plan()`` would train at ``paper`` on the CPU without
    confirmation (``plan`` is called only then)."""
    runtime = current_runtime()
    if preset.name != "paper" or runtime.device.type == "cuda" or runtime.confirm_cpu_paper:
        return
    todo = [job for job in plan() if not is_stored(job.path)]
    if not todo:
        return
    workers = min(runtime.workers, len(todo))
    seconds = estimated_core_seconds(todo) / workers
    models = f"{len(todo)} model{'s' if len(todo) > 1 else ''}"
    raise ValueError(
        f"preset: paper without a GPU trains {models} on the CPU for about {_duration(seconds)} ({workers} "
        f"workers; an estimate scaled from the quick preset); to start it anyway set {CONFIRM_ENV}=1; "
        "allowed without it: smoke, quick"
    )


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} minutes"
    return f"{seconds / 3600:,.0f} hours"


def claims_plan(preset: Preset, claims: Sequence[str]) -> list[Job]:
    """Every job the chapters of ``claims`` train at ``preset`` (what ``reproduce`` trains)."""
    from uni_icl.scorecard import EXPERIMENTS

    chapters = list({id(EXPERIMENTS[claim]): EXPERIMENTS[claim] for claim in claims}.values())
    return [job for chapter in chapters for job in chapter.training_plan(preset)]


def estimated_core_seconds(jobs: Sequence[Job]) -> float:
    """Seconds of one core that ``jobs`` take to train (see the module docstring)."""
    return sum(job.cost for job in jobs) / _quick_grid_cost() * QUICK_GRID_CORE_SECONDS


def _quick_grid_cost() -> float:
    from uni_icl.experiments import digits
    from uni_icl.scorecard import CHAPTERS

    return sum(job.cost for chapter in (*CHAPTERS, digits) for job in chapter.training_plan(PRESETS["quick"]))
