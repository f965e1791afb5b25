"""The imitation experiment: distillation, agreement measures, caching of students, the claim-1 rule."""

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from uni_icl.book import expressivity_page
from uni_icl.evaluation import Difference
from uni_icl.experiments import expressivity
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.experiments.evidence import MARGIN
from uni_icl.experiments.expressivity import (
    IMITATION_LABEL,
    Distillation,
    ImitationResults,
    agreement,
    imitation_student,
    kl_to_teacher,
    randomized,
    total_variation,
    verdicts,
)
from uni_icl.learners import LearnerSpec, display_name
from uni_icl.presets import PRESETS, get_preset
from uni_icl.runs import TrainedLearner, build_seeded
from uni_icl.training import TrainConfig, TrainHistory, train
from uni_icl.uncertainty import seeded_difference
from uni_icl.verdicts import ClaimVerdict, check_verdict


def small_pair(seed=0):
    scale = PRESETS["smoke"].classification
    task = classification_task(scale, "prototype")
    teacher = randomized(build_seeded(LearnerSpec("protonet", scale.meta_learner), task, 0), seed).eval()
    student = build_seeded(LearnerSpec("icl", scale.icl), task, 1)
    return scale, task, teacher, student


def test_agreement_and_total_variation():
    p = torch.tensor([[[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]]]).log()
    q = torch.tensor([[[0.6, 0.4], [0.9, 0.1], [0.6, 0.4]]]).log()
    assert agreement(p, q).tolist() == [[1.0, 1.0, 0.0]]  # a tie in the reference accepts either class
    assert torch.allclose(total_variation(p, q), torch.tensor([[0.1, 0.4, 0.4]]))
    assert agreement(p, p).eq(1).all() and total_variation(p, p).abs().max() < 1e-7


def test_distillation_lowers_the_kl_and_keeps_the_best_weights():
    _, task, teacher, student = small_pair()
    config = TrainConfig(max_steps=60, batch_size=16, lr=3e-3, eval_every=20, n_val_tasks=32, patience=0)
    episode = task.sample(64, seed=123)
    with torch.no_grad():
        before = kl_to_teacher(student, teacher, episode.xs, episode.ys).item()
    history = train(student, task, config, objective=Distillation(teacher, task, config), progress=False)
    with torch.no_grad():
        after = kl_to_teacher(student, teacher, episode.xs, episode.ys).item()
    assert after < before
    assert history.steps == [20, 40, 60]
    assert history.best_step == history.steps[history.val_loss.index(min(history.val_loss))]
    assert history.val_score == [-kl for kl in history.val_loss]


def test_distillation_stops_early_without_improvement():
    _, task, teacher, student = small_pair()
    config = TrainConfig(max_steps=200, batch_size=8, lr=1e-9, eval_every=10, n_val_tasks=16, patience=2, min_delta=1)
    history = train(student, task, config, objective=Distillation(teacher, task, config), progress=False)
    assert history.stopped_early and history.steps[-1] == 30


def test_student_is_cached_under_the_teacher_key(monkeypatch):
    scale, task, _, _ = small_pair()
    settings = PRESETS["smoke"].imitation
    spec = classification_run(scale, "protonet", task)
    teacher = TrainedLearner(spec, build_seeded(spec.learner, task, 0).eval())
    first = imitation_student(scale, settings, "protonet", teacher, progress=False)
    second = imitation_student(scale, settings, "protonet", teacher, progress=False)
    assert not first.loaded_from_cache and second.loaded_from_cache
    for a, b in zip(first.learner.parameters(), second.learner.parameters(), strict=True):
        assert torch.equal(a, b)
    other_spec = classification_run(scale, "protonet", task, seed=5)
    assert expressivity.student_config(scale, settings, other_spec) != expressivity.student_config(
        scale, settings, spec
    )


