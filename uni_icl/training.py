"""One training loop for every learner, task family and objective.

:func:`train` runs Adam with gradient clipping (and a learning-rate schedule, constant by default)
over the steps of an :class:`Objective` (the hooks:
the loss of one step, and the validation score): by default :class:`EpisodeObjective`, the
learner's cross-entropy or squared error on episodes of a task (or of a curriculum's task at each
step); the distillation of the expressivity chapter and MAML's outer loop (M2-ICL) are objectives
too, and a snapshot at a given step is a callback. Around it: validation on fixed data with its
own seed (used for checkpoint selection and early stopping, never the test set), periodic
checkpoints that a later call resumes from, and a ``tqdm`` progress bar. Randomness comes only
from generators seeded by the config, and the training generator's state is checkpointed, so an
interrupted and resumed run ends exactly where an uninterrupted one does. A checkpoint holds only
tensors and plain values (the history as lists of numbers, the generator state as a byte
tensor), so it loads with ``weights_only=True``; one that does not match the learner is ignored
(training starts over). A loss or validation score that is inf or NaN stops training with a
:class:`~uni_icl.validation.NonFiniteError` and removes the checkpoint, so nothing of the run is
cached.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from uni_icl.convergence import convergence
from uni_icl.device import policy_threads
from uni_icl.stopping import STOP_SIGNALS, Interrupted
from uni_icl.storage import atomic_torch_save, checked_torch_load
from uni_icl.tasks import Episode, TaskFamily
from uni_icl.validation import (
    NonFiniteError,
    check_choice,
    check_finite,
    check_int,
    check_keys,
    check_numbers,
    check_positive,
    check_state_dict,
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (all part of the cache key)."""

    max_steps: int = 2000  # upper bound on optimiser steps
    batch_size: int = 64  # episodes per step
    lr: float = 1e-3  # Adam learning rate (the peak one under a schedule)
    lr_schedule: str = "constant"  # "constant", or "warmup_cosine": see learning_rate()
    grad_clip: float = 1.0  # max global gradient norm
    eval_every: int = 100  # steps between validation evaluations
    n_val_tasks: int = 512  # validation episodes (fixed, drawn with val_seed)
    patience: int = 0  # stop after this many evaluations without improvement (0: never stop early)
    min_delta: float = 0.002  # improvement in the validation score that resets the patience
    # stop at the first evaluation, past a quarter of max_steps, where the convergence test passes
    # with this tolerance (uni_icl.convergence; 0: never); the chapters report the same test
    stop_tolerance: float = 0.0
    seed: int = 0  # seed of the training episodes and of the initial weights
    val_seed: int = 1_000_003  # seed of the validation episodes
    checkpoint_every: int = 500  # steps between resumable checkpoints
    time_limit_s: float = 0.0  # stop after this much training wall time (0: no limit); see below

    # A time limit makes the number of steps, and so the result, depend on the machine's speed; the
    # presets never set one. It exists for a run that must fit a fixed budget (a lent GPU), and the
    # history records whether it ended training (``stopped_by_time``).

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "eval_every", "n_val_tasks", "checkpoint_every"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("patience", self.patience, minimum=0)
        if self.stop_tolerance != 0:
            check_positive("stop_tolerance", self.stop_tolerance)
        check_positive("lr", self.lr)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_positive("grad_clip", self.grad_clip)
        if self.time_limit_s != 0:
            check_positive("time_limit_s", self.time_limit_s)


LR_SCHEDULES = ("constant", "warmup_cosine")
WARMUP_FRACTION = 0.05


