"""The one interface every chapter module implements (:mod:`uni_icl.experiments.learnability`, ...).

A chapter module is the object: its module-level ``CLAIMS`` and functions satisfy
:class:`Chapter` structurally, so :mod:`uni_icl.scorecard` and the book handle every chapter alike.
The science each chapter decides with (rule text, ``decide_*``, evidence) lives beside it in
:mod:`uni_icl.experiments.rules`; verdicts are built with
:func:`uni_icl.experiments.evidence.gated_verdict`. What a page shows in words and tables, the
explanation of a verdict included, is presentation: ``uni_icl.book.<chapter>_page``
(:data:`uni_icl.book.scorecard_page.EXPLAIN` maps each claim to its explanation).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from uni_icl.parallel import Job
from uni_icl.presets import Preset
from uni_icl.verdicts import ClaimVerdict


@runtime_checkable
class Chapter(Protocol):
    """What a chapter offers: the claims it decides, its trainings, its run, its verdicts."""

    CLAIMS: tuple[str, ...]  # the claim ids it decides (empty for a chapter that decides none)

    def training_plan(self, preset: Preset) -> list[Job]:
        """Every model its ``run`` trains, as jobs for :func:`uni_icl.parallel.train_all`."""
        ...

    def run(self, preset: Preset, *, progress: bool = True) -> Any:
        """Train-or-load and evaluate everything the chapter shows; returns its results."""
        ...

    def verdicts(self, results: Any) -> list[ClaimVerdict]:
        """The rules applied to ``results`` (pure: nothing is stored)."""
        ...
