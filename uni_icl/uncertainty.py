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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import stdtrit  # the Student-t quantile, without importing scipy.stats (1.4 s)

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
