"""Tests of the Bayes-optimal predictors: brute-force references, the learner contract, accuracy."""

from __future__ import annotations

import math

import pytest
import torch

from uni_icl.learners.bayes import bayes_log_probs, log_normal_mass, prototype_diagnostics
from uni_icl.tasks import AmortizedTask, MixtureTask, PairwiseTask, PrototypeTask, RadiusTask
from uni_icl.tasks.synthetic import amortized_labels, pairwise_labels

SMALL_SAMPLES = 256  # prototype particles in tests that do not compare with a reference


# Many small tensor ops: one thread avoids OpenMP stalls when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAMILIES = {
    "amortized": AmortizedTask(n_points=12, noise_std=1.3),
    "pairwise": PairwiseTask(n_points=12),
    "prototype": PrototypeTask(n_points=12),
    "prototype_c3_d3": PrototypeTask(n_points=12, n_classes=3, d=3, noise_std=0.7),
}


def _log_probs(task, xs, ys, seed=0):
    return bayes_log_probs(task, xs, ys, seed=seed, n_samples=SMALL_SAMPLES)


def _weighted_estimate(log_weights: torch.Tensor, outcome: torch.Tensor):
    """Self-normalised importance-sampling mean of ``outcome`` (n,) or (n, C) and its standard error."""
    weights = torch.softmax(log_weights, 0)
    if outcome.dim() == 1:
        outcome = outcome[:, None]
    mean = weights @ outcome
    stderr = ((weights[:, None] ** 2) * (outcome - mean) ** 2).sum(0).sqrt()
    return mean, stderr


# ----------------------------------------------------------------------------- API and contract


@pytest.mark.parametrize(
    ("task", "parameter"),
    [
        (RadiusTask(), "task.name"),
        (MixtureTask(), "task.name"),
        (PairwiseTask(k=2), "k"),
        (PairwiseTask(d=3), "d"),
        (PairwiseTask(n_classes=3), "n_classes"),
    ],
)
def test_unsupported_cases_raise_naming_the_parameter(task, parameter):
    episode = task.sample(2, seed=0)
    with pytest.raises(ValueError, match=parameter) as error:
        bayes_log_probs(task, episode.xs, episode.ys)
    assert "allowed" in str(error.value)


def test_bad_inputs_raise():
    task = AmortizedTask(n_points=5)
    episode = task.sample(2, seed=0)
    with pytest.raises(ValueError, match="xs"):
        bayes_log_probs(task, episode.xs[..., :1], episode.ys)
    with pytest.raises(ValueError, match="ys"):
        bayes_log_probs(task, episode.xs, episode.ys.float())
    with pytest.raises(ValueError, match="ys"):
        bayes_log_probs(task, episode.xs, episode.ys + 2)
    with pytest.raises(ValueError, match="n_samples"):
        bayes_log_probs(PrototypeTask(n_points=5), episode.xs, episode.ys, n_samples=1)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_output_is_normalised_and_follows_the_input(name):
    task = FAMILIES[name]
    episode = task.sample(5, seed=1)
    log_probs = _log_probs(task, episode.xs, episode.ys)
    assert log_probs.shape == (5, task.n_points, task.n_classes)
    assert log_probs.dtype == episode.xs.dtype and log_probs.device == episode.xs.device
    assert torch.isfinite(log_probs).all()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(5, task.n_points), atol=1e-5)


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("position", [0, 4, 10])
def test_position_i_ignores_its_label_and_everything_after(name, position):
    task = FAMILIES[name]
    episode = task.sample(4, seed=2)
    xs, ys = episode.xs.clone(), episode.ys.clone()
    gen = torch.Generator().manual_seed(3)
    ys[:, position] = (ys[:, position] + 1) % task.n_classes
    xs[:, position + 1 :] = 3 * torch.randn(xs[:, position + 1 :].shape, generator=gen)
    ys[:, position + 1 :] = torch.randint(task.n_classes, ys[:, position + 1 :].shape, generator=gen)
    before = _log_probs(task, episode.xs, episode.ys)
    after = _log_probs(task, xs, ys)
    assert torch.equal(before[:, : position + 1], after[:, : position + 1])
    assert not torch.equal(before[:, position + 1 :], after[:, position + 1 :])  # the change is visible later


