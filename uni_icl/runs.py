"""Train-or-load: trained learners and evaluation results cached under a hash of their config.

The key of a trained model covers the task family and its parameters, the learner and its
parameters, the training settings (seeds included), the curriculum if any, and the version of the
experiment code (``CODE_VERSION``); an evaluation's key adds the test family, the number of test
episodes, the test seed and the content hash of the weights it was computed from
(:func:`~uni_icl.storage.weights_hash`), so replacing a model's entry makes its evaluations stale.
Change any of them and the entry is recomputed; leave them and a rebuild loads it instantly.

Loaded entries are checked (a model's weights against the learner, an evaluation's keys, ranges
and finiteness) and a bad one is recomputed; a computed evaluation with a non-finite number is
refused, not stored. Training and evaluation run under the package's thread policy
(:func:`~uni_icl.device.policy_threads`), so their numbers do not depend on the caller's torch
thread count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import nn

from uni_icl.device import default_device, policy_threads
from uni_icl.evaluation import EvalResult, evaluate
from uni_icl.learners import LearnerSpec, display_name
from uni_icl.storage import cache_root, cached_entry, config_hash, json_entry, weights_hash
from uni_icl.tasks import TaskFamily
from uni_icl.training import TaskSchedule, TrainConfig, TrainHistory, check_history, train
from uni_icl.validation import NonFiniteError, check_choice, check_int, check_keys, check_numbers, check_state_dict

# bump when a change to the package invalidates stored results (3: linear attention shifts each row by
# the maximum over the positions it reads, which changes the authors' ICLer's numbers; the mixture
# draws only each episode's own family, which changes its episode stream)
CODE_VERSION = "3"


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

    @property
    def weights_hash(self) -> str:
        """The content hash of the learner's weights (part of every key computed from them)."""
        return weights_hash(self.learner)


def build_seeded(learner: LearnerSpec, task: TaskFamily, seed: int) -> nn.Module:
    """Build ``learner`` for ``task`` with initial weights drawn from ``seed``; the global RNG is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return learner.build(task.input_dim, task.n_classes)


def model_path(spec: RunSpec, root: Path | None = None) -> Path:
    return (root or cache_root()) / "models" / f"{spec.learner.name}-{spec.task.name}-{spec.key}.pt"


def checkpoint_path(spec: RunSpec, root: Path | None = None) -> Path:
    """Where training ``spec`` keeps its checkpoint until it finishes (alone, or in a seed ensemble)."""
    return model_path(spec, root).with_suffix(".ckpt")


def train_or_load(
    spec: RunSpec,
    *,
    root: Path | None = None,
    progress: bool = True,
    device: torch.device | None = None,
    rungs: tuple[int, ...] = (),
) -> TrainedLearner:
    """Load the learner trained under ``spec`` if stored, else train it (resuming a checkpoint) and store it.

    ``rungs``: shorter budgets of the same run (see :func:`rung_spec`) whose models are stored on the
    way, as :func:`train_or_load` of :func:`rung_spec` would store them."""
    path = model_path(spec, root)
    learner = build_seeded(spec.learner, spec.task, spec.train.seed).to(device or default_device())
    milestones = rung_milestones(spec, rungs, learner, root)

    def fit() -> dict:
        history = train(
            learner,
            spec.task,
            spec.train,
            schedule=spec.schedule,
            checkpoint_path=checkpoint_path(spec, root),
            progress=progress,
            description=spec.label,
            milestones=milestones,
        )
        return {"weights": learner.state_dict(), "history": history.to_dict(), "config": spec.config()}

    stored, loaded = cached_entry(path, fit, model_entry_validator(learner), tensors=True)
    learner.load_state_dict(stored["weights"])
    return TrainedLearner(spec, learner, TrainHistory(**stored["history"]), loaded_from_cache=loaded)


def rung_spec(spec: RunSpec, steps: int) -> RunSpec:
    """``spec`` with a budget of ``steps`` (a rung of its budget ladder)."""
    return replace(spec, train=replace(spec.train, max_steps=steps))


def check_rungs(spec: RunSpec, rungs: tuple[int, ...]) -> tuple[int, ...]:
    """The rungs shorter than ``spec``'s budget, after checking that the model at each is the one a run with
    that budget trains: a constant learning rate (a schedule sized to the budget differs), no early
    stopping and no time limit, and each rung an evaluation step."""
    if not rungs:
        return ()
    config = spec.train
    if config.lr_schedule != "constant" or config.patience or config.stop_tolerance or config.time_limit_s:
        raise ValueError(
            f"rungs: a budget ladder needs a constant learning rate and no early stopping or time limit; "
            f"{spec.label} has lr_schedule={config.lr_schedule!r}, patience={config.patience}, "
            f"stop_tolerance={config.stop_tolerance}, time_limit_s={config.time_limit_s}"
        )
    for rung in rungs:
        if rung <= 0 or rung > config.max_steps or rung % config.eval_every:
            raise ValueError(
                f"rungs: each must be a multiple of eval_every ({config.eval_every}) "
                f"in 1..{config.max_steps}; got {rung}"
            )
    return tuple(sorted(rung for rung in set(rungs) if rung < config.max_steps))


def rung_milestones(spec: RunSpec, rungs: tuple[int, ...], learner: nn.Module, root: Path | None) -> dict:
    """Milestones (step -> call; see :func:`~uni_icl.training.train`) that store, on the way to ``spec``'s
    budget, the model of each of its ``rungs`` (checked by :func:`check_rungs`); ``learner`` is any
    module of ``spec``'s shape, used to validate the entries."""
    return {rung: _rung_writer(rung_spec(spec, rung), learner, root) for rung in check_rungs(spec, rungs)}


