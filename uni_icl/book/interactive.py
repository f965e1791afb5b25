"""Interactive and static views of a precomputed grid of results.

A *grid* is a long-form :class:`pandas.DataFrame` with one row per combination of its axes, for
example the accuracy of each learner at each shot count under each input-noise level::

    family     noise_std  learner   shots  accuracy  ci
    prototype  0.5        ProtoNet  0      0.50      0.03
    prototype  0.5        ProtoNet  1      0.71      0.03
    ...

Nothing here trains or evaluates anything: every view reads the grid, so moving a control
redraws at once. Column names are arguments, so any grid fits. The roles a column can play:

- ``x``: the horizontal axis (e.g. ``"shots"``); ``y``: the value drawn (e.g. ``"accuracy"``);
- ``hue``: one line per value (e.g. ``"learner"``), optional;
- ``ci``: half-width of a confidence band around ``y`` (e.g. ``"ci"``), optional;
- the remaining axes are chosen by a control (:func:`explore`), laid out as panels or animated
  (:func:`small_multiples`, :func:`slider`), or fixed with ``where={"family": "prototype"}``.

Lines are drawn in the book's colours (:mod:`uni_icl.book.palette`): a learner keeps its colour
on every page. Every (x, hue, other axes) combination must appear at most once, otherwise a ValueError names
the columns left over. An unknown column is a ValueError naming the columns the grid has.

Two kinds of view, for the two places a chapter is read:

**Live notebook (Jupyter, Colab)**: :func:`explore` returns a :class:`GridExplorer`, an ipywidgets
panel with one dropdown or slider per control column and a matplotlib figure redrawn from the
grid whenever a control moves. An optional ``extra_panel(ax, selection)`` callback draws a second
panel from the current selection (``{column: value}``), e.g. decision regions of the selected
learner. Widgets need a running kernel: the chapters build an explorer only in a live kernel
(``if not context.static``, :class:`uni_icl.book.notebook.NotebookContext`), so the static book shows
no dead controls and loads no widget script; there the static views below stand in for it.
Its programmatic API (``explorer.set(noise_std=2.0)``, ``explorer.widgets``, ``explorer.figure``,
``explorer.axes``, ``explorer.selection``, ``explorer.current_data()``, ``explorer.png()``) is what
tests use.

**Rendered book**: :func:`small_multiples` draws the whole grid as seaborn small multiples
(panels by ``col`` and ``row``) and returns the :class:`seaborn.FacetGrid`; :func:`slider` returns
an :class:`IPython.display.HTML` animation over one column (``over``) made with
matplotlib's ``HTMLWriter`` (what ``FuncAnimation.to_jshtml`` writes): a real slider in the static
HTML page that works offline (every frame is an embedded image).

Example (in a notebook; ``frame`` holds the columns shown above)::

    import matplotlib.pyplot as plt
    from uni_icl.book.interactive import explore, slider, small_multiples

    explore(frame, x="shots", y="accuracy", ci="ci", hue="learner", controls=["noise_std"],
            where={"family": "prototype"})                                   # live only

    small_multiples(frame, x="shots", y="accuracy", ci="ci", hue="learner", col="noise_std",
                    where={"family": "prototype"})
    plt.show()

    slider(frame, x="shots", y="accuracy", ci="ci", hue="learner", over="noise_std",
           where={"family": "prototype"})                                    # last line of a cell
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.animation import HTMLWriter
from matplotlib.figure import Figure

from uni_icl.book.palette import learner_colours
from uni_icl.book.plotting import FIGURE_WIDTH, legend_below, wrap_panel_text
from uni_icl.validation import check_choice, check_int, check_positive

ExtraPanel = Callable[[plt.Axes, dict], None]


def _check_frame(frame: pd.DataFrame, where: dict | None, **roles: str | None) -> pd.DataFrame:
    """Validate column roles and the ``where`` filter; return the filtered frame (a copy)."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame: expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise ValueError("frame: the grid has no rows")
    columns = [str(c) for c in frame.columns]
    used: dict[str, str] = {}
    for role, column in roles.items():
        if column is None:
            continue
        check_choice(role, column, columns)
        if column in used:
            raise ValueError(
                f"{role}: column {column!r} is already used as {used[column]}; give each role its own column"
            )
        used[column] = role
    for role in ("y", "ci"):
        column = roles.get(role)
        if column is not None and not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"{role}: column {column!r} must hold numbers, got dtype {frame[column].dtype}")
    where = dict(where or {})
    for column, value in where.items():
        check_choice("where", column, columns)
        if column in used:
            raise ValueError(f"where: column {column!r} is already used as {used[column]}")
        present = list(pd.unique(frame[column]))
        check_choice(f"where[{column!r}]", value, present)
        frame = frame[frame[column] == value]
    return frame.copy()


