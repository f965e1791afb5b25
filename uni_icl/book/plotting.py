"""Plotting helpers shared by the chapters: accuracy curves with bands, decision regions.

Learners are drawn in the book's colours (:mod:`uni_icl.book.palette`) unless told otherwise.

Anything that follows the learner contract (a module or a function ``(xs, ys) -> logits``) can be
drawn; nothing here trains or caches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from uni_icl.book.palette import learner_colours

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    in the order first drawn (a panel that lacks a learner no longer hides it from the legend). The
    figure is laid out by matplotlib's constrained layout, which keeps the legend clear of the panels
    (do not call ``tight_layout`` after it)."""
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
    columns = ncols or min(len(handles), 4)
    fig.legend(
        handles.values(), handles.keys(), loc="outside lower center", ncols=columns, frameon=False, **kwargs
    )


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
) -> plt.Axes:
    """P(class 1) as a colour map, the 0.5 contour, and the support points coloured by label."""
    grid_x, grid_y, probs = class_probabilities_on_grid(
        predictor, support_xs, support_ys, extent=extent, resolution=resolution
    )
    image = ax.contourf(grid_x, grid_y, probs, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.75)
    ax.contour(grid_x, grid_y, probs, levels=[0.5], colors="black", linewidths=1.2)
    draw_support_set(ax, support_xs, support_ys, extent=extent, title=title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="P(y = 1)")
    return ax
