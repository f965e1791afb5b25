"""Bayes predictors of the two families :mod:`uni_icl.learners.bayes` leaves out: radius and the mixture.

Both follow the learner contract: given ``xs`` (B, N, d) and ``ys`` (B, N) they return
log-probabilities (B, N, C) where position i uses x_i and the pairs (x_j, y_j), j < i, only.

- ``radius`` (exact up to quadrature, :func:`radius_bayes_log_probs`): r ~ U(2, 4) is the only
  unknown. Given x_0..x_i (the query's input included) and y_0..y_{i-1}, its posterior density is
  r^{-(i+1) d} exp(-S_i / (2 c^2 r^2)) on the interval [lo, hi] the labels leave, with
  S_i = sum_{j <= i} |x_j|^2, c = 0.849 sigma, lo = max(2, |x_j| with y_j = 1),
  hi = min(4, |x_j| with y_j = 0): the inputs' norms tell the scale, the labels cut the interval.
  P(y_i = 1) = P(r >= |x_i|). Both masses are integrated by Simpson's rule in log space on a grid
  laid over their own interval (``RADIUS_GRID`` intervals), so narrow label intervals are resolved.
  Against the closed form (a truncated Gamma law of S / (2 c^2 r^2)) the largest error of a
  predictive probability is about 1e-9 (measured on N = 50 episodes, sigma 0.5 to 1.4).
- ``mixture`` (:func:`mixture_bayes`): the family f (pairwise, prototype, amortized, prior 1/3
  each) is inferred from the episode. At position i its posterior is proportional to the evidence
  p_f(x_0..x_i, y_0..y_{i-1}) of the prefix, and the predictive is sum_f P(f | prefix) p_f(y_i | prefix).

  * pairwise (exact): x ~ N(0, sigma^2 I) independent of the directions, so the evidence is the
    Gaussian density of the inputs times P(y_{<i} | x), the chain of the exact predictive
    probabilities of ``bayes.pairwise_log_probs`` (the feasible arc's length over 2 pi).
  * amortized (exact): per input dimension the column (x_0k..x_ik) is N(0, sigma^2 I + 11^T)
    (shared w_k ~ N(0, 1)); the labels add P(s in [lo, hi] | x_0..x_i) with s = sum(w), a Gaussian
    mass (the same truncation as ``bayes.amortized_log_probs``). The chain of that module's predictive
    probabilities would not be exact here: the inputs after j inform s, hence y_j.
  * prototype (Monte Carlo): the sequential Monte-Carlo sampler of ``bayes.prototype_diagnostics``
    (one run gives the predictive, bit-identical to ``bayes_log_probs``, and the standard SMC
    evidence estimate log Z_i = sum_{j <= i} log sum_s W_s w_s(j) from its incremental weights). It inherits that
    sampler's model: i.i.d. uniform source classes instead of the generator's balanced shuffled
    ones, and a label contradicting the centres costs e^-30 instead of 0.

Everything is float64 except the prototype particles (float32, as in :mod:`~uni_icl.learners.bayes`);
randomness comes from a ``torch.Generator`` seeded with ``seed``, never from the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uni_icl.learners.bayes import (
    DEFAULT_N_SAMPLES,
    _check_episode,
    _exclusive_cummax,
    _exclusive_cummin,
    _floor,
    bayes_log_probs,
    log_normal_mass,
    prototype_diagnostics,
)
from uni_icl.tasks import MIXTURE_COMPONENTS, PairwiseTask, TaskFamily
from uni_icl.tasks.synthetic import RADIUS_SCALE
from uni_icl.validation import check_choice, check_int

RADIUS_RANGE = (2.0, 4.0)  # r ~ U(2, 4) (PAPER.md)
RADIUS_GRID = 256  # Simpson intervals per integral of the radius posterior (even)
CHUNK_ROWS = 4096  # (episode, position) rows integrated at once: bounds memory to ~CHUNK_ROWS x RADIUS_GRID


def radius_bayes_log_probs(task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, n_grid: int = RADIUS_GRID):
    """Posterior-predictive log-probabilities of the radius family (see the module docstring).

    Args:
        task: a ``RadiusTask`` (its ``d`` and ``noise_std`` are used).
        xs: (B, N, d) float inputs; ys: (B, N) long labels in {0, 1}.
        n_grid: Simpson intervals per integral (even, >= 2).

    Returns:
        (B, N, 2) log-probabilities in the dtype of ``xs``; position i uses x_i and (x_j, y_j), j < i.
        Labels that contradict every radius in [2, 4] are ignored (as if unlabelled).
    """
    check_choice("task.name", task.name, ("radius",))
    check_int("n_grid", n_grid, minimum=2)
    if n_grid % 2:
        raise ValueError(f"n_grid: Simpson's rule needs an even number of intervals, got {n_grid}; allowed: even")
    _check_episode(task, xs, ys)
    norms = xs.to(torch.float64).norm(dim=-1)  # (B, N)
    lo, hi = _radius_interval(norms, ys)
    query = torch.minimum(torch.maximum(norms, lo), hi)
    n_dims = task.d * torch.arange(1, xs.shape[1] + 1, device=xs.device, dtype=torch.float64).expand_as(norms)
    scaled_sq = norms.square().cumsum(1) / (2 * (RADIUS_SCALE * task.noise_std) ** 2)
    rows = (n_dims.flatten(), scaled_sq.flatten())
    log_inside = _log_radius_mass(lo.flatten(), query.flatten(), *rows, n_grid)  # r < |x_i|: label 0
    log_outside = _log_radius_mass(query.flatten(), hi.flatten(), *rows, n_grid)  # r >= |x_i|: label 1
    log_both = torch.stack([log_inside, log_outside], dim=-1)
    log_probs = log_both - torch.logsumexp(log_both, dim=-1, keepdim=True)
    return _floor(log_probs.view(*norms.shape, 2)).to(xs.dtype)


def _radius_interval(norms: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Radii consistent with the earlier labels: [lo, hi]. norms (B, N), ys (B, N) -> two (B, N).

    y_j = 1 means |x_j| <= r, y_j = 0 means |x_j| > r. An empty interval (impossible under the prior)
    falls back to the prior's [2, 4].
    """
    low, high = RADIUS_RANGE
    lo = _exclusive_cummax(torch.where(ys == 1, norms, -math.inf)).clamp_min(low)
    hi = _exclusive_cummin(torch.where(ys == 0, norms, math.inf)).clamp_max(high)
    empty = lo >= hi
    return torch.where(empty, low, lo), torch.where(empty, high, hi)


