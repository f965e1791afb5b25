"""The noise-range wrapper: a family whose input noise is drawn per episode from a range.

It trains the remedy of the distribution-shift chapter (claim 3b): an ICL model whose pre-training
distribution covers the shifted test levels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from uni_icl.tasks.base import Episode, TaskFamily
from uni_icl.tasks.synthetic import SYNTHETIC_FAMILIES
from uni_icl.validation import check_choice, check_int, check_positive


@dataclass(frozen=True)
class NoiseRangeTask(TaskFamily):
    """Episodes of ``inner`` whose noise_std is drawn at random, uniformly from [noise_low, noise_high].

    Each call to ``sample`` cuts the batch into ``n_groups`` near-equal consecutive groups and
    draws one noise level per group (so every episode's noise_std is uniform on the range; the
    episodes of a group share it). ``n_groups`` >= batch size gives every episode its own level;
    the default 8 keeps sampling cheap (each group is one call to the inner family's sampler).
    ``noise_std`` is not used (the draws replace it); ``k`` is passed to inner families that have
    it. ``params`` holds the inner family's parameters plus ``noise_std`` (B,).
    """

    name: ClassVar[str] = "noise_range"
    binary_only: ClassVar[bool] = True
    inner: str = "mixture"
    noise_low: float = 1.0
    noise_high: float = 5.0
    k: int = 1
    n_groups: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("n_groups", self.n_groups, minimum=1)
        check_choice("inner", self.inner, tuple(SYNTHETIC_FAMILIES))
        check_positive("noise_low", self.noise_low)
        check_positive("noise_high", self.noise_high)
        if self.noise_high < self.noise_low:
            raise ValueError(f"noise_high: must be >= noise_low={self.noise_low}, got {self.noise_high}")
        self.inner_task(self.noise_low)

    def inner_task(self, noise_std: float) -> TaskFamily:
        """The inner family at one noise level."""
        params = {"d": self.d, "n_classes": self.n_classes, "n_points": self.n_points, "noise_std": noise_std}
        if self.inner in ("pairwise", "mixture"):
            params["k"] = self.k
        return SYNTHETIC_FAMILIES[self.inner](**params)

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        n_groups = min(self.n_groups, batch_size)
        levels = self.noise_low + (self.noise_high - self.noise_low) * torch.rand(n_groups, generator=gen)
        sizes = [len(chunk) for chunk in torch.arange(batch_size).chunk(n_groups)]
        base = self.inner_task(self.noise_low)
        parts = [
            replace(base, noise_std=sigma)._sample(size, gen)
            for sigma, size in zip(levels.tolist(), sizes, strict=True)
        ]
        params = {key: torch.cat([part.params[key] for part in parts]) for key in parts[0].params}
        params["noise_std"] = levels.repeat_interleave(torch.tensor(sizes))
        xs = torch.cat([part.xs for part in parts])
        return Episode(xs, torch.cat([part.ys for part in parts]), self.name, params)
