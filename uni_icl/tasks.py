"""Task families: generators of few-shot episodes.

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
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import torch

from uni_icl.validation import check_choice, check_int, check_positive


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


def pairwise_labels(xs: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """argmax_c sum_k cos(x, w_{c,k}). xs (B, N, d), directions (B, C, K, d) -> (B, N)."""
    x_unit = xs / xs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w_unit = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cosines = torch.einsum("bnd,bckd->bnck", x_unit, w_unit)  # (B, N, C, K)
    return cosines.sum(-1).argmax(-1)


def nearest_centre_labels(xs: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre. xs (B, N, d), centres (B, C, d) -> (B, N)."""
    return torch.cdist(xs, centres).argmin(-1)


def amortized_labels(xs: torch.Tensor, task_vector: torch.Tensor) -> torch.Tensor:
    """0 if sum_k x_k > sum_k w_k else 1. xs (B, N, d), task_vector (B, d) -> (B, N)."""
    return (xs.sum(-1) <= task_vector.sum(-1, keepdim=True)).long()


def radius_labels(xs: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """0 if ||x|| > r else 1. xs (B, N, d), radius (B,) -> (B, N)."""
    return (xs.norm(dim=-1) <= radius[:, None]).long()


@dataclass(frozen=True)
class PairwiseTask(TaskFamily):
    """Labels by the summed cosine to K random directions per class; x ~ N(0, sigma^2 I)."""

    name: ClassVar[str] = "pairwise"
    k: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("k", self.k, minimum=1)

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        directions = self._normal(gen, batch_size, self.n_classes, self.k, self.d)
        xs = self.noise_std * self._normal(gen, batch_size, self.n_points, self.d)
        return Episode(xs, pairwise_labels(xs, directions), self.name, {"directions": directions})


def balanced_classes(batch_size: int, n_points: int, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Shuffled class assignments with counts differing by at most one. -> (B, N) long."""
    base = torch.arange(n_points) % n_classes
    order = torch.argsort(torch.rand(batch_size, n_points, generator=gen), dim=1)
    return base[order]


@dataclass(frozen=True)
class PrototypeTask(TaskFamily):
    """N/C points around each of C random centres; label = nearest centre (not the generator)."""

    name: ClassVar[str] = "prototype"

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        centres = self._normal(gen, batch_size, self.n_classes, self.d)
        source = balanced_classes(batch_size, self.n_points, self.n_classes, gen)
        means = torch.gather(centres, 1, source[..., None].expand(-1, -1, self.d))
        xs = means + self.noise_std * self._normal(gen, batch_size, self.n_points, self.d)
        labels = nearest_centre_labels(xs, centres)
        return Episode(xs, labels, self.name, {"centres": centres, "source_class": source})


@dataclass(frozen=True)
class AmortizedTask(TaskFamily):
    """x ~ N(w, sigma^2 I); label 0 if sum(x) > sum(w) else 1 (two classes only)."""

    name: ClassVar[str] = "amortized"
    binary_only: ClassVar[bool] = True

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        task_vector = self._normal(gen, batch_size, self.d)
        xs = task_vector[:, None, :] + self.noise_std * self._normal(gen, batch_size, self.n_points, self.d)
        return Episode(xs, amortized_labels(xs, task_vector), self.name, {"task_vector": task_vector})


RADIUS_SCALE = 0.849  # makes the classes balanced for d = 2 (PAPER.md)


@dataclass(frozen=True)
class RadiusTask(TaskFamily):
    """r ~ U(2, 4), x ~ N(0, (0.849 r sigma)^2 I); label 0 if ||x|| > r else 1 (two classes only).

    ``noise_std`` scales the inputs as in every other family (sigma = 1 is the paper's definition).
    """

    name: ClassVar[str] = "radius"
    binary_only: ClassVar[bool] = True

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        radius = 2.0 + 2.0 * torch.rand(batch_size, generator=gen)
        scale = (RADIUS_SCALE * radius * self.noise_std)[:, None, None]
        xs = scale * self._normal(gen, batch_size, self.n_points, self.d)
        return Episode(xs, radius_labels(xs, radius), self.name, {"radius": radius})


MIXTURE_COMPONENTS = ("pairwise", "prototype", "amortized")


@dataclass(frozen=True)
class MixtureTask(TaskFamily):
    """Each episode is one of pairwise / prototype / amortized with equal probability."""

    name: ClassVar[str] = "mixture"
    binary_only: ClassVar[bool] = True
    k: int = 1

    def components(self) -> list[TaskFamily]:
        shared = {"d": self.d, "n_classes": self.n_classes, "n_points": self.n_points, "noise_std": self.noise_std}
        return [PairwiseTask(k=self.k, **shared), PrototypeTask(**shared), AmortizedTask(**shared)]

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        component_index = torch.randint(len(MIXTURE_COMPONENTS), (batch_size,), generator=gen)
        parts = [component._sample(batch_size, gen) for component in self.components()]
        pick = component_index[:, None, None]
        xs = torch.where(pick == 0, parts[0].xs, torch.where(pick == 1, parts[1].xs, parts[2].xs))
        ys = torch.where(pick[..., 0] == 0, parts[0].ys, torch.where(pick[..., 0] == 1, parts[1].ys, parts[2].ys))
        params = {"component": component_index}
        for part in parts:
            params.update({f"{part.family}.{key}": value for key, value in part.params.items()})
        return Episode(xs, ys, self.name, params)


@dataclass(frozen=True)
class RegressionDomain:
    """A domain of linear-regression tasks: x = z A + b, y = scale * w.x (PAPER.md, M2-ICL)."""

    matrix: tuple[tuple[float, ...], ...]
    shift: float
    scale: float

    @staticmethod
    def sample(d: int, *, seed: int | None = None, generator: torch.Generator | None = None) -> RegressionDomain:
        """A fresh domain: A with N(0, 1) entries, b ~ N(0, 1), s ~ N(0, 1) (d x d, scalar, scalar)."""
        check_int("d", d, minimum=1)
        gen = make_generator(seed, generator)
        matrix = torch.randn(d, d, generator=gen)
        shift, scale = torch.randn(2, generator=gen).tolist()
        return RegressionDomain(tuple(tuple(row) for row in matrix.tolist()), shift, scale)

    def matrix_tensor(self) -> torch.Tensor:
        return torch.tensor(self.matrix, dtype=torch.float32)


@dataclass(frozen=True)
class LinearRegressionTask(TaskFamily):
    """Garg et al. in-context linear regression: x ~ N(0, I), w ~ N(0, I), y = w.x.

    ``n_active_dims`` < d zeroes the trailing input dimensions (the meta-level curriculum).
    ``domain`` applies x = z A + b and y = s w.x (meta-level meta-learning). ``noise_std`` is the
    standard deviation of z (1 by default). ``n_classes`` is unused.
    """

    name: ClassVar[str] = "linear_regression"
    is_regression: ClassVar[bool] = True
    n_points: int = 41
    n_active_dims: int | None = None
    domain: RegressionDomain | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_active_dims is not None:
            check_int("n_active_dims", self.n_active_dims, minimum=1, maximum=self.d)
        if self.domain is not None and len(self.domain.matrix) != self.d:
            raise ValueError(
                f"domain: its matrix must be {self.d} x {self.d} (d = {self.d}), got {len(self.domain.matrix)} rows"
            )

    @property
    def active_dims(self) -> int:
        return self.d if self.n_active_dims is None else self.n_active_dims

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        weights = self._normal(gen, batch_size, self.d)
        zs = self.noise_std * self._normal(gen, batch_size, self.n_points, self.d)
        mask = (torch.arange(self.d) < self.active_dims).float()
        zs = zs * mask
        if self.domain is None:
            xs, scale = zs, 1.0
        else:
            xs = zs @ self.domain.matrix_tensor() + self.domain.shift
            xs = xs * mask
            scale = self.domain.scale
        ys = scale * torch.einsum("bnd,bd->bn", xs, weights)
        return Episode(xs, ys, self.name, {"weights": weights})


TASK_FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls for cls in (PairwiseTask, PrototypeTask, AmortizedTask, RadiusTask, MixtureTask, LinearRegressionTask)
}


def register_task(cls: type[TaskFamily]) -> type[TaskFamily]:
    """Add a family to the registry (usable as a class decorator)."""
    TASK_FAMILIES[cls.name] = cls
    return cls


def make_task(name: str, **params) -> TaskFamily:
    """Resolve a family by name and validate its parameters.

    >>> make_task("pairwise", d=2, n_points=10).sample(4, seed=0).xs.shape
    torch.Size([4, 10, 2])
    """
    check_choice("task", name, sorted(TASK_FAMILIES))
    cls = TASK_FAMILIES[name]
    allowed = sorted(f.name for f in fields(cls))
    for key in params:
        check_choice(f"parameter of task '{name}'", key, allowed)
    return cls(**params)


def chance_accuracy(task: TaskFamily) -> float:
    """Accuracy of a constant guess (reference line in plots)."""
    return math.nan if task.is_regression else 1.0 / task.n_classes
