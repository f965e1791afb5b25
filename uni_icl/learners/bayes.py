"""Bayes-optimal in-context predictors: the posterior predictive under the task prior of ``PAPER.md``.

Every predictor follows the project's learner contract: given an episode's ``xs`` (B, N, d) and
``ys`` (B, N), it returns log-probabilities (B, N, C) where position i uses x_i and the pairs
(x_j, y_j), j < i, only. The entry point is :func:`bayes_log_probs`; :func:`prototype_diagnostics`
returns the Monte-Carlo diagnostics of the one family without a closed form.

- ``amortized`` (exact): only s = sum_k w_k matters for the labels, and t_j = sum_k x_jk = s + noise
  (variance sigma^2 d) are sufficient for it: the components of x orthogonal to the all-ones vector
  are independent of s. Given t_0..t_i (the query's own t_i included: x_i is visible) s is Gaussian;
  every earlier label truncates it to s < t_j (y_j = 0) or s >= t_j (y_j = 1). P(y_i = 0) =
  P(s < t_i | s in [lo, hi]) is a ratio of normal-CDF differences, evaluated in log space.
- ``pairwise`` (exact, d = 2, K = 1, C = 2): class 0 iff x . u > 0 with u = w0/|w0| - w1/|w1|.
  The two unit vectors are independent and uniform on the circle, so the law of the pair is
  invariant under a common rotation, hence so is the law of u: its angle is uniform a priori (and
  |u| > 0 almost surely). Each label confines the angle of u to an open half-circle; the posterior
  is uniform on their intersection, an arc, and P(y_i = 0) is the fraction of the arc where
  u . x_i > 0. sigma plays no role (labels depend on directions only).
- ``prototype`` (Monte Carlo, any C and d): sequential Monte Carlo over the centres, see
  :func:`prototype_diagnostics`.

Everything runs on the device of ``xs``: the exact predictors in float64, the prototype sampler
with float32 particles and float64 weights. Randomness comes from a ``torch.Generator`` seeded with
``seed``, never from the global RNG; nothing runs at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from uni_icl.tasks import TaskFamily
from uni_icl.validation import check_choice, check_int

SUPPORTED_FAMILIES = ("amortized", "pairwise", "prototype")
DEFAULT_N_SAMPLES = 512  # particles of the prototype sampler
LOG_PROB_FLOOR = -1e4  # log-probabilities of (numerically) impossible classes are clamped here
VIOLATION_PENALTY = 30.0  # prototype: log-weight cost of one label the particle's centres contradict
RESAMPLE_THRESHOLD = 0.5  # prototype: resample-move when ESS < this fraction of the particles
N_MOVES = 4  # prototype: rounds of (Gibbs sweep + random-walk step) after every resampling
COLLAPSE_THRESHOLD = 0.1  # prototype: below this ESS fraction the weights have collapsed ...
COLLAPSE_MOVES = 12  # ... and the resampled particles get this many rounds instead of N_MOVES
TARGET_ACCEPTANCE = (0.15, 0.45)  # prototype: the random-walk scale shrinks below, grows above


def bayes_log_probs(
    task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, seed: int = 0, n_samples: int = DEFAULT_N_SAMPLES
) -> torch.Tensor:
    """Posterior-predictive log-probabilities of the Bayes-optimal in-context learner.

    Args:
        task: a ``TaskFamily`` from ``uni_icl.tasks`` whose ``name`` is one of
            ``SUPPORTED_FAMILIES``; its ``d``, ``n_classes``, ``noise_std`` (and ``k``) are used.
        xs: (B, N, d) float inputs.
        ys: (B, N) long labels in [0, C).
        seed: seeds the generator of the Monte-Carlo sampler (``prototype`` only).
        n_samples: particles of the Monte-Carlo sampler (``prototype`` only).

    Returns:
        (B, N, C) log-probabilities in the dtype and on the device of ``xs``; position i uses x_i
        and (x_j, y_j) for j < i only. Certain outcomes give ``LOG_PROB_FLOOR`` to the other class.

    Speed: ``amortized`` and ``pairwise`` take milliseconds for 256 x 50 episodes. ``prototype``
    issues many mid-sized tensor ops; on a CPU shared with other jobs, OpenMP threads stall, so call
    it under ``torch.set_num_threads(1)`` there (measured on 2 busy cores: 14 s instead of 52 s).

    Example:
        >>> from uni_icl.tasks import AmortizedTask
        >>> task = AmortizedTask(n_points=5)
        >>> episode = task.sample(3, seed=0)
        >>> bayes_log_probs(task, episode.xs, episode.ys).shape
        torch.Size([3, 5, 2])
    """
    check_choice("task.name", task.name, SUPPORTED_FAMILIES)
    if task.name == "pairwise":
        _check_pairwise(task)
    _check_episode(task, xs, ys)
    if task.name == "amortized":
        log_probs = amortized_log_probs(xs, ys, noise_std=task.noise_std)
    elif task.name == "pairwise":
        log_probs = pairwise_log_probs(xs, ys)
    else:
        log_probs = _run_prototype_smc(task, xs, ys, seed=seed, n_samples=n_samples).log_probs
    return log_probs.to(xs.dtype)


def _check_episode(task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor) -> None:
    """Raise a ValueError naming the argument when ``xs`` / ``ys`` do not fit ``task``."""
    if xs.dim() != 3 or xs.shape[-1] != task.d:
        raise ValueError(f"xs: expected shape (B, N, {task.d}) for d = {task.d}, got {tuple(xs.shape)}")
    if not xs.is_floating_point():
        raise ValueError(f"xs: expected a floating-point tensor, got {xs.dtype}")
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys: expected shape {tuple(xs.shape[:2])} (B, N), got {tuple(ys.shape)}")
    if ys.dtype != torch.long:
        raise ValueError(f"ys: expected torch.long class indices, got {ys.dtype}")
    if ys.numel() and (int(ys.min()) < 0 or int(ys.max()) >= task.n_classes):
        raise ValueError(f"ys: labels must lie in 0..{task.n_classes - 1} (n_classes = {task.n_classes})")


def _check_pairwise(task: TaskFamily) -> None:
    """The exact pairwise posterior exists here for d = 2, k = 1, n_classes = 2 only."""
    for name, allowed in (("d", 2), ("k", 1), ("n_classes", 2)):
        value = getattr(task, name)
        if value != allowed:
            raise ValueError(
                f"{name}: the exact pairwise Bayes predictor needs {name} = {allowed}, got {value}; allowed: {allowed}"
            )


def _floor(log_probs: torch.Tensor) -> torch.Tensor:
    """Clamp log-probabilities (any shape) at ``LOG_PROB_FLOOR``, so that -inf never reaches a loss."""
    return log_probs.clamp_min(LOG_PROB_FLOOR)


def _exclusive_cummax(values: torch.Tensor) -> torch.Tensor:
    """Running maximum over dim 1 of the entries strictly before each position. (B, N) -> (B, N)."""
    shifted = torch.cat([torch.full_like(values[:, :1], -math.inf), values[:, :-1]], dim=1)
    return shifted.cummax(dim=1).values


def _exclusive_cummin(values: torch.Tensor) -> torch.Tensor:
    """Running minimum over dim 1 of the entries strictly before each position. (B, N) -> (B, N)."""
    return -_exclusive_cummax(-values)


# ----------------------------------------------------------------------------- amortized


def _log1mexp(z: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(z)) for z <= 0, accurate near 0 and for large |z| (Maechler 2012)."""
    return torch.where(z > -math.log(2.0), torch.log(-torch.expm1(z)), torch.log1p(-torch.exp(z)))


