"""Seed ensembles: each member of train_ensemble ends where its own single-model train run ends.

Weights are compared with atol 1e-4, not bit for bit: the batched kernels add in another order,
and Adam divides by sqrt(v), so an element whose gradient is near zero turns that rounding into a
visible step (measured: at most 2.1e-5 after 60 steps at lr 1e-3). An ensemble that clipped
the gradient over all members together instead of per member differed by 7e-4 to 3e-3 here.
"""

import dataclasses
import os
import signal

import pytest
import torch

from uni_icl.ensemble import train_ensemble
from uni_icl.learners import LearnerSpec
from uni_icl.runs import RunSpec, build_seeded
from uni_icl.storage import checked_torch_load
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


class StopAt:
    """A schedule that trains on ``task`` and, when step ``step`` starts, raises ``error`` (a hard kill)
    or sends this process SIGINT (``error=None``: Ctrl-C); ``steps`` records the steps asked for."""

    def __init__(self, task, step=None, error=None):
        self.task, self.step, self.error, self.steps = task, step, error, []

    def task_at(self, step):
        self.steps.append(step)
        if step == self.step:
            if self.error is None:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise self.error
        return self.task

    def config(self):
        return {}


class HardKillError(Exception):
    """Stands for a hard kill: nothing is saved when it is raised."""


def assert_identical(members, reference) -> None:
    for (learner, history), (expected, expected_history) in zip(members, reference, strict=True):
        for name, weight in expected.state_dict().items():
            assert torch.equal(learner.state_dict()[name], weight), name
        assert {**history.to_dict(), "seconds": 0} == {**expected_history.to_dict(), "seconds": 0}


# at 70 steps members 1 and 2 stop early at step 30, before the interruption, and member 0 at step 60
@pytest.mark.parametrize(
    ("max_steps", "stop_at", "error", "saved_steps", "last_step"),
    [
        (30, 13, None, [14, 14, 14], 30),  # Ctrl-C: a checkpoint at the end of the step
        (30, 13, HardKillError(), [10, 10, 10], 30),  # a hard kill: the last periodic checkpoint
        (70, 44, None, [45, 30, 30], 60),
        (70, 44, HardKillError(), [40, 30, 30], 60),
    ],
)
def test_an_interrupted_ensemble_resumes_to_exactly_the_uninterrupted_result(
    tmp_path, max_steps, stop_at, error, saved_steps, last_step
):
    config = dataclasses.replace(CONFIG, max_steps=max_steps, patience=2, min_delta=0.005, checkpoint_every=5)
    specs = seed_specs(config, schedule=StopAt(TASK))
    paths = [tmp_path / f"seed{spec.train.seed}.ckpt" for spec in specs]
    reference = train_ensemble(specs, device=CPU)
    assert max(history.steps[-1] for _, history in reference) == last_step
    assert_identical(train_ensemble(specs, device=CPU, checkpoint_paths=paths), reference)  # checkpoints change nothing
    assert not any(path.exists() for path in paths)  # removed when training completes
    with pytest.raises(KeyboardInterrupt if error is None else HardKillError):
        train_ensemble(seed_specs(config, schedule=StopAt(TASK, stop_at, error)), device=CPU, checkpoint_paths=paths)
    assert [checked_torch_load(path)["state"]["step"] for path in paths] == saved_steps
    schedule = StopAt(TASK)
    resumed = train_ensemble(seed_specs(config, schedule=schedule), device=CPU, checkpoint_paths=paths)
    assert schedule.steps == list(range(saved_steps[0], last_step))  # only the steps left
    assert_identical(resumed, reference)
    assert not any(path.exists() for path in paths)


def test_a_members_checkpoint_is_the_one_its_single_run_writes_and_resumes(tmp_path):
    specs = seed_specs(dataclasses.replace(CONFIG, checkpoint_every=5), schedule=StopAt(TASK, 13, HardKillError()))
    paths = [tmp_path / f"seed{spec.train.seed}.ckpt" for spec in specs]
    with pytest.raises(HardKillError):
        train_ensemble(specs, device=CPU, checkpoint_paths=paths)
    single = StopAt(TASK)
    learner = build_seeded(LEARNER, TASK, specs[1].train.seed)
    train(learner, TASK, specs[1].train, schedule=single, checkpoint_path=paths[1], progress=False)
    assert single.steps == list(range(10, CONFIG.max_steps))  # resumed where the ensemble stopped
    assert not paths[1].exists()


def test_checkpoints_out_of_step_are_ignored_and_training_starts_over(tmp_path):
    specs = seed_specs(dataclasses.replace(CONFIG, checkpoint_every=5), schedule=StopAt(TASK, 13, HardKillError()))
    paths = [tmp_path / f"seed{spec.train.seed}.ckpt" for spec in specs]
    with pytest.raises(HardKillError):
        train_ensemble(specs, device=CPU, checkpoint_paths=paths)
    paths[2].unlink()  # as if the run had been killed between writing two members' checkpoints
    again = StopAt(TASK)
    members = train_ensemble(seed_specs(specs[0].train, schedule=again), device=CPU, checkpoint_paths=paths)
    assert again.steps == list(range(CONFIG.max_steps))
    assert_identical(members, train_ensemble(seed_specs(specs[0].train, schedule=StopAt(TASK)), device=CPU))
