"""Plotting helpers shared by the chapters: accuracy curves with bands, decision regions, and the
layout rules that keep every figure readable in the book's text column.

Learners are drawn in the book's colours (:mod:`uni_icl.book.palette`) unless told otherwise.

Figures are at most :data:`FIGURE_WIDTH` inches wide with at most :data:`PANELS_PER_ROW` panels a
row (more panels wrap into rows): the page shrinks a wider figure to its text column, and its text
with it (``tests/test_rendering.py`` fails a figure shown below 0.43 of its width). Helpers keep
such figures tidy: :func:`shared_legend` puts one legend below the panels (:func:`legend_below`
moves a seaborn grid's there), :func:`label_once` names a shared axis once under a row,
:func:`wrap_panel_text` breaks titles and axis labels longer than their panel onto more lines
instead of letting them run into the next panel, and :func:`probability_colorbar` gives a grid of
decision-region panels one colour bar.

Anything that follows the learner contract (a module or a function ``(xs, ys) -> logits``) can be
drawn; nothing here trains or caches.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.contour import ContourSet

from uni_icl.book.palette import learner_colours
from uni_icl.evaluation import class_probabilities_on_grid

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The widest figure of the book, in inches: 1350 px at the book's 150 dpi, shown at half its width in
# a 676-px text column (a 1280-px browser window), where its 10-pt text reads at about 10 px.
FIGURE_WIDTH = 9.0
PANELS_PER_ROW = 3  # more panels than this in a row would each be too narrow to read: wrap into rows
PROBABILITY_LEVELS = np.linspace(0, 1, 11)  # the colour bands of P(y = 1) in decision-region panels
# width of an average character of the book's font (DejaVu Sans) in ems, a little generous
_CHARACTER_EM = 0.6


def curves_frame(
    rows: Iterable[dict], keys: Sequence[str] = ("learner", "train_family", "test_family")
) -> pd.DataFrame:
    """Long table of per-shot curves: one row per (row of ``rows``, shot count) with mean and CI."""
    records = []
    for row in rows:
        for shot, (value, ci) in enumerate(zip(row["per_position"], row["per_position_ci"], strict=True)):
            records.append({**{k: row[k] for k in keys if k in row}, "shots": shot, "value": value, "ci": ci})
    return pd.DataFrame.from_records(records)


def shared_legend(fig: plt.Figure, axes: Iterable[plt.Axes], *, ncols: int | None = None, **kwargs) -> None:
    """One legend for the whole figure, below its panels: every label drawn in any of ``axes``, once,
    in the order first drawn (a panel that lacks a learner no longer hides it from the legend), in as
    many columns as fit the figure's width (at most ``ncols``, default 4). The figure is laid out by
    matplotlib's constrained layout, which keeps the legend clear of the panels (do not call
    ``tight_layout`` after it)."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    if not isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine):
        fig.set_layout_engine("constrained")
    handles: dict[str, object] = {}
    for ax in np.atleast_1d(np.asarray(axes, dtype=object)).flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if not label.startswith("_"):
                handles.setdefault(label, handle)
    if not handles:
        return
    # as many columns as fit the figure's width (a wider legend would widen the saved image)
    for columns in range(min(ncols or 4, len(handles)), 0, -1):
        legend = fig.legend(
            handles.values(), handles.keys(), loc="outside lower center", ncols=columns, frameon=False, **kwargs
        )
        if columns == 1 or legend.get_window_extent().width <= 0.98 * fig.bbox.width:
            return
        legend.remove()


def legend_below(grid, *, ncols: int = 4, **kwargs) -> None:
    """Move the legend of a seaborn grid (``sns.relplot``, ``sns.FacetGrid``, :func:`small_multiples`
    of :mod:`uni_icl.book.interactive`) below its panels, in as many columns as fit the figure's width
    (at most ``ncols``). Make the grid with ``legend_out=False`` (``relplot``:
    ``facet_kws={"legend_out": False}``): a legend placed beside the panels has already widened the
    figure by its own width. ``kwargs`` go to :func:`seaborn.move_legend` (``title=None`` drops the title)."""
    import seaborn as sns

    count = len(grid.legend.get_texts())
    for columns in range(max(1, min(ncols, count)), 0, -1):
        sns.move_legend(grid, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=columns, frameon=False, **kwargs)
        if columns == 1 or grid.legend.get_window_extent().width <= 0.98 * grid.figure.bbox.width:
            return