def log_normal_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower <= upper (elementwise, any shape, +-inf allowed).

    Intervals with more mass on the positive side are reflected so that both CDFs are evaluated
    where they are accurate; very narrow intervals use the midpoint rule. Empty ones give -inf.
    """
    flip = lower > -upper
    low = torch.where(flip, -upper, lower)
    high = torch.where(flip, -lower, upper)
    log_high = torch.special.log_ndtr(high)
    wide = log_high + _log1mexp(torch.special.log_ndtr(low) - log_high)
    width = high - low
    middle = 0.5 * (low + high)
    narrow = -0.5 * middle.square() - 0.5 * math.log(2 * math.pi) + torch.log(width)
    return torch.where(width * (middle.abs() + 1.0) < 1e-4, narrow, wide)


def amortized_log_probs(xs: torch.Tensor, ys: torch.Tensor, *, noise_std: float) -> torch.Tensor:
    """Exact posterior predictive of the amortized family. xs (B, N, d), ys (B, N) -> (B, N, 2).

    s = sum(w) ~ N(0, d); t_j = sum(x_j) ~ N(s, sigma^2 d). Given t_0..t_i the posterior of s is
    N(sum t / (sigma^2 + i + 1), d sigma^2 / (sigma^2 + i + 1)), truncated to [lo, hi] with
    lo = max{t_j : j < i, y_j = 1} and hi = min{t_j : j < i, y_j = 0}. If the labels contradict each
    other (lo >= hi, impossible under the prior) the truncation is dropped.
    """
    _, n_points, d = xs.shape
    sums = xs.to(torch.float64).sum(-1)  # (B, N)
    n_seen = torch.arange(1, n_points + 1, device=xs.device, dtype=torch.float64)
    shrink = noise_std**2 + n_seen  # (N,)
    mean = sums.cumsum(dim=1) / shrink
    std = torch.sqrt(d * noise_std**2 / shrink)
    lo = _exclusive_cummax(torch.where(ys == 1, sums, -math.inf))
    hi = _exclusive_cummin(torch.where(ys == 0, sums, math.inf))
    contradictory = lo >= hi
    lo = torch.where(contradictory, -math.inf, lo)
    hi = torch.where(contradictory, math.inf, hi)
    lower, upper = (lo - mean) / std, (hi - mean) / std
    query = torch.minimum(torch.maximum((sums - mean) / std, lower), upper)
    log_total = log_normal_mass(lower, upper)
    log_p0 = log_normal_mass(lower, query) - log_total  # P(s < t_i)
    log_p1 = log_normal_mass(query, upper) - log_total
    return _floor(torch.stack([log_p0, log_p1], dim=-1))


# ----------------------------------------------------------------------------- pairwise


def _wrap_angle(angle: torch.Tensor) -> torch.Tensor:
    """Map angles to [-pi, pi)."""
    return angle - 2 * math.pi * torch.floor((angle + math.pi) / (2 * math.pi))


def pairwise_log_probs(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Exact posterior predictive of the pairwise family (d = 2, K = 1). xs (B, N, 2), ys (B, N) -> (B, N, 2).

    With phi_j the angle of x_j, label y_j confines the angle theta of u to the open half-circle
    centred at psi_j = phi_j + pi y_j. All angles are taken relative to psi_0: every psi_j lies
    within pi/2 of the true theta, so the relative psi_j lie in (-pi, pi) and the feasible arc is
    (max_j psi_j - pi/2, min_j psi_j + pi/2) without wrap-around. Position 0 (no label) gives 1/2,
    as does an empty arc (labels contradicting each other, impossible under the prior).
    """
    x64 = xs.to(torch.float64)
    phi = torch.atan2(x64[..., 1], x64[..., 0])  # (B, N)
    psi = phi + math.pi * ys.to(torch.float64)
    relative = _wrap_angle(psi - psi[:, :1])
    lo = _exclusive_cummax(relative) - math.pi / 2
    hi = _exclusive_cummin(relative) + math.pi / 2
    query = _wrap_angle(phi - psi[:, :1])
    overlap = (torch.minimum(hi, query + math.pi / 2) - torch.maximum(lo, query - math.pi / 2)).clamp_min(0.0)
    length = hi - lo
    p0 = (overlap / length).clamp(0.0, 1.0)
    uninformed = (length <= 0) | ~torch.isfinite(length)
    p0 = torch.where(uninformed, torch.full_like(p0, 0.5), p0)
    return _floor(torch.log(torch.stack([p0, 1.0 - p0], dim=-1)))


