"""Uncertainty that includes training: intervals over seeds and test episodes.

A trained model's score moves with its training seed (initial weights and training episodes) as
well as with the test episodes it is scored on. Every difference a verdict reads is therefore
computed from several seeds per model, on one shared set of test episodes:

- :func:`seeded_difference`: a - b from per-seed, per-episode scores. Each seed s of ``a`` is
  paired with seed s of ``b`` (or with the only row of a reference without training, such as a
  Bayes predictor), on the same episodes. With d[s, e] the paired differences, S seeds and
  n episodes, the estimate is the mean of d and its standard error combines the two sources of
  noise: ``se^2 = var_s(mean_e d[s, e]) / S + var_e(mean_s d[s, e]) / n``; the first term is
  training noise (how much a seed's mean moves), the second the choice of test episodes (shared
  by all seeds, so not in the first term). The 95% half-width is ``t * se`` with S - 1 degrees
  of freedom (n - 1 with one seed: then it is the paired t-interval over episodes). Both choices
  err on the wide side: the seed-by-episode interaction is counted in both terms, and S - 1 is
  the fewest degrees of freedom the estimate can have. (Welch-Satterthwaite degrees of freedom
  were tried first and covered the true difference only 92.7% of the time in the test's
  simulation with 3 seeds, because a seed variance that happens to come out small also raises
  the estimated degrees of freedom.)
- :func:`ratio_interval`: a / b (such as where a score sits between a floor and a ceiling) with
  Fieller's 95% interval, built from the same two parts of the variance.
- :func:`seeds_to_decide`: how many training seeds would let such an interval decide a rule whose
  margin it now straddles, from the spreads measured (a power calculation, :func:`decision_power`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.special import nctdtr, stdtrit  # Student-t quantile and noncentral t, without scipy.stats (1.4 s)

from uni_icl.evaluation import Difference


def t_quantile(dof: float) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom: a 95% half-width in standard errors."""
    return float(stdtrit(dof, 0.975))


def t_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% Student-t half-width of ``values`` (n, ...) along axis 0, over its n rows as
    independent draws (zero width with one row: one draw says nothing about the spread)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    mean = values.mean(0)
    if n < 2:
        return mean, np.zeros_like(mean)
    return mean, t_quantile(n - 1) * values.std(0, ddof=1) / math.sqrt(n)


def seeded_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Difference:
    """a - b with a 95% interval over seeds and test episodes (see the module docstring).

    a, b: (S, n) scores, one row per training seed, one column per test episode; either may be
    (1, n) instead (a reference without training seeds, e.g. a Bayes predictor).
    """
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if first.ndim != 2 or second.ndim != 2 or first.shape[1] != second.shape[1] or first.size == 0:
        raise ValueError(
            f"a, b: expected (seeds, episodes) arrays over the same episodes, got {first.shape}, {second.shape}"
        )
    if 1 not in (first.shape[0], second.shape[0]) and first.shape[0] != second.shape[0]:
        raise ValueError(f"a, b: expected as many seeds, or one of them 1, got {first.shape[0]} and {second.shape[0]}")
    diff = first - second  # a single row is paired with every seed of the other
    n_seeds, n_episodes = diff.shape
    seed_part = diff.mean(axis=1).var(ddof=1) / n_seeds if n_seeds > 1 else 0.0
    episode_part = diff.mean(axis=0).var(ddof=1) / n_episodes if n_episodes > 1 else 0.0
    variance = seed_part + episode_part
    if variance == 0.0:
        return Difference(float(diff.mean()), 0.0)
    dof = n_seeds - 1 if n_seeds > 1 else n_episodes - 1
    return Difference(float(diff.mean()), t_quantile(dof) * math.sqrt(variance))


