"""The grid views: the live explorer redraws from the grid (also in a running Jupyter kernel), the static
views draw all of it, learners keep the book's colours, bad input is refused."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import sys
from pathlib import Path

import ipywidgets
import matplotlib
import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest
from IPython.display import HTML
from nbclient import NotebookClient

from uni_icl.book.interactive import explore, slider, small_multiples

LEARNERS = ("ProtoNet", "MatchNet")
NOISE = (0.5, 1.0, 2.0)
SHOTS = 6


@pytest.fixture
def grid() -> pd.DataFrame:
    """accuracy = 0.5 + slope * shots, with a slope that differs for every (learner, noise) pair."""
    rows = []
    for (k, learner), (j, noise_std), shots in itertools.product(enumerate(LEARNERS), enumerate(NOISE), range(SHOTS)):
        slope = 0.05 / (1 + j) * (1 + 0.5 * k)
        rows.append(
            {
                "family": "prototype",
                "learner": learner,
                "noise_std": noise_std,
                "shots": shots,
                "accuracy": 0.5 + slope * shots,
                "ci": 0.01,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def drawn_lines(ax: plt.Axes) -> dict[str, np.ndarray]:
    return {line.get_label(): np.asarray(line.get_ydata(), dtype=float) for line in ax.lines}


def expected_lines(grid: pd.DataFrame, noise_std: float) -> dict[str, np.ndarray]:
    rows = grid[grid["noise_std"] == noise_std].sort_values("shots")
    return {name: rows[rows["learner"] == name]["accuracy"].to_numpy() for name in LEARNERS}


def test_explorer_redraws_from_the_grid_when_a_control_moves(grid):
    explorer = explore(grid, x="shots", y="accuracy", ci="ci", hue="learner", controls=["noise_std"])
    assert isinstance(explorer.widgets["noise_std"], ipywidgets.SelectionSlider)
    assert explorer.selection == {"noise_std": NOISE[0]}
    before = drawn_lines(explorer.axes[0])
    for name, values in expected_lines(grid, NOISE[0]).items():
        np.testing.assert_allclose(before[name], values)
    redraws = explorer.redraws

    explorer.widgets["noise_std"].value = NOISE[2]  # what a reader's drag does: the widget's observer fires

    assert explorer.redraws == redraws + 1
    after = drawn_lines(explorer.axes[0])
    assert set(after) == set(LEARNERS)
    for name, values in expected_lines(grid, NOISE[2]).items():
        np.testing.assert_allclose(after[name], values)
        assert not np.allclose(after[name], before[name])
    assert "noise_std = 2.0" in explorer.axes[0].get_title()
    assert len(explorer.current_data()) == len(LEARNERS) * SHOTS


def test_explorer_png_follows_the_controls(grid):
    explorer = explore(grid, x="shots", y="accuracy", ci="ci", hue="learner", controls=["noise_std"])
    first = explorer.png()
    assert first.startswith(b"\x89PNG")
    explorer.set(noise_std=NOISE[1])
    assert explorer.png() != first


def test_explorer_set_moves_the_controls_and_checks_values(grid):
    explorer = explore(grid, x="shots", y="accuracy", hue="noise_std", controls=["learner"])
    assert isinstance(explorer.widgets["learner"], ipywidgets.Dropdown)
    explorer.set(learner="ProtoNet")
    assert explorer.selection == {"learner": "ProtoNet"}
    assert set(drawn_lines(explorer.axes[0])) == {str(n) for n in NOISE}
    with pytest.raises(ValueError, match="column: unknown value 'noise'; allowed: learner"):
        explorer.set(noise=1.0)
    with pytest.raises(ValueError, match="learner: unknown value 'CNP'; allowed: MatchNet, ProtoNet"):
        explorer.set(learner="CNP")


def test_extra_panel_receives_every_selection(grid):
    seen = []

    def panel(ax, selection):
        seen.append(dict(selection))
        ax.plot([0, 1], [0, selection["noise_std"]])

    explorer = explore(
        grid,
        x="shots",
        y="accuracy",
        hue="learner",
        controls=["noise_std"],
        extra_panel=panel,
        where={"family": "prototype"},
    )
    explorer.set(noise_std=1.0)
    assert seen == [{"noise_std": 0.5}, {"noise_std": 1.0}]
    assert len(explorer.axes) == 2
    assert explorer.axes[1].lines[0].get_ydata()[1] == 1.0


def test_explorer_two_controls_and_no_hue(grid):
    explorer = explore(grid, x="shots", y="accuracy", controls=["learner", "noise_std"])
    explorer.set(learner="MatchNet", noise_std=2.0)
    (line,) = explorer.axes[0].lines
    np.testing.assert_allclose(line.get_ydata(), expected_lines(grid, 2.0)["MatchNet"])


@pytest.mark.parametrize(
    "view, arguments",
    [
        (explore, {"x": "shot", "y": "accuracy", "controls": ["noise_std"]}),
        (explore, {"x": "shots", "y": "accuracy", "controls": ["sigma"], "hue": "learner"}),
        (small_multiples, {"x": "shots", "y": "acc", "col": "noise_std", "hue": "learner"}),
        (slider, {"x": "shots", "y": "accuracy", "over": "noise", "hue": "learner"}),
    ],
)
def test_unknown_columns_are_refused_naming_the_allowed_ones(grid, view, arguments):
    with pytest.raises(ValueError, match="unknown value .*; allowed: family, learner, noise_std, shots, accuracy, ci"):
        view(grid, **arguments)


def test_other_bad_input_is_refused(grid):
    with pytest.raises(ValueError, match="columns that vary besides them: learner"):
        explore(grid, x="shots", y="accuracy", controls=["noise_std"])
    with pytest.raises(ValueError, match="already used as x"):
        explore(grid, x="shots", y="accuracy", hue="shots", controls=["noise_std"])
    with pytest.raises(ValueError, match="controls: give at least one column"):
        explore(grid, x="shots", y="accuracy", hue="learner", controls=[])
    with pytest.raises(ValueError, match=r"where\['family'\]: unknown value 'radius'; allowed: prototype"):
        slider(grid, x="shots", y="accuracy", over="noise_std", hue="learner", where={"family": "radius"})
    with pytest.raises(ValueError, match="y: column 'learner' must hold numbers"):
        small_multiples(grid, x="shots", y="learner", col="noise_std", hue="family")
    with pytest.raises(ValueError, match="frame: the grid has no rows"):
        small_multiples(grid.iloc[:0], x="shots", y="accuracy")
    with pytest.raises(ValueError, match="frame: expected a pandas DataFrame"):
        slider(grid.to_dict(), x="shots", y="accuracy", over="noise_std")


def test_small_multiples_draw_the_whole_grid(grid):
    facets = small_multiples(grid, x="shots", y="accuracy", ci="ci", hue="learner", col="noise_std")
    axes = list(facets.axes.flat)
    assert len(axes) == len(NOISE)
    for ax, noise_std in zip(axes, NOISE, strict=True):
        assert ax.get_title() == f"noise_std = {noise_std}"
        lines = drawn_lines(ax)
        for name, values in expected_lines(grid, noise_std).items():
            np.testing.assert_allclose(lines[name], values)
        assert len(ax.collections) == len(LEARNERS)  # one confidence band per line
    assert len({ax.get_ylim() for ax in axes}) == 1  # one y scale for every panel
    assert [t.get_text() for t in facets.legend.get_texts()] == list(LEARNERS)


def test_small_multiples_clip_bands_to_bounds_and_keep_a_categorical_order(grid):
    """Bands stop at what an accuracy can be, and panels follow a categorical column's categories (one
    family order on a page), not the alphabet."""
    grid = grid.assign(ci=0.5)  # bands far beyond [0, 1]
    facets = small_multiples(grid, x="shots", y="accuracy", ci="ci", hue="learner", col="noise_std", bounds=(0, 1))
    for ax in facets.axes.flat:
        for band in ax.collections:
            ys = np.concatenate([path.vertices[:, 1] for path in band.get_paths()])
            assert ys.min() >= 0.0 and ys.max() <= 1.0
        low, high = ax.get_ylim()
        assert low >= -0.06 and high <= 1.06
    order = [NOISE[-1], *NOISE[:-1]]
    ordered = grid.assign(noise_std=pd.Categorical(grid["noise_std"], categories=order))
    facets = small_multiples(ordered, x="shots", y="accuracy", hue="learner", col="noise_std", titles="{col_name}")
    assert [ax.get_title() for ax in facets.axes.flat] == [str(value) for value in order]


def test_slider_is_an_offline_jshtml_animation_with_one_frame_per_value(grid):
    open_figures = plt.get_fignums()
    view = slider(grid, x="shots", y="accuracy", ci="ci", hue="learner", over="noise_std")
    assert isinstance(view, HTML)
    assert re.search(r'<input[^>]*type="range"', view.data)
    frames = re.findall(r'frames\[(\d+)\] = "data:image/png;base64,([^"]+)"', view.data)
    assert [int(index) for index, _ in frames] == list(range(len(NOISE)))
    assert len({image for _, image in frames}) == len(NOISE)  # every frame shows something different
    assert not re.search(r"<script[^>]*\ssrc=", view.data)  # no script to fetch: the frames and the player are inline
    assert plt.get_fignums() == open_figures  # the animation's figure is closed, not shown twice


def test_explorer_in_a_running_kernel_redraws_when_a_control_moves(tmp_path):
    """The live explorer as a reader meets it: displayed in a Jupyter kernel, a control moved, and the
    figure the widget shows (the Output widget's image, as the front end receives it) follows."""
    build = """
import itertools, pandas as pd
from IPython.display import display
from uni_icl.book.interactive import explore
rows = [{"learner": learner, "noise_std": noise, "shots": shots,
         "accuracy": 0.5 + 0.05 * shots / noise * (1 + k), "ci": 0.01}
        for (k, learner), noise, shots in itertools.product(
            enumerate(["ProtoNet", "MatchNet"]), [0.5, 1.0, 2.0], range(6))]
explorer = explore(pd.DataFrame(rows), x="shots", y="accuracy", ci="ci",
                   hue="learner", controls=["noise_std"])
display(explorer)
"""
    move = """
import base64, hashlib, json
before = hashlib.sha256(explorer.png()).hexdigest()
explorer.set(noise_std=2.0)
print(json.dumps({"before": before, "after": hashlib.sha256(explorer.png()).hexdigest(),
                  "selection": explorer.selection, "redraws": explorer.redraws,
                  "output": explorer.output.model_id}))
"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(build), nbformat.v4.new_code_cell(move)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    environment = {"JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter")}
    previous = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        client = NotebookClient(
            notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute()
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    shown = notebook.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in shown), shown
    report = json.loads("".join(out["text"] for out in notebook.cells[1].outputs if out.get("name") == "stdout"))
    assert report["selection"] == {"noise_std": 2.0}
    assert report["redraws"] == 2 and report["before"] != report["after"]
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    outputs = state[report["output"]]["state"]["outputs"]
    images = [out["data"]["image/png"] for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) == 1, f"the explorer's Output widget should show one figure, got {outputs}"
    assert hashlib.sha256(base64.b64decode(images[0])).hexdigest() == report["after"]


def test_explorer_and_static_views_draw_learners_in_the_book_colours(grid):
    from uni_icl.book.palette import LEARNER_COLOURS

    explorer = explore(grid, x="shots", y="accuracy", hue="learner", controls=["noise_std"])
    facets = small_multiples(grid, x="shots", y="accuracy", hue="learner", col="noise_std")
    for ax in (explorer.axes[0], *facets.axes.flat):
        drawn = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in ax.lines}
        assert drawn == {name: LEARNER_COLOURS[name].lower() for name in LEARNERS}