# ----------------------------------------------------------------------------- prototype


@dataclass(frozen=True)
class PrototypeDiagnostics:
    """Output and Monte-Carlo diagnostics of the prototype sampler.

    Attributes:
        log_probs: (B, N, C) posterior-predictive log-probabilities (as ``bayes_log_probs``).
        ess: (B, N) effective sample size of the importance weights at position i once x_i and
            y_{i-1} are absorbed, before any resampling at i (the degeneracy measure).
        ess_used: (B, N) effective sample size of the weights the prediction at i is made with
            (``n_samples`` where a resample-move just ran).
        mc_stderr: (B, N, C) Monte-Carlo standard error of each predictive probability,
            sqrt(sum_s w_s^2 (f_s - p)^2) with normalised weights w. It ignores the correlation
            that resampling and Metropolis moves leave between particles; across seeds the spread
            of the estimates is about 1.1 times this value on average, but in rare episodes with a
            thin, multi-modal feasible region the error can be several times larger.
        resampled: (B, N) bool, whether a resample-move ran at position i.
        acceptance: (B, N) mean Metropolis acceptance rate of that move (NaN where none ran).
        log_evidence: (B, N) float64 estimate of log p(x_0..x_i, y_0..y_{i-1}) under the sampler's
            model: the sum over steps of log(sum_s W_s exp(increment_s)) with W the normalised
            weights before the step, plus the constants the weights drop (-log C - d/2 log(2 pi
            sigma^2) per point). Its exponential is unbiased; the log is biased low by about half
            its variance. The mixture Bayes predictor weighs the families with it.
    """

    log_probs: torch.Tensor
    ess: torch.Tensor
    ess_used: torch.Tensor
    mc_stderr: torch.Tensor
    resampled: torch.Tensor
    acceptance: torch.Tensor
    log_evidence: torch.Tensor


