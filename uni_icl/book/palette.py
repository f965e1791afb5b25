"""One colour per learner for the whole book, and the book's figure style.

Every figure that shows a learner draws it in the same colour, on every page: the in-context
learners in blues, the meta-learners each in their own hue, Bayes (the best possible predictor)
in black, the rules that learn nothing across episodes in earthy tones. The colours come from the
Okabe-Ito palette, made to stay distinct under the common colour-vision deficiencies, with a few
of Paul Tol's "muted" colours and one brown where more are needed. No learner is vermillion, so
no figure pairs it with an orange one (a pair red-green colour-blind readers cannot tell apart).
A colour is shared only by learners that never meet in one figure: Bayes and least squares are
both black (each is the reference of its kind of task), the k-NN votes of regression and of
classification both teal. :data:`SHOWN_TOGETHER` lists the learners that share a figure; the
tests check that each set has distinct colours, far apart for normal, protanope and deuteranope
vision (simulated).

The keys are the display names the experiments put in their tables
(:func:`uni_icl.learners.display_name`, the selectors and the references of the chapters).
:func:`learner_colours` gives a colour to any list of names: the book's colour for a known name,
a colour of :data:`NEUTRAL_CYCLE` (not used by a learner of the same figure) for any other.

:func:`use_book_style` sets the figure resolution and colour cycle of the book; the notebooks'
:func:`uni_icl.book.notebook.setup` calls it (never at import), so every page draws alike.
"""

from __future__ import annotations

from collections.abc import Iterable

# Okabe & Ito (2008), "Color universal design"; and Tol (2021), "muted" scheme.
BLUE = "#0072B2"
SKY_BLUE = "#56B4E9"
ORANGE = "#E69F00"
BLUISH_GREEN = "#009E73"
REDDISH_PURPLE = "#CC79A7"
VERMILLION = "#D55E00"  # on purpose given to no learner (see the module docstring)
BLACK = "#000000"
INDIGO = "#332288"
TEAL = "#44AA99"
OLIVE = "#999933"
WINE = "#882255"
ROSE = "#CC6677"
GREY = "#7F7F7F"
BROWN = "#8C510A"  # ColorBrewer BrBG: the rules that learn nothing across episodes

LEARNER_COLOURS: dict[str, str] = {
    # the in-context learners: blues
    "ICL": BLUE,
    "ICL (trained on mixture)": BLUE,
    "ICL (mixture)": BLUE,
    "ICL (authors' ICLer)": SKY_BLUE,
    "ICL (authors' ICLer, per prefix)": INDIGO,
    "ICL (trained on the family)": SKY_BLUE,
    "ICL (trained on radius, ceiling)": SKY_BLUE,
    "ICL (mixture, noise_std 1-5)": INDIGO,
    "ICL imitation (distilled)": BLUE,  # the transformer distilled from a meta-learner (chapter 1)
    # the meta-learners
    "MatchNet": ORANGE,
    "MatchNet (mixture)": ORANGE,
    "ProtoNet": BLUISH_GREEN,
    "ProtoNet (mixture)": BLUISH_GREEN,
    "CNP": REDDISH_PURPLE,
    "CNP (mixture)": REDDISH_PURPLE,
    "Matching meta-learner": ORANGE,  # the family's own meta-learner (distribution-shift chapter)
    # explicit algorithm selection
    "Selector (prequential)": WINE,
    "Oracle selector": INDIGO,
    # the best possible predictor
    "Bayes": BLACK,
    "Bayes (reference)": BLACK,
    # regression
    "Least squares": BLACK,  # the reference of linear regression, like Bayes in classification
    "Averaging": OLIVE,
    "3-NN": TEAL,
    # explicit rules, nothing learned across episodes (building blocks, shift, digits)
    "Nearest class mean": BROWN,
    "NCM (pixels)": BROWN,  # the same rule on the digits' pixels
    "5-NN classifier": TEAL,  # a k-NN vote, like 3-NN in regression
    "Logistic regression": ROSE,
}
# names made from a pattern ("NCM (PCA-12)"): the colour of their prefix
PREFIX_COLOURS: dict[str, str] = {"NCM (PCA-": BLACK}

