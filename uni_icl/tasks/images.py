"""Few-shot episodes of real images: the handwritten digits that ship with scikit-learn.

``sklearn.datasets.load_digits`` holds 1,797 grey-level images of 8 x 8 pixels (values 0..16) of
the digits 0..9, about 180 per digit; nothing is downloaded. Pixels are divided by 16, so an
input is a vector in [0, 1]^64 (row-major 8 x 8 grid). The data are loaded on first use (the
first family constructed, which checks the split sizes) and memoised, never at import time.

Splits (fixed, part of the family's definition):

- ``train``: the images of the digits 0..4, except the validation images;
- ``validation``: a fixed 20% of the images of each digit 0..4 (held out with ``SPLIT_SEED``);
- ``test``: every image of the digits 5..9, never seen in training or validation.

An episode picks ``n_classes`` digits of its split, relabels them 0..C-1 in a random order (a
fresh relabelling per episode, so a label carries no meaning across episodes), and draws
``n_points`` distinct images balanced across the classes (counts differ by at most one), shuffled.
``max_shift`` > 0 shifts every image by a random whole number of pixels in [-max_shift, max_shift]
along each axis (zero fill), an augmentation for training episodes.

Two families: ``digits`` and ``digits_mixture`` (digit episodes mixed with the synthetic families
at d = 64).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from uni_icl.learners.modules import exclusive_cumsum
from uni_icl.tasks.base import Episode, TaskFamily, balanced_classes
from uni_icl.tasks.synthetic import AmortizedTask, PairwiseTask, PrototypeTask
from uni_icl.validation import check_choice, check_int

IMAGE_SIDE = 8
DIGITS_D = IMAGE_SIDE * IMAGE_SIDE  # 64 inputs per image
PIXEL_SCALE = 16.0  # raw pixels are 0..16; inputs are pixel / 16 in [0, 1]
SPLITS = ("train", "validation", "test")
TRAIN_DIGITS = (0, 1, 2, 3, 4)
TEST_DIGITS = (5, 6, 7, 8, 9)
VALIDATION_FRACTION = 0.2  # of each training digit's images, held out for validation
SPLIT_SEED = 7_919  # fixes which images are held out; changing it changes the family
MAX_SHIFT = 2  # largest allowed augmentation shift, in pixels


@functools.lru_cache(maxsize=1)
def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    """All images (1797, 64) float in [0, 1] and their digits (1797,) long; loaded once, memoised.

    The returned tensors are shared: treat them as read-only.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.data, dtype=torch.float32) / PIXEL_SCALE
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


def split_digits(split: str) -> tuple[int, ...]:
    """The digits (original classes) a split draws from."""
    check_choice("split", split, SPLITS)
    return TEST_DIGITS if split == "test" else TRAIN_DIGITS


@functools.cache
def _split_lists(split: str) -> tuple[tuple[int, ...], ...]:
    """Dataset indices of the split's images, one sorted tuple per digit of ``split_digits(split)``."""
    _, targets = digits_data()
    per_digit = []
    for digit in split_digits(split):
        indices = torch.nonzero(targets == digit)[:, 0]
        if split != "test":
            order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(SPLIT_SEED + digit))
            n_held_out = round(VALIDATION_FRACTION * len(indices))
            kept = order[:n_held_out] if split == "validation" else order[n_held_out:]
            indices = indices[kept.sort().values]
        per_digit.append(tuple(indices.tolist()))
    return tuple(per_digit)


def split_indices(split: str) -> dict[int, list[int]]:
    """Digit -> dataset indices of its images in ``split`` (train and validation are disjoint)."""
    return {digit: list(indices) for digit, indices in zip(split_digits(split), _split_lists(split), strict=True)}


