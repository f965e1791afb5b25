"""Seed ensembles: each member of train_ensemble ends where its own single-model train run ends.

Weights are compared with atol 1e-4, not bit for bit: the batched kernels add in another order,
and Adam divides by sqrt(v), so an element whose gradient is near zero turns that rounding into a
visible step (measured: at most 2.1e-5 after 60 steps at lr 1e-3). An ensemble that clipped
the gradient over all members together instead of per member differed by 7e-4 to 3e-3 here.
"""

import dataclasses

import pytest
import torch

from uni_icl.ensemble import train_ensemble
from uni_icl.learners import LearnerSpec
from uni_icl.runs import RunSpec, build_seeded
from uni_icl.tasks import make_task
from uni_icl.tasks.schedules import DimensionCurriculum
from uni_icl.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = make_task("pairwise", n_points=10)
LEARNER = LearnerSpec("icl", {"width": 16, "depth": 1, "n_heads": 2})
# grad_clip 0.05 is below every gradient norm here, so clipping acts at every step
CONFIG = TrainConfig(max_steps=30, batch_size=8, eval_every=10, n_val_tasks=32, grad_clip=0.05, lr=1e-3)
CPU = torch.device("cpu")


def seed_specs(config: TrainConfig, seeds=(0, 1, 2), **fields) -> list[RunSpec]:
    base = RunSpec(LEARNER, TASK, config)
    return [dataclasses.replace(base, train=dataclasses.replace(config, seed=seed), **fields) for seed in seeds]


def assert_members_match_single_runs(specs: list[RunSpec], members) -> None:
    assert len(members) == len(specs)
    for spec, (learner, history) in zip(specs, members, strict=True):
        single = build_seeded(spec.learner, spec.task, spec.train.seed)
        expected = train(single, spec.task, spec.train, schedule=spec.schedule, progress=False)
        for name, weight in single.state_dict().items():
            torch.testing.assert_close(learner.state_dict()[name], weight, atol=1e-4, rtol=0, msg=name)
        assert history.steps == expected.steps
        if spec.task.is_regression:  # minus a squared error: a float like the loss
            assert history.val_score == pytest.approx(expected.val_score, rel=1e-5)
        else:  # an accuracy: the same predictions
            assert history.val_score == expected.val_score
        assert history.val_loss == pytest.approx(expected.val_loss, rel=1e-5)
        assert history.train_loss == pytest.approx(expected.train_loss, rel=1e-5)
        assert (history.best_step, history.stopped_early, history.stopped_by_time) == (
            expected.best_step,
            expected.stopped_early,
            expected.stopped_by_time,
        )


def test_each_member_equals_its_single_model_run():
    specs = seed_specs(CONFIG)
    assert_members_match_single_runs(specs, train_ensemble(specs, device=CPU))


def test_members_stop_early_on_their_own_and_keep_their_best_weights():
    config = dataclasses.replace(CONFIG, max_steps=70, patience=2, min_delta=0.005)
    specs = seed_specs(config)
    members = train_ensemble(specs, device=CPU)
    last_steps = [history.steps[-1] for _, history in members]
    assert all(history.stopped_early for _, history in members)
    assert len(set(last_steps)) > 1, f"the members should stop at different steps, got {last_steps}"
    assert_members_match_single_runs(specs, members)


def test_members_follow_a_shared_schedule():
    task = make_task("linear_regression", d=4, n_points=9)
    schedule = DimensionCurriculum(task, 2, 5, start_points=5, points_increment=2)
    config = dataclasses.replace(CONFIG, max_steps=12, eval_every=6)
    base = RunSpec(LearnerSpec("icl_regressor", {"width": 16, "depth": 1, "n_heads": 2}), task, config, schedule)
    specs = [dataclasses.replace(base, train=dataclasses.replace(config, seed=seed)) for seed in (3, 4)]
    assert_members_match_single_runs(specs, train_ensemble(specs, device=CPU))


def test_a_time_limit_that_has_run_out_stops_every_member_with_one_validation():
    specs = seed_specs(dataclasses.replace(CONFIG, time_limit_s=1e-9), seeds=(0, 1))
    members = train_ensemble(specs, device=CPU)
    assert [(history.steps, history.stopped_by_time) for _, history in members] == [([0], True)] * 2
    assert_members_match_single_runs(specs, members)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"train": dataclasses.replace(CONFIG, seed=1, lr=2e-3)}, "train.lr"),
        ({"train": dataclasses.replace(CONFIG, seed=1, patience=3)}, "train.patience"),
        ({"task": make_task("pairwise", n_points=12)}, "task"),
        ({"learner": LearnerSpec("icl", {"width": 32, "depth": 1, "n_heads": 2})}, "learner"),
        ({"schedule": DimensionCurriculum(make_task("linear_regression", d=2), 1, 5)}, "schedule"),
    ],
)
def test_specs_that_differ_in_more_than_the_seed_are_refused(change, name):
    first = RunSpec(LEARNER, TASK, CONFIG)
    with pytest.raises(ValueError, match=f"^{name}: ensemble members may differ only in train.seed"):
        train_ensemble([first, dataclasses.replace(first, **change)], device=CPU)


def test_an_empty_ensemble_is_refused():
    with pytest.raises(ValueError, match="^specs"):
        train_ensemble([], device=CPU)
