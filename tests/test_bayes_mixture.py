"""Tests of the radius and mixture Bayes predictors: the learner contract, brute-force references,
calibration on generated episodes, accuracy against simple rules.

Tolerances were fixed before the first run: 4 standard errors of the Monte-Carlo reference (and of
the sampler, where it has one) plus a small absolute slack, as in ``test_bayes.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

from uni_icl.learners.bayes import bayes_log_probs
from uni_icl.learners.bayes_mixture import (
    any_bayes_log_probs,
    mixture_bayes,
    prototype_bayes_with_evidence,
    radius_bayes_log_probs,
)
from uni_icl.tasks import MIXTURE_COMPONENTS, AmortizedTask, MixtureTask, PairwiseTask, PrototypeTask, RadiusTask
from uni_icl.tasks.synthetic import (
    RADIUS_SCALE,
    amortized_labels,
    nearest_centre_labels,
    pairwise_labels,
    radius_labels,
)

SMALL_SAMPLES = 256  # prototype particles where no reference is compared
REFERENCE_DRAWS = 200_000  # prior draws of the brute-force references
CALIBRATION_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0 + 1e-9)


# Many small tensor ops: one thread avoids OpenMP stalls when the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


TASKS = {"radius": RadiusTask(n_points=12), "mixture": MixtureTask(n_points=12)}


def _log_probs(name: str, xs: torch.Tensor, ys: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return any_bayes_log_probs(TASKS[name], xs, ys, seed=seed, n_samples=SMALL_SAMPLES)


def _weighted_estimate(log_weights: torch.Tensor, outcome: torch.Tensor):
    """Self-normalised importance-sampling mean of ``outcome`` (n,) and its standard error."""
    weights = torch.softmax(log_weights, 0)
    mean = weights @ outcome
    return mean, (weights.square() * (outcome - mean).square()).sum().sqrt()


def _log_mean_exp(log_weights: torch.Tensor):
    """log of the mean of exp(log_weights) (n,) and its delta-method standard error."""
    n = log_weights.numel()
    log_mean = torch.logsumexp(log_weights, 0) - math.log(n)
    relative = torch.exp(log_weights - log_mean)  # w / mean(w)
    return log_mean, relative.std() / math.sqrt(n)


def _check_calibration(prob: torch.Tensor, outcome: torch.Tensor, slack: float) -> int:
    """Binned reliability: |frequency - mean predicted| <= 4 standard errors + slack in every bin of >= 50.

    prob, outcome (B, M) float64 (M predictions per episode). The standard error is clustered by
    episode (positions of one episode are not independent). Returns the number of bins checked.
    """
    checked = 0
    for low, high in zip(CALIBRATION_EDGES[:-1], CALIBRATION_EDGES[1:], strict=True):
        mask = (prob >= low) & (prob < high)
        count = int(mask.sum())
        if count < 50:
            continue
        residual = torch.where(mask, outcome - prob, 0.0)
        stderr = residual.sum(1).square().sum().sqrt() / count
        gap = residual.sum() / count
        assert abs(gap) <= 4 * stderr + slack, (low, high, float(gap), float(stderr), count)
        checked += 1
    return checked


# ----------------------------------------------------------------------------- API and contract


def test_unsupported_cases_raise_naming_the_parameter():
    episode = PairwiseTask(n_points=5).sample(2, seed=0)
    with pytest.raises(ValueError, match="task.name"):
        radius_bayes_log_probs(PairwiseTask(), episode.xs, episode.ys)
    with pytest.raises(ValueError, match="task.name"):
        mixture_bayes(PairwiseTask(), episode.xs, episode.ys)
    with pytest.raises(ValueError, match="n_grid"):
        radius_bayes_log_probs(RadiusTask(), episode.xs, episode.ys, n_grid=101)
    with pytest.raises(ValueError, match="^k:"):
        mixture_bayes(MixtureTask(k=2), episode.xs, episode.ys)
    three_d = MixtureTask(d=3, n_points=5).sample(2, seed=0)
    with pytest.raises(ValueError, match="^d:"):
        mixture_bayes(MixtureTask(d=3), three_d.xs, three_d.ys)
    with pytest.raises(ValueError, match="ys"):
        radius_bayes_log_probs(RadiusTask(), episode.xs, episode.ys + 2)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_output_is_normalised_and_follows_the_input(name):
    task = TASKS[name]
    episode = task.sample(6, seed=1)
    log_probs = _log_probs(name, episode.xs, episode.ys)
    assert log_probs.shape == (6, task.n_points, 2)
    assert log_probs.dtype == episode.xs.dtype and log_probs.device == episode.xs.device
    assert torch.isfinite(log_probs).all()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(6, task.n_points), atol=1e-5)


def test_family_posterior_is_normalised_and_starts_from_the_inputs():
    task = TASKS["mixture"]
    episode = task.sample(6, seed=1)
    output = mixture_bayes(task, episode.xs, episode.ys, n_samples=SMALL_SAMPLES)
    assert output.family_log_posterior.shape == (6, task.n_points, 3)
    assert output.component_log_probs.shape == (6, task.n_points, 3, 2)
    assert torch.allclose(output.family_log_posterior.exp().sum(-1), torch.ones(6, task.n_points, dtype=torch.float64))
    # position 0: no label yet, but x_0's scale already separates pairwise (variance sigma^2) from the others
    assert (output.family_log_posterior[:, 0].exp() - 1 / 3).abs().max() > 0.01


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("position", [0, 4, 10])
@pytest.mark.parametrize("scale", [1.0, 50.0])
def test_position_i_ignores_its_label_and_everything_after(name, position, scale):
    task = TASKS[name]
    episode = task.sample(4, seed=2)
    base_xs = scale * episode.xs
    xs, ys = base_xs.clone(), episode.ys.clone()
    gen = torch.Generator().manual_seed(3)
    ys[:, position] = 1 - ys[:, position]
    xs[:, position + 1 :] = 3 * scale * torch.randn(xs[:, position + 1 :].shape, generator=gen)
    ys[:, position + 1 :] = torch.randint(2, ys[:, position + 1 :].shape, generator=gen)
    before = _log_probs(name, base_xs, episode.ys)
    after = _log_probs(name, xs, ys)
    assert torch.isfinite(before).all() and torch.isfinite(after).all()
    # equal up to float64 rounding (2e-16 seen: a batched reduction rounds differently when later
    # values change); a leak of a later label or point moves a log-probability by far more
    assert torch.allclose(before[:, : position + 1], after[:, : position + 1], rtol=0, atol=1e-12)
    if scale == 1.0:
        assert not torch.equal(before[:, position + 1 :], after[:, position + 1 :])  # the change is visible later


def test_global_rng_is_untouched_and_the_sampler_is_seeded():
    state = torch.get_rng_state()
    episode = TASKS["mixture"].sample(3, seed=4)
    first = _log_probs("mixture", episode.xs, episode.ys, seed=7)
    _log_probs("radius", episode.xs, episode.ys)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(first, _log_probs("mixture", episode.xs, episode.ys, seed=7))
    assert not torch.equal(first, _log_probs("mixture", episode.xs, episode.ys, seed=8))


def test_components_are_the_single_family_predictors():
    """The prototype sampler is re-run with the same generator calls: bit-identical to ``bayes``."""
    task = MixtureTask(n_points=15)
    episode = task.sample(6, seed=5)
    output = mixture_bayes(task, episode.xs, episode.ys, seed=3, n_samples=128)
    singles = {
        "pairwise": PairwiseTask(n_points=15),
        "prototype": PrototypeTask(n_points=15),
        "amortized": AmortizedTask(n_points=15),
    }
    for index, name in enumerate(MIXTURE_COMPONENTS):
        expected = bayes_log_probs(singles[name], episode.xs, episode.ys, seed=3, n_samples=128)
        assert torch.equal(output.component_log_probs[:, :, index].to(expected.dtype), expected), name
    alone = prototype_bayes_with_evidence(singles["prototype"], episode.xs, episode.ys, seed=3, n_samples=128)
    assert torch.equal(alone.log_evidence, output.log_evidence[..., 1])


# ----------------------------------------------------------------------------- radius


def _radius_closed_form(xs: torch.Tensor, ys: torch.Tensor, noise_std: float) -> torch.Tensor:
    """P(y_i = 1) from the truncated Gamma law of u = S / (2 c^2 r^2), shape ((i + 1) d - 1) / 2. -> (B, N)."""
    xs = xs.double()
    batch, n_points, d = xs.shape
    norms = xs.norm(dim=-1)
    out = torch.empty(batch, n_points, dtype=torch.float64)
    for b in range(batch):
        for i in range(n_points):
            ones = [float(norms[b, j]) for j in range(i) if ys[b, j] == 1]
            zeros = [float(norms[b, j]) for j in range(i) if ys[b, j] == 0]
            lo, hi = max([2.0, *ones]), min([4.0, *zeros])
            q = min(max(float(norms[b, i]), lo), hi)
            a = float(norms[b, : i + 1].square().sum()) / (2 * (RADIUS_SCALE * noise_std) ** 2)
            shape = torch.tensor(((i + 1) * d - 1) / 2, dtype=torch.float64)
            ends = torch.tensor([a / hi**2, a / q**2, a / lo**2], dtype=torch.float64)  # increasing
            lower = torch.special.gammainc(shape, ends)
            upper = torch.special.gammaincc(shape, ends)
            cdf = lower if lower[-1] < 0.5 else -upper  # difference the smaller tail: no cancellation
            out[b, i] = (cdf[1] - cdf[0]) / (cdf[2] - cdf[0])  # mass of r in [q, hi] over [lo, hi]
    return out


@pytest.mark.parametrize("noise_std", [1.0, 1.4])
def test_radius_matches_the_closed_form(noise_std):
    task = RadiusTask(n_points=30, noise_std=noise_std)
    episode = task.sample(24, seed=6)
    got = radius_bayes_log_probs(task, episode.xs.double(), episode.ys)[..., 1].exp()
    expected = _radius_closed_form(episode.xs, episode.ys, noise_std)
    assert (got - expected).abs().max() <= 1e-6


@pytest.mark.parametrize(("d", "noise_std"), [(2, 1.0), (3, 0.7)])
def test_radius_matches_importance_sampling_over_the_radius(d, noise_std):
    """Reference: prior draws of r weighted by the Gaussian likelihood of x_0..x_i, kept if
    ``radius_labels`` reproduces y_0..y_{i-1}."""
    task = RadiusTask(d=d, noise_std=noise_std, n_points=5)
    episode = task.sample(4, seed=7)
    got = radius_bayes_log_probs(task, episode.xs, episode.ys).double().exp()[..., 1]
    radii = 2 + 2 * torch.rand(REFERENCE_DRAWS, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    scale = RADIUS_SCALE * noise_std * radii[:, None]  # (n, 1)
    for b in range(4):
        xs = episode.xs[b].double()
        log_lik = -d * scale.log() - xs.square().sum(-1)[None] / (2 * scale.square())  # (n, N)
        labels = radius_labels(xs[None].expand(len(radii), -1, -1), radii)
        consistent = (labels == episode.ys[b]).cumprod(-1)
        for i in range(task.n_points):
            log_weights = log_lik[:, : i + 1].sum(-1)
            if i:
                log_weights = log_weights.masked_fill(consistent[:, i - 1] == 0, -math.inf)
            mean, stderr = _weighted_estimate(log_weights, (labels[:, i] == 1).double())
            assert abs(got[b, i] - mean) <= 4 * stderr + 2e-3, (b, i, got[b, i], mean, stderr)


def test_radius_is_calibrated_on_generated_episodes():
    task = RadiusTask(n_points=20)
    episode = task.sample(1024, seed=9)
    p1 = radius_bayes_log_probs(task, episode.xs, episode.ys).double().exp()[..., 1]
    assert _check_calibration(p1, (episode.ys == 1).double(), slack=0.01) >= 4


def _nearest_class_mean_accuracy(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Accuracy per (episode, position) of the class whose mean of the earlier points is nearest (0 when none)."""
    one_hot = torch.nn.functional.one_hot(ys, 2).to(xs.dtype)
    weighted = torch.einsum("bnc,bnd->bncd", one_hot, xs)
    counts = one_hot.cumsum(1) - one_hot
    means = (weighted.cumsum(1) - weighted) / counts.clamp_min(1)[..., None]
    distance = (xs[:, :, None] - means).square().sum(-1)
    scores = torch.where(counts > 0, -distance, torch.full_like(distance, -1e30))
    return (scores.argmax(-1) == ys).double()


