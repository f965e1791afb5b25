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
element, so this is S separate Adams). Validation, kept best weights and early stopping are
:func:`~uni_icl.training.train`'s own code, run on each member in turn with its current weights.

A member that stops early keeps stepping with the others (its stream and updates do not touch
theirs), but nothing more is recorded for it: its history ends and its kept best weights are the
ones it had when it stopped. Training ends at ``max_steps``, when every member has stopped, or at
``time_limit_s``. Not supported (use :func:`~uni_icl.training.train`): custom objectives,
callbacks and checkpoints; buffers are carried along unchanged. A history's ``seconds`` is the
whole ensemble's wall time. A non-finite loss or validation score of a member still training
raises :class:`~uni_icl.validation.NonFiniteError` naming its seed.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from uni_icl.device import default_device, policy_threads
from uni_icl.runs import RunSpec, build_seeded
from uni_icl.tasks import Episode
from uni_icl.training import (
    EpisodeObjective,
    TrainHistory,
    add_pending_losses,
    episode_loss,
    initial_state,
    learning_rate,
    record_validation,
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
    specs: Sequence[RunSpec], *, device: torch.device | None = None, progress: bool = False
) -> list[tuple[nn.Module, TrainHistory]]:
    """Train the runs ``specs`` (differing only in ``train.seed``) as one batched model; see the module.

    Returns, per spec in order, its learner holding its best validation weights and its history.
    """
    check_ensemble_specs(specs)
    device = device or default_device()
    first = specs[0]
    config, task, schedule = first.train, first.task, first.schedule
    models = [build_seeded(spec.learner, spec.task, spec.train.seed).to(device) for spec in specs]
    params, buffers = stack_module_state(models)  # name -> (S, ...) leaf tensors
    skeleton = copy.deepcopy(models[0]).to("meta")
    optimizer = torch.optim.Adam(params.values(), lr=config.lr)
    gens = [torch.Generator().manual_seed(spec.train.seed) for spec in specs]
    objective = EpisodeObjective(task, config)  # validation only: one shared validation set
    histories = [TrainHistory() for _ in specs]
    states = [initial_state(model) for model in models]  # the loop's own state, one per member

    def member_loss(member_params: dict, member_buffers: dict, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        episode = Episode(xs, ys, task.name)
        return episode_loss(_Member(skeleton, (member_params, member_buffers)), episode)

    batched_loss = vmap(member_loss)

    def record(active: list[int], step: int, pending: list[torch.Tensor]) -> None:
        """Fold member s's pending losses and validate it, for every member still training."""
        for s in active:
            with _named(specs[s]):
                states[s]["step"] = step
                add_pending_losses(states[s], [losses[s] for losses in pending])
                with torch.no_grad():
                    for name, parameter in models[s].named_parameters():
                        parameter.copy_(params[name][s])
                record_validation(models[s], objective, config, states[s], histories[s])
        pending.clear()

    bar = tqdm(total=config.max_steps, desc=f"ensemble of {len(specs)}", disable=not progress, leave=False)
    started = time.perf_counter()
    step, pending = 0, []
    skeleton.train()  # the members' own modules only validate (which restores their mode)
    try:
        while step < config.max_steps:
            active = [s for s, history in enumerate(histories) if not history.stopped_early]
            if not active:
                break
            if config.time_limit_s and time.perf_counter() - started >= config.time_limit_s:
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
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    for model, state, history in zip(models, states, histories, strict=True):
        model.load_state_dict(state["best_weights"])
        history.seconds = seconds
    return list(zip(models, histories, strict=True))


@contextlib.contextmanager
def _named(spec: RunSpec) -> Iterator[None]:
    """Prefix a :class:`NonFiniteError` raised inside with the member's seed."""
    try:
        yield
    except NonFiniteError as error:
        raise NonFiniteError(f"{spec.label}, seed {spec.train.seed}: {error}") from None
