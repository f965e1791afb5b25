"""The imitation experiment: distillation, agreement measures, caching of students, the claim-1 rule."""

import math

import pytest
import torch

from uni_icl.experiments import expressivity
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.experiments.expressivity import (
    IMITATION_LABEL,
    WARM_LABEL,
    Distillation,
    ImitationResults,
    agreement,
    imitation_student,
    kl_to_teacher,
    randomized,
    total_variation,
    verdicts,
)
from uni_icl.learners import LearnerSpec
from uni_icl.presets import PRESETS, get_preset
from uni_icl.runs import TrainedLearner, build_seeded
from uni_icl.training import TrainConfig, TrainHistory, train


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


def fake_results(construction_gap, imitation_agreement, other_agreement):
    constructions = [{"construction": name, "float32_max_rel": construction_gap} for name in ("MatchNet", "GD step")]
    agreements = []
    for name in ("MatchNet", "ProtoNet", "CNP"):
        agreements += [
            {"teacher": name, "learner": IMITATION_LABEL, "mean": imitation_agreement},
            {"teacher": name, "learner": WARM_LABEL, "mean": 1.0},
            {"teacher": name, "learner": "other", "mean": other_agreement},
        ]
    return ImitationResults("smoke", constructions, agreements, {}, {}, 1.0, 0.0)


@pytest.mark.parametrize(
    "gap, imitated, other, outcome",
    [
        (1e-7, 0.95, 0.8, "reproduced"),
        (1e-7, 0.95, 0.95, "reproduced"),
        (1e-7, 0.7, 0.8, "inconclusive"),
        (1e-2, 0.95, 0.8, "not reproduced"),
    ],
)
def test_verdict_rule(gap, imitated, other, outcome):
    result = verdicts(fake_results(gap, imitated, other))[0]
    assert result.claim == "1" and result.outcome == outcome
    assert result.chapter == "book/01_expressivity"


def test_smoke_run_end_to_end():
    results = expressivity.run(PRESETS["smoke"], progress=False)
    assert {row["construction"] for row in results.constructions} == {"MatchNet", "ProtoNet", "CNP", "GD step"}
    assert all(row["float32_max_rel"] < 1e-5 for row in results.constructions)
    assert all(row["float64_max_abs"] < 1e-9 for row in results.constructions)
    learners = {(row["teacher"], row["learner"]) for row in results.agreements}
    assert ("CNP", IMITATION_LABEL) in learners and ("CNP", "MatchNet") in learners
    for row in results.agreements:
        assert len(row["per_position"]) == PRESETS["smoke"].classification.n_points
        assert 0.0 <= row["mean"] <= 1.0 and not math.isnan(row["tv_mean"])
    assert verdicts(results)[0].outcome in ("reproduced", "inconclusive")
    assert isinstance(results.students["cnp"].history, TrainHistory)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="teacher"):
        expressivity.teacher(PRESETS["smoke"].classification, "icl")
    with pytest.raises(ValueError, match="preset"):
        get_preset("huge")