def _visible(axes: Iterable[plt.Axes] | plt.Axes) -> list[plt.Axes]:
    return [ax for ax in np.atleast_1d(np.asarray(axes, dtype=object)).flat if ax is not None and ax.get_visible()]


def label_once(axes: Iterable[plt.Axes]) -> None:
    """A row of three or more panels (an odd number) that share one x-axis label shows it once, under
    its middle panel, instead of under each panel where the labels would run into each other. Rows
    of ``axes`` (any shape; hidden panels are left out) whose panels' labels differ keep them, and
    so does a row of two or four panels (:func:`wrap_panel_text` then fits each label to its panel)."""
    rows: dict[int, list[plt.Axes]] = {}
    for ax in _visible(axes):
        if ax.get_subplotspec() is not None:
            rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(ax)
    for row in rows.values():
        if len(row) < 3 or len(row) % 2 == 0 or len({ax.get_xlabel() for ax in row}) != 1:
            continue
        row.sort(key=lambda ax: ax.get_subplotspec().colspan.start)
        for index, ax in enumerate(row):
            if index != len(row) // 2:
                ax.set_xlabel("")


def _wrap(text: str, characters: int) -> str:
    if "$" in text:  # mathtext: a break inside a formula would not parse
        return text
    width = max(characters, 8)
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) or line for line in text.split("\n"))


def wrap_panel_text(fig: plt.Figure, axes: Iterable[plt.Axes] | None = None) -> None:
    """Break each panel's title and axis labels onto more lines where they are longer than the panel
    (from the figure's size and the panel's place in its grid), so that they do not run into the next
    panel or out of the figure; the same for the figure's title (``suptitle``, set it first). Formulas
    (text with ``$``) are left as they are. ``axes``: the panels of ``fig`` (default: all of them)."""
    width, height = fig.get_size_inches()
    panels = _visible(fig.axes if axes is None else axes)
    if fig._suptitle is not None and fig._suptitle.get_text():
        characters = int((width - 0.3) * 72 / (_CHARACTER_EM * fig._suptitle.get_fontsize()))
        fig._suptitle.set_text(_wrap(fig._suptitle.get_text(), characters))
    for ax in panels:
        spec = ax.get_subplotspec()
        if spec is None or hasattr(ax, "_colorbar"):  # a colour bar keeps its short label
            continue
        rows, columns = spec.get_gridspec().get_geometry()
        across = width * len(spec.colspan) / columns - 0.5  # less the tick labels beside the panel
        tall = height * len(spec.rowspan) / rows - 0.9  # less the title and tick labels
        # the one x label of its row (label_once) may spread under the whole row
        row = [
            other
            for other in panels
            if other is not ax and not hasattr(other, "_colorbar") and other.get_subplotspec() is not None
        ]
        row = [other for other in row if other.get_subplotspec().rowspan.start == spec.rowspan.start]
        alone = bool(row) and not any(other.get_xlabel() for other in row)
        for text, inches in (
            (ax.title, across),
            (ax.xaxis.label, width - 0.5 if alone else across),
            (ax.yaxis.label, tall),
        ):
            characters = int(inches * 72 / (_CHARACTER_EM * text.get_fontsize()))
            if text.get_text():
                text.set_text(_wrap(text.get_text(), characters))


