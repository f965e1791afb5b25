"""The learnability experiment: cross table, Bayes wrapper and cache, paired differences, decision rules."""

import json
import math

import pytest
import torch

from uni_icl.book import learnability_page, plotting
from uni_icl.evaluation import Difference, episode_scores
from uni_icl.experiments import common, evidence
from uni_icl.experiments import learnability as lrn
from uni_icl.experiments.common import classification_task
from uni_icl.presets import PRESETS


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
        assert 0.0 <= row["mean"] <= 1.0 and 0.0 <= row["ci"] < math.inf  # t with 1 df at smoke: wide
        assert len(row["per_position"]) == scale.n_points == len(row["per_position_ci"])
        assert len(row["per_episode_mean"]) == scale.n_test_tasks
        assert math.isclose(sum(row["per_episode_mean"]) / scale.n_test_tasks, row["mean"], abs_tol=1e-9)
        assert [run["seed"] for run in row["runs"]] == list(scale.seeds) == row["seeds"]
        assert len(row["per_seed_episode_mean"]) == len(scale.seeds) == len(row["seed_means"])
        assert math.isclose(sum(row["seed_means"]) / len(scale.seeds), row["mean"], abs_tol=1e-9)
        for run in row["runs"]:
            assert 0 < run["steps"] <= run["max_steps"] and isinstance(run["converged"], bool)


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


def test_row_difference_pairs_seeds_and_episodes():
    base = [0.5 + 0.01 * i for i in range(50)]
    a = {"per_seed_episode_mean": [[b + 0.02 for b in base], [b + 0.02 for b in base]]}
    b = {"per_seed_episode_mean": [base]}
    diff = evidence.row_difference(a, b)
    assert diff.mean == pytest.approx(0.02) and diff.ci == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="a, b"):
        evidence.row_difference(a, {"per_seed_episode_mean": [[1.0]]})


def _d(mean, ci=0.002):
    return Difference(mean, ci)


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
    biased = {m: _d(-0.04) for m in lrn.META_LEARNERS}  # mixing costs each more off its bias
    assert lrn.decide_mixed(icl_same, biased) == "reproduced"
    assert lrn.decide_mixed({**icl_same, "pairwise": _d(-0.04)}, biased) == "not reproduced"
    assert lrn.decide_mixed(icl_same, {**biased, "cnp": _d(0.0)}) == "not reproduced"  # no bias effect
    assert lrn.decide_mixed(icl_same, {**biased, "cnp": _d(-0.01, 0.005)}) == "inconclusive"  # crosses -m
    assert lrn.decide_mixed({**icl_same, "amortized": _d(-0.01, 0.005)}, biased) == "inconclusive"


def test_the_decisive_effect_is_the_comparison_that_decided():
    """For the scorecard's forest plot: a failing ICL comparison decides 2-single even when a premise
    comparison lies further out (the premise cannot make it 'not reproduced'); the furthest-out
    failure decides 2-mixed, whichever group it is in."""
    families = lrn.SINGLE_FAMILIES
    good = {f: _d(0.0) for f in families}
    icl_behind = {**good, "prototype": _d(-0.03)}
    premise_far_out = {**{f: _d(0.03) for f in families}, "pairwise": _d(-0.2)}
    chosen = lrn.single_decisive(icl_behind, premise_far_out, "not reproduced")
    assert chosen == {"label": "ICL − best meta-learner, prototype", "effect": -0.03, "ci": 0.002, "margin": lrn.MARGIN}
    chosen = lrn.single_decisive(good, premise_far_out, "inconclusive")
    assert chosen["label"] == "MatchNet − best other meta-learner, pairwise"
    biased = {m: _d(-0.04) for m in lrn.META_LEARNERS}
    chosen = lrn.mixed_decisive({f: _d(-0.002) for f in families}, {**biased, "cnp": _d(0.02)}, "not reproduced")
    assert chosen["label"] == "CNP bias effect (off − on its bias)" and chosen["effect"] == 0.02


