"""The base of every task family: episodes, seeded generators, sampling and validation.

Every family is a frozen dataclass whose fields are the family's parameters. Calling
``family.sample(batch_size, seed=...)`` (or ``generator=...``) draws ``batch_size`` independent
episodes and returns an :class:`Episode` with

- ``xs``: (B, N, D) float inputs,
- ``ys``: (B, N) class indices (``torch.long``) or regression targets (``torch.float``),
- ``params``: the per-episode parameters the labels were computed from (directions, centres,
  task vectors, radii, family index of a mixture, ...), so a test or a Bayes predictor can
  recompute the labels independently.

Definitions follow ``PAPER.md`` (this project's specification). Sampling always happens on the
CPU with an explicit ``torch.Generator`` (bit-identical episodes on every device) and the result
is moved to ``device``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch

from uni_icl.validation import check_int, check_positive


@dataclass(frozen=True)
class Episode:
    """A batch of episodes. ``xs`` (B, N, D), ``ys`` (B, N), ``params`` name -> tensor (B, ...)."""

    xs: torch.Tensor
    ys: torch.Tensor
    family: str
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Episode:
        return Episode(
            self.xs.to(device),
            self.ys.to(device),
            self.family,
            {name: value.to(device) for name, value in self.params.items()},
        )

    @property
    def batch_size(self) -> int:
        return self.xs.shape[0]

    @property
    def n_points(self) -> int:
        return self.xs.shape[1]


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> torch.Generator:
    """Return ``generator`` or a new CPU generator seeded with ``seed`` (exactly one is needed)."""
    if generator is not None:
        if seed is not None:
            raise ValueError("pass either seed or generator, not both")
        return generator
    if seed is None:
        raise ValueError("seed: an int is required when no generator is given")
    return torch.Generator().manual_seed(int(seed))


@dataclass(frozen=True)
class TaskFamily:
    """Base class: shared parameters and the sampling entry point."""

    name: ClassVar[str] = ""
    matching_learner: ClassVar[str | None] = None  # the meta-learner built for this family, if any
    is_regression: ClassVar[bool] = False
    binary_only: ClassVar[bool] = False

    d: int = 2
    n_classes: int = 2
    n_points: int = 50
    noise_std: float = 1.0

    def __post_init__(self) -> None:
        check_int("d", self.d, minimum=1)
        check_int("n_points", self.n_points, minimum=1)
        check_positive("noise_std", self.noise_std)
        if not self.is_regression:
            check_int("n_classes", self.n_classes, minimum=2)
            if self.binary_only and self.n_classes != 2:
                raise ValueError(
                    f"n_classes: the '{self.name}' family is defined for 2 classes only, "
                    f"got {self.n_classes}; allowed: 2"
                )

    @property
    def input_dim(self) -> int:
        """D, the last dimension of ``xs``."""
        return self.d

    def config(self) -> dict:
        """Name and parameters as plain JSON-able values (used in cache keys)."""
        return {"family": self.name, **asdict(self)}

    def sample(
        self,
        batch_size: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Episode:
        """Draw ``batch_size`` independent episodes (see the module docstring)."""
        check_int("batch_size", batch_size, minimum=1)
        episode = self._sample(batch_size, make_generator(seed, generator))
        return episode.to(device)

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        raise NotImplementedError

    def _normal(self, gen: torch.Generator, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)


def balanced_classes(batch_size: int, n_points: int, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Shuffled class assignments with counts differing by at most one. -> (B, N) long."""
    base = torch.arange(n_points) % n_classes
    order = torch.argsort(torch.rand(batch_size, n_points, generator=gen), dim=1)
    return base[order]


def chance_accuracy(task: TaskFamily) -> float:
    """Accuracy of a constant guess (reference line in plots)."""
    return math.nan if task.is_regression else 1.0 / task.n_classes
