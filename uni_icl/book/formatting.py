"""How the chapters' pages write numbers and training records (presentation shared by the pages'
modules, :mod:`uni_icl.book.selection_page` and the others)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from uni_icl.experiments.evidence import run_columns
from uni_icl.learners import display_name


def pm(pair: Sequence[float]) -> str:
    """A signed difference and its 95% half-width: '+0.012 ± 0.034'."""
    return f"{pair[0]:+.3f} ± {pair[1]:.3f}"


def signed(values: Sequence[float]) -> str:
    """Signed values, one per seed: '+0.012, -0.004'."""
    return ", ".join(f"{value:+.3f}" for value in values)


def training_table(trainings: list[dict]) -> pd.DataFrame:
    """One row per trained model and seed of ``trainings`` (a chapter's results' ``trainings``: learner,
    train_family, an optional token layout, and the runs of :func:`uni_icl.experiments.evidence.training_record`):
    steps, best validation accuracy, the convergence test."""
    records = []
    for entry in trainings:
        name = display_name(entry["learner"]) + (f" ({entry['layout']} layout)" if entry.get("layout") else "")
        for run in entry["runs"]:
            records.append({"model": f"{name} on {entry['train_family']}", **run_columns(run)})
    return pd.DataFrame(records)