def test_student_of_each_seed_has_its_own_key_initial_weights_and_teacher():
    scale, task, _, _ = small_pair()
    settings = PRESETS["smoke"].imitation
    paths = {expressivity.student_path(scale, settings, "protonet", seed) for seed in (0, 1, 2)}
    assert len(paths) == 3 and all("seed" in path.name for path in paths)
    students = []
    for seed in (0, 1):
        spec = classification_run(scale, "protonet", task, seed=seed)
        teacher = TrainedLearner(spec, build_seeded(spec.learner, task, seed).eval())
        students.append(imitation_student(scale, settings, "protonet", teacher, progress=False))
        assert expressivity.student_config(scale, settings, spec)["distill"]["seed"] == seed
    assert [student.seed for student in students] == [0, 1]
    first, second = (next(student.learner.parameters()) for student in students)
    assert not torch.equal(first, second)


# ---------------------------------------------------------------------------------------------- the rule


def diff(mean, ci):
    return Difference(mean, ci)


@pytest.mark.parametrize(
    "differences, outcome",
    [
        ({"A": {"B": diff(0.05, 0.01), "C": diff(0.03, 0.015)}}, "reproduced"),
        ({"A": {"B": diff(0.05, 0.01)}, "B": {"A": diff(0.02, 0.011)}}, "inconclusive"),  # lower bound 0.009
        ({"A": {"B": diff(0.0, 0.005)}}, "inconclusive"),  # indistinguishable: neither better nor worse
        ({"A": {"B": diff(0.05, 0.01)}, "B": {"A": diff(-0.05, 0.01)}}, "not reproduced"),
        ({"A": {"B": diff(-0.02, 0.009)}}, "not reproduced"),  # upper bound -0.011
        ({"A": {"B": diff(-0.02, 0.011)}}, "inconclusive"),  # upper bound -0.009: within the margin
    ],
)
def test_rule_is_symmetric_around_zero_with_one_margin(differences, outcome):
    assert expressivity.decide(differences, margin=0.01) == outcome


def test_rule_refuses_an_empty_comparison():
    with pytest.raises(ValueError, match="differences"):
        expressivity.decide({})


def history(scores, seed_steps=50):
    """A training history whose validation score follows ``scores``."""
    steps = [seed_steps * (k + 1) for k in range(len(scores))]
    return TrainHistory(steps, [0.0] * len(scores), list(scores), [-s for s in scores], best_step=steps[-1])


FLAT_ACCURACY = [0.9 + 1e-4 * (k % 2) for k in range(8)]  # levelled off, with a little noise
FLAT_KL = [-0.01 - 1e-5 * (k % 2) for k in range(8)]
RISING_ACCURACY = [0.5 + 0.05 * k for k in range(8)]
FALLING_KL = [-0.3 + 0.03 * k for k in range(8)]  # minus the KL rises by 0.03 nats per evaluation


def fake_results(imitation, other, *, seeds=(0, 1, 2), n=64, teacher_curve=FLAT_ACCURACY, student_curve=FLAT_KL):
    """Results whose per-seed, per-episode agreement is ``imitation`` (the ICL imitation) and ``other``
    (each other meta-learner) plus seeded noise, and whose runs follow the given validation curves."""
    scale = PRESETS["smoke"].classification
    gen = np.random.default_rng(0)
    names = list(expressivity.TEACHERS)
    teachers, students, agreements = {}, {}, []
    for name in names:
        task = classification_task(scale, expressivity.TEACHERS[name])
        teachers[name] = [
            TrainedLearner(classification_run(scale, name, task, seed), torch.nn.Identity(), history(teacher_curve))
            for seed in seeds
        ]
        students[name] = [
            expressivity.Student(name, seed, torch.nn.Identity(), history(student_curve), None, True) for seed in seeds
        ]
        for label, level in [(IMITATION_LABEL, imitation)] + [
            (display_name(other_name), other) for other_name in names if other_name != name
        ]:
            per_seed = np.clip(level + 0.02 * gen.standard_normal((len(seeds), n)), 0, 1)
            agreements.append(
                {
                    "teacher": display_name(name),
                    "learner": label,
                    "per_seed_episode": per_seed.tolist(),
                    "mean": float(per_seed.mean()),
                    "ci": 0.0,
                    "tv_mean": 0.0,
                    "tv_ci": 0.0,
                }
            )
    constructions = [{"construction": c, "learner": "x", "float32_max_rel": 1e-7} for c in ("MatchNet", "GD step")]
    return ImitationResults("smoke", constructions, agreements, teachers, students, 1.0, 0.0, tuple(seeds))