def test_global_rng_is_untouched():
    state = torch.get_rng_state()
    for task in FAMILIES.values():
        episode = task.sample(2, seed=4)
        _log_probs(task, episode.xs, episode.ys)
    assert torch.equal(state, torch.get_rng_state())


def test_prototype_is_reproducible_and_seeded():
    task = FAMILIES["prototype"]
    episode = task.sample(3, seed=5)
    first = _log_probs(task, episode.xs, episode.ys, seed=7)
    assert torch.equal(first, _log_probs(task, episode.xs, episode.ys, seed=7))
    assert not torch.equal(first, _log_probs(task, episode.xs, episode.ys, seed=8))


# ----------------------------------------------------------------------------- amortized


@pytest.mark.parametrize(("d", "noise_std"), [(1, 0.5), (2, 1.0), (5, 2.0)])
def test_amortized_first_position_uses_the_query_input(d, noise_std):
    """P(y_0 = 0 | x_0) = Phi(t_0 sigma / sqrt(d (sigma^2 + 1))) with t_0 = sum(x_0): not 1/2."""
    task = AmortizedTask(d=d, noise_std=noise_std, n_points=3)
    episode = task.sample(64, seed=6)
    total = episode.xs[:, 0].double().sum(-1)
    expected = torch.special.ndtr(total * noise_std / math.sqrt(d * (noise_std**2 + 1)))
    got = bayes_log_probs(task, episode.xs, episode.ys)[:, 0, 0].double().exp()
    assert torch.allclose(got, expected, atol=1e-6)
    assert (expected - 0.5).abs().max() > 0.2


@pytest.mark.parametrize("noise_std", [0.5, 1.5])
def test_amortized_matches_importance_sampling_over_the_task_vector(noise_std):
    """Reference: prior draws of the full w (not only its sum), weighted by the Gaussian likelihood of
    x_0..x_i, kept if they reproduce y_0..y_{i-1} through ``amortized_labels``."""
    task = AmortizedTask(d=2, noise_std=noise_std, n_points=7)
    episode = task.sample(4, seed=7)
    got = bayes_log_probs(task, episode.xs, episode.ys).double().exp()[..., 0]
    gen = torch.Generator().manual_seed(8)
    vectors = torch.randn(200_000, 2, generator=gen, dtype=torch.float64)
    for b in range(4):
        xs = episode.xs[b].double()
        log_lik = -((xs[None] - vectors[:, None]) ** 2).sum(-1) / (2 * noise_std**2)  # (n, N)
        labels = amortized_labels(xs[None].expand(len(vectors), -1, -1), vectors)  # (n, N)
        consistent = (labels == episode.ys[b]).cumprod(-1)
        for i in range(task.n_points):
            log_weights = log_lik[:, : i + 1].sum(-1)
            if i:
                log_weights = log_weights.masked_fill(consistent[:, i - 1] == 0, -math.inf)
            mean, stderr = _weighted_estimate(log_weights, (labels[:, i] == 0).double())
            assert abs(got[b, i] - mean) <= 4 * stderr + 2e-3, (b, i, got[b, i], mean, stderr)


@pytest.mark.parametrize(
    ("lower", "upper"),
    [
        (-math.inf, math.inf),
        (-1.0, 2.0),
        (30.0, 31.0),
        (-40.0, -39.5),
        (8.0, math.inf),
        (0.3, 0.3 + 1e-9),
        (-1e-9, 1e-9),
        (-3.0, -3.0),
    ],
)
def test_log_normal_mass_is_accurate_in_the_tails(lower, upper):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    flip = lower + upper > 0  # evaluate the smaller tail: 50 digits cannot hold 1 - 1e-198
    exact = mpmath.ncdf(-lower) - mpmath.ncdf(-upper) if flip else mpmath.ncdf(upper) - mpmath.ncdf(lower)
    got = log_normal_mass(torch.tensor([lower], dtype=torch.float64), torch.tensor([upper], dtype=torch.float64))
    if exact == 0:
        assert got.item() == -math.inf
    else:
        assert got.item() == pytest.approx(float(mpmath.log(exact)), rel=1e-9, abs=1e-9)