# For names the book has no colour for: the Okabe-Ito order (most distinct first), then more.
NEUTRAL_CYCLE: tuple[str, ...] = (
    BLUE,
    ORANGE,
    BLUISH_GREEN,
    REDDISH_PURPLE,
    SKY_BLUE,
    BLACK,
    WINE,
    OLIVE,
    INDIGO,
    ROSE,
    TEAL,
    GREY,
)

# Learners that appear in one figure somewhere in the book (the tests keep each set distinct).
SHOWN_TOGETHER: tuple[tuple[str, ...], ...] = (
    ("ICL", "ICL (authors' ICLer)", "ICL (authors' ICLer, per prefix)", "MatchNet", "ProtoNet", "CNP", "Bayes"),
    ("ICL imitation (distilled)", "MatchNet", "ProtoNet", "CNP"),
    (
        "ICL (trained on mixture)",
        "ICL (trained on radius, ceiling)",
        "Selector (prequential)",
        "Oracle selector",
        "MatchNet",
        "ProtoNet",
        "CNP",
        "Bayes",
    ),
    (
        "ICL (trained on mixture)",
        "ICL (trained on the family)",
        "Matching meta-learner",
        "Selector (prequential)",
        "ICL (mixture, noise_std 1-5)",
        "Bayes (reference)",
        "Nearest class mean",
        "5-NN classifier",
        "Logistic regression",
    ),
    ("ICL", "MatchNet", "ProtoNet", "CNP", "NCM (pixels)", "NCM (PCA-12)"),
    ("ICL", "Least squares", "Averaging", "3-NN"),
    ("Bayes", "Nearest class mean", "ICL (untrained)"),
)

BOOK_DPI = 150  # figures in the book: sharp on high-density screens


def learner_colour(name: str) -> str | None:
    """The book's colour of the learner called ``name`` (a display name), or None if it has none."""
    if name in LEARNER_COLOURS:
        return LEARNER_COLOURS[name]
    for prefix, colour in PREFIX_COLOURS.items():
        if name.startswith(prefix):
            return colour
    return None


def learner_colours(names: Iterable[str]) -> dict[str, str]:
    """name -> colour for every name (in order, duplicates once).

    A known learner gets the book's colour. Any other name gets, if it is a variant of a known
    learner ("ICL (untrained)": the learner's name, a space, a bracket) whose colour no other
    name of this call has, that colour; otherwise the next colour of :data:`NEUTRAL_CYCLE` that no
    name of this call uses (the cycle starts over once every colour is taken).

    >>> learner_colours(["ICL", "MatchNet", "my variant"])
    {'ICL': '#0072B2', 'MatchNet': '#E69F00', 'my variant': '#009E73'}
    >>> learner_colours(["Bayes", "ICL (untrained)"])
    {'Bayes': '#000000', 'ICL (untrained)': '#0072B2'}
    """
    names = list(dict.fromkeys(names))
    colours = {name: colour for name in names if (colour := learner_colour(name)) is not None}
    for name in names:
        base = name.split(" (", 1)[0]
        colour = LEARNER_COLOURS.get(base) if name not in colours and " (" in name else None
        if colour is not None and colour not in colours.values():
            colours[name] = colour
    free = [colour for colour in NEUTRAL_CYCLE if colour not in colours.values()] or list(NEUTRAL_CYCLE)
    unknown = [name for name in names if name not in colours]
    for index, name in enumerate(unknown):
        colours[name] = free[index % len(free)]
    return {name: colours[name] for name in names}


def use_book_style(dpi: int = BOOK_DPI) -> None:
    """Figures of the book at ``dpi`` (default 150) dots per inch, on screen and when saved, and
    the book's colour cycle (:data:`NEUTRAL_CYCLE`, no vermillion) for lines drawn without a colour.

    :func:`uni_icl.book.notebook.setup` calls it after seaborn's theme (which would replace the
    cycle); it changes matplotlib's rcParams only. Seaborn draws a ``hue`` without a palette in
    this cycle too.
    """
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams["figure.dpi"] = dpi
    mpl.rcParams["savefig.dpi"] = dpi
    mpl.rcParams["axes.prop_cycle"] = cycler(color=list(NEUTRAL_CYCLE))
