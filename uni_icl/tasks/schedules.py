"""Training schedules: which task family each training step draws from.

A schedule is the ``schedule`` argument of :func:`uni_icl.training.train` (protocol
:class:`uni_icl.training.TaskSchedule`): ``task_at(step)`` gives the family of step ``step`` and
``config()`` enters the cache key. Validation always uses the run's own task.

- :class:`DimensionCurriculum`: meta-level curriculum learning (below).
- :class:`FixedTrainingTask`: train on one family, validate on another (the digits chapter's
  image-level validation split).

**Meta-level curriculum learning**: pre-training tasks ordered from easy to hard. A
:class:`DimensionCurriculum` is a schedule for in-context linear regression. At step t it returns the full task with
only the first ``active_dims_at(t)`` input dimensions non-zero (the rest are zeroed by
:class:`~uni_icl.tasks.LinearRegressionTask`), and optionally shorter prompts. Every
``every_steps`` steps after ``first_step`` (0 by default) one more dimension becomes active (and,
for Garg et al.'s default schedule, ``points_increment`` more points per prompt) until the full task
is reached; from then on the schedule returns the full task itself. Validation during training
always uses the full task.

References: Garg et al. 2022 (curriculum over dimensions and prompt length, +1 dim and +2 points
every 2k steps); the paper's meta-level curriculum (+1 dim every 10k steps from 5 of 20).

>>> from uni_icl.tasks import make_task
>>> schedule = DimensionCurriculum(make_task("linear_regression", d=8, n_points=17), 2, 100)
>>> [schedule.active_dims_at(step) for step in (0, 99, 100, 650, 10_000)]
[2, 2, 3, 8, 8]
>>> windowed = DimensionCurriculum(make_task("linear_regression", d=5), 2, 200, first_step=400)
>>> [windowed.active_dims_at(step) for step in (0, 599, 600, 800, 1000)], windowed.full_step
([2, 2, 3, 4, 5], 1000)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from uni_icl.tasks.base import TaskFamily
from uni_icl.tasks.regression import LinearRegressionTask
from uni_icl.validation import check_int


@dataclass(frozen=True)
class DimensionCurriculum:
    """Grow the number of active input dimensions (and optionally the prompt length) during training."""

    task: LinearRegressionTask  # the full task (its d and n_points are the end of the schedule)
    start_dims: int  # active dimensions at step 0
    every_steps: int  # steps between two increments
    dims_increment: int = 1  # dimensions added at each increment
    start_points: int | None = None  # prompt length at step 0 (None: always the full task's n_points)
    points_increment: int = 0  # points added at each increment (Garg et al.: 2)
    first_step: int = 0  # the increments come at first_step + every_steps, first_step + 2 every_steps, ...

    def __post_init__(self) -> None:
        if not isinstance(self.task, LinearRegressionTask):
            raise ValueError(f"task: expected a linear_regression task, got {type(self.task).__name__}")
        if self.task.n_active_dims is not None and self.task.n_active_dims != self.task.d:
            raise ValueError(f"task: must have all {self.task.d} dimensions active, got {self.task.n_active_dims}")
        check_int("start_dims", self.start_dims, minimum=1, maximum=self.task.d)
        check_int("every_steps", self.every_steps, minimum=1)
        check_int("dims_increment", self.dims_increment, minimum=1)
        check_int("points_increment", self.points_increment, minimum=0)
        check_int("first_step", self.first_step, minimum=0)
        if self.start_points is not None:
            check_int("start_points", self.start_points, minimum=1, maximum=self.task.n_points)
            if self.start_points < self.task.n_points and self.points_increment == 0:
                raise ValueError("points_increment: must be >= 1 when start_points < the task's n_points")

    def increments_at(self, step: int) -> int:
        """Number of increments made before ``step`` (step 0 is the first training step)."""
        check_int("step", step, minimum=0)
        return max(0, step - self.first_step) // self.every_steps

    def active_dims_at(self, step: int) -> int:
        """Non-zero input dimensions of the training task at ``step``."""
        return min(self.task.d, self.start_dims + self.dims_increment * self.increments_at(step))

    def points_at(self, step: int) -> int:
        """Points per training prompt at ``step``."""
        if self.start_points is None:
            return self.task.n_points
        return min(self.task.n_points, self.start_points + self.points_increment * self.increments_at(step))

    @property
    def end_dims(self) -> int:
        """Active dimensions at the end of the schedule (the full task's d)."""
        return self.task.d

    @property
    def full_step(self) -> int:
        """First step at which the training task is the full task."""
        step = self.first_step
        while self.active_dims_at(step) < self.task.d or self.points_at(step) < self.task.n_points:
            step += self.every_steps
        return step

    def task_at(self, step: int) -> LinearRegressionTask:
        """The training task at ``step``: the full task, or it with trailing dimensions zeroed and fewer points."""
        dims, points = self.active_dims_at(step), self.points_at(step)
        if dims == self.task.d and points == self.task.n_points:
            return self.task
        return dataclasses.replace(self.task, n_active_dims=dims, n_points=points)

    def config(self) -> dict:
        """JSON-able description (part of the cache key of a run trained with this schedule). ``first_step``
        enters only when it is not 0: a schedule that starts at step 0 keeps the key it had before the
        field existed, so its stored runs are found."""
        found = {
            "schedule": "dimension_curriculum",
            "task": self.task.config(),
            "start_dims": self.start_dims,
            "every_steps": self.every_steps,
            "dims_increment": self.dims_increment,
            "start_points": self.start_points,
            "points_increment": self.points_increment,
        }
        return found | ({"first_step": self.first_step} if self.first_step else {})


@dataclass(frozen=True)
class FixedTrainingTask:
    """A training schedule that draws every training episode from one family.

    ``train(learner, task, config, schedule=FixedTrainingTask(train_family))`` trains on
    ``train_family`` and validates on ``task``: with ``task`` the validation split, model
    selection and early stopping see only held-out images.
    """

    task: TaskFamily

    def task_at(self, step: int) -> TaskFamily:
        return self.task

    def config(self) -> dict:
        return {"schedule": "fixed_training_task", "task": self.task.config()}
