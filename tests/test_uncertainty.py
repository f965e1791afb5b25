"""Intervals over seeds and episodes on synthetic cases with a known answer, and the convergence test
(uni_icl.convergence)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from uni_icl.convergence import convergence
from uni_icl.evaluation import paired_difference
from uni_icl.uncertainty import seeded_difference, t_interval, t_quantile


def _coverage(seed_sd: float, episode_sd: float, n_seeds: int = 3, n_episodes: int = 200, reps: int = 2000) -> float:
    """How often the interval of a - b holds the true difference 0.05, with training noise (per seed)
    and episode noise (shared by both learners' seeds: the same test episodes)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(reps):
        episodes = rng.normal(0.0, episode_sd, n_episodes)  # how hard each test episode is for a vs b
        a = 0.80 + rng.normal(0.0, seed_sd, (n_seeds, 1)) + episodes + rng.normal(0.0, 0.05, (n_seeds, n_episodes))
        b = 0.75 + rng.normal(0.0, seed_sd, (n_seeds, 1)) + rng.normal(0.0, 0.05, (n_seeds, n_episodes))
        diff = seeded_difference(a, b)
        hits += diff.lower <= 0.05 <= diff.upper
    return hits / reps


@pytest.mark.parametrize(("seed_sd", "episode_sd"), [(0.02, 0.01), (0.0, 0.1), (0.01, 0.05)])
def test_the_interval_covers_the_true_difference_at_least_95_percent_of_the_time(seed_sd, episode_sd):
    assert _coverage(seed_sd, episode_sd) >= 0.94  # 0.95 less two Monte-Carlo standard errors of 2000 draws


def test_training_noise_widens_the_interval_beyond_the_episode_only_one():
    rng = np.random.default_rng(1)
    a = 0.8 + rng.normal(0, 0.03, (3, 1)) + rng.normal(0, 0.05, (3, 500))
    b = np.full((1, 500), 0.78)
    seeded = seeded_difference(a, b)
    episodes_only = paired_difference(a.mean(0), b[0])
    assert seeded.ci > 3 * episodes_only.ci


def test_one_seed_gives_the_paired_t_interval_over_episodes():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.8, 0.1, (1, 50)), rng.normal(0.7, 0.1, (1, 50))
    diff = (a - b)[0]
    expected = stats.t.ppf(0.975, 49) * diff.std(ddof=1) / math.sqrt(50)
    result = seeded_difference(a, b)
    assert result.mean == pytest.approx(diff.mean())
    assert result.ci == pytest.approx(expected)


def test_a_reference_with_one_row_is_paired_with_every_seed_and_shapes_are_checked():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert seeded_difference(a, [[0.5, 0.5]]).mean == pytest.approx(0.25)
    assert seeded_difference([[0.5, 0.5]], a).mean == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="a, b: expected as many seeds, or one of them 1, got 2 and 3"):
        seeded_difference(a, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="a, b: expected"):
        seeded_difference(a, np.zeros((2, 3)))


def test_a_flat_noisy_curve_converges_and_a_rising_one_does_not():
    rng = np.random.default_rng(3)
    steps = list(range(100, 4100, 100))
    flat = (0.9 + rng.normal(0, 0.002, len(steps))).tolist()
    rising = [0.8 + 0.00005 * step + noise for step, noise in zip(steps, rng.normal(0, 0.002, len(steps)), strict=True)]
    assert convergence(steps, flat, tolerance=0.01).converged
    check = convergence(steps, rising, tolerance=0.01)
    assert not check.converged
    assert check.gain == pytest.approx(0.00005 * check.span, rel=0.2)


def test_a_curve_too_short_to_tell_does_not_converge():
    check = convergence([100, 200, 300], [0.9, 0.9, 0.9], tolerance=0.01)
    assert not check.converged and check.upper == math.inf


