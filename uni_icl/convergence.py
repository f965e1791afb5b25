"""Convergence you can check: did a model finish training, judged from its validation curve?

Two tests. :func:`remaining_gain` is the one the claims' verdicts read (fixed budgets, no stopping):
learning curves here rise like power laws in the number of steps, so it measures the gain per
*doubling* of the budget, fitting the score against log2(step) over the last two doublings
([T/4, T]) with a t interval on the slope. If the gain per doubling does not grow (true of power
laws and of exponential approach alike), the next ``HORIZON_DOUBLINGS`` doublings (to 8x the
budget) gain at most that many times the slope's upper 95% bound: the remaining-gain bound. A run
is converged when that bound is below the margin. It is calibrated on the budget ladder's curves
(:func:`calibration`): of the points it calls converged, the share whose later gain stayed below the
margin. It is not a stopping rule, so it does not pass by construction.

:func:`convergence`, the older test, fits a least-squares line to the last quarter of the evaluations (at least
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


HORIZON_DOUBLINGS = 3  # the remaining gain is bounded over this many more doublings of the budget (8x)
SMOOTHING = 3  # evaluations averaged for the score "at" a step, in the calibration's later gains


@dataclass(frozen=True)
class RemainingGain:
    """:func:`remaining_gain`'s result at budget ``steps``: the gain per doubling, its upper 95% bound,
    and the bound on the gain still to come (``HORIZON_DOUBLINGS`` x that bound, at least 0)."""

    converged: bool
    per_doubling: float  # least-squares slope of the score against log2(step) over [T/4, T]
    per_doubling_upper: float  # its upper 95% bound (inf when too few evaluations)
    bound: float  # HORIZON_DOUBLINGS x max(per_doubling_upper, 0)
    steps: int  # T, the budget judged
    margin: float


def remaining_gain(steps: Sequence[int], scores: Sequence[float], margin: float) -> RemainingGain:
    """The convergence test verdicts read, at the budget ``steps[-1]`` (see the module docstring); scores:
    higher is better. Needs ``MIN_POINTS`` evaluations in [T/4, T]; fewer is not converged."""
    if len(steps) != len(scores):
        raise ValueError(f"steps, scores: expected equal lengths, got {len(steps)} and {len(scores)}")
    if not steps:
        return RemainingGain(False, math.nan, math.inf, math.inf, 0, margin)
    budget = steps[-1]
    window = [(s, y) for s, y in zip(steps, scores, strict=True) if 4 * s >= budget and s > 0]
    if len(window) < MIN_POINTS:
        return RemainingGain(False, math.nan, math.inf, math.inf, int(budget), margin)
    x = np.log2(np.array([s for s, _ in window], dtype=np.float64))
    y = np.array([v for _, v in window], dtype=np.float64)
    centred = x - x.mean()
    slope = float(centred @ (y - y.mean()) / (centred @ centred))
    residuals = y - y.mean() - slope * centred
    stderr = math.sqrt(float(residuals @ residuals) / (len(x) - 2) / float(centred @ centred))
    upper = slope + float(stdtrit(len(x) - 2, 0.975)) * stderr
    bound = HORIZON_DOUBLINGS * max(upper, 0.0)
    return RemainingGain(bool(bound < margin), slope, upper, bound, int(budget), margin)


def smoothed(scores: Sequence[float], index: int) -> float:
    """The mean of the ``SMOOTHING`` evaluations up to and including ``index``."""
    return float(np.mean(scores[max(0, index - SMOOTHING + 1) : index + 1]))


def calibration(curves: Sequence[tuple[Sequence[int], Sequence[float]]], margin: float) -> dict:
    """Replay :func:`remaining_gain` at every evaluation of each full curve (no early stopping) that has
    at least one doubling of the curve after it (step <= end / 2: later points could gain little
    however unconverged they were) and, at each point it calls converged, measure the later gain: the
    smoothed score at the curve's end minus the smoothed score there (:func:`smoothed`).

    Returns the calibration record: ``margin``, ``runs``, ``points`` (judged), ``points_converged``,
    ``later_gain`` (``median``, ``p95``, ``max``; None when no point converged) and
    ``share_below_margin`` (the test is calibrated when it is at least 0.95)."""
    gains, judged = [], 0
    for steps, scores in curves:
        end = smoothed(scores, len(scores) - 1)
        for index in range(len(steps)):
            if 2 * steps[index] > steps[-1]:
                break
            test = remaining_gain(steps[: index + 1], scores[: index + 1], margin)
            if math.isinf(test.bound):
                continue
            judged += 1
            if test.converged:
                gains.append(end - smoothed(scores, index))
    later = np.array(gains)
    summary = (
        {"median": float(np.median(later)), "p95": float(np.quantile(later, 0.95)), "max": float(later.max())}
        if gains
        else None
    )
    return {
        "margin": margin,
        "horizon_doublings": HORIZON_DOUBLINGS,
        "runs": len(curves),
        "points": judged,
        "points_converged": len(gains),
        "later_gain": summary,
        "share_below_margin": float((later < margin).mean()) if gains else None,
    }