def test_the_bias_effect_is_a_difference_in_differences():
    """A meta-learner that loses 0.05 on both families off its bias and 0.01 on its own has a bias
    effect of -0.04, whatever its accuracy relative to other learners."""
    n = 64

    def row(value, seeds=2):
        return {"per_seed_episode_mean": [[value] * n for _ in range(seeds)], "mean": value, "ci": 0.0}

    class Results:
        def row(self, learner, train_family, test_family):
            own = common.MATCHED_FAMILY.get(learner)
            if train_family == lrn.MIXED_FAMILY:
                return row(0.89 if test_family == own else 0.85)
            return row(0.90)

    _, bias_effects, numbers = lrn.mixed_evidence(Results())
    for learner in lrn.META_LEARNERS:
        assert bias_effects[learner].mean == pytest.approx(-0.04)
        assert numbers[f"{learner}_off_bias_drop"][0] == pytest.approx(-0.05)
    assert numbers["icl_mean_drop"][0] == pytest.approx(-0.05)


def _record(learner: str, family: str, converged: list[bool]) -> dict:
    runs = [{"seed": seed, "steps": 100, "converged": flag} for seed, flag in enumerate(converged)]
    return {"learner": learner, "train_family": family, "runs": runs}


def test_a_verdict_comparing_an_unconverged_run_is_inconclusive_and_names_it():
    fine = [_record("icl", "pairwise", [True, True]), _record("cnp", "pairwise", [True, True])]
    assert evidence.gated("reproduced", fine) == "reproduced"
    assert evidence.gated("not reproduced", fine) == "not reproduced"
    one_seed_short = [*fine, _record("protonet", "mixture", [True, False, True])]
    assert evidence.gated("reproduced", one_seed_short) == "inconclusive"
    assert evidence.gated("not reproduced", one_seed_short) == "inconclusive"
    assert evidence.unconverged(one_seed_short) == ["ProtoNet on mixture (seeds 1)"]


def test_verdicts_record_every_compared_model_with_its_seeds(isolated_cache):
    """The JSON contract of the scorecard: each verdict lists learner, training family and one record
    per seed (seed, steps run, converged), and a stored scorecard with such records loads back."""
    from uni_icl.scorecard import Scorecard
    from uni_icl.verdicts import check_scorecard_dict

    preset = PRESETS["smoke"]
    results = lrn.run(preset, progress=False)
    found = {v.claim: v for v in lrn.verdicts(results)}
    price = learnability_page.tables(results)["price_of_type"]
    assert list(price["family"]) == list(lrn.SINGLE_FAMILIES)
    expected = price["Bayes, this family"] - price["Bayes, mixture prior"]
    assert (price["price of not knowing the type"] - expected).abs().max() < 1e-9
    posterior = learnability_page.tables(results)["type_posterior"]
    assert len(posterior) == 3 * preset.classification.n_points
    assert posterior["P(true family)"].between(0, 1).all()
    single = {(r["learner"], r["train_family"]) for r in found["2-single"].rests_on}
    assert single == {(ln, f) for ln in lrn.LEARNERS for f in lrn.SINGLE_FAMILIES}
    mixed = {(r["learner"], r["train_family"]) for r in found["2-mixed"].rests_on}
    assert mixed == {(ln, f) for ln in lrn.LEARNERS for f in lrn.TRAIN_FAMILIES}
    for verdict in found.values():
        for record in verdict.rests_on:
            assert [run["seed"] for run in record["runs"]] == list(preset.classification.seeds)
            assert all(set(run) == {"seed", "steps", "converged", "remaining_gain_bound"} for run in record["runs"])
    data = json.loads(json.dumps(Scorecard("smoke", list(found.values()), 1.0).to_dict()))
    check_scorecard_dict(data)
    data["verdicts"][0]["rests_on"][0]["runs"][0]["converged"] = "yes"
    with pytest.raises(ValueError, match="converged: expected true or false"):
        check_scorecard_dict(data)


def test_run_and_verdicts_at_smoke(isolated_cache):
    results = lrn.run(PRESETS["smoke"], progress=False)
    tables = learnability_page.tables(results)
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
    _check_premise_for_both_shapes(results, found[0])
    faith = tables["faithfulness"]
    assert not faith.empty
    differences = faith["authors' ICLer"] - faith["default ICL, seed 0"]
    assert differences.to_numpy() == pytest.approx(faith["ICLer - default"].to_numpy(), abs=1e-9)  # columns add up
    single, mixed = found
    assert single.numbers["decisive"] == lrn.single_decisive(
        *lrn.single_evidence(results)[:2], single.notes["ungated_outcome"]
    )
    assert mixed.numbers["decisive"] == lrn.mixed_decisive(
        *lrn.mixed_evidence(results)[:2], mixed.notes["ungated_outcome"]
    )