@pytest.mark.parametrize(
    "imitated, other, outcome",
    [(0.95, 0.85, "reproduced"), (0.9, 0.9, "inconclusive"), (0.8, 0.9, "not reproduced")],
)
def test_verdict_reads_seeded_differences(imitated, other, outcome):
    verdict = verdicts(fake_results(imitated, other))[0]
    assert verdict.claim == "1" and verdict.outcome == outcome
    assert verdict.chapter == "book/01_expressivity" and verdict.rule == expressivity.RULE
    mean, ci = verdict.numbers["MatchNet"]["imitation_minus_ProtoNet"]
    assert mean == pytest.approx(imitated - other, abs=0.01) and 0 < ci < 0.05
    assert verdict.notes["construction_check"]["passed"]
    assert "construction" not in str(verdict.numbers)  # the check is reported, not evidence
    check_verdict(asdict(verdict))


def assert_decisive_is_a_difference_the_rule_reads(verdict):
    """numbers["decisive"] states one of the differences RULE reads (imitation minus another meta-learner),
    on the accuracy scale with the rule's margin."""
    decisive = verdict.numbers["decisive"]
    assert set(decisive) == {"label", "effect", "ci", "margin"} and decisive["margin"] == MARGIN
    differences = {
        f"ICL imitation − {key.removeprefix('imitation_minus_')}, agreement with {teacher}": pair
        for teacher, numbers in verdict.numbers.items()
        if teacher not in ("margin", "decisive")
        for key, pair in numbers.items()
        if key.startswith("imitation_minus_")
    }
    assert differences[decisive["label"]] == [decisive["effect"], decisive["ci"]]
    return differences


def test_decisive_effect_is_the_difference_that_decided_the_outcome():
    passed = verdicts(fake_results(0.95, 0.85))[0]
    differences = assert_decisive_is_a_difference_the_rule_reads(passed)
    lowest = min(differences.values(), key=lambda pair: pair[0] - pair[1])  # lowest lower bound
    assert [passed.numbers["decisive"]["effect"], passed.numbers["decisive"]["ci"]] == lowest  # closest to failing
    failed = verdicts(fake_results(0.8, 0.9))[0]
    differences = assert_decisive_is_a_difference_the_rule_reads(failed)
    furthest = min(differences.values(), key=lambda pair: pair[0] + pair[1])  # lowest upper bound
    assert [failed.numbers["decisive"]["effect"], failed.numbers["decisive"]["ci"]] == furthest
    assert "decisive" not in expressivity_page.explain(failed)


def test_verdict_rests_on_every_teacher_and_student_with_its_seeds():
    verdict = verdicts(fake_results(0.95, 0.85))[0]
    assert len(verdict.rests_on) == 6
    learners = {record["learner"] for record in verdict.rests_on}
    assert {"matchnet", "protonet", "cnp", "ICL imitating CNP"} <= learners
    for record in verdict.rests_on:
        assert [run["seed"] for run in record["runs"]] == [0, 1, 2]
        assert all(run["converged"] for run in record["runs"])


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_an_unconverged_run_makes_the_verdict_inconclusive_and_is_named(which):
    curve = {"teacher_curve": RISING_ACCURACY} if which == "teacher" else {"student_curve": FALLING_KL}
    verdict = verdicts(fake_results(0.95, 0.85, **curve))[0]
    assert verdict.outcome == "inconclusive" and verdict.notes["ungated_outcome"] == "reproduced"
    named = "; ".join(verdict.notes["unconverged"])
    assert ("MatchNet on pairwise" in named) if which == "teacher" else ("ICL imitating MatchNet" in named)
    assert "not converged" in expressivity_page.explain(verdict).lower()