def warmup_steps(config: TrainConfig) -> int:
    """How many optimiser steps the learning rate ramps up for: 0 with a constant rate, 5% of
    ``max_steps`` (at least 1) with "warmup_cosine"."""
    return 0 if config.lr_schedule == "constant" else max(1, round(WARMUP_FRACTION * config.max_steps))


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): ``config.lr`` throughout ("constant"),
    or ("warmup_cosine") a linear warm-up over the first 5% of ``max_steps`` and a cosine decay to
    zero at ``max_steps``, a schedule sized to the budget."""
    if config.lr_schedule == "constant":
        return config.lr
    warmup = warmup_steps(config)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.max_steps - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class Objective(Protocol):
    """The hooks of :func:`train`: what one step minimises and how the learner is validated."""

    def step_loss(self, learner: nn.Module, step: int, gen: torch.Generator) -> torch.Tensor:
        """The loss of training step ``step`` as a detached scalar, its gradient left in the learner's
        ``.grad`` (drawing any training data from ``gen``)."""
        ...

    def validate(self, learner: nn.Module) -> tuple[float, float]:
        """(score, loss) on fixed validation data; a higher score is better (it picks the kept weights)."""
        ...


Callback = Callable[[int, nn.Module], None]  # called after each optimiser step with the steps done so far


class TaskSchedule(Protocol):
    """Chooses the training task at each step (a curriculum). ``config()`` enters the cache key."""

    def task_at(self, step: int) -> TaskFamily: ...

    def config(self) -> dict: ...


@dataclass
class TrainHistory:
    """At each evaluation: the step, the mean training loss since the previous evaluation, and
    the validation score (accuracy, or minus the squared error) and loss."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_score: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False
    stopped_by_time: bool = False  # training ended because config.time_limit_s ran out
    seconds: float = 0.0  # wall time spent training, summed over resumed runs

    def to_dict(self) -> dict:
        return asdict(self)


def check_history(data) -> None:
    """Raise a ValueError unless ``data`` is a :meth:`TrainHistory.to_dict` with finite, consistent numbers."""
    check_keys("history", data, [f.name for f in fields(TrainHistory)])
    check_numbers("history.steps", data["steps"], minimum=0)
    for name in ("train_loss", "val_score", "val_loss"):
        check_numbers(f"history.{name}", data[name])
        if len(data[name]) != len(data["steps"]):
            raise ValueError(f"history.{name}: {len(data[name])} values for {len(data['steps'])} steps")
    check_int("history.best_step", data["best_step"], minimum=0)
    check_numbers("history.seconds", [data["seconds"]], minimum=0)
    for name in ("stopped_early", "stopped_by_time"):
        if not isinstance(data[name], bool):
            raise ValueError(f"history.{name}: expected a bool, got {data[name]!r}")


def episode_loss(learner: nn.Module, episode: Episode) -> torch.Tensor:
    """Cross-entropy over all positions (classification) or mean squared error (regression)."""
    outputs = learner(episode.xs, episode.ys)
    if getattr(learner, "is_regression", False):
        return F.mse_loss(outputs, episode.ys)
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), episode.ys.reshape(-1))


def score_outputs(outputs: torch.Tensor, ys: torch.Tensor, regression: bool) -> torch.Tensor:
    """Per-episode, per-position score of a learner's outputs: 1/0 correctness, or squared error. -> (B, N)"""
    if regression:
        return (outputs - ys) ** 2
    return (outputs.argmax(-1) == ys).float()


def episode_score(learner: nn.Module, episode: Episode) -> torch.Tensor:
    """:func:`score_outputs` of ``learner`` on ``episode``. -> (B, N)"""
    return score_outputs(learner(episode.xs, episode.ys), episode.ys, getattr(learner, "is_regression", False))


@torch.no_grad()
def validate(learner: nn.Module, episodes: list[Episode]) -> tuple[float, float]:
    """(score, loss): score is mean accuracy, or minus the mean squared error, higher is better."""
    was_training = learner.training
    learner.eval()
    scores = torch.cat([episode_score(learner, e) for e in episodes]).mean().item()
    loss = sum(episode_loss(learner, e).item() * e.batch_size for e in episodes) / sum(e.batch_size for e in episodes)
    learner.train(was_training)
    return (-scores if getattr(learner, "is_regression", False) else scores), loss