def _check_unique(frame: pd.DataFrame, keys: Sequence[str], values: Sequence[str | None], how_to_fix: str) -> None:
    """Raise if a combination of ``keys`` occurs twice (the grid has an axis no role covers).

    ``values`` are the measured columns (y, ci), left out of the message."""
    if frame.duplicated(list(keys)).any():
        known = set(keys) | {v for v in values if v is not None}
        others = [str(c) for c in frame.columns if c not in known and frame[c].nunique() > 1]
        raise ValueError(
            f"frame: several rows share the same values of {', '.join(keys)}; columns that vary besides them: "
            f"{', '.join(others) or '(none: duplicate rows)'}. {how_to_fix}"
        )


def _ordered_values(series: pd.Series) -> list:
    """Distinct values: in the order of their categories for a categorical column (so a page can keep
    one order, e.g. the families of the task registry), else sorted when they can be (numbers,
    strings), else in order of appearance."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.dropna())
        return [value for value in series.cat.categories if value in present]
    values = [v.item() if isinstance(v, np.generic) else v for v in pd.unique(series)]
    try:
        return sorted(values)
    except TypeError:
        return values


def _palette(frame: pd.DataFrame, hue: str | None) -> dict:
    """One colour per hue value, the same in every panel and frame: a learner's colour in the book
    (:func:`uni_icl.book.palette.learner_colours`), a neutral colour for any other value."""
    if hue is None:
        return {}
    values = list(pd.unique(frame[hue]))
    colours = learner_colours(str(value) for value in values)
    return {value: colours[str(value)] for value in values}


def _band(data: pd.DataFrame, y: str, ci: str | None, bounds: tuple[float, float] | None):
    """(low, high) of the band y ± ci, clipped to ``bounds`` (what the quantity can be, e.g. an accuracy
    in [0, 1]) when given."""
    low, high = data[y] - (data[ci] if ci else 0), data[y] + (data[ci] if ci else 0)
    if bounds is not None:
        low, high = low.clip(*bounds), high.clip(*bounds)
    return low, high


def _y_limits(
    frame: pd.DataFrame, y: str, ci: str | None, bounds: tuple[float, float] | None = None
) -> tuple[float, float]:
    """Limits that fit every row of the grid (its bands clipped to ``bounds``), so panels and frames
    share one scale."""
    low, high = _band(frame, y, ci, bounds)
    bottom, top = float(np.nanmin(low)), float(np.nanmax(high))
    margin = 0.05 * (top - bottom) if top > bottom else 0.05 * max(abs(top), 1.0)
    return bottom - margin, top + margin


def draw_lines(
    ax: plt.Axes,
    data: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str | None = None,
    ci: str | None = None,
    palette: dict | None = None,
    bounds: tuple[float, float] | None = None,
) -> plt.Axes:
    """``y`` against ``x`` on ``ax``, one labelled line per ``hue`` value, a shaded band of +-``ci``
    (clipped to ``bounds``, what ``y`` can be, when given)."""
    groups = data.groupby(hue, sort=False) if hue is not None else [(None, data)]
    for name, group in groups:
        group = group.sort_values(x)
        colour = (palette or {}).get(name)
        label = str(name) if hue is not None else y
        (line,) = ax.plot(group[x], group[y], label=label, color=colour, linewidth=1.6, marker=".", markersize=4)
        if ci is not None:
            low, high = _band(group, y, ci, bounds)
            ax.fill_between(group[x], low, high, color=line.get_color(), alpha=0.2)
    return ax


def _label_axes(ax: plt.Axes, x: str, y: str, xlabel: str | None, ylabel: str | None, ylim: tuple) -> None:
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_ylim(*ylim)


class GridExplorer:
    """Controls over some columns of a grid and a figure redrawn from the grid when they move.

    Build it with :func:`explore`. Display it as the last expression of a notebook cell (or with
    ``IPython.display.display``). Attributes: ``widgets`` ({column: ipywidgets control}),
    ``figure`` (a matplotlib Figure), ``axes`` (its Axes: the grid panel, then the extra panel if
    any), ``output`` (the ipywidgets.Output showing the figure), ``redraws`` (how many times it drew).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        *,
        x: str,
        y: str,
        controls: Sequence[str],
        hue: str | None = None,
        ci: str | None = None,
        where: dict | None = None,
        extra_panel: ExtraPanel | None = None,
        title: str | None = None,
        xlabel: str | None = None,
        ylabel: str | None = None,
        figsize: tuple[float, float] | None = None,
    ) -> None:
        import ipywidgets

        if isinstance(controls, str) or not isinstance(controls, Iterable):
            raise ValueError(f"controls: expected a list of column names, got {controls!r}")
        controls = list(controls)
        if not controls:
            raise ValueError("controls: give at least one column to choose with a control")
        if extra_panel is not None and not callable(extra_panel):
            raise ValueError(f"extra_panel: expected a callable (ax, selection) -> None, got {extra_panel!r}")
        roles = {"x": x, "y": y, "hue": hue, "ci": ci} | {f"controls[{i}]": c for i, c in enumerate(controls)}
        self.frame = _check_frame(frame, where, **roles)
        _check_unique(
            self.frame,
            [*controls, *([hue] if hue else []), x],
            (y, ci),
            "Add those columns to controls or fix them with where={column: value}.",
        )
        self.x, self.y, self.hue, self.ci, self.controls = x, y, hue, ci, controls
        self.extra_panel, self.title, self.xlabel, self.ylabel = extra_panel, title, xlabel, ylabel
        self.palette = _palette(self.frame, hue)
        self.ylim = _y_limits(self.frame, y, ci)
        self.widgets: dict[str, ipywidgets.ValueWidget] = {}
        for column in controls:
            values = _ordered_values(self.frame[column])
            numeric = pd.api.types.is_numeric_dtype(self.frame[column])
            widget_type = ipywidgets.SelectionSlider if numeric and len(values) > 1 else ipywidgets.Dropdown
            self.widgets[column] = widget_type(options=values, value=values[0], description=column)
        width = FIGURE_WIDTH if extra_panel is not None else 6.5  # two panels: the book's widest
        self.figure = Figure(figsize=figsize or (width, 4.0), layout="constrained")
        self.axes = list(np.atleast_1d(self.figure.subplots(1, 2 if extra_panel is not None else 1)))
        self.output = ipywidgets.Output()
        self.redraws = 0
        self.redraw()
        for widget in self.widgets.values():
            widget.observe(self._on_change, names="value")
        self.widget = ipywidgets.VBox([ipywidgets.HBox(list(self.widgets.values())), self.output])

    @property
    def selection(self) -> dict:
        """The value of every control: {column: value}."""
        return {column: widget.value for column, widget in self.widgets.items()}

    def current_data(self) -> pd.DataFrame:
        """The rows of the grid that the current selection draws."""
        mask = np.ones(len(self.frame), dtype=bool)
        for column, value in self.selection.items():
            mask &= (self.frame[column] == value).to_numpy()
        return self.frame[mask]

    def set(self, **values) -> None:
        """Move controls by column name, e.g. ``set(noise_std=2.0)``; the figure redraws once per control."""
        for column, value in values.items():
            check_choice("column", column, self.controls)
            check_choice(column, value, self.widgets[column].options)
            self.widgets[column].value = value

    def _on_change(self, _change: dict) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw the selected slice of the grid (and the extra panel); refresh the live output."""
        selection = self.selection
        for ax in self.axes:
            ax.clear()
        main = self.axes[0]
        draw_lines(main, self.current_data(), x=self.x, y=self.y, hue=self.hue, ci=self.ci, palette=self.palette)
        _label_axes(main, self.x, self.y, self.xlabel, self.ylabel, self.ylim)
        chosen = ", ".join(f"{column} = {value}" for column, value in selection.items())
        main.set_title(f"{self.title}\n{chosen}" if self.title else chosen, fontsize=10)
        if self.hue is not None:
            main.legend(title=self.hue, fontsize=8)
        if self.extra_panel is not None:
            self.extra_panel(self.axes[1], selection)
        self.redraws += 1
        self._show()

    def png(self) -> bytes:
        """The figure as it is now, as PNG bytes."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()

    def _show(self) -> None:
        from IPython import get_ipython
        from IPython.display import Image, display

        if get_ipython() is None:  # outside a notebook (tests, scripts): nothing to display into
            return
        # A PNG rather than the Figure itself: it shows whatever matplotlib backend the kernel has.
        with self.output:
            self.output.clear_output(wait=True)
            display(Image(self.png()))

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)


