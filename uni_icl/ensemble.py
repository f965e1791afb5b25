"""Seed ensembles: S runs that differ only in ``train.seed``, trained as one batched model.

:func:`train_ensemble` takes run specifications that agree in everything but the seed (learner,
task, schedule and every other training setting) and returns, for each, the learner and history
that ``train(build_seeded(spec.learner, spec.task, spec.train.seed), spec.task, spec.train,
schedule=spec.schedule)`` returns, up to float rounding (the batched kernels add in another order).

How: the S members are built with :func:`~uni_icl.runs.build_seeded` and their parameters stacked
with ``torch.func.stack_module_state`` into one leaf tensor per parameter, of shape (S, *shape).
A step draws member s's ``batch_size`` episodes with its own generator (seeded with its seed, as
:class:`~uni_icl.training.EpisodeObjective` does), stacks them into xs (S, B, N, d) and ys (S, B, N),
computes the S losses in one call (``vmap`` over ``functional_call`` of
:func:`~uni_icl.training.episode_loss`), back-propagates their sum (each member's gradient is its
own loss's), clips each member's gradient to ``grad_clip`` by the global norm over that member's
parameters, and takes one step of a single Adam over the stacked tensors (Adam acts element by
element, so this is S separate Adams). The loop's state, validation, kept best weights, early
stopping, checkpoints and the deferred stop signals are :mod:`uni_icl.training`'s own code
(``initial_state``, ``record_validation``, ``write_checkpoint``, ``resume_checkpoint``,
``deferred_interrupt``), run on each member in turn with its current weights. A member's
checkpoint is the one its single run would write (its slice of the stacked Adam is a single
model's Adam, :class:`_MemberAdam`), at the path its single run uses
(:func:`uni_icl.runs.checkpoint_path`), so an interrupted ensemble resumes exactly where it
stopped, and either kind of run can resume the other's checkpoints.

A member that stops early keeps stepping with the others (its stream and updates do not touch
theirs), but nothing more is recorded for it: its history ends and its kept best weights are the
ones it had when it stopped. Training ends at ``max_steps``, when every member has stopped, or at
``time_limit_s``. Not supported (use :func:`~uni_icl.training.train`): custom objectives and
callbacks; buffers are carried along unchanged. A history's ``seconds`` is the
whole ensemble's wall time. A non-finite loss or validation score of a member still training
raises :class:`~uni_icl.validation.NonFiniteError` naming its seed.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from uni_icl.device import default_device, policy_threads
from uni_icl.runs import RunSpec, build_seeded
from uni_icl.stopping import Interrupted
from uni_icl.tasks import Episode
from uni_icl.training import (
    EpisodeObjective,
    Milestone,
    TrainHistory,
    add_pending_losses,
    deferred_interrupt,
    episode_loss,
    initial_state,
    learning_rate,
    record_validation,
    resume_checkpoint,
    write_checkpoint,
)
from uni_icl.validation import NonFiniteError


def check_ensemble_specs(specs: Sequence[RunSpec]) -> None:
    """Raise a ValueError unless ``specs`` is non-empty and its members differ only in ``train.seed``."""
    if not specs:
        raise ValueError("specs: an ensemble needs at least one RunSpec")
    first = specs[0]
    for spec in specs[1:]:
        parts = {
            "learner": (first.learner.config(), spec.learner.config()),
            "task": (first.task.config(), spec.task.config()),
            "schedule": tuple(None if s.schedule is None else s.schedule.config() for s in (first, spec)),
            **{f"train.{name}": (value, getattr(spec.train, name)) for name, value in first.train.__dict__.items()},
        }
        for name, (ours, theirs) in parts.items():
            if name != "train.seed" and ours != theirs:
                raise ValueError(f"{name}: ensemble members may differ only in train.seed, got {ours!r} and {theirs!r}")


class _Member:
    """A module called with given parameters and buffers (for :func:`episode_loss` under vmap)."""

    def __init__(self, module: nn.Module, weights: tuple[dict, dict]) -> None:
        self.module, self.weights = module, weights
        self.is_regression = getattr(module, "is_regression", False)

    def __call__(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.weights, (xs, ys))


@torch.no_grad()
def clip_per_member(grads: Sequence[torch.Tensor], max_norm: float) -> None:
    """Scale each member's slice of the stacked ``grads`` (each (S, ...)) in place as
    ``nn.utils.clip_grad_norm_`` would scale that member's gradients alone."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (P, S)
    scale = (max_norm / (torch.linalg.vector_norm(norms, dim=0) + 1e-6)).clamp(max=1.0)  # (S,)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


