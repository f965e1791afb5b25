"""Evaluation: score per shot count with 95% confidence intervals over test episodes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from uni_icl.tasks import TaskFamily
from uni_icl.training import episode_score
from uni_icl.validation import check_int

Z_95 = 1.959964


@dataclass(frozen=True)
class EvalResult:
    """Score of one learner on one task family.

    ``per_position[i]`` is the mean over test episodes of the score at shot count i (accuracy,
    or squared error for regression) and ``per_position_ci[i]`` the half-width of its 95%
    normal-approximation interval. ``mean`` is the mean over shot counts (per episode first, so
    its interval ``mean_ci`` is over episodes). ``per_episode_mean`` keeps each episode's mean
    for paired comparisons (same seed means same episodes for every learner).
    """

    metric: str
    per_position: list[float]
    per_position_ci: list[float]
    mean: float
    mean_ci: float
    n_tasks: int
    per_episode_mean: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """The fields a result-table row carries: mean, ci, per_position(_ci), per_episode_mean."""
        return {
            "mean": self.mean,
            "ci": self.mean_ci,
            "per_position": self.per_position,
            "per_position_ci": self.per_position_ci,
            "per_episode_mean": self.per_episode_mean,
        }

    @staticmethod
    def from_scores(scores: torch.Tensor, metric: str) -> EvalResult:
        """scores: (n_tasks, N) per-episode, per-position scores."""
        n_tasks = scores.shape[0]
        scores = scores.double()
        spread = scores.std(0, unbiased=True) if n_tasks > 1 else torch.zeros(scores.shape[1])
        episode_means = scores.mean(1)
        mean_spread = episode_means.std(unbiased=True).item() if n_tasks > 1 else 0.0
        return EvalResult(
            metric=metric,
            per_position=scores.mean(0).tolist(),
            per_position_ci=(Z_95 * spread / math.sqrt(n_tasks)).tolist(),
            mean=episode_means.mean().item(),
            mean_ci=Z_95 * mean_spread / math.sqrt(n_tasks),
            n_tasks=n_tasks,
            per_episode_mean=episode_means.tolist(),
        )


@torch.no_grad()
def episode_scores(
    learner: nn.Module, task: TaskFamily, n_tasks: int, seed: int, batch_size: int = 256
) -> torch.Tensor:
    """Per-episode, per-position scores on ``n_tasks`` episodes drawn with ``seed``. -> (n_tasks, N) on CPU"""
    check_int("n_tasks", n_tasks, minimum=1)
    device = next(iter(learner.parameters()), torch.empty(0)).device
    was_training = learner.training
    learner.eval()
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, n_tasks, batch_size):
        episode = task.sample(min(batch_size, n_tasks - start), generator=gen, device=device)
        chunks.append(episode_score(learner, episode).cpu())
    learner.train(was_training)
    return torch.cat(chunks)


def evaluate(
    learner: nn.Module, task: TaskFamily, n_tasks: int = 1024, seed: int = 2_000_003, batch_size: int = 256
) -> EvalResult:
    """Accuracy (or squared error) per shot count with 95% CIs on fresh episodes of ``task``."""
    metric = "squared_error" if getattr(learner, "is_regression", False) else "accuracy"
    return EvalResult.from_scores(episode_scores(learner, task, n_tasks, seed, batch_size), metric)


class Difference(NamedTuple):
    """Mean of a paired difference (a - b over the same test episodes) and its 95% CI half-width."""

    mean: float
    ci: float

    @property
    def lower(self) -> float:
        return self.mean - self.ci

    @property
    def upper(self) -> float:
        return self.mean + self.ci


def paired_difference(a: Iterable[float], b: Iterable[float]) -> Difference:
    """a - b paired by test episode (e.g. two learners' ``per_episode_mean`` on the same episodes), with a 95% CI."""
    first = torch.tensor(list(a), dtype=torch.float64)
    second = torch.tensor(list(b), dtype=torch.float64)
    if first.shape != second.shape or first.numel() == 0:
        raise ValueError(
            f"a, b: expected two equally long non-empty sequences, got {first.numel()} and {second.numel()}"
        )
    diff = first - second
    spread = diff.std(unbiased=True).item() if diff.numel() > 1 else 0.0
    return Difference(diff.mean().item(), Z_95 * spread / math.sqrt(diff.numel()))
