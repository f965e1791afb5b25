"""Linear-regression families: Garg et al.'s in-context regression, its domains (M2-ICL), and the
mixture of domains that pre-trains the plain ICL baseline of the M2-ICL chapter.

Label normalisation (M2-ICL, issue 17): a domain's labels y = s w.x have mean square
s^2 (sigma^2 ||A||_F^2 + d b^2) over w ~ N(0, I) and z ~ N(0, sigma^2 I), which varies over orders
of magnitude between domains (s ~ N(0, 1) comes close to 0). Trained on raw labels with a squared
loss, a small in-context regressor fits the large-scale domains and barely regresses on the rest
(at the quick preset: relative error 0.90 without adaptation, against 0.21 for least squares).
With ``normalise_labels`` the labels are divided by that root mean square (computed from the
domain, never from the prompt's own labels), so every domain's labels have mean square 1 and keep
the sign of s. Least squares and the relative errors of the M2-ICL chapter do not change (both are
invariant to a domain's label scale); the learners see labels of one scale.
"""

from __future__ import annotations

import math
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


def label_rms(matrix: torch.Tensor, shift: torch.Tensor, noise_std: float, active: torch.Tensor) -> torch.Tensor:
    """sqrt(E|x|^2) of x = (z * mask) A + b, masked again (``active``: the (d,) 0/1 mask), z ~ N(0, noise_std^2 I):
    the root mean square of w.x over w ~ N(0, I). ``matrix`` (..., d, d), ``shift`` (...) -> (...)."""
    kept = active[:, None] * matrix * active[None, :]
    return torch.sqrt(noise_std**2 * kept.pow(2).sum((-2, -1)) + active.sum() * shift**2)


@dataclass(frozen=True)
class LinearRegressionTask(TaskFamily):
    """Garg et al. in-context linear regression: x ~ N(0, I), w ~ N(0, I), y = w.x.

    ``n_active_dims`` < d zeroes the trailing input dimensions (the meta-level curriculum).
    ``domain`` applies x = z A + b and y = s w.x (meta-level meta-learning); with
    ``normalise_labels`` y = sign(s) w.x / sqrt(E|x|^2), the same labels divided by their root mean
    square under the domain (module docstring). ``noise_std`` is the standard deviation of z (1 by
    default). ``n_classes`` is unused.
    """

    name: ClassVar[str] = "linear_regression"
    is_regression: ClassVar[bool] = True
    n_points: int = 41
    n_active_dims: int | None = None
    domain: RegressionDomain | None = None
    normalise_labels: bool = False  # with a domain: labels of mean square 1 (module docstring)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalise_labels and self.domain is None:
            raise ValueError("normalise_labels: only defined with a domain; allowed: False without one")
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
            if self.normalise_labels:
                matrix, shift = self.domain.matrix_tensor(), torch.tensor(self.domain.shift)
                scale = math.copysign(1.0, scale) / label_rms(matrix, shift, self.noise_std, mask).item()
        ys = scale * torch.einsum("bnd,bd->bn", xs, weights)
        return Episode(xs, ys, self.name, {"weights": weights})


@dataclass(frozen=True)
class DomainMixtureRegression(TaskFamily):
    """Linear regression whose every episode comes from its own fresh domain.

    Per episode: A (d, d) with N(0, 1) entries, b ~ N(0, 1), s ~ N(0, 1), w ~ N(0, I_d);
    z ~ N(0, noise_std^2 I_d), x = z A + b, y = s w.x (as :class:`RegressionDomain`); with
    ``normalise_labels`` (the default) y = sign(s) w.x / sqrt(E|x|^2), as :func:`domain_task`'s tasks.
    """

    name: ClassVar[str] = "regression_domains"
    is_regression: ClassVar[bool] = True
    n_points: int = 11
    normalise_labels: bool = True

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        B, N, d = batch_size, self.n_points, self.d
        matrix = self._normal(gen, B, d, d)
        shift_scale = self._normal(gen, B, 2)
        weights = self._normal(gen, B, d)
        zs = self.noise_std * self._normal(gen, B, N, d)
        xs = zs @ matrix + shift_scale[:, 0, None, None]  # (B, N, d)
        scale = shift_scale[:, 1]
        if self.normalise_labels:
            scale = torch.sign(scale) / label_rms(matrix, shift_scale[:, 0], self.noise_std, torch.ones(d))
        ys = scale[:, None] * torch.einsum("bnd,bd->bn", xs, weights)  # (B, N)
        params = {"matrix": matrix, "shift": shift_scale[:, 0], "scale": shift_scale[:, 1], "weights": weights}
        return Episode(xs, ys, self.name, params)


def domain_task(
    domain: RegressionDomain, n_points: int, noise_std: float = 1.0, *, normalise_labels: bool = True
) -> LinearRegressionTask:
    """The linear-regression family of one domain, as M2-ICL uses it (labels normalised by default, like
    :class:`DomainMixtureRegression`'s; ``make_task("linear_regression", domain=...)`` keeps raw labels)."""
    return LinearRegressionTask(
        d=len(domain.matrix), n_points=n_points, noise_std=noise_std, domain=domain, normalise_labels=normalise_labels
    )