def _log_radius_mass(lower, upper, n_dims, scaled_sq, n_grid: int) -> torch.Tensor:
    """log of the integral of r^-n_dims exp(-scaled_sq / r^2) over [lower, upper] (all (R,) float64) -> (R,).

    Composite Simpson's rule on n_grid intervals of [lower, upper], summed in log space; an empty
    interval gives -inf. Rows are processed in chunks of ``CHUNK_ROWS``.
    """
    index = torch.arange(n_grid + 1, device=lower.device, dtype=torch.float64)
    steps = index / n_grid
    simpson = 2.0 + 2.0 * (index % 2)
    simpson[0] = simpson[-1] = 1.0
    log_simpson = simpson.log() - math.log(3 * n_grid)
    parts = []
    for start in range(0, lower.numel(), CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        width = (upper[rows] - lower[rows]).clamp_min(0.0)
        radius = lower[rows, None] + width[:, None] * steps
        log_density = -n_dims[rows, None] * radius.log() - scaled_sq[rows, None] / radius.square()
        parts.append(torch.logsumexp(log_density + log_simpson, dim=-1) + width.log())
    return torch.cat(parts)


# ----------------------------------------------------------------------------- evidence of each family


def pairwise_log_evidence(xs: torch.Tensor, ys: torch.Tensor, *, noise_std: float) -> torch.Tensor:
    """Exact log p(x_0..x_i, y_0..y_{i-1}) under the pairwise family (d = 2, K = 1). (B, N, 2), (B, N) -> (B, N).

    Impossible labels contribute ``LOG_PROB_FLOOR`` each (the predictive's floor) instead of -inf.
    """
    x64 = xs.to(torch.float64)
    d = xs.shape[-1]
    log_inputs = (-0.5 * x64.square().sum(-1) / noise_std**2 - 0.5 * d * math.log(2 * math.pi * noise_std**2)).cumsum(1)
    task = PairwiseTask(d=d, n_classes=2, k=1, noise_std=noise_std)
    label_log_probs = bayes_log_probs(task, x64, ys).gather(-1, ys[..., None])[..., 0]
    label_chain = label_log_probs.cumsum(1) - label_log_probs  # labels strictly before i
    return log_inputs + label_chain


def amortized_log_evidence(xs: torch.Tensor, ys: torch.Tensor, *, noise_std: float) -> torch.Tensor:
    """Exact log p(x_0..x_i, y_0..y_{i-1}) under the amortized family. (B, N, d), (B, N) -> (B, N).

    Inputs: each dimension's column of n = i + 1 values is N(0, sigma^2 I + 11^T), with
    log det = (n - 1) log sigma^2 + log(sigma^2 + n) and inverse (I - 11^T / (sigma^2 + n)) / sigma^2.
    Labels: P(s in [lo, hi] | x_0..x_i), s | x ~ N(sum t / (sigma^2 + n), d sigma^2 / (sigma^2 + n)),
    t_j = sum(x_j). Contradictory labels give ``LOG_PROB_FLOOR`` for the label factor.
    """
    x64 = xs.to(torch.float64)
    _, n_points, d = xs.shape
    var = noise_std**2
    n_seen = torch.arange(1, n_points + 1, device=xs.device, dtype=torch.float64)
    quadratic = (x64.square().sum(-1).cumsum(1) - x64.cumsum(1).square().sum(-1) / (var + n_seen)) / var
    log_det = d * ((n_seen - 1) * math.log(var) + torch.log(var + n_seen))
    log_inputs = -0.5 * (n_seen * d * math.log(2 * math.pi) + log_det + quadratic)
    sums = x64.sum(-1)
    mean = sums.cumsum(1) / (var + n_seen)
    std = torch.sqrt(d * var / (var + n_seen))
    lo = _exclusive_cummax(torch.where(ys == 1, sums, -math.inf))
    hi = _exclusive_cummin(torch.where(ys == 0, sums, math.inf))
    feasible = lo < hi
    lower = torch.where(feasible, (lo - mean) / std, 0.0)
    upper = torch.where(feasible, (hi - mean) / std, 1.0)
    log_labels = torch.where(feasible, log_normal_mass(lower, upper), -math.inf)
    return log_inputs + _floor(log_labels)


@dataclass(frozen=True)
class PrototypeEvidence:
    """The prototype sampler's output. log_probs (B, N, C) and log_evidence (B, N), both float64."""

    log_probs: torch.Tensor
    log_evidence: torch.Tensor


def prototype_bayes_with_evidence(
    task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, seed: int = 0, n_samples: int = DEFAULT_N_SAMPLES
) -> PrototypeEvidence:
    """The prototype sampler's predictive and its evidence estimate (``PrototypeDiagnostics.log_evidence``).

    ``log_probs`` equals ``bayes_log_probs(task, xs, ys, seed=seed, n_samples=n_samples)``: it is the
    same run of :func:`~uni_icl.learners.bayes.prototype_diagnostics`.
    """
    check_choice("task.name", task.name, ("prototype",))
    run = prototype_diagnostics(task, xs, ys, seed=seed, n_samples=n_samples)
    return PrototypeEvidence(log_probs=run.log_probs, log_evidence=run.log_evidence)


# ----------------------------------------------------------------------------- mixture


@dataclass(frozen=True)
class MixtureBayes:
    """Output of :func:`mixture_bayes`; the family axis follows ``MIXTURE_COMPONENTS``.

    Attributes:
        log_probs: (B, N, C) the mixture's posterior-predictive log-probabilities.
        family_log_posterior: (B, N, 3) log P(family | x_0..x_i, y_0..y_{i-1}).
        component_log_probs: (B, N, 3, C) each family's own predictive (the single-family Bayes).
        log_evidence: (B, N, 3) log p_f(x_0..x_i, y_0..y_{i-1}) (prototype: Monte-Carlo estimate).
    """

    log_probs: torch.Tensor
    family_log_posterior: torch.Tensor
    component_log_probs: torch.Tensor
    log_evidence: torch.Tensor


def mixture_bayes(
    task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, seed: int = 0, n_samples: int = DEFAULT_N_SAMPLES
) -> MixtureBayes:
    """Bayes predictor of the mixture prior: infer the family, mix the families' predictives.

    Args:
        task: a ``MixtureTask`` with d = 2, k = 1 (the exact pairwise posterior needs them).
        xs: (B, N, 2) float inputs; ys: (B, N) long labels in {0, 1}.
        seed, n_samples: generator seed and particles of the prototype sampler.

    Returns:
        a :class:`MixtureBayes`, float64; position i uses x_i and (x_j, y_j), j < i, only.

    Example:
        >>> from uni_icl.tasks import MixtureTask
        >>> task = MixtureTask(n_points=6)
        >>> episode = task.sample(2, seed=0)
        >>> mixture_bayes(task, episode.xs, episode.ys, n_samples=64).family_log_posterior.shape
        torch.Size([2, 6, 3])
    """
    check_choice("task.name", task.name, ("mixture",))
    for name, allowed in (("d", 2), ("k", 1)):
        if getattr(task, name) != allowed:
            raise ValueError(f"{name}: the mixture Bayes predictor needs {name} = {allowed}; allowed: {allowed}")
    _check_episode(task, xs, ys)
    by_name = {component.name: component for component in task.components()}
    prototype = prototype_bayes_with_evidence(by_name["prototype"], xs, ys, seed=seed, n_samples=n_samples)
    noise_std = float(task.noise_std)
    evidence = {
        "pairwise": pairwise_log_evidence(xs, ys, noise_std=noise_std),
        "prototype": prototype.log_evidence,
        "amortized": amortized_log_evidence(xs, ys, noise_std=noise_std),
    }
    predictive = {
        "pairwise": bayes_log_probs(by_name["pairwise"], xs.to(torch.float64), ys),
        "prototype": prototype.log_probs,
        "amortized": bayes_log_probs(by_name["amortized"], xs.to(torch.float64), ys),
    }
    log_evidence = torch.stack([evidence[name] for name in MIXTURE_COMPONENTS], dim=-1)
    components = torch.stack([predictive[name] for name in MIXTURE_COMPONENTS], dim=2)
    family_log_posterior = torch.log_softmax(log_evidence, dim=-1)  # equal prior: it cancels
    log_probs = torch.logsumexp(family_log_posterior[..., None] + components, dim=2)
    return MixtureBayes(_floor(log_probs), family_log_posterior, components, log_evidence)


def mixture_bayes_log_probs(
    task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, seed: int = 0, n_samples: int = DEFAULT_N_SAMPLES
) -> torch.Tensor:
    """:func:`mixture_bayes`'s log-probabilities (B, N, C), in the dtype of ``xs``."""
    return mixture_bayes(task, xs, ys, seed=seed, n_samples=n_samples).log_probs.to(xs.dtype)


def any_bayes_log_probs(
    task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, seed: int = 0, n_samples: int = DEFAULT_N_SAMPLES
) -> torch.Tensor:
    """The Bayes predictor of any synthetic family: radius, mixture, or one of ``bayes.SUPPORTED_FAMILIES``.

    xs (B, N, d), ys (B, N) -> (B, N, C) log-probabilities in the dtype of ``xs``.
    """
    if task.name == "radius":
        return radius_bayes_log_probs(task, xs, ys)
    if task.name == "mixture":
        return mixture_bayes_log_probs(task, xs, ys, seed=seed, n_samples=n_samples)
    return bayes_log_probs(task, xs, ys, seed=seed, n_samples=n_samples)