def _check_premise_for_both_shapes(results, single_verdict):
    """The 2-single premise is reported for the book's and the authors' 2-2-2 meta-learners, each
    read as the rule reads it, and the authors' numbers reach the verdict (not its decision)."""
    authors = results.authors_shapes
    assert {(r["learner_id"], r["train_family"]) for r in authors} == {
        (m, f) for m in common.META_LEARNERS for f in lrn.TRAIN_FAMILIES
    }
    model = common.trained(lrn.authors_shape_scale(PRESETS["smoke"].classification), "matchnet", "pairwise")
    assert model.spec.learner.params == lrn.AUTHORS_META_SHAPE
    premise = learnability_page.tables(results)["premise"]
    assert len(premise) == 2 * len(lrn.SINGLE_FAMILIES)
    for record in premise.to_dict("records"):
        lower = record["matching - best other"] - record["difference ci"]
        upper = record["matching - best other"] + record["difference ci"]
        expected = "holds" if lower > -lrn.MARGIN else "fails" if upper < -lrn.MARGIN else "undetermined"
        assert record["premise"] == expected
        assert sum(record["per seed"]) / len(record["per seed"]) == pytest.approx(record["matching - best other"])
    authors_rows = premise[premise["shape"] == "authors' 2-2-2"].set_index("family")
    for family in lrn.SINGLE_FAMILIES:
        stored = single_verdict.numbers[family]["authors_shape_matching_minus_best_other"]
        assert stored == [authors_rows.loc[family, "matching - best other"], authors_rows.loc[family, "difference ci"]]
    mixed_verdict = next(v for v in lrn.verdicts(results) if v.claim == "2-mixed")
    for learner in common.META_LEARNERS:  # the bias effect of the authors' shapes too, reported beside the rule
        effect, ci = mixed_verdict.numbers[f"{learner}_authors_shape_bias_effect"]
        assert ci >= 0 and -1 <= effect <= 1


def test_cross_table_rejects_bad_names_before_training(isolated_cache):
    scale = PRESETS["smoke"].classification
    with pytest.raises(ValueError, match="learners"):
        lrn.cross_table(scale, ("icl", "svm"), ("pairwise",), progress=False)
    with pytest.raises(ValueError, match="families"):
        lrn.cross_table(scale, ("icl",), ("pairwise",), ("linear_regression",), progress=False)
    assert not (isolated_cache / "models").exists()


def test_mixture_models_get_the_same_training_episodes_per_family():
    from uni_icl.experiments.shift import remedy_task

    preset = PRESETS["quick"]
    scale = preset.classification
    single = common.classification_run(scale, "icl", classification_task(scale, "pairwise")).train
    for task in (classification_task(scale, "mixture"), remedy_task(scale, preset.shift)):
        mixed = common.classification_run(scale, "icl", task).train
        assert mixed.max_steps * mixed.batch_size == 3 * single.max_steps * single.batch_size
        assert (mixed.eval_every, mixed.patience) == (3 * single.eval_every, single.patience)
    radius = common.classification_run(scale, "cnp", classification_task(scale, "radius")).train
    assert radius.max_steps == scale.meta_train.max_steps


def test_every_classification_model_trains_its_full_budget_with_a_ladder():
    """Equal footing: no early stopping, one budget for every learner, the ladder's last rung."""
    for name in ("quick", "paper"):
        scale = PRESETS[name].classification
        for config in (scale.icl_train, scale.meta_train):
            assert config.stop_tolerance == 0 and config.patience == 0 and config.lr_schedule == "constant"
            assert config.max_steps == scale.budget_rungs[-1]
        rungs = scale.budget_rungs
        assert all(b == 2 * a for a, b in zip(rungs, rungs[1:], strict=False)) and len(rungs) >= 4


def test_the_ladder_reads_both_rules_at_every_rung(isolated_cache):
    """The chapter's ladder rows: per rung, each rule's comparisons and its decisive row; the last rung's
    decisive rows are the verdicts' own."""
    preset = PRESETS["smoke"]
    results = lrn.run(preset, progress=False)
    rungs = preset.classification.budget_rungs
    decisive = [row for row in results.ladder if row["kind"] == "decisive"]
    assert sorted({(row["claim"], row["steps"]) for row in decisive}) == sorted(
        (claim, rung) for claim in ("2-single", "2-mixed") for rung in rungs
    )
    verdicts = {verdict.claim: verdict for verdict in lrn.verdicts(results)}
    for claim, verdict in verdicts.items():
        last = next(row for row in decisive if row["claim"] == claim and row["steps"] == rungs[-1])
        assert last["effect"] == pytest.approx(verdict.numbers["decisive"]["effect"])
        assert last["outcome"] == verdict.outcome
        assert [row["steps"] for row in verdict.notes["budget_ladder"]] == list(rungs)
        assert verdict.notes["calibration"]["runs"] == 4 * 4 * len(preset.classification.seeds)
        for model in verdict.rests_on:
            assert all("remaining_gain_bound" in run for run in model["runs"])


