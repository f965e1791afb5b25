"""Meta-level meta-learning (M2-ICL): MAML with the in-context regressor as the network being adapted.

Tasks are grouped into domains (:class:`~uni_icl.tasks.RegressionDomain`: x = z A + b, y = s w.x).
One meta-task is one domain: the inner loop takes a few plain SGD steps on ``support_size``
prompts of the domain, starting from the shared initial weights theta; the outer loss is the mean
squared error of the adapted weights on ``query_size`` fresh prompts of the same domain; Adam
updates theta with its gradient. Everything is functional (``torch.func.functional_call`` and
``torch.autograd.grad``), so no meta-learning library is needed:

- second-order MAML differentiates through the inner updates (``create_graph=True``);
- first-order MAML (FOMAML) treats the inner gradients as constants, so the meta-gradient is the
  query-loss gradient at the adapted weights.

At meta-test time every learner (plain ICL or M2-ICL) is adapted to a new domain by
:func:`fine_tune`: ``epochs`` passes of SGD over the domain's adaptation prompts in mini-batches of
``batch_size``, each step's gradient clipped to the inner loop's norm. With 64 prompts, batch 64 and
5 epochs it is exactly the inner loop.

References: Finn et al. 2017 (MAML); Nichol et al. 2018 (first-order approximations); PAPER.md.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from uni_icl.tasks import Episode, RegressionDomain, domain_task
from uni_icl.training import TrainConfig
from uni_icl.validation import check_int, check_positive

Params = dict[str, torch.Tensor]
LOG_FLOOR = 1e-12  # relative errors are floored here before taking logs


@dataclass(frozen=True)
class MAMLConfig:
    """Meta-training of M2-ICL (all part of the cache key). PAPER.md: 5 SGD steps at 0.01 on 64
    prompts, outer loss on 64 fresh prompts, one domain per meta-step, Adam 1e-4, 100k meta-steps."""

    inner_steps: int = 5  # SGD steps of the inner loop
    inner_lr: float = 0.01  # SGD learning rate of the inner loop (and of fine-tuning at meta-test)
    inner_grad_clip: float | None = 1.0  # max global gradient norm of each inner SGD step (None: plain SGD)
    support_size: int = 64  # prompts of the domain the inner loop trains on
    query_size: int = 64  # fresh prompts of the same domain for the outer loss
    domains_per_step: int = 1  # meta-tasks (domains) averaged in one outer update
    second_order: bool = False  # differentiate through the inner updates (True) or FOMAML (False)
    meta_lr: float = 1e-4  # Adam learning rate of the outer loop
    meta_steps: int = 1000  # upper bound on outer updates
    grad_clip: float = 1.0  # max global norm of the meta-gradient
    eval_every: int = 50  # meta-steps between validations
    n_val_domains: int = 8  # validation domains (drawn with val_seed, never used for training)
    n_val_prompts: int = 256  # query prompts per validation domain
    patience: int = 0  # stop after this many validations without improvement (0: never stop early)
    min_delta: float = 0.002  # improvement of the validation score that resets the patience
    seed: int = 0  # seed of the meta-training domains and prompts
    val_seed: int = 3_000_017  # seed of the validation domains and prompts
    checkpoint_every: int = 100  # meta-steps between resumable checkpoints

    def __post_init__(self) -> None:
        for name in ("inner_steps", "support_size", "query_size", "domains_per_step", "meta_steps", "eval_every"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("n_val_domains", "n_val_prompts", "checkpoint_every"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("patience", self.patience, minimum=0)
        if self.inner_grad_clip is not None:
            check_positive("inner_grad_clip", self.inner_grad_clip)
        for name in ("inner_lr", "meta_lr", "grad_clip"):
            check_positive(name, getattr(self, name))
        if not isinstance(self.second_order, bool):
            raise ValueError(f"second_order: expected True or False, got {self.second_order!r}")

    def train_config(self) -> TrainConfig:
        """The outer loop's settings as the training loop takes them (steps, Adam, validation, checkpoints)."""
        return TrainConfig(
            max_steps=self.meta_steps,
            lr=self.meta_lr,
            grad_clip=self.grad_clip,
            eval_every=self.eval_every,
            patience=self.patience,
            min_delta=self.min_delta,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )


