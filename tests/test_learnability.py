"""The learnability experiment: cross table, Bayes wrapper and cache, paired differences, decision rules."""

import math

import pytest
import torch

from uni_icl.evaluation import episode_scores
from uni_icl.experiments import common
from uni_icl.experiments import learnability as lrn
from uni_icl.experiments.common import classification_task
from uni_icl.presets import PRESETS
from uni_icl.training import TrainHistory


class _Module(torch.nn.Module):
    """Wraps a predictor function as a parameter-free module (for ``episode_scores``)."""

    is_regression = False

    def __init__(self, predict):
        super().__init__()
        self.predict = predict

    def forward(self, xs, ys):
        return self.predict(xs, ys)


def test_cross_table_one_row_per_learner_train_and_test_family():
    scale = PRESETS["smoke"].classification
    rows = lrn.cross_table(scale, ("icl", "protonet"), ("pairwise", "amortized"), lrn.SINGLE_FAMILIES, progress=False)
    keys = [(row["learner_id"], row["train_family"], row["test_family"]) for row in rows]
    expected = {
        (ln, tr, te) for ln in ("icl", "protonet") for tr in ("pairwise", "amortized") for te in lrn.SINGLE_FAMILIES
    }
    assert len(keys) == len(expected) and set(keys) == expected
    for row in rows:
        assert 0.0 <= row["mean"] <= 1.0 and 0.0 <= row["ci"] < 0.5
        assert len(row["per_position"]) == scale.n_points == len(row["per_position_ci"])
        assert len(row["per_episode_mean"]) == scale.n_test_tasks
        assert math.isclose(sum(row["per_episode_mean"]) / scale.n_test_tasks, row["mean"], abs_tol=1e-9)
        assert 0 < row["train_steps"] <= row["max_steps"]


def test_bayes_wrapper_scores_the_learners_test_episodes():
    """Same episodes as evaluation.episode_scores: the Bayes scores equal those of the wrapped predictor."""
    task = classification_task(PRESETS["smoke"].classification, "amortized")
    scores, diagnostics = common.bayes_scores(task, n_tasks=300, seed=11)
    reference = episode_scores(_Module(common.bayes_predictor(task)), task, n_tasks=300, seed=11)
    assert torch.equal(scores, reference) and diagnostics == {}
    assert scores.mean() > 0.8  # the exact predictor is far above chance


def test_bayes_cache_equals_fresh_computation(isolated_cache):
    task = classification_task(PRESETS["smoke"].classification, "prototype", n_points=8)
    first = lrn.evaluate_bayes_or_load(task, n_tasks=40, seed=3, n_samples=32)
    stored = list((isolated_cache / "results").glob("bayes-prototype-*.json"))
    assert len(stored) == 1
    again = lrn.evaluate_bayes_or_load(task, n_tasks=40, seed=3, n_samples=32)
    assert again == first
    scores, diagnostics = common.bayes_scores(task, n_tasks=40, seed=3, n_samples=32)
    assert first.result.per_position == pytest.approx(scores.double().mean(0).tolist(), abs=1e-12)
    assert first.ess == pytest.approx(diagnostics["ess"].mean(0).tolist())
    assert not first.exact and len(first.uncertain) == 8 and all(0 <= u <= 1 for u in first.uncertain)
    other = lrn.evaluate_bayes_or_load(task, n_tasks=40, seed=3, n_samples=32, bayes_seed=1)
    assert len(list((isolated_cache / "results").glob("bayes-prototype-*.json"))) == 2
    assert other.result.n_tasks == 40


def test_bayes_rejects_unsupported_family():
    with pytest.raises(ValueError, match="task"):
        common.bayes_predictor(classification_task(PRESETS["smoke"].classification, "radius"))
    with pytest.raises(ValueError, match="n_samples"):
        lrn.evaluate_bayes_or_load(
            classification_task(PRESETS["smoke"].classification, "prototype"), n_tasks=4, seed=0, n_samples=1
        )


def test_paired_difference_uses_the_pairing():
    base = [0.5 + 0.01 * i for i in range(50)]
    diff = lrn.paired_difference([b + 0.02 for b in base], base)
    assert diff.mean == pytest.approx(0.02) and diff.ci == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="a, b"):
        lrn.paired_difference([1.0, 2.0], [1.0])


