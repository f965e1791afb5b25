"""Training, resume after interruption, train-or-load and the integrity of the result store."""

import dataclasses
import os
import signal

import pytest
import torch

from uni_icl.learners import LearnerSpec
from uni_icl.runs import RunSpec, build_seeded, evaluate_or_load, model_path, train_or_load
from uni_icl.storage import atomic_json_save, checked_json_load, checked_torch_load
from uni_icl.tasks import make_task
from uni_icl.training import TrainConfig, train

TASK = make_task("prototype", n_points=16)
CONFIG = TrainConfig(max_steps=30, batch_size=16, eval_every=5, n_val_tasks=32, checkpoint_every=5, lr=3e-3)


class HardKillError(Exception):
    """Stands for a hard kill: nothing is saved when it is raised."""


class StopAt:
    """A schedule that trains on TASK and, when step ``step`` starts, raises ``error`` (a hard kill)
    or sends this process SIGINT (``error=None``: Ctrl-C)."""

    def __init__(self, step, error):
        self.step, self.error = step, error

    def task_at(self, step):
        if step == self.step:
            if self.error is None:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise self.error
        return TASK

    def config(self):
        return {}


def fresh_learner():
    return build_seeded(LearnerSpec("protonet", {"hidden": 8}), TASK, seed=0)


@pytest.mark.parametrize("name", ["icl", "matchnet", "protonet", "cnp"])
def test_smoke_training_lowers_the_loss(name):
    task = make_task("pairwise", n_points=16)
    learner = build_seeded(LearnerSpec(name, {"width": 16, "depth": 1} if name == "icl" else {}), task, seed=0)
    history = train(learner, task, dataclasses.replace(CONFIG, max_steps=60, eval_every=20), progress=False)
    assert history.val_loss[-1] < history.val_loss[0] or history.val_score[-1] > history.val_score[0]
    assert history.train_loss[-1] < history.train_loss[0]


@pytest.mark.parametrize(("error", "saved_step"), [(None, 14), (HardKillError(), 10)])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, error, saved_step):
    reference = fresh_learner()
    reference_history = train(reference, TASK, CONFIG, progress=False)
    learner = fresh_learner()
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt if error is None else HardKillError):
        train(learner, TASK, CONFIG, schedule=StopAt(13, error), checkpoint_path=checkpoint, progress=False)
    assert checked_torch_load(checkpoint)["state"]["step"] == saved_step  # Ctrl-C: at the end of the step
    resumed = fresh_learner()  # a new process would start from fresh weights and load the checkpoint
    history = train(resumed, TASK, CONFIG, checkpoint_path=checkpoint, progress=False)
    assert not checkpoint.exists()
    assert history.val_score == reference_history.val_score
    for a, b in zip(resumed.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class RecordSteps:
    """A schedule that trains on TASK and records every step it is asked for."""

    def __init__(self):
        self.steps = []

    def task_at(self, step):
        self.steps.append(step)
        return TASK

    def config(self):
        return {}


@pytest.mark.parametrize(("error", "saved_step"), [(None, 14), (HardKillError(), 10)])
def test_resumed_run_does_only_the_remaining_steps(tmp_path, error, saved_step):
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt if error is None else HardKillError):
        train(fresh_learner(), TASK, CONFIG, schedule=StopAt(13, error), checkpoint_path=checkpoint, progress=False)
    resumed = RecordSteps()
    train(fresh_learner(), TASK, CONFIG, schedule=resumed, checkpoint_path=checkpoint, progress=False)
    assert resumed.steps == list(range(saved_step, CONFIG.max_steps))