def prompt_loss(model: nn.Module, params: Params, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``model`` with weights ``params`` on prompts xs (B, N, d), ys (B, N)."""
    return F.mse_loss(functional_call(model, params, (xs, ys)), ys)


def clip_factor(grads: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor | float:
    """min(1, max_norm / (||g|| + 1e-6)) over all gradients (as ``torch.nn.utils.clip_grad_norm_``); 1 if None."""
    if max_norm is None:
        return 1.0
    total = torch.sqrt(sum(grad.pow(2).sum() for grad in grads))
    return torch.clamp(max_norm / (total + 1e-6), max=1.0)


def inner_adapt(
    model: nn.Module,
    params: Params,
    xs: torch.Tensor,
    ys: torch.Tensor,
    *,
    steps: int,
    lr: float,
    create_graph: bool,
    grad_clip: float | None = None,
) -> Params:
    """``steps`` SGD steps on the support prompts xs (B, N, d), ys (B, N), functionally.

    Each step is theta <- theta - lr * c * g, with c = min(1, grad_clip / ||g||) (c = 1 when
    ``grad_clip`` is None). With ``create_graph`` the g (and c) keep their graph (second-order MAML);
    without it they are constants, so d theta'/d theta = I (FOMAML).
    """
    check_int("steps", steps, minimum=0)
    check_positive("lr", lr)
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    for _ in range(steps):
        loss = prompt_loss(model, params, xs, ys)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        step = lr * clip_factor(grads, grad_clip)
        params = {name: value - step * grad for (name, value), grad in zip(params.items(), grads, strict=True)}
    return params


def meta_loss(model: nn.Module, params: Params, support: Episode, query: Episode, config: MAMLConfig) -> torch.Tensor:
    """Outer loss of one meta-task: query MSE after the inner loop on ``support``."""
    adapted = inner_adapt(
        model,
        params,
        support.xs,
        support.ys,
        steps=config.inner_steps,
        lr=config.inner_lr,
        create_graph=config.second_order,
        grad_clip=config.inner_grad_clip,
    )
    return prompt_loss(model, adapted, query.xs, query.ys)


def meta_gradient(
    model: nn.Module, meta_tasks: Iterable[tuple[Episode, Episode]], config: MAMLConfig
) -> tuple[float, list[torch.Tensor]]:
    """Mean outer loss over (support, query) pairs and its gradient w.r.t. the model's parameters."""
    params = dict(model.named_parameters())
    pairs = list(meta_tasks)
    if not pairs:
        raise ValueError("meta_tasks: expected at least one (support, query) pair")
    total = sum(meta_loss(model, params, support, query, config) for support, query in pairs) / len(pairs)
    grads = torch.autograd.grad(total, list(params.values()))
    return total.item(), list(grads)


def fine_tune(
    model: nn.Module,
    adaptation: Episode,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    grad_clip: float | None = None,
) -> nn.Module:
    """A copy of ``model`` adapted by plain SGD on the adaptation prompts (K prompts, (K, N, d)).

    ``epochs`` passes over the prompts in shuffled mini-batches of ``batch_size`` (the order drawn
    with ``seed``; a single batch when K <= batch_size, so K = 64, batch 64, 5 epochs is exactly
    the MAML inner loop), each gradient clipped to global norm ``grad_clip`` (None: no clipping).
    The original model is left untouched.
    """
    check_int("epochs", epochs, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    check_positive("lr", lr)
    if grad_clip is not None:
        check_positive("grad_clip", grad_clip)
    adapted = copy.deepcopy(model)
    adapted.train()
    optimizer = torch.optim.SGD(adapted.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n_prompts = adaptation.batch_size
    for _ in range(epochs):
        order = torch.arange(n_prompts) if n_prompts <= batch_size else torch.randperm(n_prompts, generator=gen)
        for start in range(0, n_prompts, batch_size):
            batch = order[start : start + batch_size].to(adaptation.xs.device)
            xs, ys = adaptation.xs[batch], adaptation.ys[batch]
            loss = F.mse_loss(adapted(xs, ys), ys)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(adapted.parameters(), grad_clip)
            optimizer.step()
    return adapted


@torch.no_grad()
def relative_errors(model: nn.Module, test: Episode) -> torch.Tensor:
    """Squared error per prompt and position divided by the mean y^2 of ``test`` (1 = predicting 0). -> (B, N)"""
    was_training = model.training
    model.eval()
    errors = (model(test.xs, test.ys) - test.ys) ** 2
    model.train(was_training)
    return (errors / test.ys.pow(2).mean()).cpu()


def sample_meta_task(
    d: int, n_points: int, config: MAMLConfig, gen: torch.Generator, device: torch.device
) -> tuple[Episode, Episode]:
    """A fresh domain, its support prompts and its query prompts."""
    task = domain_task(RegressionDomain.sample(d, generator=gen), n_points)
    return (
        task.sample(config.support_size, generator=gen, device=device),
        task.sample(config.query_size, generator=gen, device=device),
    )


def validation_meta_tasks(
    d: int, n_points: int, config: MAMLConfig, device: torch.device
) -> list[tuple[Episode, Episode]]:
    """The fixed validation domains (support, query), drawn with ``config.val_seed``."""
    gen = torch.Generator().manual_seed(config.val_seed)
    pairs = []
    for _ in range(config.n_val_domains):
        task = domain_task(RegressionDomain.sample(d, generator=gen), n_points)
        pairs.append(
            (
                task.sample(config.support_size, generator=gen, device=device),
                task.sample(config.n_val_prompts, generator=gen, device=device),
            )
        )
    return pairs


def adapted_validation_error(model: nn.Module, pairs: list[tuple[Episode, Episode]], config: MAMLConfig) -> float:
    """Mean over domains of log(relative query error) after the inner loop (no meta-graph kept).

    The log keeps domains with a tiny scale s (where any error is large relative to y^2) from
    dominating the mean; exp of it is the geometric mean of the relative errors.
    """
    errors = []
    for support, query in pairs:
        adapted = fine_tune(
            model,
            support,
            epochs=config.inner_steps,
            lr=config.inner_lr,
            batch_size=config.support_size,
            seed=0,
            grad_clip=config.inner_grad_clip,
        )
        errors.append(math.log(max(relative_errors(adapted, query).mean().item(), LOG_FLOOR)))
    return sum(errors) / len(errors)


class MetaObjective:
    """MAML's outer loop as an objective of :func:`uni_icl.training.train` (one loop for every learner).

    A step draws ``domains_per_step`` fresh domains (support and query prompts of ``n_points``
    points in dimension ``d``) and leaves the meta-gradient (:func:`meta_gradient`) in the model's
    ``.grad``. Validation: the mean log relative query error after the inner loop on fixed
    validation domains (:func:`adapted_validation_error`); the score is minus it. Run it with
    :meth:`MAMLConfig.train_config`.
    """

    def __init__(self, d: int, n_points: int, config: MAMLConfig) -> None:
        check_int("d", d, minimum=1)
        check_int("n_points", n_points, minimum=1)
        self.d, self.n_points, self.config = d, n_points, config
        self._val_pairs: list[tuple[Episode, Episode]] | None = None

    def step_loss(self, model: nn.Module, step: int, gen: torch.Generator) -> torch.Tensor:
        device = next(model.parameters()).device
        pairs = [
            sample_meta_task(self.d, self.n_points, self.config, gen, device)
            for _ in range(self.config.domains_per_step)
        ]
        loss, grads = meta_gradient(model, pairs, self.config)
        for parameter, grad in zip(model.parameters(), grads, strict=True):
            parameter.grad = grad
        return torch.tensor(loss, dtype=torch.float64)

    def validate(self, model: nn.Module) -> tuple[float, float]:
        if self._val_pairs is None:
            device = next(model.parameters()).device
            self._val_pairs = validation_meta_tasks(self.d, self.n_points, self.config, device)
        error = adapted_validation_error(model, self._val_pairs, self.config)
        return -error, error


def meta_step_seconds(model: nn.Module, d: int, n_points: int, config: MAMLConfig, *, repeats: int = 3) -> float:
    """Wall seconds of one meta-gradient computation (after one warm-up), on a copy of ``model``."""
    check_int("repeats", repeats, minimum=1)
    probe = copy.deepcopy(model)
    device = next(probe.parameters()).device
    gen = torch.Generator().manual_seed(config.seed)
    pairs = [sample_meta_task(d, n_points, config, gen, device) for _ in range(config.domains_per_step)]
    meta_gradient(probe, pairs, config)
    started = time.perf_counter()
    for _ in range(repeats):
        meta_gradient(probe, pairs, config)
    return (time.perf_counter() - started) / repeats
