"""Evaluation: score per shot count with 95% confidence intervals over test episodes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from uni_icl.tasks import Episode, TaskFamily
from uni_icl.training import score_outputs
from uni_icl.validation import check_int

Z_95 = 1.959964
Predictor = nn.Module | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (xs, ys) -> outputs


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


EVAL_BATCH = 256  # test episodes are drawn and scored in chunks of this many (see test_episodes)


def test_episodes(task: TaskFamily, n_tasks: int, seed: int, device: torch.device | str = "cpu") -> Iterator[Episode]:
    """The test set: ``n_tasks`` episodes of ``task`` drawn with ``seed``, in chunks of ``EVAL_BATCH``.

    The one definition of a test set in the package: every learner, every Bayes reference and
    every agreement table that is compared on "the same episodes" draws them here (one generator,
    fixed chunks; a different chunk size would draw different episodes). The first k episodes of
    a test set are the test set of size k whenever k is a multiple of ``EVAL_BATCH`` (or equal).
    """
    check_int("n_tasks", n_tasks, minimum=1)
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n_tasks, EVAL_BATCH):
        yield task.sample(min(EVAL_BATCH, n_tasks - start), generator=gen, device=device)


def is_prefix_size(count: int, n_tasks: int) -> bool:
    """True if the first ``count`` episodes of a test set of ``n_tasks`` are its own test set."""
    return count == n_tasks or (0 < count < n_tasks and count % EVAL_BATCH == 0)


@torch.no_grad()
def episode_scores(predictor: Predictor, task: TaskFamily, n_tasks: int, seed: int) -> torch.Tensor:
    """Per-episode, per-position scores of any predictor under the learner contract. -> (n_tasks, N) on CPU

    ``predictor`` is a module (put in eval mode for the call, on the device of its parameters) or a
    plain function ``(xs, ys) -> outputs`` (run on the CPU).
    """
    module = predictor if isinstance(predictor, nn.Module) else None
    device = next(iter(module.parameters()), torch.empty(0)).device if module is not None else torch.device("cpu")
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    regression = getattr(predictor, "is_regression", False)
    chunks = []
    for episode in test_episodes(task, n_tasks, seed, device):
        chunks.append(score_outputs(predictor(episode.xs, episode.ys), episode.ys, regression).cpu())
    if module is not None:
        module.train(was_training)
    return torch.cat(chunks)


def evaluate(predictor: Predictor, task: TaskFamily, n_tasks: int = 1024, seed: int = 2_000_003) -> EvalResult:
    """Accuracy (or squared error) per shot count with 95% CIs on the test set of ``task``."""
    metric = "squared_error" if getattr(predictor, "is_regression", False) else "accuracy"
    return EvalResult.from_scores(episode_scores(predictor, task, n_tasks, seed), metric)


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


@torch.no_grad()
def class_probabilities_on_grid(
    predictor: Predictor,
    support_xs: torch.Tensor,
    support_ys: torch.Tensor,
    *,
    extent: float = 3.0,
    resolution: int = 80,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(class 1) of ``predictor`` at every point of a square grid, given a 2-d support set.

    support_xs (n, 2), support_ys (n,). Each grid point is the query after the n supports (one
    episode of n + 1 points per grid point). Returns (grid_x (R,), grid_y (R,), probs (R, R)).
    """
    if support_xs.ndim != 2 or support_xs.shape[1] != 2:
        raise ValueError(f"support_xs: expected shape (n, 2), got {tuple(support_xs.shape)}")
    module = predictor if isinstance(predictor, torch.nn.Module) else None
    device = next(iter(module.parameters()), torch.empty(0)).device if module is not None else support_xs.device
    axis = torch.linspace(-extent, extent, resolution)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    queries = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)  # (R*R, 2)
    n = support_xs.shape[0]
    xs = torch.cat([support_xs.expand(len(queries), n, 2).cpu(), queries[:, None, :]], dim=1).to(device)
    ys = torch.cat([support_ys.expand(len(queries), n).cpu(), torch.zeros(len(queries), 1, dtype=torch.long)], dim=1)
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    probs = []
    for start in range(0, len(queries), 2048):
        logits = predictor(xs[start : start + 2048], ys[start : start + 2048].to(device))
        probs.append(logits[:, -1].softmax(-1)[:, 1].cpu())
    if module is not None:
        module.train(was_training)
    return axis.numpy(), axis.numpy(), torch.cat(probs).reshape(resolution, resolution).numpy()
