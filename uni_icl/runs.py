"""Train-or-load: trained learners and evaluation results cached under a hash of their config.

The key of a trained model covers the task family and its parameters, the learner and its
parameters, the training settings (seeds included), the curriculum if any, and the version of the
experiment code (``CODE_VERSION``); an evaluation's key adds the test family, the number of test
episodes and the test seed. Change any of them and the entry is recomputed; leave them and a
rebuild loads it instantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from uni_icl.device import default_device
from uni_icl.evaluation import EvalResult, evaluate
from uni_icl.learners import LearnerSpec, display_name
from uni_icl.storage import (
    atomic_torch_save,
    cache_root,
    checked_torch_load,
    config_hash,
    entry_lock,
    json_entry,
)
from uni_icl.tasks import TaskFamily
from uni_icl.training import TaskSchedule, TrainConfig, TrainHistory, train

CODE_VERSION = "2"  # bump when a change to the package invalidates stored results


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a trained learner."""

    learner: LearnerSpec
    task: TaskFamily
    train: TrainConfig = TrainConfig()
    schedule: TaskSchedule | None = None

    def config(self) -> dict:
        return {
            "code_version": CODE_VERSION,
            "learner": self.learner.config(),
            "task": self.task.config(),
            "train": self.train.__dict__,
            "schedule": None if self.schedule is None else self.schedule.config(),
        }

    @property
    def key(self) -> str:
        return config_hash(self.config())

    @property
    def label(self) -> str:
        return f"{display_name(self.learner.name)} on {self.task.name}"


@dataclass
class TrainedLearner:
    """A learner ready to use, with how it was obtained."""

    spec: RunSpec | LearnerSpec
    learner: nn.Module
    history: TrainHistory = field(default_factory=TrainHistory)
    loaded_from_cache: bool = False


def build_seeded(learner: LearnerSpec, task: TaskFamily, seed: int) -> nn.Module:
    """Build ``learner`` for ``task`` with initial weights drawn from ``seed``; the global RNG is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return learner.build(task.input_dim, task.n_classes)


def model_path(spec: RunSpec, root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / f"{spec.learner.name}-{spec.task.name}-{spec.key}.pt"


def train_or_load(
    spec: RunSpec, *, root: Path | None = None, progress: bool = True, device: torch.device | None = None
) -> TrainedLearner:
    """Load the learner trained under ``spec`` if stored, else train it (resuming a checkpoint) and store it."""
    path = model_path(spec, root)
    learner = build_seeded(spec.learner, spec.task, spec.train.seed).to(device or default_device())
    with entry_lock(path):
        stored = checked_torch_load(path)
        if stored is not None:
            learner.load_state_dict(stored["weights"])
            return TrainedLearner(spec, learner, TrainHistory(**stored["history"]), loaded_from_cache=True)
        history = train(
            learner,
            spec.task,
            spec.train,
            schedule=spec.schedule,
            checkpoint_path=path.with_suffix(".ckpt"),
            progress=progress,
            description=spec.label,
        )
        atomic_torch_save(
            {"weights": learner.state_dict(), "history": history.to_dict(), "config": spec.config()}, path
        )
    return TrainedLearner(spec, learner, history)


def prepare(spec: RunSpec | LearnerSpec, **kwargs) -> TrainedLearner:
    """Train-or-load a trainable learner; build a parameter-free baseline directly."""
    if isinstance(spec, RunSpec):
        return train_or_load(spec, **kwargs)
    if spec.trainable:
        raise ValueError(f"learner: '{spec.name}' must be trained; pass a RunSpec")
    return TrainedLearner(spec, spec.build(1, 2))


def evaluate_or_load(
    trained: TrainedLearner, test_task: TaskFamily, *, n_tasks: int, seed: int, root: Path | None = None
) -> EvalResult:
    """Evaluate ``trained`` on ``test_task`` (n_tasks episodes drawn with ``seed``), cached."""
    spec = trained.spec
    config = {
        "code_version": CODE_VERSION,
        "run": spec.config(),
        "test_task": test_task.config(),
        "n_tasks": n_tasks,
        "seed": seed,
    }
    name = spec.learner.name if isinstance(spec, RunSpec) else spec.name
    path = (root or cache_root()) / "results" / f"{name}-{test_task.name}-{config_hash(config)}.json"
    return EvalResult(
        **json_entry(path, lambda: evaluate(trained.learner, test_task, n_tasks=n_tasks, seed=seed).to_dict())
    )