def combined_difference(
    terms: Sequence[tuple[float, Sequence[Sequence[float]], Sequence[Sequence[float]]]],
) -> Difference:
    """sum_k w_k (a_k - b_k) over independent test sets, with a 95% interval over seeds and episodes.

    Each term is (w_k, a_k, b_k) with a_k, b_k (S, n_k) scores on the k-th test set (as in
    :func:`seeded_difference`; one of them may have one row), the same S training seeds in every
    term. The seed part is the variance over seeds of each seed's combined difference (a seed's
    models are shared across terms, so their training noise is correlated and is counted once),
    over S; the episode part sums w_k^2 times each term's episode variance over n_k (the test sets
    are drawn independently); t with S - 1 degrees of freedom, as in :func:`seeded_difference`.
    """
    per_seed, episode_part = None, 0.0
    for weight, a, b in terms:
        first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        diff = first - second
        seed_means = weight * diff.mean(axis=1)
        per_seed = seed_means if per_seed is None else per_seed + seed_means
        if diff.shape[1] > 1:
            episode_part += weight**2 * diff.mean(axis=0).var(ddof=1) / diff.shape[1]
    if per_seed is None:
        raise ValueError("terms: expected at least one (weight, a, b) term")
    n_seeds = per_seed.shape[0]
    seed_part = per_seed.var(ddof=1) / n_seeds if n_seeds > 1 else 0.0
    variance = seed_part + episode_part
    dof = n_seeds - 1 if n_seeds > 1 else max(1, min(len(t[1][0]) for t in terms) - 1)
    return Difference(float(per_seed.mean()), t_quantile(dof) * math.sqrt(variance))


class Ratio(NamedTuple):
    """An estimated ratio with its 95% interval; ``low`` and ``high`` are None when the interval is
    unbounded (the denominator's own interval holds 0)."""

    estimate: float
    low: float | None
    high: float | None


