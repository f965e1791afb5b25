"""Linear-regression families: Garg et al.'s in-context regression, its domains (M2-ICL), and the
mixture of domains that pre-trains the plain ICL baseline of the M2-ICL chapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from uni_icl.tasks.base import Episode, TaskFamily, make_generator
from uni_icl.validation import check_int


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


@dataclass(frozen=True)
class DomainMixtureRegression(TaskFamily):
    """Linear regression whose every episode comes from its own fresh domain.

    Per episode: A (d, d) with N(0, 1) entries, b ~ N(0, 1), s ~ N(0, 1), w ~ N(0, I_d);
    z ~ N(0, noise_std^2 I_d), x = z A + b, y = s w.x (as :class:`RegressionDomain`).
    """

    name: ClassVar[str] = "regression_domains"
    is_regression: ClassVar[bool] = True
    n_points: int = 11

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        B, N, d = batch_size, self.n_points, self.d
        matrix = self._normal(gen, B, d, d)
        shift_scale = self._normal(gen, B, 2)
        weights = self._normal(gen, B, d)
        zs = self.noise_std * self._normal(gen, B, N, d)
        xs = zs @ matrix + shift_scale[:, 0, None, None]  # (B, N, d)
        ys = shift_scale[:, 1, None] * torch.einsum("bnd,bd->bn", xs, weights)  # (B, N)
        params = {"matrix": matrix, "shift": shift_scale[:, 0], "scale": shift_scale[:, 1], "weights": weights}
        return Episode(xs, ys, self.name, params)


def domain_task(domain: RegressionDomain, n_points: int, noise_std: float = 1.0) -> LinearRegressionTask:
    """The linear-regression family of one domain."""
    return LinearRegressionTask(d=len(domain.matrix), n_points=n_points, noise_std=noise_std, domain=domain)