def plot_curves(
    frame: pd.DataFrame,
    ax: plt.Axes,
    *,
    hue: str = "learner",
    ylabel: str = "accuracy",
    title: str = "",
    chance: float | None = None,
    palette: dict | None = None,
    linestyles: dict | None = None,
) -> plt.Axes:
    """Mean score against shot count with a shaded 95% CI band per ``hue`` value.

    Colours: ``palette`` (name -> colour) where it names the value, else the book's colour of
    that learner (:func:`uni_icl.book.palette.learner_colours`; a neutral colour for other names).
    """
    colours = {**learner_colours(frame[hue].unique()), **(palette or {})}
    for name, group in frame.groupby(hue, sort=False):
        group = group.sort_values("shots")
        style = (linestyles or {}).get(name, "-")
        ax.plot(group["shots"], group["value"], label=name, color=colours[name], linestyle=style, linewidth=1.6)
        ax.fill_between(
            group["shots"], group["value"] - group["ci"], group["value"] + group["ci"], color=colours[name], alpha=0.2
        )
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xlabel("shot count i (labelled points seen before the query)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def draw_support_set(
    ax: plt.Axes,
    support_xs: torch.Tensor,
    support_ys: torch.Tensor,
    *,
    extent: float,
    title: str = "",
    marker_size: float = 36,
    title_size: float = 10,
) -> None:
    """The labelled points (n, 2) as markers by label on a square view of half-width ``extent``."""
    points = support_xs.cpu().numpy()
    labels = support_ys.cpu().numpy()
    for label, marker, colour in ((0, "o", "#2b4c8c"), (1, "^", "#a11d21")):
        chosen = labels == label
        ax.scatter(
            points[chosen, 0],
            points[chosen, 1],
            marker=marker,
            c=colour,
            edgecolors="white",
            s=marker_size,
            label=f"y={label}",
        )
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title:
        ax.set_title(title, fontsize=title_size)


def plot_decision_regions(
    ax: plt.Axes,
    predictor: Predictor,
    support_xs: torch.Tensor,
    support_ys: torch.Tensor,
    *,
    title: str = "",
    extent: float = 3.0,
    resolution: int = 80,
    colorbar: bool = True,
) -> plt.Axes:
    """P(class 1) of ``predictor`` as a colour map, the 0.5 contour, and the support points coloured
    by label (:func:`class_probabilities_on_grid`, then :func:`draw_decision_regions`).

    ``colorbar=False`` leaves out the panel's own colour bar: a grid of panels then shares one,
    drawn by :func:`probability_colorbar` (every panel uses the same colours for the same P)."""
    grid_x, grid_y, probs = class_probabilities_on_grid(
        predictor, support_xs, support_ys, extent=extent, resolution=resolution
    )
    return draw_decision_regions(
        ax, grid_x, grid_y, probs, support_xs, support_ys, title=title, extent=extent, colorbar=colorbar
    )


def draw_decision_regions(
    ax: plt.Axes,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    probs: np.ndarray,
    support_xs: torch.Tensor,
    support_ys: torch.Tensor,
    *,
    title: str = "",
    extent: float = 3.0,
    colorbar: bool = True,
) -> plt.Axes:
    """Draw probabilities already computed: grid_x (R,), grid_y (R,), probs (R, R) as
    :func:`class_probabilities_on_grid` returns them (or a stored grid); arguments as
    :func:`plot_decision_regions`."""
    image = ax.contourf(grid_x, grid_y, probs, levels=PROBABILITY_LEVELS, cmap="coolwarm", alpha=0.75)
    ax.contour(grid_x, grid_y, probs, levels=[0.5], colors="black", linewidths=1.2)
    draw_support_set(ax, support_xs, support_ys, extent=extent, title=title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="P(y = 1)")
    return ax


def probability_colorbar(fig: plt.Figure, axes: Iterable[plt.Axes], **kwargs) -> None:
    """One colour bar of P(y = 1), beside all of ``axes``, for panels drawn by
    :func:`plot_decision_regions` with ``colorbar=False`` (they share its levels and colours).
    The figure should use constrained layout (``layout="constrained"``), which makes room for it."""
    panels = _visible(axes)
    filled = [c for ax in panels for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    if not filled:
        raise ValueError("axes: no panel drawn by plot_decision_regions (no filled contours)")
    options = {"label": "P(y = 1)", "shrink": 0.6, "aspect": 30, **kwargs}
    fig.colorbar(filled[0], ax=panels, **options)
