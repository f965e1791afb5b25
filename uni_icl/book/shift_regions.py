"""Chapter 4's decision regions under noise: the explorer of a learner's P(class 1) as the test noise
grows, and the static figure the page shows (presentation of :mod:`uni_icl.experiments.shift`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from uni_icl.book.interactive import explore
from uni_icl.book.plotting import class_probabilities_on_grid, draw_support_set
from uni_icl.book.shift_page import curves_frame
from uni_icl.experiments.shift import BAYES, LEARNER_ORDER, ShiftResults, support_set
from uni_icl.tasks import SINGLE_FAMILIES
from uni_icl.validation import check_choice, check_int


def region_extent(support_xs: torch.Tensor) -> float:
    """Half-width of a square view that holds the support points with a margin."""
    return 1.15 * max(float(support_xs.abs().max()), 1.0)


def draw_regions(
    ax: plt.Axes,
    predictor: nn.Module | Callable,
    support_xs: torch.Tensor,
    support_ys: torch.Tensor,
    *,
    extent: float,
    resolution: int = 40,
    title: str = "",
) -> plt.Axes:
    """P(y = 1) on a grid as a colour map, the 0.5 contour, and the support points (no colour bar,
    so a live panel can be redrawn in place). support_xs (n, 2), support_ys (n,)."""
    grid_x, grid_y, probs = class_probabilities_on_grid(
        predictor, support_xs, support_ys, extent=extent, resolution=resolution
    )
    ax.contourf(grid_x, grid_y, probs, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.75, vmin=0, vmax=1)
    if probs.min() < 0.5 < probs.max():
        ax.contour(grid_x, grid_y, probs, levels=[0.5], colors="black", linewidths=1.2)
    draw_support_set(ax, support_xs, support_ys, extent=extent, title=title, marker_size=30, title_size=9)
    return ax


class ShiftExplorer:
    """The live explorer of the shift grid: accuracy curves and decision regions.

    Controls: ``family`` and ``noise_std`` (the grid's, from :func:`uni_icl.book.interactive.explore`),
    plus ``learner`` and ``shots`` that only the decision-region panel uses (the region of the
    selected learner given the first ``shots`` points of one sampled episode at that family and
    noise level; a dashed line marks the shot count on the curves). Regions are computed once
    per redraw. ``set(family=..., noise_std=..., learner=..., shots=...)`` moves
    controls programmatically (tests); ``figure`` and ``axes`` are the explorer's.
    """

    def __init__(self, results: ShiftResults, *, resolution: int = 40, support_seed: int = 0) -> None:
        import ipywidgets

        check_int("resolution", resolution, minimum=4)
        self.results, self.resolution, self.support_seed = results, resolution, support_seed
        self.frame = ordered_curves(results.rows)
        n_points = int(self.frame["shots"].max()) + 1
        learners = [name for name in LEARNER_ORDER if name in results.models]
        self.learner = ipywidgets.Dropdown(options=learners, value=learners[0], description="learner")
        self.shots = ipywidgets.IntSlider(value=min(10, n_points - 1), min=1, max=n_points - 1, description="shots")
        self.grid = explore(
            self.frame,
            x="shots",
            y="accuracy",
            ci="ci",
            hue="learner",
            controls=["family", "noise_std"],
            extra_panel=self._draw_panel,
            title=f"Accuracy per shot count ({results.preset} preset; models trained at noise_std = 1)",
            xlabel="shot count i",
            ylabel="accuracy",
            figsize=(12.0, 4.5),
        )
        for widget in (self.learner, self.shots):
            widget.observe(lambda _change: self.grid.redraw(), names="value")
        self.widget = ipywidgets.VBox([ipywidgets.HBox([self.learner, self.shots]), self.grid.widget])

    @property
    def figure(self):
        return self.grid.figure

    @property
    def axes(self) -> list:
        return self.grid.axes

    @property
    def selection(self) -> dict:
        return {**self.grid.selection, "learner": self.learner.value, "shots": self.shots.value}

    def set(self, **values) -> None:
        """Move any of family, noise_std, learner, shots."""
        for column in values:
            check_choice("control", column, ["family", "noise_std", "learner", "shots"])
        if "learner" in values:
            check_choice("learner", values["learner"], self.learner.options)
            self.learner.value = values["learner"]
        if "shots" in values:
            check_int("shots", values["shots"], minimum=self.shots.min, maximum=self.shots.max)
            self.shots.value = values["shots"]
        self.grid.set(**{k: v for k, v in values.items() if k in ("family", "noise_std")})

    def _draw_panel(self, ax: plt.Axes, selection: dict) -> None:
        family, noise_std = selection["family"], selection["noise_std"]
        learner, shots = self.learner.value, self.shots.value
        support_xs, support_ys = support_set(self.results.scale, family, noise_std, shots, seed=self.support_seed)
        module = self.results.learner(learner, family, noise_std)
        draw_regions(
            ax,
            module,
            support_xs,
            support_ys,
            extent=region_extent(support_xs),
            resolution=self.resolution,
            title=f"{learner}: P(y = 1) after {shots} shots",
        )
        ax.figure.axes[0].axvline(shots, color="grey", linestyle="--", linewidth=1)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)


def ordered_curves(rows: list[dict]) -> pd.DataFrame:
    """The chapter's long table of curves (:func:`uni_icl.book.shift_page.curves_frame`) with its
    families in the task registry's order (``SINGLE_FAMILIES``), so every figure, slider and explorer
    of the page shows them in one order."""
    frame = curves_frame(rows)
    frame["family"] = pd.Categorical(frame["family"], categories=SINGLE_FAMILIES)
    return frame


def region_figure(
    results: ShiftResults,
    family: str,
    noise_levels: Iterable[float],
    *,
    n_shots: int,
    learners: Iterable[str] | None = None,
    resolution: int = 40,
    seed: int = 0,
) -> plt.Figure:
    """Decision regions: one row per learner, the Bayes predictor of each noise level last, one column per
    noise level, the same sampled episode in every row of a column."""
    noise_levels = list(noise_levels)
    learners = [name for name in (learners or LEARNER_ORDER) if name in results.models or name == BAYES]
    figure, axes = plt.subplots(  # constrained: the title above the column titles, not over them
        len(learners),
        len(noise_levels),
        figsize=(2.6 * len(noise_levels), 2.5 * len(learners)),
        squeeze=False,
        layout="constrained",
    )
    for column, sigma in enumerate(noise_levels):
        support_xs, support_ys = support_set(results.scale, family, sigma, n_shots, seed=seed)
        extent = region_extent(support_xs)
        for row, name in enumerate(learners):
            ax = axes[row][column]
            draw_regions(
                ax, results.learner(name, family, sigma), support_xs, support_ys, extent=extent, resolution=resolution
            )
            ax.set_title(f"noise_std = {sigma}" if row == 0 else "", fontsize=10)
            ax.set_ylabel(f"{name}\n$x_2$" if column == 0 else "", fontsize=9)
            if row < len(learners) - 1:  # one x label per column, under its last panel
                ax.set_xlabel("")
    figure.suptitle(f"{family}: P(y = 1) after {n_shots} shots\n(red = 1, blue = 0; black: the 0.5 boundary)")
    return figure