def explore(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    controls: Sequence[str],
    hue: str | None = None,
    ci: str | None = None,
    where: dict | None = None,
    extra_panel: ExtraPanel | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> GridExplorer:
    """A live explorer of ``frame``: one control per column of ``controls``, a figure of ``y`` against ``x``.

    Args:
        frame: the grid, long form (one row per combination of its axes).
        x, y: columns of the horizontal axis and of the value drawn.
        controls: columns chosen with a control (a slider for numbers, a dropdown otherwise).
        hue: column drawn as one line per value (optional).
        ci: column with the half-width of a band around ``y`` (optional).
        where: {column: value} fixing the other axes of the grid (optional).
        extra_panel: ``f(ax, selection)`` drawing a second panel from the selection (optional).
        title, xlabel, ylabel, figsize: figure text and size (defaults: the column names).

    Returns a :class:`GridExplorer`; display it in a notebook. Raises ValueError on an unknown
    column, a column given two roles, or a grid with an axis no role covers.
    """
    return GridExplorer(
        frame,
        x=x,
        y=y,
        controls=controls,
        hue=hue,
        ci=ci,
        where=where,
        extra_panel=extra_panel,
        title=title,
        xlabel=xlabel,
        ylabel=ylabel,
        figsize=figsize,
    )


def small_multiples(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    hue: str | None = None,
    ci: str | None = None,
    col: str | None = None,
    row: str | None = None,
    where: dict | None = None,
    col_wrap: int | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    height: float = 3.0,
    aspect: float = 1.2,
    bounds: tuple[float, float] | None = None,
    titles: str | None = None,
) -> sns.FacetGrid:
    """The whole grid as panels: one per ``col`` (and ``row``) value, ``y`` against ``x``, lines by ``hue``.

    Every panel shares the y scale; the legend, below the panels, names the ``hue`` values. Each
    panel is ``height`` inches tall and ``aspect`` times as wide: keep at most three panels a row
    (``col_wrap``), about 9 inches in all, for the book's text column
    (:data:`uni_icl.book.plotting.FIGURE_WIDTH`). Call ``plt.show()`` after it in a notebook.
    ``bounds``: what ``y`` can be (e.g. (0, 1) for an accuracy): bands and the y scale stop there.
    ``titles``: each panel's title, a template with ``{row_name}`` and ``{col_name}`` (default:
    "row = value | col = value"). A categorical ``col`` or ``row`` keeps its categories'
    order. Returns the :class:`seaborn.FacetGrid`. Raises ValueError on an unknown column or a grid
    with an axis no role covers (fix it with ``where``).
    """
    if col_wrap is not None:
        check_int("col_wrap", col_wrap, minimum=1)
        if row is not None:
            raise ValueError("col_wrap: cannot be combined with row; give one of them")
    check_positive("height", height)
    check_positive("aspect", aspect)
    data = _check_frame(frame, where, x=x, y=y, hue=hue, ci=ci, col=col, row=row)
    axes_columns = [c for c in (row, col, hue) if c is not None]
    _check_unique(
        data, [*axes_columns, x], (y, ci), "Lay them out with col/row or fix them with where={column: value}."
    )
    palette = _palette(data, hue)
    ylim = _y_limits(data, y, ci, bounds)
    grid = sns.FacetGrid(
        data,
        row=row,
        col=col,
        col_wrap=col_wrap,
        row_order=_ordered_values(data[row]) if row else None,
        col_order=_ordered_values(data[col]) if col else None,
        height=height,
        aspect=aspect,
        sharex=True,
        sharey=True,
        despine=False,
        legend_out=False,  # the legend goes below the panels (legend_below), not beside them
    )
    for key, ax in grid.axes_dict.items() if (row or col) else [(None, grid.ax)]:
        keys = key if isinstance(key, tuple) else (key,)
        mask = np.ones(len(data), dtype=bool)
        for column, value in zip([c for c in (row, col) if c], keys, strict=False):
            mask &= (data[column] == value).to_numpy()
        draw_lines(ax, data[mask], x=x, y=y, hue=hue, ci=ci, palette=palette, bounds=bounds)
        _label_axes(ax, x, y, xlabel, ylabel, ylim)
    grid.set_titles(
        row_template=f"{row} = {{row_name}}", col_template=f"{col} = {{col_name}}", template=titles, size=10
    )
    wrap_panel_text(grid.figure)  # titles and labels longer than a panel: on more lines
    grid.tight_layout()
    if hue is not None:
        handles, labels = grid.axes.flat[0].get_legend_handles_labels()
        grid.add_legend(legend_data=dict(zip(labels, handles, strict=True)), title=hue)
        legend_below(grid, ncols=3)
    if title:
        grid.figure.suptitle(title, y=1.02)
    return grid


def slider(
    frame: pd.DataFrame,
    *,
    x: str,
    y: str,
    over: str,
    hue: str | None = None,
    ci: str | None = None,
    where: dict | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    figsize: tuple[float, float] = (6.5, 4.8),
    dpi: int = 100,
    interval_ms: int = 800,
    bounds: tuple[float, float] | None = None,
):
    """An animation of ``y`` against ``x`` with one frame per value of ``over`` and a slider to pick it.

    Made with matplotlib's ``HTMLWriter``, as ``FuncAnimation.to_jshtml`` does: the frames are embedded
    images and the slider is plain JavaScript, so it works in the static book, offline. Every frame
    shares the y scale; the legend lies below the axes, clear of the lines. Each frame is ``figsize``
    inches at ``dpi``: the default, 650 px wide, fits the book's text column unshrunk, its 10-pt text
    14 px tall (below about 65 dpi text is too small to read). ``bounds``: what ``y`` can be (bands
    and the y scale stop there). Returns an
    :class:`IPython.display.HTML` (display it, or make it the last line of a cell). Raises ValueError
    on an unknown column or a grid with an axis no role covers.
    """
    from IPython.display import HTML

    check_int("dpi", dpi, minimum=10)
    check_int("interval_ms", interval_ms, minimum=1)
    data = _check_frame(frame, where, x=x, y=y, over=over, hue=hue, ci=ci)
    _check_unique(data, [over, *([hue] if hue else []), x], (y, ci), "Fix them with where={column: value}.")
    values = _ordered_values(data[over])
    palette = _palette(data, hue)
    ylim = _y_limits(data, y, ci, bounds)
    figure, ax = plt.subplots(figsize=figsize, dpi=dpi, layout="constrained")

    def draw_frame(index: int) -> list:
        ax.clear()
        draw_lines(ax, data[data[over] == values[index]], x=x, y=y, hue=hue, ci=ci, palette=palette, bounds=bounds)
        _label_axes(ax, x, y, xlabel, ylabel, ylim)
        chosen = f"{over} = {values[index]}"
        ax.set_title(f"{title}\n{chosen}" if title else chosen, fontsize=10)
        if hue is not None:  # below the axes: a legend inside would hide lines
            ax.legend(title=hue, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, frameon=False)
        return []

    # what FuncAnimation.to_jshtml writes, but each frame drawn once (the animation also redraws the
    # canvas after every frame, for a screen: twice the time of the book's sliders); one draw first
    # lets the constrained layout settle, so that frames 0 and 1 share it
    writer = HTMLWriter(fps=1000 / interval_ms, embed_frames=True, default_mode="once")
    with TemporaryDirectory() as folder, plt.rc_context({"savefig.bbox": None}):
        path = Path(folder, "slider.html")
        with writer.saving(figure, str(path), dpi):
            for index in range(len(values)):
                draw_frame(index)
                if index == 0:
                    figure.canvas.draw()
                writer.grab_frame()
        html = path.read_text()
    plt.close(figure)
    return HTML(html)