def _rung_writer(spec: RunSpec, learner: nn.Module, root: Path | None) -> Callable[[TrainHistory, dict], None]:
    """Store, at a milestone of a longer run, the entry :func:`train_or_load` of ``spec`` would store."""

    def write(history: TrainHistory, best_weights: dict) -> None:
        entry = {"weights": best_weights, "history": history.to_dict(), "config": spec.config()}
        cached_entry(model_path(spec, root), lambda: entry, model_entry_validator(learner), tensors=True)

    return write


def model_entry_validator(learner: nn.Module) -> Callable[[object], None]:
    """A check that a loaded model entry holds ``learner``'s weights (finite) and a training history."""

    def validate(stored) -> None:
        check_keys("model entry", stored, ("weights", "history", "config"))
        check_state_dict("weights", stored["weights"], learner.state_dict())
        check_history(stored["history"])

    return validate


def derived_model_validator(learner: nn.Module, sources: dict[str, str | None]) -> Callable[[object], None]:
    """The check of a model trained from other models' weights (a distilled student, M2-ICL from its
    pre-trained ICL): :func:`model_entry_validator`, and the entry's ``sources`` (name -> weights hash)
    must equal ``sources``. An entry computed from weights that were since replaced is stale."""
    check_model = model_entry_validator(learner)

    def validate(stored) -> None:
        if not isinstance(stored, dict) or stored.get("sources") != sources:
            raise ValueError(f"computed from other weights than the stored {', '.join(sources)} (stale)")
        check_model({name: value for name, value in stored.items() if name != "sources"})

    return validate


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
        "weights": trained.weights_hash,
    }
    name = spec.learner.name if isinstance(spec, RunSpec) else spec.name
    path = (root or cache_root()) / "results" / f"{name}-{test_task.name}-{config_hash(config)}.json"

    def compute() -> dict:
        with policy_threads():
            check_finite_outputs(trained.learner, test_task, seed=seed)
            return evaluate(trained.learner, test_task, n_tasks=n_tasks, seed=seed).to_dict()

    return EvalResult(**json_entry(path, compute, check_eval_result))


def check_eval_result(data) -> None:
    """Raise a ValueError unless ``data`` is an :meth:`EvalResult.to_dict` with consistent, in-range numbers.

    Accuracies lie in [0, 1], squared errors and CI half-widths are >= 0, every number is finite
    (:class:`~uni_icl.validation.NonFiniteError` otherwise) and the lists have matching lengths.
    """
    check_keys("result", data, [f.name for f in fields(EvalResult)])
    check_choice("result.metric", data["metric"], ("accuracy", "squared_error"))
    check_int("result.n_tasks", data["n_tasks"], minimum=1)
    high = 1.0 if data["metric"] == "accuracy" else float("inf")
    for name in ("per_position", "per_episode_mean"):
        check_numbers(f"result.{name}", data[name], minimum=0.0, maximum=high)
    check_numbers("result.mean", [data["mean"]], minimum=0.0, maximum=high)
    check_numbers("result.per_position_ci", data["per_position_ci"], minimum=0.0)
    check_numbers("result.mean_ci", [data["mean_ci"]], minimum=0.0)
    if not data["per_position"] or len(data["per_position_ci"]) != len(data["per_position"]):
        raise ValueError("result.per_position_ci: expected one value per position")
    if len(data["per_episode_mean"]) != data["n_tasks"]:
        raise ValueError(f"result.per_episode_mean: expected {data['n_tasks']} values (n_tasks)")


@torch.no_grad()
def check_finite_outputs(learner: nn.Module, task: TaskFamily, *, seed: int) -> None:
    """Raise :class:`~uni_icl.validation.NonFiniteError` if one episode of ``task`` drawn with ``seed`` has
    inputs, or gives ``learner`` outputs, that are inf or NaN (e.g. a noise_std too large for float32)."""
    device = next(iter(learner.parameters()), torch.empty(0)).device
    episode = task.sample(1, seed=seed, device=device)
    about = f"task '{task.name}' with noise_std {task.noise_std}"
    if not bool(torch.isfinite(episode.xs).all()):
        raise NonFiniteError(f"noise_std: {about} draws inputs that are inf or NaN; allowed: a smaller noise_std")
    was_training = learner.training
    learner.eval()
    outputs = learner(episode.xs, episode.ys)
    learner.train(was_training)
    if not bool(torch.isfinite(outputs).all()):
        raise NonFiniteError(
            f"noise_std: on {about} the learner's outputs are inf or NaN; allowed: a smaller noise_std"
        )