def test_amortized_far_tail_episode_is_exact():
    """Labels that pin s = sum(w) 17 posterior standard deviations from the posterior mean."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 60
    task = AmortizedTask(d=1, noise_std=1.0, n_points=2)
    xs = torch.tensor([[[30.0], [30.5]]])
    ys = torch.tensor([[1, 0]])
    got = bayes_log_probs(task, xs, ys).double()[0, 1]
    mean, std = mpmath.mpf(60.5) / 3, mpmath.sqrt(mpmath.mpf(1) / 3)
    lower, query = (30 - mean) / std, (mpmath.mpf(30.5) - mean) / std
    p0 = (mpmath.ncdf(-lower) - mpmath.ncdf(-query)) / mpmath.ncdf(-lower)  # upper tails: no cancellation
    assert got.exp()[0].item() == pytest.approx(float(p0), rel=1e-6)
    assert got.exp()[1].item() == pytest.approx(float(1 - p0), rel=1e-6)


# ----------------------------------------------------------------------------- pairwise


def test_pairwise_matches_rejection_sampling_over_directions():
    """Reference: prior draws of (w_0, w_1), kept if ``pairwise_labels`` reproduces y_0..y_{i-1}."""
    task = PairwiseTask(n_points=9)
    episode = task.sample(4, seed=9)
    got = bayes_log_probs(task, episode.xs, episode.ys).double().exp()[..., 0]
    gen = torch.Generator().manual_seed(10)
    directions = torch.randn(200_000, 2, 1, 2, generator=gen)
    for b in range(4):
        labels = pairwise_labels(episode.xs[b][None].expand(len(directions), -1, -1), directions)
        consistent = (labels == episode.ys[b]).cumprod(-1)
        for i in range(task.n_points):
            keep = consistent[:, i - 1] == 1 if i else torch.ones(len(directions), dtype=torch.bool)
            outcome = (labels[keep, i] == 0).double()
            stderr = outcome.std() / math.sqrt(len(outcome))
            assert abs(got[b, i] - outcome.mean()) <= 4 * stderr + 2e-3, (b, i, got[b, i], outcome.mean())


def test_pairwise_depends_on_directions_only():
    task = PairwiseTask(n_points=20)
    episode = task.sample(8, seed=11)
    scales = torch.rand(8, 20, 1, generator=torch.Generator().manual_seed(12)) * 5 + 0.1
    base = bayes_log_probs(task, episode.xs, episode.ys)
    assert torch.allclose(base, bayes_log_probs(task, episode.xs * scales, episode.ys), atol=1e-5)
    assert torch.allclose(base[:, 0].exp(), torch.full((8, 2), 0.5))


# ----------------------------------------------------------------------------- prototype


@pytest.mark.parametrize(("n_classes", "d", "noise_std"), [(2, 2, 1.0), (3, 3, 0.7)])
def test_prototype_matches_importance_sampling_over_the_centres(n_classes, d, noise_std):
    """Reference: prior draws of the centres weighted by the i.i.d.-mixture likelihood of x_0..x_i,
    kept if their nearest centres reproduce y_0..y_{i-1}; compared within the joint Monte-Carlo error."""
    task = PrototypeTask(n_points=8, n_classes=n_classes, d=d, noise_std=noise_std)
    episode = task.sample(3, seed=13)
    diagnostics = prototype_diagnostics(task, episode.xs, episode.ys, seed=0, n_samples=2048)
    got = diagnostics.log_probs.exp()
    gen = torch.Generator().manual_seed(14)
    centres = torch.randn(200_000, n_classes, d, generator=gen, dtype=torch.float64)
    n_checked = 0
    for b in range(3):
        sq = ((episode.xs[b].double()[None, :, None] - centres[:, None]) ** 2).sum(-1)  # (n, N, C)
        log_lik = torch.logsumexp(-sq / (2 * noise_std**2), -1)
        labels = sq.argmin(-1)
        consistent = (labels == episode.ys[b]).cumprod(-1)
        for i in range(task.n_points):
            log_weights = log_lik[:, : i + 1].sum(-1)
            if i:
                log_weights = log_weights.masked_fill(consistent[:, i - 1] == 0, -math.inf)
            if 1 / torch.softmax(log_weights, 0).square().sum() < 300:
                continue  # the reference itself is unreliable
            mean, stderr = _weighted_estimate(
                log_weights, torch.nn.functional.one_hot(labels[:, i], n_classes).double()
            )
            tolerance = 4 * (stderr**2 + 4 * diagnostics.mc_stderr[b, i] ** 2).sqrt() + 0.01
            assert ((got[b, i] - mean).abs() <= tolerance).all(), (b, i, got[b, i], mean, stderr)
            n_checked += 1
    assert n_checked >= 12


def test_prototype_diagnostics_are_consistent():
    task = PrototypeTask(n_points=25)
    episode = task.sample(12, seed=15)
    runs = [
        prototype_diagnostics(task, episode.xs, episode.ys, seed=seed, n_samples=SMALL_SAMPLES) for seed in range(4)
    ]
    first = runs[0]
    assert ((first.ess >= 1 - 1e-9) & (first.ess <= SMALL_SAMPLES + 1e-6)).all()
    assert torch.equal(first.resampled, first.ess < 0.5 * SMALL_SAMPLES)
    assert torch.allclose(first.ess_used[first.resampled], torch.tensor(float(SMALL_SAMPLES), dtype=torch.float64))
    assert torch.isnan(first.acceptance[~first.resampled]).all()
    assert ((first.acceptance[first.resampled] > 0) & (first.acceptance[first.resampled] <= 1)).all()
    assert (first.mc_stderr >= 0).all() and (first.mc_stderr <= 0.5 + 1e-9).all()
    spread = torch.stack([run.log_probs.exp()[..., 0] for run in runs]).std(0)  # across seeds
    reported = torch.stack([run.mc_stderr[..., 0] for run in runs]).pow(2).mean(0).sqrt()
    ratio = spread.pow(2).mean().sqrt() / reported.pow(2).mean().sqrt()
    assert 0.5 < ratio < 2.5, ratio


# ----------------------------------------------------------------------------- against the generator


def _nearest_class_mean_scores(xs: torch.Tensor, ys: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Baseline: the class whose mean of the earlier points is nearest (class 0 when none). -> (B, N, C) scores."""
    one_hot = torch.nn.functional.one_hot(ys, n_classes).to(xs.dtype)  # (B, N, C)
    counts = one_hot.cumsum(1) - one_hot  # earlier points only
    sums = torch.einsum("bnc,bnd->bncd", one_hot, xs).cumsum(1) - torch.einsum("bnc,bnd->bncd", one_hot, xs)
    means = sums / counts.clamp_min(1)[..., None]
    distance = (xs[:, :, None] - means).square().sum(-1)
    return torch.where(counts > 0, -distance, torch.full_like(distance, -math.inf)).nan_to_num(neginf=-1e30)


