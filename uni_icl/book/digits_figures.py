"""Chapter 7's figures: a digits episode's images and a learner's predictions on them (presentation
of :mod:`uni_icl.experiments.digits`)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from uni_icl.tasks.images import IMAGE_SIDE
from uni_icl.validation import check_int


def plot_example(example: dict, title: str = "") -> plt.Figure:
    """Support images with their episode labels (top row) and queries with each learner's
    prediction written under them (bottom row; green = correct, red = wrong)."""
    support, queries = example["support_xs"], example["query_xs"]
    names = list(example["predictions"])
    n_cols = max(len(support), len(queries))
    fig, axes = plt.subplots(
        2,
        n_cols,
        figsize=(min(1.05, 9.0 / n_cols) * n_cols, 2.9 + 0.2 * len(names)),  # at most 9 in wide
        squeeze=False,
        gridspec_kw={"hspace": 0.5},
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i, image in enumerate(support):
        label = int(example["support_ys"][i])
        axes[0, i].imshow(image.reshape(IMAGE_SIDE, IMAGE_SIDE).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[0, i].set_title(f"label {label}\n(digit {int(example['classes'][label])})", fontsize=8)
    for i, image in enumerate(queries):
        truth = int(example["query_ys"][i])
        axes[1, i].imshow(image.reshape(IMAGE_SIDE, IMAGE_SIDE).numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[1, i].set_title(f"query\ntrue label {truth}", fontsize=8)
        for k, name in enumerate(names):  # the learners' names once, left of the first query
            guess = int(example["predictions"][name][i])
            y = -0.08 - 0.17 * k
            if i == 0:
                axes[1, i].text(-0.15, y, name, transform=axes[1, i].transAxes, ha="right", va="top", fontsize=7)
            colour = "tab:green" if guess == truth else "tab:red"
            axes[1, i].text(
                0.5, y, str(guess), transform=axes[1, i].transAxes, ha="center", va="top", fontsize=7, color=colour
            )
    fig.subplots_adjust(left=0.14)  # room for the learners' names
    fig.suptitle(title or "support set (top) and queries with predicted labels (bottom)", fontsize=10)
    return fig


def plot_episode_rows(episode, n_images: int = 10, title: str = "") -> plt.Figure:
    """The first ``n_images`` images of each episode of a batch (one row per episode), each
    titled with its episode label and the digit behind it."""
    check_int("n_images", n_images, minimum=1, maximum=episode.n_points)
    rows = episode.batch_size
    width = min(1.05, 9.0 / n_images)  # at most 9 in wide: legible in the book's text column
    fig, axes = plt.subplots(rows, n_images, figsize=(width * n_images, 1.35 * rows + 0.4), squeeze=False)
    for b in range(rows):
        for i in range(n_images):
            label = int(episode.ys[b, i])
            ax = axes[b, i]
            ax.imshow(episode.xs[b, i].reshape(IMAGE_SIDE, IMAGE_SIDE).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"label {label}\n(digit {int(episode.params['classes'][b, label])})", fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