def prototype_diagnostics(
    task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, seed: int = 0, n_samples: int = DEFAULT_N_SAMPLES
) -> PrototypeDiagnostics:
    """Run the prototype sampler and return its predictions with Monte-Carlo diagnostics.

    Model (an approximation of the generator): centres mu_c ~ N(0, I_d); each x_j comes from an
    independent uniform mixture sum_c N(mu_c, sigma^2 I) / C, i.e. the balanced shuffled source
    assignment of ``PrototypeTask`` is replaced by i.i.d. uniform sources; the label is the index
    of the nearest centre. The posterior at position i is proportional to
    p(mu) prod_{j <= i} p(x_j | mu) prod_{j < i} 1[nearest(x_j, mu) = y_j], and
    P(y_i = c) = E[1[nearest(x_i, mu) = c]] under it.

    Sampler: sequential Monte Carlo with resample-move. Particles start as prior draws; at every
    position the weights absorb the mixture likelihood of x_i and the label y_{i-1}. The indicator
    is softened to exp(-VIOLATION_PENALTY) per violated label, so that a label which every particle
    contradicts does not zero all weights: the weights then stay equal, the ESS does not collapse,
    and the Metropolis moves pull the particles back into the feasible region. The softening
    changes the target negligibly: an infeasible configuration keeps e^-30 of its density.
    Whenever the ESS drops below RESAMPLE_THRESHOLD * n_samples, the episode's particles are
    resampled (systematic) and moved by N_MOVES rounds of

    (a) a data-augmentation Gibbs sweep: draw each point's source given the centres, then each
        centre from its conjugate Gaussian given the sources, accepted unless it breaks more
        labels (a global move, between modes), and
    (b) a random-walk Metropolis step whose proposal covariance is the particle covariance, with a
        per-episode scale adapted to the acceptance rate (a local move).

    When the ESS has collapsed below COLLAPSE_THRESHOLD * n_samples (few distinct ancestors
    survive), COLLAPSE_MOVES rounds are run instead. Random numbers are drawn for the episodes
    being moved only, so an episode's output depends on the seed and on the batch it is in, but
    position i never depends on anything after i.

    Args:
        task: a ``PrototypeTask`` (``d``, ``n_classes``, ``noise_std`` are used).
        xs: (B, N, d) float inputs; ys: (B, N) long labels.
        seed: seeds the sampler's generator (created on the device of ``xs``).
        n_samples: particles per episode.

    Returns:
        a :class:`PrototypeDiagnostics`; ``log_probs`` is float64. A class that no particle predicts
        gets probability 0, i.e. ``LOG_PROB_FLOOR``.

    Example:
        >>> from uni_icl.tasks import PrototypeTask
        >>> task = PrototypeTask(n_points=8)
        >>> episode = task.sample(2, seed=0)
        >>> prototype_diagnostics(task, episode.xs, episode.ys, n_samples=64).ess.shape
        torch.Size([2, 8])
    """
    check_choice("task.name", task.name, ("prototype",))
    _check_episode(task, xs, ys)
    return _run_prototype_smc(task, xs, ys, seed=seed, n_samples=n_samples)