def _d(mean, ci=0.002):
    return lrn.Difference(mean, ci)


def test_single_rule_outcomes_and_flips():
    families = lrn.SINGLE_FAMILIES
    good = {f: _d(0.0) for f in families}
    premise = {f: _d(0.03) for f in families}
    assert lrn.decide_single(good, premise) == "reproduced"
    icl_behind = {**good, "prototype": _d(-0.05)}
    assert lrn.decide_single(icl_behind, premise) == "not reproduced"
    straddles = {**good, "amortized": _d(-0.01, 0.005)}  # CI (-0.015, -0.005) crosses -margin
    assert lrn.decide_single(straddles, premise) == "inconclusive"
    premise_broken = {**premise, "pairwise": _d(-0.04)}
    assert lrn.decide_single(good, premise_broken) == "inconclusive"


def test_mixed_rule_outcomes_and_flips():
    families = lrn.SINGLE_FAMILIES
    icl_same = {f: _d(-0.002) for f in families}
    unsuited = {m: [f for f in families if lrn.MATCHING_LEARNER[f] != m] for m in lrn.META_LEARNERS}
    metas_lose = {m: {f: _d(-0.05 if i == 0 else 0.0) for i, f in enumerate(fs)} for m, fs in unsuited.items()}
    assert lrn.decide_mixed(icl_same, metas_lose) == "reproduced"
    icl_drops = {**icl_same, "pairwise": _d(-0.04)}
    assert lrn.decide_mixed(icl_drops, metas_lose) == "not reproduced"
    one_meta_fine = {**metas_lose, "cnp": {f: _d(0.0) for f in unsuited["cnp"]}}
    assert lrn.decide_mixed(icl_same, one_meta_fine) == "not reproduced"
    one_meta_unclear = {**metas_lose, "cnp": {f: _d(-0.01, 0.005) for f in unsuited["cnp"]}}
    assert lrn.decide_mixed(icl_same, one_meta_unclear) == "inconclusive"


def test_levelled_off():
    flat = TrainHistory(steps=[100, 200, 300, 400, 500], val_score=[0.6, 0.8, 0.801, 0.8, 0.8005])
    rising = TrainHistory(steps=[100, 200, 300, 400, 500], val_score=[0.6, 0.7, 0.75, 0.8, 0.85])
    assert lrn.levelled_off(flat, patience=3, min_delta=0.002)
    assert not lrn.levelled_off(rising, patience=3, min_delta=0.002)
    assert lrn.levelled_off(TrainHistory(stopped_early=True), patience=3, min_delta=0.002)


def test_run_and_verdicts_at_smoke(isolated_cache):
    results = lrn.run(PRESETS["smoke"], progress=False)
    tables = results.tables
    n_single = len(lrn.LEARNERS) * len(lrn.SINGLE_FAMILIES)
    assert len(tables["cross"]) == n_single * len(lrn.SINGLE_FAMILIES) + len(lrn.LEARNERS) * len(lrn.SINGLE_FAMILIES)
    assert len(tables["mixed"]) == n_single
    assert len(tables["bayes_gap"]) == 2 * n_single
    assert list(tables["summary"].index) == list(lrn.SINGLE_FAMILIES)
    assert set(tables["bayes_diagnostics"]["family"]) == {"prototype"}
    found = lrn.verdicts(results)
    assert [verdict.claim for verdict in found] == ["2-single", "2-mixed"]
    for verdict in found:
        assert verdict.outcome in ("reproduced", "not reproduced", "inconclusive")
        assert set(lrn.SINGLE_FAMILIES) <= set(verdict.numbers)
    assert not (isolated_cache / "verdicts").exists()  # verdicts are pure: only reproduce stores the scorecard


def test_cross_table_rejects_bad_names_before_training(isolated_cache):
    scale = PRESETS["smoke"].classification
    with pytest.raises(ValueError, match="learners"):
        lrn.cross_table(scale, ("icl", "svm"), ("pairwise",), progress=False)
    with pytest.raises(ValueError, match="families"):
        lrn.cross_table(scale, ("icl",), ("pairwise",), ("linear_regression",), progress=False)
    assert not (isolated_cache / "models").exists()