def test_checkpoint_that_does_not_fit_the_learner_is_ignored(tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    with pytest.raises(HardKillError):
        train(
            fresh_learner(),
            TASK,
            CONFIG,
            schedule=StopAt(13, HardKillError()),
            checkpoint_path=checkpoint,
            progress=False,
        )
    other = build_seeded(LearnerSpec("protonet", {"hidden": 16}), TASK, seed=0)  # other shapes
    steps = RecordSteps()
    with pytest.warns(UserWarning, match="invalid"):
        train(other, TASK, CONFIG, schedule=steps, checkpoint_path=checkpoint, progress=False)
    assert steps.steps == list(range(CONFIG.max_steps))


def test_early_stopping_stops_when_validation_levels_off():
    config = dataclasses.replace(CONFIG, max_steps=400, patience=2, min_delta=0.5)
    history = train(fresh_learner(), TASK, config, progress=False)
    assert history.stopped_early and history.steps[-1] == 15


def test_train_or_load_reuses_and_retrains_on_changed_config(isolated_cache):
    spec = RunSpec(LearnerSpec("matchnet", {"hidden": 8}), TASK, CONFIG)
    first = train_or_load(spec, progress=False)
    second = train_or_load(spec, progress=False)
    assert not first.loaded_from_cache and second.loaded_from_cache
    for a, b in zip(first.learner.state_dict().values(), second.learner.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    changed = dataclasses.replace(spec, train=dataclasses.replace(CONFIG, lr=1e-3))
    assert changed.key != spec.key
    assert not train_or_load(changed, progress=False).loaded_from_cache
    other_task = dataclasses.replace(spec, task=make_task("prototype", n_points=16, noise_std=2.0))
    assert not train_or_load(other_task, progress=False).loaded_from_cache


def test_corrupted_model_entry_is_detected_and_retrained(isolated_cache):
    spec = RunSpec(LearnerSpec("protonet", {"hidden": 8}), TASK, CONFIG)
    train_or_load(spec, progress=False)
    path = model_path(spec)
    path.write_bytes(path.read_bytes()[:-40])  # truncate
    with pytest.warns(UserWarning, match="corrupted"):
        again = train_or_load(spec, progress=False)
    assert not again.loaded_from_cache
    assert train_or_load(spec, progress=False).loaded_from_cache


def test_evaluation_results_are_cached_and_corruption_recomputed(isolated_cache):
    trained = train_or_load(RunSpec(LearnerSpec("protonet", {"hidden": 8}), TASK, CONFIG), progress=False)
    first = evaluate_or_load(trained, TASK, n_tasks=32, seed=5)
    [path] = (isolated_cache / "results").glob("*.json")
    assert evaluate_or_load(trained, TASK, n_tasks=32, seed=5) == first
    path.write_text(path.read_text().replace("accuracy", "accurac"))
    with pytest.warns(UserWarning, match="corrupted"):
        assert evaluate_or_load(trained, TASK, n_tasks=32, seed=5) == first


def test_atomic_json_roundtrip(tmp_path):
    atomic_json_save({"a": [1, 2]}, tmp_path / "x.json")
    assert checked_json_load(tmp_path / "x.json") == {"a": [1, 2]}
    assert checked_json_load(tmp_path / "missing.json") is None
    assert not list(tmp_path.glob(".*tmp"))


def test_time_limit_stops_training_and_is_recorded():
    learner = fresh_learner()
    config = dataclasses.replace(CONFIG, max_steps=10_000, time_limit_s=0.5)
    history = train(learner, TASK, config, progress=False)
    assert history.stopped_by_time and not history.stopped_early
    assert 0 < history.steps[-1] < 10_000 and len(history.steps) == len(set(history.steps))
    assert history.seconds < 5
    unlimited = train(fresh_learner(), TASK, CONFIG, progress=False)
    assert not unlimited.stopped_by_time and unlimited.steps[-1] == CONFIG.max_steps


@pytest.mark.parametrize("value", [-1.0, float("nan"), True])
def test_time_limit_must_be_a_positive_number_or_zero(value):
    with pytest.raises(ValueError, match="time_limit_s"):
        TrainConfig(time_limit_s=value)


class _CurveObjective:
    """A fake objective: a zero loss, and validation scores read off a given curve (one per evaluation)."""

    def __init__(self, curve):
        self.curve, self.calls = curve, 0

    def step_loss(self, learner, step, gen):
        loss = (learner.weight * 0).sum()
        loss.backward()
        return loss.detach()

    def validate(self, learner):
        self.calls += 1
        return self.curve(self.calls), 0.0


def test_training_stops_when_the_convergence_test_passes_and_not_before_a_quarter(tmp_path):
    from torch import nn

    config = TrainConfig(max_steps=400, eval_every=10, stop_tolerance=0.01)
    flat = train(nn.Linear(1, 1), None, config, objective=_CurveObjective(lambda k: 0.9), progress=False)
    assert flat.stopped_early and flat.steps[-1] == 100  # the first evaluation at a quarter of max_steps
    rising = train(nn.Linear(1, 1), None, config, objective=_CurveObjective(lambda k: 0.5 + 0.01 * k), progress=False)
    assert not rising.stopped_early and rising.steps[-1] == 400