def _logsumexp_classes(values: torch.Tensor) -> torch.Tensor:
    """logsumexp over dim 2 (the class axis of (b, S, C, J) tensors). -> (b, S, J)."""
    top = values.amax(2, keepdim=True)
    return (values - top).exp().sum(2).log() + top[:, :, 0]


def _nearest_class(sq: torch.Tensor) -> torch.Tensor:
    """Index of the smallest entry along dim 2 (first one on ties, like argmin). (b, S, C, J) -> (b, S, J).

    A loop over the few classes: much faster than ``argmin`` over a non-contiguous dim on the CPU.
    """
    best = sq[:, :, 0]
    index = torch.zeros_like(best, dtype=torch.long)
    for c in range(1, sq.shape[2]):
        closer = sq[:, :, c] < best
        best = torch.where(closer, sq[:, :, c], best)
        index = index.masked_fill(closer, c)
    return index


def _squared_distances(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """|x_j - mu_c|^2 = |x_j|^2 - 2 x_j . mu_c + |mu_c|^2. points (b, J, d), centres (b, S, C, d) -> (b, S, C, J)."""
    b, n_particles, n_classes, d = centres.shape
    cross = torch.bmm(centres.reshape(b, n_particles * n_classes, d), points.transpose(1, 2))
    cross = cross.view(b, n_particles, n_classes, -1)
    sq = points.square().sum(-1)[:, None, None, :] - 2 * cross + centres.square().sum(-1)[..., None]
    return sq.clamp_min(0)


def _violations(labelled_sq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number of labelled points whose nearest centre is not their label. (b, S, C, J), (b, J) -> (b, S)."""
    return (_nearest_class(labelled_sq) != labels[:, None, :]).sum(-1).to(labelled_sq.dtype)


def _log_target(centres: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Unnormalised log posterior of centres (b, S, C, d) given points (b, J, d) and labels (b, J - 1).

    The labels cover the first J - 1 points (the last one is the unlabelled query). -> (b, S).
    """
    sq = _squared_distances(points, centres)  # (b, S, C, J)
    log_prior = -0.5 * centres.square().sum(dim=(-1, -2))
    log_lik = _logsumexp_classes(-sq / (2 * noise_std**2)).sum(-1)
    return log_prior + log_lik - VIOLATION_PENALTY * _violations(sq[..., : labels.shape[1]], labels)


def _sample_sources(sq: torch.Tensor, noise_std: float, gen: torch.Generator) -> torch.Tensor:
    """Draw each point's source class given the centres. sq (b, S, C, J) -> one-hot (b, S, C, J)."""
    n_classes = sq.shape[2]
    cdf = torch.exp((sq.amin(2, keepdim=True) - sq) / (2 * noise_std**2)).cumsum(2)
    uniform = torch.rand(sq[:, :, :1].shape, generator=gen, device=sq.device, dtype=sq.dtype)
    source = (uniform * cdf[:, :, -1:] > cdf).sum(2, keepdim=True).clamp_max(n_classes - 1)
    classes = torch.arange(n_classes, device=sq.device)[:, None]
    return (source == classes).to(sq.dtype)


def _gibbs_sweep(centres, points, labels, noise_std: float, gen: torch.Generator):
    """Data-augmentation Gibbs sweep; see :func:`prototype_diagnostics`.

    centres (b, S, C, d), points (b, J, d), labels (b, J - 1) -> (centres, acceptance rate (b,)).
    Each centre is proposed from p(mu_c | sources, x) = N(sum x / (n_c + sigma^2), sigma^2 / (n_c + sigma^2))
    and accepted with probability exp(-VIOLATION_PENALTY * (increase in violated labels)).
    """
    b, n_particles, n_classes, d = centres.shape
    n_labelled = labels.shape[1]
    sq = _squared_distances(points, centres)
    sources = _sample_sources(sq, noise_std, gen)  # (b, S, C, J)
    precision = sources.sum(-1) + noise_std**2  # (b, S, C)
    sums = torch.bmm(sources.view(b, n_particles * n_classes, -1), points).view(b, n_particles, n_classes, d)
    means = sums / precision[..., None]
    labelled_points = points[:, :n_labelled]
    labelled_sq = sq[..., :n_labelled]
    violations = _violations(labelled_sq, labels)
    accepted = torch.zeros(b, device=centres.device, dtype=centres.dtype)
    for c in range(n_classes):
        step = torch.randn(b, n_particles, d, generator=gen, device=centres.device, dtype=centres.dtype)
        proposal = means[:, :, c] + step * noise_std / precision[:, :, c, None].sqrt()
        trial_sq = labelled_sq.clone()
        trial_sq[:, :, c] = _squared_distances(labelled_points, proposal[:, :, None])[:, :, 0]
        trial_violations = _violations(trial_sq, labels)
        log_u = torch.rand(b, n_particles, generator=gen, device=centres.device, dtype=centres.dtype).log()
        accept = log_u < -VIOLATION_PENALTY * (trial_violations - violations)
        centres = centres.clone()
        centres[:, :, c] = torch.where(accept[..., None], proposal, centres[:, :, c])
        labelled_sq = torch.where(accept[..., None, None], trial_sq, labelled_sq)
        violations = torch.where(accept, trial_violations, violations)
        accepted += accept.to(centres.dtype).mean(-1) / n_classes
    return centres, accepted


def _random_walk_step(centres, current, chol, scale, points, labels, noise_std: float, gen: torch.Generator):
    """One random-walk Metropolis step. centres (b, S, C, d), current log target (b, S), chol (b, Cd, Cd),
    scale (b,) -> (centres, log target, accepted (b, S) bool)."""
    b, n_particles, n_classes, d = centres.shape
    step = torch.randn(b, n_particles, n_classes * d, generator=gen, device=centres.device, dtype=centres.dtype)
    move = torch.einsum("bkl,bsl->bsk", chol, step) * scale.to(centres.dtype)[:, None, None]
    proposal = centres + move.view(b, n_particles, n_classes, d)
    candidate = _log_target(proposal, points, labels, noise_std)
    log_u = torch.rand(b, n_particles, generator=gen, device=centres.device, dtype=centres.dtype).log()
    accept = log_u < candidate - current
    centres = torch.where(accept[..., None, None], proposal, centres)
    return centres, torch.where(accept, candidate, current), accept


def _weighted_covariance(centres: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Covariance of the flattened particles. centres (b, S, C, d), normalised weights (b, S) -> (b, Cd, Cd)."""
    flat = centres.flatten(2)
    mean = torch.einsum("bs,bsk->bk", weights, flat)
    centred = flat - mean[:, None, :]
    return torch.einsum("bs,bsk,bsl->bkl", weights, centred, centred)


def _proposal_cholesky(centres: torch.Tensor, weights: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Cholesky factor of the (slightly regularised) particle covariance, in float64. -> (b, Cd, Cd)."""
    covariance = _weighted_covariance(centres.to(torch.float64), weights)
    size = covariance.shape[-1]
    jitter = 1e-6 * (noise_std**2 + covariance.diagonal(dim1=-2, dim2=-1).mean(-1))
    eye = torch.eye(size, device=covariance.device, dtype=covariance.dtype)
    return torch.linalg.cholesky(covariance + jitter[:, None, None] * eye)


def _systematic_resample(weights: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Ancestor indices by systematic resampling. weights (b, S) normalised -> (b, S) long."""
    b, n_particles = weights.shape
    cumulative = weights.cumsum(-1)
    cumulative = cumulative / cumulative[:, -1:]
    uniform = torch.rand(b, 1, generator=gen, device=weights.device, dtype=weights.dtype)
    grid = (uniform + torch.arange(n_particles, device=weights.device, dtype=weights.dtype)) / n_particles
    return torch.searchsorted(cumulative, grid).clamp_max(n_particles - 1)


def _resample_move(centres, log_weights, scale, points, labels, noise_std: float, n_rounds: int, gen: torch.Generator):
    """Resample the particles of a subset of episodes and move them with n_rounds rounds of Gibbs + random walk.

    centres (b, S, C, d), log_weights (b, S), scale (b,), points (b, i + 1, d), labels (b, i)
    -> (centres, acceptance rate (b,) averaged over both kinds of move).
    """
    b, n_particles, n_classes, d = centres.shape
    weights = torch.softmax(log_weights, -1)
    chol = _proposal_cholesky(centres, weights, noise_std).to(centres.dtype)
    ancestors = _systematic_resample(weights, gen)
    centres = torch.gather(centres, 1, ancestors[:, :, None, None].expand(-1, -1, n_classes, d))
    points = points.to(centres.dtype)
    accepted = torch.zeros(b, device=centres.device, dtype=torch.float64)
    for _ in range(n_rounds):
        centres, gibbs_rate = _gibbs_sweep(centres, points, labels, noise_std, gen)
        current = _log_target(centres, points, labels, noise_std)
        centres, current, accept = _random_walk_step(centres, current, chol, scale, points, labels, noise_std, gen)
        accepted += 0.5 * (gibbs_rate.double() + accept.double().mean(-1)) / n_rounds
    return centres, accepted


def _adapt_scale(scale: torch.Tensor, acceptance: torch.Tensor) -> torch.Tensor:
    """Shrink the random-walk scale when moves are rarely accepted, grow it when they nearly always are."""
    low, high = TARGET_ACCEPTANCE
    factor = torch.where(acceptance < low, 0.6, torch.where(acceptance > high, 1.5, 1.0))
    return (scale * factor).clamp(1e-3, 3.0)


def _observe(centres: torch.Tensor, point: torch.Tensor, noise_std: float):
    """Mixture log-likelihood (up to a constant) and nearest centre of one point per episode.

    centres (B, S, C, d), point (B, d) -> ((B, S) float64, (B, S) long).
    """
    sq = (centres.to(torch.float64) - point[:, None, None, :].to(torch.float64)).square().sum(-1)  # (B, S, C)
    return torch.logsumexp(-sq / (2 * noise_std**2), dim=-1), sq.argmin(-1)


def _ess(log_weights: torch.Tensor) -> torch.Tensor:
    """Effective sample size (sum w)^2 / sum w^2. (B, S) -> (B,)."""
    return torch.exp(2 * torch.logsumexp(log_weights, -1) - torch.logsumexp(2 * log_weights, -1))


def _predict(nearest: torch.Tensor, log_weights: torch.Tensor, n_classes: int):
    """Weighted class frequencies and their standard errors.

    nearest (B, S) long, log_weights (B, S) -> (probabilities (B, C), stderr (B, C)).
    """
    weights = torch.softmax(log_weights, -1)
    votes = torch.nn.functional.one_hot(nearest, n_classes).to(weights.dtype)  # (B, S, C)
    probs = torch.einsum("bs,bsc->bc", weights, votes)
    variance = torch.einsum("bs,bsc->bc", weights.square(), (votes - probs[:, None, :]).square())
    return probs, variance.sqrt()


def _run_prototype_smc(
    task: TaskFamily, xs: torch.Tensor, ys: torch.Tensor, *, seed: int, n_samples: int
) -> PrototypeDiagnostics:
    """The sequential Monte-Carlo sampler behind :func:`prototype_diagnostics` (particles in float32)."""
    check_int("n_samples", n_samples, minimum=2)
    check_int("seed", seed)
    batch, n_points, d = xs.shape
    n_classes, noise_std = task.n_classes, float(task.noise_std)
    device = xs.device
    gen = torch.Generator(device=device).manual_seed(seed)
    points = xs.to(torch.float32)
    centres = torch.randn(batch, n_samples, n_classes, d, generator=gen, device=device, dtype=torch.float32)
    log_weights = torch.zeros(batch, n_samples, device=device, dtype=torch.float64)
    scale = torch.full((batch,), 2.38 / math.sqrt(n_classes * d), device=device, dtype=torch.float64)
    log_constant = -math.log(n_classes) - 0.5 * d * math.log(2 * math.pi * noise_std**2)
    log_evidence = torch.zeros(batch, device=device, dtype=torch.float64)
    nearest = None
    names = ("probs", "stderr", "ess", "ess_used", "resampled", "acceptance", "log_evidence")
    outputs = {name: [] for name in names}
    for i in range(n_points):
        before = torch.logsumexp(log_weights, -1)
        if nearest is not None:
            log_weights = log_weights - VIOLATION_PENALTY * (nearest != ys[:, i - 1 : i])
        log_weights = log_weights + _observe(centres, points[:, i], noise_std)[0]
        log_evidence = log_evidence + torch.logsumexp(log_weights, -1) - before + log_constant
        log_weights = log_weights - log_weights.amax(-1, keepdim=True)
        ess = _ess(log_weights)
        need = ess < RESAMPLE_THRESHOLD * n_samples
        collapsed = ess < COLLAPSE_THRESHOLD * n_samples
        acceptance = torch.full((batch,), math.nan, device=device, dtype=torch.float64)
        for group, n_rounds in ((need & ~collapsed, N_MOVES), (collapsed, COLLAPSE_MOVES)):
            if not bool(group.any()):
                continue
            idx = group.nonzero().squeeze(1)
            moved, rate = _resample_move(
                centres[idx], log_weights[idx], scale[idx], points[idx, : i + 1], ys[idx, :i], noise_std, n_rounds, gen
            )
            centres = centres.index_copy(0, idx, moved)
            log_weights = log_weights.index_fill(0, idx, 0.0)
            scale = scale.index_copy(0, idx, _adapt_scale(scale[idx], rate))
            acceptance = acceptance.index_copy(0, idx, rate)
        nearest = _observe(centres, points[:, i], noise_std)[1]
        probs, stderr = _predict(nearest, log_weights, n_classes)
        values = (probs, stderr, ess, _ess(log_weights), need, acceptance, log_evidence)
        for name, value in zip(outputs, values, strict=True):
            outputs[name].append(value)
    stacked = {name: torch.stack(values, dim=1) for name, values in outputs.items()}
    return PrototypeDiagnostics(
        log_probs=_floor(torch.log(stacked["probs"])),
        ess=stacked["ess"],
        ess_used=stacked["ess_used"],
        mc_stderr=stacked["stderr"],
        resampled=stacked["resampled"],
        acceptance=stacked["acceptance"],
        log_evidence=stacked["log_evidence"],
    )
