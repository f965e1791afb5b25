"""The book's palette and figures (no browser, fast): one colour per learner on every page, learners
shown together distinct for every reader (colour-vision deficiencies simulated), 150 dpi and the book's
colour cycle set by every notebook's setup, no notebook passing its own palette, one legend per
figure, and a scorecard figure that shows outcomes, not run times."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import matplotlib
import pytest

from uni_icl.book import palette

ROOT = Path(__file__).resolve().parents[1]

# Machado, Oliveira & Fernandes (2009), severity 1: linear-RGB matrices of protanopia and deuteranopia
CVD_MATRICES = {
    "normal vision": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413), (-0.011820, 0.042940, 0.968881)),
}
MIN_DELTA_E = 15  # CIE76 distance in CIELAB: clearly distinct lines


def _lab(colour: str, matrix) -> tuple[float, float, float]:
    """CIELAB (D65) of a colour as seen with ``matrix`` applied in linear RGB."""
    srgb = matplotlib.colors.to_rgb(colour)
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    seen = [min(max(sum(m * c for m, c in zip(row, linear, strict=True)), 0.0), 1.0) for row in matrix]
    xyz_rows = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
    white = (0.95047, 1.0, 1.08883)
    xyz = [sum(m * c for m, c in zip(row, seen, strict=True)) / w for row, w in zip(xyz_rows, white, strict=True)]
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def test_learners_shown_together_have_distinct_colours_for_colour_blind_readers() -> None:
    for group in palette.SHOWN_TOGETHER:
        colours = palette.learner_colours(group)
        assert len(set(colours.values())) == len(group), f"two learners share a colour in {group}"
        assert not {palette.ORANGE, palette.VERMILLION} <= {c.upper() for c in colours.values()}, group
        for vision, matrix in CVD_MATRICES.items():
            for (a, colour_a), (b, colour_b) in itertools.combinations(colours.items(), 2):
                distance = math.dist(_lab(colour_a, matrix), _lab(colour_b, matrix))
                assert distance >= MIN_DELTA_E, f"{a} and {b}: {distance:.0f} apart with {vision}"


def test_every_learner_of_the_registry_has_a_colour() -> None:
    from uni_icl.learners import LEARNERS

    missing = [
        learner.display_name for learner in LEARNERS.values() if palette.learner_colour(learner.display_name) is None
    ]
    assert not missing, f"learners without a book colour: {missing}"
    for name in ("Bayes", "Selector (prequential)", "Oracle selector", "NCM (pixels)", "NCM (PCA-7)"):
        assert palette.learner_colour(name), f"{name}: no book colour"


def test_learner_colours_falls_back_to_unused_neutral_colours() -> None:
    colours = palette.learner_colours(["ICL", "MatchNet", "trained teacher", "random weights", "ICL"])
    assert list(colours) == ["ICL", "MatchNet", "trained teacher", "random weights"]
    assert colours["ICL"] == palette.LEARNER_COLOURS["ICL"]
    others = [colours["trained teacher"], colours["random weights"]]
    assert len(set(colours.values())) == 4 and all(c in palette.NEUTRAL_CYCLE for c in others)
    assert palette.learner_colours(["ICL (untrained)"])["ICL (untrained)"] == palette.LEARNER_COLOURS["ICL"]
    many = palette.learner_colours([f"run {k}" for k in range(30)])  # more names than colours: it cycles
    assert len(many) == 30


def test_plot_curves_draws_learners_in_the_book_colours() -> None:
    import matplotlib.pyplot as plt
    import pandas as pd

    from uni_icl.book.plotting import plot_curves

    frame = pd.DataFrame(
        [{"learner": name, "shots": shot, "value": 0.5, "ci": 0.1} for name in ("CNP", "Bayes") for shot in range(3)]
    )
    fig, ax = plt.subplots()
    try:
        plot_curves(frame, ax)
        drawn = {line.get_label(): matplotlib.colors.to_hex(line.get_color()) for line in ax.get_lines()}
        plot_curves(frame, ax, palette={"CNP": "#123456"})  # a palette passed still wins
        overridden = matplotlib.colors.to_hex(ax.get_lines()[-2].get_color())
    finally:
        plt.close(fig)
    assert drawn == {"CNP": palette.LEARNER_COLOURS["CNP"].lower(), "Bayes": palette.LEARNER_COLOURS["Bayes"].lower()}
    assert overridden == "#123456"


def test_book_style_sets_the_figure_resolution() -> None:
    with matplotlib.rc_context():
        palette.use_book_style()
        assert matplotlib.rcParams["figure.dpi"] >= 150 and matplotlib.rcParams["savefig.dpi"] >= 150
        cycle = [c.upper() for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert palette.VERMILLION not in cycle


def test_every_notebook_gets_the_book_style_from_setup(monkeypatch) -> None:
    from uni_icl.book import notebook

    monkeypatch.setenv("UNI_ICL_PRESET", "smoke")
    with matplotlib.rc_context():
        matplotlib.rcParams["figure.dpi"] = 72
        notebook.setup()
        assert matplotlib.rcParams["figure.dpi"] == palette.BOOK_DPI
        cycle = [c.upper() for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert cycle == [c.upper() for c in palette.NEUTRAL_CYCLE]


# A notebook that picks its own palette gives a learner another colour than the other pages do.
OWN_PALETTE = re.compile(r"color_palette\(|palette\s*=\s*[\"'](?:colorblind|tab10|deep|muted|bright|pastel|dark)")


@pytest.mark.parametrize("notebook", sorted((ROOT / "book").glob("*.ipynb")), ids=lambda path: path.stem)
def test_no_notebook_picks_its_own_palette(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    offending = [
        line.strip()
        for cell in cells
        if cell["cell_type"] == "code"
        for line in "".join(cell["source"]).splitlines()
        if OWN_PALETTE.search(line)
    ]
    assert not offending, f"{notebook.name} picks its own palette (use learner_colours): {offending}"


def test_shared_legend_names_every_learner_of_every_panel_once() -> None:
    import matplotlib.pyplot as plt

    from uni_icl.book.plotting import shared_legend

    fig, axes = plt.subplots(1, 3)
    try:
        axes[0].plot([0, 1], label="ICL")
        axes[1].plot([0, 1], label="MatchNet")
        axes[2].plot([0, 1], label="ICL")
        axes[2].plot([0, 1], label="_hidden")
        shared_legend(fig, axes)
        (legend,) = fig.legends
        assert [text.get_text() for text in legend.get_texts()] == ["ICL", "MatchNet"]
        assert all(ax.get_legend() is None for ax in axes)
    finally:
        plt.close(fig)


def _card(decisive: bool):
    from uni_icl.scorecard import Scorecard
    from uni_icl.verdicts import ClaimVerdict

    verdicts = []
    for claim, outcome, converged in (("2-single", "reproduced", True), ("3a", "inconclusive", False)):
        numbers = (
            {"decisive": {"label": "ICL - selector", "effect": 0.03, "ci": 0.01, "margin": 0.01}} if decisive else {}
        )
        verdicts.append(
            ClaimVerdict(
                claim=claim,
                preset="smoke",
                quantity="q",
                numbers=numbers,
                rule="r",
                outcome=outcome,
                chapter="book/02_learnability",
                wall_seconds=0.0,
                rests_on=[
                    {
                        "learner": "icl",
                        "train_family": "mixture",
                        "runs": [{"seed": 0, "steps": 10, "converged": converged}],
                    }
                ],
            )
        )
    return Scorecard("smoke", verdicts, 0.0)


def test_scorecard_figure_shows_outcomes_and_convergence_not_run_times() -> None:
    import matplotlib.pyplot as plt

    from uni_icl.book.scorecard_page import OUTCOME_COLOURS, plot_scorecard

    fig = plot_scorecard(_card(decisive=False))
    try:
        texts = [text.get_text() for ax in fig.axes for text in ax.texts]
        assert not any(re.search(r"\(\d+ s\)", text) for text in texts), texts
        assert "reproduced" in texts and "inconclusive" in texts
        assert "1 of 1 runs converged" in texts and "0 of 1 runs converged" in texts
        badges = {
            text.get_text(): text.get_bbox_patch() for ax in fig.axes for text in ax.texts if text.get_bbox_patch()
        }
        assert matplotlib.colors.to_hex(badges["inconclusive"].get_facecolor()) == OUTCOME_COLOURS["inconclusive"]
    finally:
        plt.close(fig)


def test_scorecard_figure_is_a_forest_plot_when_every_verdict_states_its_decisive_effect() -> None:
    import matplotlib.pyplot as plt

    from uni_icl.book.scorecard_page import plot_scorecard

    fig = plot_scorecard(_card(decisive=True))
    try:
        (ax,) = fig.axes
        assert [tick.get_text() for tick in ax.get_yticklabels()][0].startswith("2-single")
        assert len(ax.containers) == 2  # one effect with its interval per claim
        xs = sorted(line.get_xdata()[0] for line in ax.lines if len(set(line.get_xdata())) == 1)
        assert -1 in xs and 1 in xs  # the margin, on the effects' scale
    finally:
        plt.close(fig)