def test_explain_skips_a_verdict_stored_under_the_single_seed_rule():
    verdict = verdicts(fake_results(0.95, 0.85))[0]
    old = ClaimVerdict(**{**asdict(verdict), "numbers": {"imitation_agreement": {"CNP": 0.98}}})
    assert expressivity_page.explain(old) is None and "CNP" in expressivity_page.explain(verdict)


def test_student_convergence_tolerance_is_in_nats_of_kl():
    student = expressivity.Student(
        "cnp", 0, torch.nn.Identity(), history([-0.3 + 0.00005 * k for k in range(8)]), None, True
    )
    assert expressivity.student_record(student)["converged"]  # 0.00005 nats per evaluation: done
    student.history = history(FALLING_KL)
    record = expressivity.student_record(student)
    assert not record["converged"] and record["remaining_gain_bound"] > expressivity.STUDENT_CONVERGENCE_TOLERANCE


def test_a_construction_that_is_not_exact_stops_the_experiment():
    rows = [
        {"construction": "ProtoNet", "learner": "trained teacher", "float32_max_rel": 1e-7},
        {"construction": "CNP", "learner": "random weights, seed 0", "float32_max_rel": 3e-3},
    ]
    with pytest.raises(expressivity.ConstructionError, match="CNP \\(random weights, seed 0\\)"):
        expressivity.require_exact(rows)
    expressivity.require_exact(rows[:1])
    with pytest.raises(expressivity.ConstructionError):
        expressivity.require_exact([{"construction": "GD step", "learner": "x", "float32_max_rel": math.nan}])


def test_seeded_curves_match_seeded_difference_and_average_the_curves():
    gen = np.random.default_rng(1)
    scores = gen.random((3, 40, 5))
    summary = expressivity.seeded_curves(scores)
    total = seeded_difference(scores.mean(2), np.zeros((1, 40)))
    assert summary["mean"] == pytest.approx(total.mean) and summary["ci"] == pytest.approx(total.ci)
    assert np.allclose(summary["per_position"], scores.mean((0, 1)))
    assert np.array(summary["per_seed_episode"]).shape == (3, 40)


def test_smoke_run_end_to_end():
    preset = PRESETS["smoke"]
    results = expressivity.run(preset, progress=False)
    seeds = preset.classification.seeds
    assert {row["construction"] for row in results.constructions} == {"MatchNet", "ProtoNet", "CNP", "GD step"}
    assert all(row["float32_max_rel"] < 1e-5 for row in results.constructions)
    assert all(row["float64_max_abs"] < 1e-9 for row in results.constructions)
    learners = {(row["teacher"], row["learner"]) for row in results.agreements}
    assert ("CNP", IMITATION_LABEL) in learners and ("CNP", "MatchNet") in learners
    for row in results.agreements:
        assert len(row["per_position"]) == preset.classification.n_points
        assert np.array(row["per_seed_episode"]).shape == (len(seeds), preset.imitation.n_test_tasks)
        assert 0.0 <= row["mean"] <= 1.0 and not math.isnan(row["tv_mean"])
    assert [student.seed for student in results.students["cnp"]] == list(seeds)
    assert [model.spec.train.seed for model in results.teachers["cnp"]] == list(seeds)
    assert isinstance(results.students["cnp"][0].history, TrainHistory)
    verdict = verdicts(results)[0]
    check_verdict(asdict(verdict))
    assert_decisive_is_a_difference_the_rule_reads(verdict)
    assert all(len(record["runs"]) == len(seeds) for record in verdict.rests_on)
    assert len(results.distill_summary()) == 3 * len(seeds)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="teacher"):
        expressivity.teacher(PRESETS["smoke"].classification, "icl")
    with pytest.raises(ValueError, match="preset"):
        get_preset("huge")


def test_students_stop_on_the_convergence_test_the_rule_requires():
    from uni_icl.presets import PRESETS

    for name in ("quick", "paper"):
        assert PRESETS[name].imitation.distill.stop_tolerance == expressivity.STUDENT_CONVERGENCE_TOLERANCE