def test_a_combination_of_one_term_is_the_seeded_difference():
    from uni_icl.uncertainty import combined_difference

    rng = np.random.default_rng(4)
    a, b = rng.normal(0.8, 0.1, (3, 40)), rng.normal(0.7, 0.1, (3, 40))
    assert combined_difference([(1.0, a, b)]) == pytest.approx(seeded_difference(a, b))


def test_a_difference_in_differences_covers_its_true_value():
    """Drop on family 1 minus drop on family 2 (two independent test sets, the same seeds' models)."""
    from uni_icl.uncertainty import combined_difference

    rng = np.random.default_rng(5)
    hits, reps = 0, 1000
    for _ in range(reps):
        seed_effect = rng.normal(0, 0.02, (3, 1))  # a seed's mixed model is shared by both families
        mixed_1 = 0.80 + seed_effect + rng.normal(0, 0.1, (3, 150))
        single_1 = 0.83 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.1, (3, 150))
        mixed_2 = 0.90 + seed_effect + rng.normal(0, 0.1, (3, 200))
        single_2 = 0.91 + rng.normal(0, 0.02, (3, 1)) + rng.normal(0, 0.1, (3, 200))
        did = combined_difference([(1.0, mixed_1, single_1), (-1.0, mixed_2, single_2)])
        hits += did.lower <= -0.02 <= did.upper
    assert hits / reps >= 0.94


def test_t_interval_by_hand_and_with_one_row():
    mean, half = t_interval(np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0]]))
    assert mean.tolist() == [2.0, 10.0]
    assert half[0] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6) and half[1] == 0.0  # sd 1, t(2) = 4.3027
    assert t_quantile(2) == pytest.approx(stats.t.ppf(0.975, 2), rel=1e-12)
    mean, half = t_interval(np.array([[0.5, 0.7]]))
    assert mean.tolist() == [0.5, 0.7] and half.tolist() == [0.0, 0.0]


# ----------------------------------------------------------------------------- where a score sits, and seeds


def test_a_ratio_with_an_exact_denominator_is_the_numerators_interval_scaled():
    from uni_icl.uncertainty import ratio_interval

    rng = np.random.default_rng(6)
    a = rng.normal(0.05, 0.02, (3, 100))
    ratio = ratio_interval(a, np.full((3, 100), 0.1))
    interval = seeded_difference(a, np.zeros((1, 100)))
    assert ratio.estimate == pytest.approx(interval.mean / 0.1)
    assert (ratio.low, ratio.high) == pytest.approx((interval.lower / 0.1, interval.upper / 0.1))


def test_fiellers_interval_covers_where_a_student_sits_between_floor_and_ceiling():
    """Student at 0.90, floor 0.85, ceiling 0.95: position 0.5, with training and episode noise."""
    from uni_icl.uncertainty import ratio_interval

    rng = np.random.default_rng(7)
    hits, reps = 0, 1000
    for _ in range(reps):
        episodes = rng.normal(0, 0.05, 200)  # how hard each test episode is, shared by everyone
        floor = 0.85 + episodes + rng.normal(0, 0.01, (3, 1)) + rng.normal(0, 0.05, (3, 200))
        ceiling = 0.95 + episodes + rng.normal(0, 0.01, (3, 1)) + rng.normal(0, 0.05, (3, 200))
        student = 0.90 + episodes + rng.normal(0, 0.01, (3, 1)) + rng.normal(0, 0.05, (3, 200))
        ratio = ratio_interval(student - floor, ceiling - floor)
        hits += ratio.low is not None and ratio.low <= 0.5 <= ratio.high
    assert hits / reps >= 0.94


def test_a_ratio_whose_denominator_may_be_zero_has_no_bounded_interval():
    from uni_icl.uncertainty import ratio_interval

    rng = np.random.default_rng(8)
    ratio = ratio_interval(rng.normal(0.05, 0.02, (3, 50)), rng.normal(0.0, 0.05, (3, 50)))
    assert ratio.low is None and ratio.high is None
    with pytest.raises(ValueError, match="a, b"):
        ratio_interval(np.zeros((3, 5)), np.zeros((2, 5)))