def test_the_prototype_bayes_row_carries_its_monte_carlo_error(isolated_cache):
    scale = PRESETS["smoke"].classification
    rows, _ = lrn.bayes_rows(scale, ("prototype", "amortized"), n_samples=16, n_sampler_seeds=2)
    prototype, amortized = rows
    assert not prototype["exact"] and prototype["sampler_seeds"] == [0, 1]
    assert len(prototype["per_seed_episode_mean"]) == 2
    assert prototype["per_seed_episode_mean"][0] != prototype["per_seed_episode_mean"][1]  # the sampler's noise
    assert amortized["exact"] and len(amortized["per_seed_episode_mean"]) == 1


def test_the_mixture_prior_bayes_rows_carry_their_monte_carlo_error(isolated_cache):
    scale = PRESETS["smoke"].classification
    rows, posteriors = lrn.mixture_prior_rows(scale, n_samples=16, n_sampler_seeds=2)
    assert [row["test_family"] for row in rows] == list(lrn.SINGLE_FAMILIES)
    for row in rows:
        assert row["sampler_seeds"] == [0, 1] and len(row["per_seed_episode_mean"]) == 2
    assert any(row["per_seed_episode_mean"][0] != row["per_seed_episode_mean"][1] for row in rows)
    assert set(posteriors) == set(lrn.SINGLE_FAMILIES)


def test_the_2_single_explanation_names_every_premise_that_does_not_hold():
    """Computed from the numbers: an ICL interval that crosses -m is named, and a premise that fails or
    is undetermined is reported with the authors' 2-2-2 reading beside it."""
    numbers = {"margin": 0.01}
    for family, icl, premise, authors in (
        ("pairwise", (-0.006, 0.006), (-0.023, 0.005), (0.073, 0.235)),
        ("prototype", (0.003, 0.006), (-0.005, 0.007), (0.008, 0.004)),
        ("amortized", (0.007, 0.006), (0.011, 0.003), (0.009, 0.004)),
    ):
        numbers[family] = {
            "icl_minus_best_meta": list(icl),
            "matching_minus_best_other": list(premise),
            "authors_shape_matching_minus_best_other": list(authors),
            "best_meta_learner": "cnp",
        }
    text = learnability_page._explain_single(numbers)
    assert "On pairwise that interval crosses -0.01" in text
    assert "does not hold on pairwise (fails;" in text and "prototype (undetermined;" in text
    assert "pairwise +0.073 ± 0.235, undetermined, prototype +0.008 ± 0.004, holds" in text
    assert "amortized (" not in text and "the core of the claim" not in text


def test_decision_regions_are_computed_once_then_loaded(isolated_cache, monkeypatch):
    preset = PRESETS["smoke"]
    scale, extras = preset.classification, preset.learnability
    regions = lrn.decision_regions(preset)
    size = extras.region_resolution
    assert regions.axis.shape == (size,)
    for family in lrn.SINGLE_FAMILIES:
        for shots in extras.region_shots:
            for predictor in lrn.region_predictors(family):
                probs = regions.panel(family, shots, predictor)
                assert probs.shape == (size, size) and ((probs >= 0) & (probs <= 1)).all()
    shots = extras.region_shots[-1]
    support_xs, support_ys = lrn.region_support(scale, "prototype", shots)
    model = common.trained(scale, "icl", "prototype", progress=False).learner
    _, _, direct = plotting.class_probabilities_on_grid(
        model, support_xs, support_ys, extent=lrn.REGION_EXTENT, resolution=size
    )
    assert (regions.panel("prototype", shots, "icl") == direct).all()  # the stored grid is the model's

    def recompute(*args, **kwargs):
        raise AssertionError("a stored decision-region grid was recomputed")

    monkeypatch.setattr(lrn, "class_probabilities_on_grid", recompute)
    again = lrn.decision_regions(preset)
    assert all((again.probs[key] == regions.probs[key]).all() for key in regions.probs)
    assert lrn.predictor_name("bayes") == "Bayes" and lrn.predictor_name("protonet") == "ProtoNet"