@pytest.mark.parametrize("name", ["amortized", "pairwise", "prototype"])
def test_bayes_accuracy_beats_nearest_class_mean(name):
    task = {"amortized": AmortizedTask, "pairwise": PairwiseTask, "prototype": PrototypeTask}[name](n_points=30)
    episode = task.sample(128, seed=16)
    bayes = _log_probs(task, episode.xs, episode.ys).argmax(-1) == episode.ys
    baseline = _nearest_class_mean_scores(episode.xs, episode.ys, 2).argmax(-1) == episode.ys
    assert bayes.float().mean() > baseline.float().mean() + 0.01
    assert bayes[:, 15:].float().mean() > 0.9


@pytest.mark.parametrize("name", ["amortized", "pairwise", "prototype"])
def test_bayes_predictions_are_calibrated_on_generated_episodes(name):
    """On episodes drawn from the prior, the frequency of class 0 among points predicted with
    probability p is p (the exact predictors; the prototype one up to its model approximation)."""
    task = {"amortized": AmortizedTask, "pairwise": PairwiseTask, "prototype": PrototypeTask}[name](n_points=20)
    episode = task.sample(160 if name == "prototype" else 1024, seed=17)
    p0 = _log_probs(task, episode.xs, episode.ys).exp()[..., 0].flatten().double()
    is0 = (episode.ys == 0).flatten().double()
    edges = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0 + 1e-9], dtype=torch.float64)
    slack = 0.03 if name == "prototype" else 0.01
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        mask = (p0 >= low) & (p0 < high)
        if mask.sum() < 50:
            continue
        stderr = (p0[mask] * (1 - p0[mask])).mean().sqrt() / mask.sum().sqrt()
        assert abs(is0[mask].mean() - p0[mask].mean()) <= 4 * stderr + slack, (low, high)