def test_spreads_split_a_seeded_interval_into_its_two_parts():
    from uni_icl.uncertainty import spreads

    rng = np.random.default_rng(9)
    diff = 0.02 + rng.normal(0, 0.01, (4, 1)) + rng.normal(0, 0.1, (4, 300))
    interval = seeded_difference(diff, np.zeros((1, 300)))
    parts = spreads(diff.mean(1).tolist(), interval.ci)
    assert parts.seed_sd == pytest.approx(diff.mean(1).std(ddof=1))
    assert parts.episode_se == pytest.approx(diff.mean(0).std(ddof=1) / math.sqrt(300))
    seeds_only = spreads([0.1, 0.2, 0.3], t_quantile(2) * 0.1 / math.sqrt(3))  # a t-interval over seeds
    assert seeds_only.seed_sd == pytest.approx(0.1) and seeds_only.episode_se == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="per_seed"):
        spreads([0.1], 0.01)


def _deciding_share(effect: float, seed_sd: float, n_seeds: int, margin: float, reps: int = 4000) -> float:
    """How often a t-interval over ``n_seeds`` seeds of N(effect, seed_sd^2) lies clear of ±margin."""
    rng = np.random.default_rng(10)
    values = rng.normal(effect, seed_sd, (reps, n_seeds))
    mean, half = values.mean(1), t_quantile(n_seeds - 1) * values.std(1, ddof=1) / math.sqrt(n_seeds)
    return float(np.mean((np.abs(mean - margin) > half) & (np.abs(mean + margin) > half)))


def test_seeds_to_decide_is_the_fewest_seeds_whose_interval_decides_80_percent_of_the_time():
    from uni_icl.uncertainty import seeds_to_decide

    per_seed = [0.0, 0.07, 0.05]  # mean 0.04, sd 0.036: 3 seeds straddle +0.01 (t = 4.30)
    half_width = t_quantile(2) * np.std(per_seed, ddof=1) / math.sqrt(3)
    assert 0.04 - half_width < 0.01
    needed = seeds_to_decide(per_seed, half_width, 0.01)
    assert needed is not None and needed > 3
    sd = float(np.std(per_seed, ddof=1))
    assert _deciding_share(0.04, sd, needed, 0.01) >= 0.78  # 0.8 less Monte-Carlo error
    assert _deciding_share(0.04, sd, needed - 1, 0.01) < 0.8


def test_no_number_of_seeds_decides_an_effect_on_a_bound_or_one_the_episodes_blur():
    from uni_icl.uncertainty import seeds_to_decide

    assert seeds_to_decide([0.004, 0.016, 0.010], 0.016, 0.01) is None  # the mean lies on +m
    # mean 0.014, 0.004 from +m; the episodes alone give a half-width of about 1.96 x 0.01
    assert seeds_to_decide([0.013, 0.014, 0.015], t_quantile(2) * 0.01, 0.01) is None
    with pytest.raises(ValueError, match="power"):
        seeds_to_decide([0.0, 0.1], 0.1, 0.01, power=1.0)


@pytest.mark.parametrize(
    "interval, reading",
    [
        ((0.019, 0.008), "better, by less than the margin"),  # 4b's quick numbers on the log scale, m = 0.0953
        ((0.15, 0.03), "better, by more than the margin"),
        ((0.09, 0.03), "better, by an amount the interval cannot place against the margin"),
        ((0.01, 0.02), "no significant difference"),
        ((-0.02, 0.01), "worse, by less than the margin"),
        ((-0.2, 0.01), "worse, by more than the margin"),
    ],
)
def test_direction_reads_the_sign_and_size_of_an_effect(interval, reading):
    from uni_icl.evaluation import Difference
    from uni_icl.experiments.evidence import direction

    assert direction(Difference(*interval), math.log(1.1)) == reading
