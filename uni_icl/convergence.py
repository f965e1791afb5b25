"""Convergence you can check: did a model finish training, judged from its validation curve?

:func:`convergence` fits a least-squares line to the last quarter of the evaluations (at least
``MIN_POINTS``; the validation episodes are the same at every evaluation) and takes the gain over
that span: the model passes when the upper 95% bound of the gain (t interval on the slope) is below
a tolerance. A flat curve passes, a curve still rising by more than the tolerance per quarter
fails, and so does a curve too short to tell. :func:`~uni_icl.training.train` can stop on it
(``TrainConfig.stop_tolerance``), and the chapters report it per model and seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import stdtrit  # the Student-t quantile, without importing scipy.stats (1.4 s)

MIN_POINTS = 5  # evaluations the convergence line is fitted to, at least


@dataclass(frozen=True)
class Convergence:
    """The convergence test's result: the fitted gain over the last quarter and its upper 95% bound."""

    converged: bool
    gain: float  # validation-score gain over the fitted span, from the least-squares line
    upper: float  # its upper 95% bound (inf when too few evaluations)
    span: int  # steps covered by the fitted evaluations
    tolerance: float


def convergence(steps: Sequence[int], scores: Sequence[float], tolerance: float) -> Convergence:
    """Fit a line to the last quarter (at least ``MIN_POINTS``) of the validation curve; pass when the
    upper 95% bound of its gain over that span is below ``tolerance`` (scores: higher is better)."""
    if len(steps) != len(scores):
        raise ValueError(f"steps, scores: expected equal lengths, got {len(steps)} and {len(scores)}")
    count = max(MIN_POINTS, math.ceil(len(steps) / 4))
    if len(steps) < count:
        return Convergence(False, math.nan, math.inf, 0, tolerance)
    x = np.asarray(steps[-count:], dtype=np.float64)
    y = np.asarray(scores[-count:], dtype=np.float64)
    centred = x - x.mean()
    slope = float(centred @ (y - y.mean()) / (centred @ centred))
    residuals = y - y.mean() - slope * centred
    stderr = math.sqrt(float(residuals @ residuals) / (count - 2) / float(centred @ centred))
    span = float(x[-1] - x[0])
    gain = slope * span
    upper = gain + stdtrit(count - 2, 0.975) * stderr * span
    return Convergence(bool(upper < tolerance), float(gain), float(upper), int(span), tolerance)