def split_images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``split``: (M, 64) inputs in [0, 1] and (M,) original digits."""
    images, targets = digits_data()
    index = torch.tensor([i for indices in _split_lists(split) for i in indices])
    return images[index], targets[index]


@functools.cache
def _split_table(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded index table (K, M) of the split's K digits (pad 0) and each digit's count (K,)."""
    lists = _split_lists(split)
    counts = torch.tensor([len(indices) for indices in lists])
    table = torch.zeros(len(lists), int(counts.max()), dtype=torch.long)
    for row, indices in enumerate(lists):
        table[row, : len(indices)] = torch.tensor(indices)
    return table, counts


def shift_images(xs: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate 8 x 8 images by whole pixels with zero fill.

    xs (..., 64); shifts (..., 2) long (down, right): pixel (r, c) moves to (r + down, c + right).
    -> (..., 64)
    """
    flat = xs.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)  # (M, 8, 8)
    moves = shifts.reshape(-1, 2)
    grid = torch.arange(IMAGE_SIDE)
    rows = grid - moves[:, :1]  # (M, 8): source row of each target row
    cols = grid - moves[:, 1:]  # (M, 8)
    inside = ((rows >= 0) & (rows < IMAGE_SIDE))[:, :, None] & ((cols >= 0) & (cols < IMAGE_SIDE))[:, None, :]
    picked = flat[
        torch.arange(flat.shape[0])[:, None, None],
        rows.clamp(0, IMAGE_SIDE - 1)[:, :, None],
        cols.clamp(0, IMAGE_SIDE - 1)[:, None, :],
    ]  # (M, 8, 8)
    return (picked * inside).reshape(xs.shape)


@dataclass(frozen=True)
class DigitsTask(TaskFamily):
    """Few-shot episodes of 8 x 8 digit images (see the module docstring).

    ``d`` must be 64. ``noise_std`` is not used (the images carry their own variability) and must
    stay 1.0. ``params`` of an episode: ``classes`` (B, C) the original digit behind each episode
    label; ``permutation`` (B, K) a random order of the split's K digits whose first C give
    ``classes``; ``image_index`` (B, N) dataset index of every image; ``shift`` (B, N, 2) the
    augmentation shift (all zero when ``max_shift`` = 0).
    """

    name: ClassVar[str] = "digits"
    d: int = DIGITS_D
    n_classes: int = 5
    n_points: int = 50
    noise_std: float = 1.0
    split: str = "train"
    max_shift: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.d != DIGITS_D:
            raise ValueError(f"d: the digits family has 8 x 8 = 64 inputs, got {self.d}; allowed: 64")
        if self.noise_std != 1.0:
            raise ValueError(f"noise_std: not used by the digits family, got {self.noise_std}; allowed: 1.0")
        check_choice("split", self.split, SPLITS)
        check_int("n_classes", self.n_classes, minimum=2, maximum=len(split_digits(self.split)))
        check_int("max_shift", self.max_shift, minimum=0, maximum=MAX_SHIFT)
        smallest = int(_split_table(self.split)[1].min())
        per_class = -(-self.n_points // self.n_classes)
        if per_class > smallest:
            raise ValueError(
                f"n_points: {self.n_points} points over {self.n_classes} classes needs {per_class} distinct images "
                f"per digit, but the '{self.split}' split has only {smallest} for some digit; "
                f"allowed: 1 to {smallest * self.n_classes}"
            )

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        images, _ = digits_data()
        table, counts = _split_table(self.split)
        digits = torch.tensor(split_digits(self.split))
        B, N, C, M = batch_size, self.n_points, self.n_classes, table.shape[1]
        permutation = torch.argsort(torch.rand(B, len(digits), generator=gen), dim=1)  # (B, K)
        chosen = permutation[:, :C]  # (B, C): split row behind each episode label
        ys = balanced_classes(B, N, C, gen)  # (B, N)
        onehot = F.one_hot(ys, C)  # (B, N, C)
        rank = exclusive_cumsum(onehot).gather(2, ys[..., None])[..., 0]  # (B, N): earlier points with this label
        keys = torch.rand(B, C, M, generator=gen)
        keys = keys.masked_fill(torch.arange(M) >= counts[chosen][..., None], 2.0)  # padding sorts last
        order = keys.argsort(dim=-1)  # (B, C, M): a random order of each chosen digit's images
        position = order.gather(1, ys[..., None].expand(B, N, M)).gather(2, rank[..., None])[..., 0]  # (B, N)
        image_index = table[chosen.gather(1, ys), position]  # (B, N)
        xs = images[image_index]  # (B, N, 64)
        shifts = torch.zeros(B, N, 2, dtype=torch.long)
        if self.max_shift:
            shifts = torch.randint(-self.max_shift, self.max_shift + 1, (B, N, 2), generator=gen)
            xs = shift_images(xs, shifts)
        params = {"classes": digits[chosen], "permutation": permutation, "image_index": image_index, "shift": shifts}
        return Episode(xs, ys, self.name, params)


MIXTURE_CHOICES = ("digits", "pairwise", "prototype", "amortized")


@dataclass(frozen=True)
class DigitsMixtureTask(TaskFamily):
    """Each episode is one of ``components`` with equal probability, all at d = 64.

    ``digits`` is :class:`DigitsTask` (``split``, ``max_shift``); ``pairwise`` and ``prototype``
    are the synthetic families at d = 64 with ``n_classes`` classes and inputs of scale
    ``noise_std``; ``amortized`` is defined for two classes only, so its episodes use labels
    0 and 1 of the C outputs. ``params``: ``component`` (B,) index into ``components``, and each
    component's parameters prefixed by its name, filled with -1 (NaN for floats) in the
    episodes of other components.
    """

    name: ClassVar[str] = "digits_mixture"
    d: int = DIGITS_D
    n_classes: int = 5
    n_points: int = 50
    noise_std: float = 1.0
    split: str = "train"
    max_shift: int = 0
    components: tuple[str, ...] = MIXTURE_CHOICES

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.components, tuple) or not self.components:
            raise ValueError(f"components: a non-empty tuple of names; allowed names: {', '.join(MIXTURE_CHOICES)}")
        for component in self.components:
            check_choice("components", component, MIXTURE_CHOICES)
        if len(set(self.components)) != len(self.components):
            raise ValueError(f"components: each name at most once, got {self.components}")
        self.families()

    def families(self) -> list[TaskFamily]:
        """The component families, in the order of ``components``."""
        shared = {"n_points": self.n_points}
        synthetic = {"d": self.d, "noise_std": self.noise_std, **shared}
        build = {
            "digits": lambda: DigitsTask(
                d=self.d, n_classes=self.n_classes, split=self.split, max_shift=self.max_shift, **shared
            ),
            "pairwise": lambda: PairwiseTask(n_classes=self.n_classes, **synthetic),
            "prototype": lambda: PrototypeTask(n_classes=self.n_classes, **synthetic),
            "amortized": lambda: AmortizedTask(n_classes=2, **synthetic),
        }
        return [build[component]() for component in self.components]

    def _sample(self, batch_size: int, gen: torch.Generator) -> Episode:
        component = torch.randint(len(self.components), (batch_size,), generator=gen)
        xs = torch.zeros(batch_size, self.n_points, self.d)
        ys = torch.zeros(batch_size, self.n_points, dtype=torch.long)
        params = {"component": component}
        for index, family in enumerate(self.families()):
            chosen = component == index
            if not chosen.any():
                continue
            part = family._sample(int(chosen.sum()), gen)
            xs[chosen], ys[chosen] = part.xs, part.ys
            for key, value in part.params.items():
                fill = float("nan") if value.is_floating_point() else -1
                full = torch.full((batch_size, *value.shape[1:]), fill, dtype=value.dtype)
                full[chosen] = value
                params[f"{family.name}.{key}"] = full
        return Episode(xs, ys, self.name, params)