@policy_threads()
def train_ensemble(
    specs: Sequence[RunSpec],
    *,
    device: torch.device | None = None,
    progress: bool = False,
    checkpoint_paths: Sequence[Path] | None = None,
    milestones: Sequence[Mapping[int, Milestone]] | None = None,
) -> list[tuple[nn.Module, TrainHistory]]:
    """Train the runs ``specs`` (differing only in ``train.seed``) as one batched model; see the module.

    With ``checkpoint_paths`` (one per spec), every ``config.checkpoint_every`` steps, and when SIGINT
    or SIGTERM arrives (then :class:`~uni_icl.stopping.Interrupted` is raised at the end of the
    step), each member's checkpoint is written as :func:`~uni_icl.training.train` writes its single
    run's; a call that finds all of them, in step, resumes from them, and they are removed when
    training completes (or a number turns inf or NaN). ``milestones`` (one mapping per spec) are
    called as :func:`~uni_icl.training.train` calls its single run's. Returns, per spec in order, its
    learner holding its best validation weights and its history.
    """
    check_ensemble_specs(specs)
    for name, given in (("checkpoint_paths", checkpoint_paths), ("milestones", milestones)):
        if given is not None and len(given) != len(specs):
            raise ValueError(f"{name}: got {len(given)}; allowed: one per spec ({len(specs)})")
    device = device or default_device()
    first = specs[0]
    config, task, schedule = first.train, first.task, first.schedule
    models, gens, histories, states = _fresh_members(specs, device)
    adam_states = None
    if checkpoint_paths is not None:
        adam_states = _resume_members(checkpoint_paths, models, gens, histories, states)
        if adam_states is None:  # none, or not all of them in step: start over
            models, gens, histories, states = _fresh_members(specs, device)
    params, buffers = stack_module_state(models)  # name -> (S, ...) leaf tensors
    skeleton = copy.deepcopy(models[0]).to("meta")
    optimizer = torch.optim.Adam(params.values(), lr=config.lr)
    if adam_states is not None:
        optimizer.load_state_dict(_stacked_adam_state(adam_states))
    objective = EpisodeObjective(task, config)  # validation only: one shared validation set

    def member_loss(member_params: dict, member_buffers: dict, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        episode = Episode(xs, ys, task.name)
        return episode_loss(_Member(skeleton, (member_params, member_buffers)), episode)

    batched_loss = vmap(member_loss)

    def fold(active: list[int], step: int, pending: list[torch.Tensor]) -> None:
        """Fold member s's pending losses into its state, and copy its weights into its model, for every
        member still training (what validation and a checkpoint read)."""
        for s in active:
            with _named(specs[s]):
                states[s]["step"] = step
                add_pending_losses(states[s], [losses[s] for losses in pending])
                with torch.no_grad():
                    for name, parameter in models[s].named_parameters():
                        parameter.copy_(params[name][s])
        pending.clear()

    def record(active: list[int], step: int, pending: list[torch.Tensor]) -> None:
        """Validate every member still training, after folding its pending losses."""
        fold(active, step, pending)
        for s in active:
            with _named(specs[s]):
                record_validation(models[s], objective, config, states[s], histories[s])

    def save_checkpoints(active: list[int], step: int, pending: list[torch.Tensor], seconds: float) -> None:
        fold(active, step, pending)
        for s, path in enumerate(checkpoint_paths or ()):
            histories[s].seconds = seconds
            write_checkpoint(path, models[s], _MemberAdam(optimizer, s), gens[s], histories[s], states[s])

    step = max(state["step"] for state in states)  # 0, or the step the checkpoints were written at
    description = f"{first.label}, {len(specs)} seeds as one ensemble"
    folder = None if checkpoint_paths is None else checkpoint_paths[0].parent
    bar = tqdm(total=config.max_steps, initial=step, desc=description, disable=not progress, leave=False)
    earlier, started = histories[0].seconds, time.perf_counter()  # wall time of the runs resumed from, and now
    pending: list[torch.Tensor] = []
    skeleton.train()  # the members' own modules only validate (which restores their mode)
    with deferred_interrupt() as interrupted, _removed_if_not_finite(checkpoint_paths):
        try:
            while step < config.max_steps:
                active = [s for s, history in enumerate(histories) if not history.stopped_early]
                if not active:
                    break
                if config.time_limit_s and earlier + time.perf_counter() - started >= config.time_limit_s:
                    for s in active:
                        histories[s].stopped_by_time = True
                    if histories[active[0]].steps[-1:] != [step]:
                        record(active, step, pending)
                    break
                step_task = task if schedule is None else schedule.task_at(step)
                episodes = [step_task.sample(config.batch_size, generator=gen, device=device) for gen in gens]
                xs, ys = torch.stack([e.xs for e in episodes]), torch.stack([e.ys for e in episodes])
                optimizer.zero_grad(set_to_none=True)
                losses = batched_loss(params, buffers, xs, ys)  # (S,)
                losses.sum().backward()
                clip_per_member([p.grad for p in params.values() if p.grad is not None], config.grad_clip)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step)
                optimizer.step()
                step += 1
                pending.append(losses.detach())
                bar.update(1)
                if step % config.eval_every == 0 or step == config.max_steps:
                    record(active, step, pending)
                    for s in active:
                        if milestones and step in milestones[s]:
                            histories[s].seconds = earlier + time.perf_counter() - started
                            milestones[s][step](copy.deepcopy(histories[s]), states[s]["best_weights"])
                if checkpoint_paths is not None and (step % config.checkpoint_every == 0 or interrupted()):
                    save_checkpoints(active, step, pending, earlier + time.perf_counter() - started)
                if interrupted():
                    kept = "no checkpoint kept" if checkpoint_paths is None else f"checkpoints saved in {folder}"
                    raise Interrupted(f"{description}: stopped at step {step}, {kept}", interrupted())
        finally:
            bar.close()
    seconds = earlier + time.perf_counter() - started
    for model, state, history in zip(models, states, histories, strict=True):
        model.load_state_dict(state["best_weights"])
        history.seconds = seconds
    for path in checkpoint_paths or ():
        path.unlink(missing_ok=True)
    return list(zip(models, histories, strict=True))