def validation_episodes(task: TaskFamily, config: TrainConfig, device: torch.device) -> list[Episode]:
    """The fixed validation set, in batches of ``config.batch_size``."""
    gen = torch.Generator().manual_seed(config.val_seed)
    sizes = [config.batch_size] * (config.n_val_tasks // config.batch_size)
    if config.n_val_tasks % config.batch_size:
        sizes.append(config.n_val_tasks % config.batch_size)
    return [task.sample(size, generator=gen, device=device) for size in sizes]


class EpisodeObjective:
    """The learner's own loss (:func:`episode_loss`) on ``config.batch_size`` fresh episodes per step,
    drawn from ``task`` or from ``schedule.task_at(step)``; validated on the fixed validation
    episodes of ``task`` (:func:`validation_episodes`)."""

    def __init__(self, task: TaskFamily, config: TrainConfig, schedule: TaskSchedule | None = None) -> None:
        self.task, self.config, self.schedule = task, config, schedule
        self._val_set: list[Episode] | None = None

    def step_loss(self, learner: nn.Module, step: int, gen: torch.Generator) -> torch.Tensor:
        task = self.task if self.schedule is None else self.schedule.task_at(step)
        episode = task.sample(self.config.batch_size, generator=gen, device=next(learner.parameters()).device)
        loss = episode_loss(learner, episode)
        loss.backward()
        return loss.detach()

    def validate(self, learner: nn.Module) -> tuple[float, float]:
        if self._val_set is None:
            self._val_set = validation_episodes(self.task, self.config, next(learner.parameters()).device)
        return validate(learner, self._val_set)


@policy_threads()
def training_step(
    learner: nn.Module,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    step: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """One optimisation step of :func:`train`, the loop's core: the objective's loss on a fresh batch
    (its gradients included), clipped gradients, the scheduled learning rate, one Adam update.
    Returns the loss (a tensor: summed at evaluations, so no device sync every step)."""
    optimizer.zero_grad(set_to_none=True)
    loss = objective.step_loss(learner, step, gen)
    nn.utils.clip_grad_norm_(learner.parameters(), config.grad_clip)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(config, step)
    optimizer.step()
    return loss


def train(
    learner: nn.Module,
    task: TaskFamily,
    config: TrainConfig,
    *,
    schedule: TaskSchedule | None = None,
    objective: Objective | None = None,
    callbacks: Sequence[Callback] = (),
    checkpoint_path: Path | None = None,
    progress: bool = True,
    description: str = "training",
    milestones: Mapping[int, Milestone] | None = None,
) -> TrainHistory:
    """Train ``learner`` in place on ``task``: by default on its episodes (or ``schedule.task_at(step)``),
    validated on ``task`` (the full task); ``objective`` replaces both hooks (then ``task`` only
    names what is trained on, and ``schedule`` must be None). ``callbacks`` run after every
    optimiser step; ``milestones`` maps evaluation steps to a call with the history and the best
    weights so far (what a run stopped at that step would hold: the budget ladder stores them). At
    the end the learner holds the weights with the best validation score. With ``checkpoint_path``,
    the state is saved every ``config.checkpoint_every`` steps and when SIGINT or SIGTERM arrives (then
    :class:`~uni_icl.stopping.Interrupted`, a KeyboardInterrupt, is raised at the end of the
    current step), a call that finds a checkpoint resumes from it, and the
    checkpoint is removed when training completes. A non-finite loss or validation score raises
    :class:`~uni_icl.validation.NonFiniteError` (checked when losses are summed, before any
    checkpoint is written) and removes the checkpoint. Runs on the policy's torch threads
    (:func:`~uni_icl.device.policy_threads`, one by default), so the result does not depend on the
    caller's thread count.
    """
    if objective is not None and schedule is not None:
        raise ValueError("schedule: an objective draws its own training data; pass one or the other")
    objective = objective or EpisodeObjective(task, config, schedule)
    optimizer = torch.optim.Adam(learner.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    history, state = TrainHistory(), initial_state(learner)
    if checkpoint_path is not None:
        history, state = resume_checkpoint(checkpoint_path, learner, optimizer, gen, history, state)

    def save_checkpoint() -> None:
        if checkpoint_path is not None:
            write_checkpoint(checkpoint_path, learner, optimizer, gen, history, state)

    bar = tqdm(total=config.max_steps, initial=state["step"], desc=description, disable=not progress, leave=False)
    learner.train()
    started = time.perf_counter()
    pending_losses: list[torch.Tensor] = []  # summed at evaluations: no device sync every step
    with deferred_interrupt() as interrupted, _stop_if_not_finite(checkpoint_path, description):
        try:
            while state["step"] < config.max_steps and not history.stopped_early:
                if config.time_limit_s and history.seconds + time.perf_counter() - started >= config.time_limit_s:
                    history.stopped_by_time = True
                    if not history.steps or history.steps[-1] != state["step"]:
                        add_pending_losses(state, pending_losses)
                        record_validation(learner, objective, config, state, history)
                    break
                loss = training_step(learner, objective, optimizer, config, state["step"], gen)
                state["step"] += 1
                pending_losses.append(loss)
                for callback in callbacks:
                    callback(state["step"], learner)
                bar.update(1)
                if state["step"] % config.eval_every == 0 or state["step"] == config.max_steps:
                    add_pending_losses(state, pending_losses)
                    record_validation(learner, objective, config, state, history)
                    bar.set_postfix(val=f"{history.val_score[-1]:.4f}", best=f"{state['best_score']:.4f}")
                    if milestones and state["step"] in milestones:
                        history.seconds += time.perf_counter() - started
                        started = time.perf_counter()
                        milestones[state["step"]](copy.deepcopy(history), state["best_weights"])
                if state["step"] % config.checkpoint_every == 0 or interrupted():
                    add_pending_losses(state, pending_losses)
                    history.seconds += time.perf_counter() - started
                    started = time.perf_counter()
                    save_checkpoint()
                if interrupted():
                    kept = "no checkpoint kept" if checkpoint_path is None else f"checkpoint saved in {checkpoint_path}"
                    raise Interrupted(f"{description}: stopped at step {state['step']}, {kept}", interrupted())
        finally:
            bar.close()
    history.seconds += time.perf_counter() - started
    learner.load_state_dict(state["best_weights"])
    if checkpoint_path is not None:
        checkpoint_path.unlink(missing_ok=True)
    return history


# called at a milestone step with (a copy of) the history so far and the best weights so far
Milestone = Callable[[TrainHistory, dict], None]


def initial_state(learner: nn.Module) -> dict:
    """The loop's state before the first step (what :func:`record_validation` updates and a checkpoint
    keeps): the step, the best validation score and its weights, the plateau the early stop watches,
    and the running training loss. :func:`uni_icl.ensemble.train_ensemble` keeps one per member."""
    return {
        "step": 0,
        "best_score": -math.inf,
        "best_weights": copy.deepcopy(learner.state_dict()),
        "plateau_score": -math.inf,
        "since_improvement": 0,
        "loss_sum": 0.0,
        "loss_count": 0,
    }


def write_checkpoint(
    path: Path,
    learner: nn.Module,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    history: TrainHistory,
    state: dict,
) -> None:
    """Save everything a resumed run needs to continue exactly (atomically: a crash keeps the last one)."""
    atomic_torch_save(
        {
            "weights": learner.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "history": history.to_dict(),
            "state": state,
        },
        path,
    )


def resume_checkpoint(
    path: Path,
    learner: nn.Module,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    history: TrainHistory,
    state: dict,
) -> tuple[TrainHistory, dict]:
    """Load the checkpoint at ``path`` (if one is there) into ``learner``, ``optimizer`` and ``gen``, and
    return its history and state; without one, ``history`` and ``state`` unchanged."""
    saved = checked_torch_load(path, _checkpoint_validator(learner, state))
    if saved is None:
        return history, state
    learner.load_state_dict(saved["weights"])
    optimizer.load_state_dict(saved["optimizer"])
    gen.set_state(saved["generator"])
    return TrainHistory(**saved["history"]), saved["state"]


def _checkpoint_validator(learner: nn.Module, state: dict) -> Callable[[object], None]:
    """A check that a loaded checkpoint holds what :func:`train` saves, for this learner."""

    def validate(saved) -> None:
        check_keys("checkpoint", saved, ("weights", "optimizer", "generator", "history", "state"))
        check_state_dict("checkpoint.weights", saved["weights"], learner.state_dict())
        check_keys("checkpoint.state", saved["state"], state)
        check_state_dict("checkpoint.state.best_weights", saved["state"]["best_weights"], learner.state_dict())
        check_int("checkpoint.state.step", saved["state"]["step"], minimum=0)
        check_history(saved["history"])
        generator = saved["generator"]
        if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8:
            raise ValueError("checkpoint.generator: expected a uint8 tensor (a torch.Generator state)")
        if not isinstance(saved["optimizer"], dict):
            raise ValueError("checkpoint.optimizer: expected an optimizer state dict")

    return validate


@contextlib.contextmanager
def _stop_if_not_finite(checkpoint_path: Path | None, description: str) -> Iterator[None]:
    """Name the run in a :class:`~uni_icl.validation.NonFiniteError` and remove its checkpoint: nothing stays cached."""
    try:
        yield
    except NonFiniteError as error:
        if checkpoint_path is not None:
            checkpoint_path.unlink(missing_ok=True)
        raise NonFiniteError(f"{description}: {error}") from None


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Callable[[], int]]:
    """Turn SIGINT (Ctrl-C, a notebook's interrupt) and SIGTERM (``timeout``, a scheduler) into a
    flag checked between training steps: the flag reads the signal's number, 0 until one arrives.
    Only a signal the process turns into an exception (a Python handler: SIGINT by default, SIGTERM
    under :func:`~uni_icl.stopping.terminate_as_interrupt`) is deferred; one it ignores or dies of
    keeps that behaviour (a pool worker dies on SIGTERM: :func:`uni_icl.parallel._start_worker`).

    The loop then saves a consistent checkpoint at a step boundary and raises
    :class:`~uni_icl.stopping.Interrupted` (a KeyboardInterrupt naming the signal), instead of being
    torn down half-way through an optimiser step. A signal that arrives after the last step is
    delivered again once the caller's handlers are back, never swallowed (a pool worker that
    swallowed its SIGTERM kept its parent waiting forever). Outside the main thread (where signal
    handlers cannot be set) both signals keep their behaviour.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: 0
        return
    received = []
    deferred = [signum for signum in STOP_SIGNALS if callable(signal.getsignal(signum))]
    previous = {signum: signal.signal(signum, lambda number, frame: received.append(number)) for signum in deferred}
    try:
        yield lambda: received[0] if received else 0
    except BaseException:
        _restore_handlers(previous)
        raise
    _restore_handlers(previous)
    if received:  # it arrived after the last step: deliver it now, to the handler the caller had set
        signal.raise_signal(received[0])


def _restore_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def add_pending_losses(state: dict, pending_losses: list[torch.Tensor]) -> None:
    """Fold the losses of the steps since the last fold into the running sum (one device sync).

    Added one by one in step order, so the sum does not depend on where the folds fall (an
    interrupted and resumed run records exactly the losses of an uninterrupted one). Raises
    :class:`~uni_icl.validation.NonFiniteError` if one of them is inf or NaN.
    """
    if pending_losses:
        values = torch.stack(pending_losses).tolist()
        check_finite(f"training loss up to step {state['step']}", values)
        for value in values:
            state["loss_sum"] += value
        state["loss_count"] += len(pending_losses)
        pending_losses.clear()


def record_validation(
    learner: nn.Module, objective: Objective, config: TrainConfig, state: dict, history: TrainHistory
) -> None:
    """Validate, keep the best weights, and stop early: ``patience`` evaluations without a ``min_delta``
    improvement, or (``stop_tolerance``) the convergence test passing past a quarter of ``max_steps``."""
    score, loss = objective.validate(learner)
    check_finite(f"validation score and loss at step {state['step']}", (score, loss))
    history.steps.append(state["step"])
    history.train_loss.append(state["loss_sum"] / max(state["loss_count"], 1))
    history.val_score.append(score)
    history.val_loss.append(loss)
    state["loss_sum"], state["loss_count"] = 0.0, 0
    if score > state["best_score"]:
        state["best_score"] = score
        state["best_weights"] = copy.deepcopy(learner.state_dict())
        history.best_step = state["step"]
    if score > state["plateau_score"] + config.min_delta:
        state["plateau_score"] = score
        state["since_improvement"] = 0
    else:
        state["since_improvement"] += 1
        history.stopped_early = bool(config.patience) and state["since_improvement"] >= config.patience
    if config.stop_tolerance and 4 * state["step"] >= config.max_steps:
        check = convergence(history.steps, history.val_score, config.stop_tolerance)
        history.stopped_early = history.stopped_early or check.converged