def _variance_parts(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The 2 x 2 covariance of the mean of two (S, n) arrays as :func:`seeded_difference` counts it: over
    the seeds' means (/ S) plus over the episodes' means (/ n)."""
    n_seeds, n_episodes = first.shape
    covariance = np.zeros((2, 2))
    if n_seeds > 1:
        covariance += np.cov(np.stack([first.mean(1), second.mean(1)])) / n_seeds
    if n_episodes > 1:
        covariance += np.cov(np.stack([first.mean(0), second.mean(0)])) / n_episodes
    return covariance


def ratio_interval(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Ratio:
    """mean(a) / mean(b) with Fieller's 95% interval over seeds and test episodes.

    a, b: (S, n) per-seed, per-episode values on the same episodes (for instance a = student - floor,
    b = ceiling - floor). The interval is every r for which the interval of mean(a - r b), computed as
    :func:`seeded_difference` computes it (t with S - 1 degrees of freedom, n - 1 with one seed), holds 0:
    (mean a - r mean b)^2 <= t^2 (V_aa - 2 r V_ab + r^2 V_bb). It is bounded when mean(b)'s own interval
    excludes 0; otherwise ``low`` and ``high`` are None.
    """
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if first.ndim != 2 or first.shape != second.shape or first.size == 0:
        raise ValueError(f"a, b: expected (seeds, episodes) arrays of one shape, got {first.shape}, {second.shape}")
    mean_a, mean_b = float(first.mean()), float(second.mean())
    n_seeds, n_episodes = first.shape
    t = t_quantile(n_seeds - 1 if n_seeds > 1 else n_episodes - 1)
    (v_aa, v_ab), (_, v_bb) = _variance_parts(first, second)
    estimate = mean_a / mean_b if mean_b != 0 else math.nan
    quadratic = mean_b**2 - t**2 * v_bb
    if quadratic <= 0:
        return Ratio(estimate, None, None)
    linear = mean_a * mean_b - t**2 * v_ab
    constant = mean_a**2 - t**2 * v_aa
    root = math.sqrt(max(0.0, linear**2 - quadratic * constant))
    return Ratio(estimate, (linear - root) / quadratic, (linear + root) / quadratic)


class Spreads(NamedTuple):
    """The two parts of a seeded interval's standard error: ``seed_sd``, the standard deviation of the
    per-seed means over the seeds (training noise; it enters as seed_sd^2 / S), and ``episode_se``, the
    standard error the shared test episodes add (it does not shrink with more seeds)."""

    seed_sd: float
    episode_se: float


def spreads(per_seed: Sequence[float], half_width: float) -> Spreads:
    """The parts of a :func:`seeded_difference` interval, from the per-seed means of its effect and its 95%
    half-width: se = half_width / t(S - 1); seed_sd from the per-seed means; episode_se^2 = se^2 - seed_sd^2 / S
    (0 if rounding makes it negative; exactly 0 for an interval over seeds alone, such as a t-interval)."""
    values = np.asarray(list(per_seed), dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"per_seed: expected at least two finite per-seed means, got {list(per_seed)}")
    if not (math.isfinite(half_width) and half_width >= 0):
        raise ValueError(f"half_width: expected a finite number >= 0, got {half_width}")
    n_seeds = values.size
    seed_sd = float(values.std(ddof=1))
    se = half_width / t_quantile(n_seeds - 1)
    return Spreads(seed_sd, math.sqrt(max(0.0, se**2 - seed_sd**2 / n_seeds)))


def decision_distance(effect: float, margin: float) -> float:
    """How far ``effect`` lies from the nearer of the bounds -margin and +margin: an interval around it decides
    a rule that reads it against ±margin (above, below or within) when its half-width is below this."""
    return min(abs(effect - margin), abs(effect + margin))


def decision_power(distance: float, parts: Spreads, n_seeds: int) -> float:
    """Probability that a 95% interval over ``n_seeds`` seeds (t with n_seeds - 1 degrees of freedom) clears a
    bound ``distance`` away from the true effect, when seeds scatter with ``parts.seed_sd`` and the test
    episodes add ``parts.episode_se``: the upper tail of a noncentral t with noncentrality
    distance / se, se^2 = seed_sd^2 / n_seeds + episode_se^2 (exact when the seeds' part dominates; when the
    episodes' part does, t with n_seeds - 1 degrees of freedom errs on the wide side, as the interval does)."""
    if n_seeds < 2:
        return 0.0
    se = math.sqrt(parts.seed_sd**2 / n_seeds + parts.episode_se**2)
    if se == 0.0:
        return 1.0 if distance > 0 else 0.0
    dof = n_seeds - 1
    return float(1.0 - nctdtr(dof, distance / se, t_quantile(dof)))


def seeds_to_decide(
    per_seed: Sequence[float], half_width: float, margin: float, *, power: float = 0.8, max_seeds: int = 100
) -> int | None:
    """The fewest training seeds with which the interval of an effect would decide its rule (lie above
    +margin, below -margin or within ±margin) with probability ``power``, if the true effect were the one
    measured (the mean of ``per_seed``) and the spreads those measured (:func:`spreads`; the same test
    episodes). None when no number up to ``max_seeds`` does: the effect lies on a bound, or the test
    episodes' part of the interval alone is too wide to clear it (more seeds cannot help; more episodes
    could).

    Example: per-seed effects 0.004, 0.016, 0.010 (sd 0.006) with half-width 0.016 straddle +0.01 and
    -0.01 (3 seeds, t = 4.30); the mean 0.010 lies on +0.01, so no number of seeds decides it (None).
    """
    if not 0 < power < 1:
        raise ValueError(f"power: expected a probability strictly between 0 and 1, got {power}")
    if not margin > 0:
        raise ValueError(f"margin: expected a number > 0, got {margin}")
    parts = spreads(per_seed, half_width)
    distance = decision_distance(float(np.mean(list(per_seed))), margin)
    if distance <= 0:
        return None
    for n_seeds in range(2, max_seeds + 1):
        if decision_power(distance, parts, n_seeds) >= power:
            return n_seeds
    return None