def _midpoint_rule_accuracy(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Label 1 iff |x_i| <= the midpoint of the radii [lo, hi] within [2, 4] left by the earlier labels."""
    norms = xs.double().norm(dim=-1)
    batch, n_points = ys.shape
    correct = torch.empty(batch, n_points, dtype=torch.float64)
    for i in range(n_points):
        ones = torch.where(ys[:, :i] == 1, norms[:, :i], -math.inf).amax(1) if i else None
        zeros = torch.where(ys[:, :i] == 0, norms[:, :i], math.inf).amin(1) if i else None
        lo = ones.clamp_min(2.0) if i else torch.full((batch,), 2.0, dtype=torch.float64)
        hi = zeros.clamp_max(4.0) if i else torch.full((batch,), 4.0, dtype=torch.float64)
        predicted = (norms[:, i] <= (lo + hi) / 2).long()
        correct[:, i] = (predicted == ys[:, i]).double()
    return correct


def test_radius_accuracy_beats_simple_rules():
    task = RadiusTask(n_points=30)
    episode = task.sample(256, seed=10)
    bayes = (radius_bayes_log_probs(task, episode.xs, episode.ys).argmax(-1) == episode.ys).double()
    assert bayes.mean() >= _midpoint_rule_accuracy(episode.xs, episode.ys).mean()
    assert bayes.mean() > _nearest_class_mean_accuracy(episode.xs, episode.ys).mean() + 0.01  # as test_bayes.py
    assert bayes[:, 15:].mean() > 0.9  # as test_bayes.py


# ----------------------------------------------------------------------------- mixture: brute force


@pytest.fixture(scope="module")
def tiny_mixture():
    """Six mixture episodes (two per family) cut to their first 4 points (the generator draws 40), and for
    each the brute-force reference of :func:`_reference_log_weights` on one shared set of prior draws."""
    episode = MixtureTask(n_points=40).sample(24, seed=11)
    component = episode.params["component"]
    keep = torch.cat([(component == c).nonzero()[:2, 0] for c in range(3)])
    xs, ys = episode.xs[keep, :4], episode.ys[keep, :4]
    draws = _prior_draws(torch.Generator().manual_seed(12))
    return xs, ys, [_reference_log_weights(xs[b], draws) for b in range(len(xs))]


def _prior_draws(gen: torch.Generator) -> dict:
    """``REFERENCE_DRAWS`` prior draws of each family's parameters (d = 2, C = 2, K = 1)."""
    n = REFERENCE_DRAWS
    return {
        "pairwise": torch.randn(n, 2, 1, 2, generator=gen, dtype=torch.float64),  # directions
        "prototype": torch.randn(n, 2, 2, generator=gen, dtype=torch.float64),  # centres
        "amortized": torch.randn(n, 2, generator=gen, dtype=torch.float64),  # task vectors
    }


def _reference_log_weights(xs: torch.Tensor, draws: dict) -> dict:
    """Per family: log p(x_j | theta) (n, N) and the labels theta gives (n, N), sigma = 1.

    Prototype uses the model of the sampler it checks: i.i.d. uniform sources.
    """
    xs = xs.double()[None]  # (1, N, 2)
    n, log_norm = REFERENCE_DRAWS, -math.log(2 * math.pi)  # unit variance, d = 2
    directions, centres, vectors = draws["pairwise"], draws["prototype"], draws["amortized"]
    pairwise_lik = (log_norm - 0.5 * xs.square().sum(-1)).expand(n, -1)
    amortized_lik = log_norm - 0.5 * (xs - vectors[:, None]).square().sum(-1)
    sq = (xs[:, :, None] - centres[:, None]).square().sum(-1)  # (n, N, C)
    prototype_lik = torch.logsumexp(log_norm - 0.5 * sq, -1) - math.log(2)
    expanded = xs.expand(n, -1, -1)
    return {
        "pairwise": (pairwise_lik, pairwise_labels(expanded, directions)),
        "prototype": (prototype_lik, nearest_centre_labels(expanded, centres)),
        "amortized": (amortized_lik, amortized_labels(expanded, vectors)),
    }


def _prefix_log_weights(log_lik: torch.Tensor, labels: torch.Tensor, ys: torch.Tensor, i: int) -> torch.Tensor:
    """log p(x_0..x_i | theta) + log 1[labels of theta reproduce y_0..y_{i-1}]. -> (n,)."""
    log_weights = log_lik[:, : i + 1].sum(-1)
    if i:
        consistent = (labels[:, :i] == ys[:i]).all(-1)
        log_weights = log_weights.masked_fill(~consistent, -math.inf)
    return log_weights


def test_family_evidence_matches_importance_sampling(tiny_mixture):
    """log p_f(x_0..x_i, y_0..y_{i-1}): exact for pairwise and amortized, the sampler's estimate for prototype."""
    xs, ys, references = tiny_mixture
    task = MixtureTask(n_points=4)
    runs = [mixture_bayes(task, xs, ys, seed=seed, n_samples=2048).log_evidence for seed in range(4)]
    got, spread = torch.stack(runs).mean(0), torch.stack(runs).std(0)
    n_checked = 0
    for b, reference in enumerate(references):
        for f, name in enumerate(MIXTURE_COMPONENTS):
            log_lik, labels = reference[name]
            for i in range(4):
                log_weights = _prefix_log_weights(log_lik, labels, ys[b], i)
                if not torch.isfinite(log_weights).any():  # no draw reproduces the labels
                    if name != "prototype":  # exact: impossible labels cost LOG_PROB_FLOOR
                        assert got[b, i, f] < -5000, (b, name, i)
                    continue
                if 1 / torch.softmax(log_weights, 0).square().sum() < 300:
                    continue  # the reference itself is unreliable
                expected, stderr = _log_mean_exp(log_weights)
                sampler = spread[b, i, f] / 2 if name == "prototype" else 0.0  # standard error of a 4-seed mean
                slack = 0.02 if name == "prototype" else 1e-3
                tolerance = 4 * math.sqrt(stderr**2 + sampler**2) + slack
                assert abs(got[b, i, f] - expected) <= tolerance, (b, name, i, float(got[b, i, f]), float(expected))
                n_checked += 1
    assert n_checked >= 50


def test_mixture_matches_importance_sampling(tiny_mixture):
    """Family posterior and predictive against pooled prior draws of (family, parameters), 1/3 each."""
    xs, ys, references = tiny_mixture
    task = MixtureTask(n_points=4)
    runs = [mixture_bayes(task, xs, ys, seed=seed, n_samples=2048) for seed in range(4)]
    posterior = torch.stack([run.family_log_posterior.exp() for run in runs])  # (seeds, B, N, 3)
    p0 = torch.stack([run.log_probs.exp()[..., 0] for run in runs])  # (seeds, B, N)
    family = torch.arange(3).repeat_interleave(REFERENCE_DRAWS)
    for b, reference in enumerate(references):
        parts = [reference[name] for name in MIXTURE_COMPONENTS]
        for i in range(4):
            log_weights = torch.cat([_prefix_log_weights(lik, labels, ys[b], i) for lik, labels in parts])
            label_i = torch.cat([labels[:, i] for _, labels in parts])
            checks = [((family == f).double(), posterior[:, b, i, f]) for f in range(3)]
            checks.append(((label_i == 0).double(), p0[:, b, i]))
            for outcome, estimates in checks:
                expected, stderr = _weighted_estimate(log_weights, outcome)
                tolerance = 4 * math.sqrt(stderr**2 + estimates.var() / len(runs)) + 0.01
                assert abs(estimates.mean() - expected) <= tolerance, (b, i, float(estimates.mean()), float(expected))


# ----------------------------------------------------------------------------- mixture: generated episodes


@pytest.fixture(scope="module")
def calibration_run():
    task = MixtureTask(n_points=20)
    episode = task.sample(160, seed=17)
    return episode, mixture_bayes(task, episode.xs, episode.ys, seed=0, n_samples=SMALL_SAMPLES)


def test_family_posterior_is_calibrated(calibration_run):
    """Among (episode, position, family) triples given probability p, the family is the true one with frequency p.

    Slack 0.03 as for the prototype predictor in test_bayes.py: its sampler models i.i.d. sources
    where the generator balances them.
    """
    episode, output = calibration_run
    posterior = output.family_log_posterior.exp()  # (B, N, 3)
    truth = torch.nn.functional.one_hot(episode.params["component"], 3).double()[:, None].expand_as(posterior)
    batch = posterior.shape[0]
    assert _check_calibration(posterior.reshape(batch, -1), truth.reshape(batch, -1), slack=0.03) >= 4
    true_family = (posterior * truth).sum(-1)  # (B, N)
    assert true_family[:, -1].mean() > true_family[:, 0].mean() + 0.2


def test_mixture_predictive_is_calibrated(calibration_run):
    episode, output = calibration_run
    p0 = output.log_probs.exp()[..., 0]
    assert _check_calibration(p0, (episode.ys == 0).double(), slack=0.03) >= 4


def test_mixture_accuracy_lies_between_the_single_families_and_the_oracle():
    """On mixture episodes the mixture Bayes beats every single-family Bayes (each is wrong on two thirds of
    the episodes) and cannot beat the oracle that knows the family (beyond 3 standard errors, paired)."""
    task = MixtureTask(n_points=30)
    episode = task.sample(128, seed=16)
    output = mixture_bayes(task, episode.xs, episode.ys, seed=0, n_samples=SMALL_SAMPLES)
    mixture = (output.log_probs.argmax(-1) == episode.ys).double()  # (B, N)
    singles = (output.component_log_probs.argmax(-1) == episode.ys[:, :, None]).double()  # (B, N, 3)
    for f in range(3):
        assert mixture.mean() >= singles[..., f].mean(), MIXTURE_COMPONENTS[f]
    component = episode.params["component"]
    oracle = singles.gather(-1, component[:, None, None].expand(-1, task.n_points, 1))[..., 0]
    difference = (mixture - oracle).mean(1)  # per episode
    assert difference.mean() <= 3 * difference.std() / math.sqrt(len(difference))
    baseline = _nearest_class_mean_accuracy(episode.xs, episode.ys)
    for f, name in enumerate(MIXTURE_COMPONENTS):
        mine = component == f
        assert mixture[mine].mean() > baseline[mine].mean() + 0.01, name  # the sanity level of test_bayes.py