def _fresh_members(
    specs: Sequence[RunSpec], device: torch.device
) -> tuple[list[nn.Module], list[torch.Generator], list[TrainHistory], list[dict]]:
    """Each member's model (its seed's initial weights), training generator, empty history and loop state."""
    models = [build_seeded(spec.learner, spec.task, spec.train.seed).to(device) for spec in specs]
    gens = [torch.Generator().manual_seed(spec.train.seed) for spec in specs]
    return models, gens, [TrainHistory() for _ in specs], [initial_state(model) for model in models]


class _MemberAdam:
    """Member s's share of the ensemble's Adam, seen as the Adam of its single run.

    Adam acts element by element, so member s's state is slice s of each stacked moment, with the
    step count they share. :meth:`state_dict` is what its single run's Adam would hold, so a member's
    checkpoint is its single run's (:func:`~uni_icl.training.write_checkpoint`); :meth:`load_state_dict`
    keeps a member's checkpointed state (:func:`~uni_icl.training.resume_checkpoint`), and
    :func:`_stacked_adam_state` stacks the members' into the ensemble's Adam.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, member: int) -> None:
        self.optimizer, self.member = optimizer, member
        self.loaded: dict | None = None

    def state_dict(self) -> dict:
        stacked = self.optimizer.state_dict()
        state = {
            index: {name: (value if name == "step" else value[self.member]).clone() for name, value in moments.items()}
            for index, moments in stacked["state"].items()
        }
        return {"state": state, "param_groups": stacked["param_groups"]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.loaded = state_dict


def _stacked_adam_state(members: list[dict]) -> dict:
    """The ensemble's Adam state from its members' single-run ones (see :class:`_MemberAdam`)."""
    state = {
        index: {
            name: value if name == "step" else torch.stack([member["state"][index][name] for member in members])
            for name, value in moments.items()
        }
        for index, moments in members[0]["state"].items()
    }
    return {"state": state, "param_groups": members[0]["param_groups"]}


def _resume_members(
    paths: Sequence[Path], models: list[nn.Module], gens: list[torch.Generator], histories: list, states: list
) -> list[dict] | None:
    """Load each member's checkpoint (its single run's) into its model, generator, history and state;
    return their Adam states if every member has one and they are in step (one optimiser step count,
    reached by every member still training), else None (then what was loaded must be discarded)."""
    views = [_MemberAdam(None, s) for s in range(len(paths))]
    for s, path in enumerate(paths):
        if not path.exists():
            return None
        histories[s], states[s] = resume_checkpoint(path, models[s], views[s], gens[s], histories[s], states[s])
    adam_states = [view.loaded for view in views]
    if any(adam is None for adam in adam_states):
        return None
    counts = {int(moments["step"]) for adam in adam_states for moments in adam["state"].values()}
    indices = {tuple(adam["state"]) for adam in adam_states}
    training = {state["step"] for state, history in zip(states, histories, strict=True) if not history.stopped_early}
    return adam_states if len(counts) == 1 and len(indices) == 1 and training <= counts else None


@contextlib.contextmanager
def _removed_if_not_finite(paths: Sequence[Path] | None) -> Iterator[None]:
    """Remove the members' checkpoints when a number turns inf or NaN: nothing of the run stays cached."""
    try:
        yield
    except NonFiniteError:
        for path in paths or ():
            path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _named(spec: RunSpec) -> Iterator[None]:
    """Prefix a :class:`NonFiniteError` raised inside with the member's seed."""
    try:
        yield
    except NonFiniteError as error:
        raise NonFiniteError(f"{spec.label}, seed {spec.train.seed}: {error}") from None
