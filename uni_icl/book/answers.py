"""The answers first: a verdict box at the top of each claim page and of the intro, and the README's
scorecard table, all computed from the stored verdicts (:class:`uni_icl.verdicts.ClaimVerdict`).

:func:`verdict_box` gives a claim's outcome, its decisive effect with the 95% interval and the
rule's margin, what decided it (:func:`uni_icl.book.verdict_prose.decided_by`) and how many
compared runs passed the convergence test. :func:`far_seeds` is the book's one rule for a seed
whose effect lies far from the other seeds' (:data:`FAR_SEED_RULE`), applied wherever a page lists
effects per seed. :func:`readme_table` is the quick scorecard table of README.md, which
``scripts/readme_scorecard.py`` writes from ``results/quick/scorecard.json``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import numpy as np

from uni_icl.book.verdict_prose import convergence_sentence, decided_by
from uni_icl.verdicts import CLAIMS, check_decisive

OUTCOME_COLOURS = {"reproduced": "#1b7837", "not reproduced": "#b2182b", "inconclusive": "#d6a21e"}
# Each chapter page with its number and title, as the sidebar and the intro name it.
CHAPTER_TITLES = {
    "book/01_expressivity": "Chapter 1, Expressivity",
    "book/02_learnability": "Chapter 2, Learnability",
    "book/03_selection": "Chapter 3, Algorithm selection",
    "book/04_shift": "Chapter 4, Distribution shift",
    "book/05_curriculum": "Chapter 5, Meta-level curriculum",
    "book/06_m2icl": "Chapter 6, Meta-level meta-learning (M2-ICL)",
    "book/07_digits": "Chapter 7, Digits",
}

FAR_SEED_MARGINS = 4.0  # a seed is far when it lies more than this many margins ...
FAR_SEED_SPREADS = 3.0  # ... and more than this many times the other seeds' range from their median
FAR_SEED_RULE = (
    f"A seed's effect lies far from the others when it differs from the median of the other seeds by more than "
    f"{FAR_SEED_MARGINS:g} margins and by more than {FAR_SEED_SPREADS:g} times the range of the other seeds (with "
    "at least 3 seeds). Such a seed is named, and the result without it is shown beside the result with all "
    "seeds, never instead of it."
)


def far_seeds(values: Sequence[float], margin: float) -> list[int]:
    """Indices of the seeds whose value lies far from the others' (:data:`FAR_SEED_RULE`).

    ``values``: one effect per seed (S >= 3 for any to be flagged); ``margin``: the rule's m > 0."""
    values = [float(v) for v in values]
    if len(values) < 3:
        return []
    found = []
    for index, value in enumerate(values):
        others = np.array(values[:index] + values[index + 1 :])
        distance = abs(value - float(np.median(others)))
        if distance > FAR_SEED_MARGINS * margin and distance > FAR_SEED_SPREADS * float(np.ptp(others)):
            found.append(index)
    return found


def chapter_link(chapter: str, suffix: str = ".html") -> str:
    """An HTML link from a book page to ``chapter`` ('book/04_shift'), named by its title."""
    page = chapter.split("/")[-1]
    return f'<a href="{page}{suffix}">{html.escape(CHAPTER_TITLES.get(chapter, page))}</a>'


def decisive_text(verdict) -> str:
    """'label: +0.010 ± 0.001 (95% interval +0.009 to +0.011; margin m = 0.01)', or '' without one."""
    decisive = verdict.numbers.get("decisive")
    try:
        check_decisive(decisive)
    except ValueError:
        return ""
    effect, ci, margin = (float(decisive[key]) for key in ("effect", "ci", "margin"))
    return (
        f"{decisive['label']}: {effect:+.3f} ± {ci:.3f} (95% interval {effect - ci:+.3f} to {effect + ci:+.3f}; "
        f"margin m = {margin:.3g})"
    )


def verdict_box(verdict, *, link: bool = False) -> str:
    """HTML: a box with the claim, its outcome at its preset, the decisive effect, what decided it and
    the convergence of the compared runs; with ``link``, the chapter that shows the evidence."""
    colour = OUTCOME_COLOURS[verdict.outcome]
    lines = [
        f"<b>Claim {html.escape(verdict.claim)}</b>: {html.escape(CLAIMS[verdict.claim])}",
        f'<span style="background:{colour};color:white;font-weight:bold;padding:0.1em 0.5em;border-radius:0.3em">'
        f"{verdict.outcome}</span> at preset <code>{html.escape(verdict.preset)}</code>"
        + (f" (evidence: {chapter_link(verdict.chapter)})" if link else ""),
    ]
    effect = decisive_text(verdict)
    if effect:
        lines.append(f"<b>Decisive effect.</b> {html.escape(effect)}")
    lines.append(f"<b>What decided it.</b> {html.escape(decided_by(verdict))}")
    converged = convergence_sentence(verdict)
    if converged:
        lines.append(html.escape(converged))
    body = "".join(f'<p style="margin:0.25em 0">{line}</p>' for line in lines)
    return (
        f'<div class="verdict-box" style="border-left:0.4em solid {colour};background:#f6f6f6;'
        f'padding:0.5em 1em;margin:0.6em 0">{body}</div>'
    )


def show_verdicts(verdicts: Iterable, *, link: bool = False) -> None:
    """Display the box of each verdict (in a notebook)."""
    from IPython.display import HTML, display

    display(HTML("".join(verdict_box(verdict, link=link) for verdict in verdicts)))


def readme_table(card, book_folder: str = "book") -> str:
    """Markdown: the scorecard ``card`` as a table for README.md, one row per claim, its chapter linked by
    title to the notebook in ``book_folder``."""
    lines = [
        "| claim | outcome | decisive effect (95% interval; margin m) | what decided it | evidence |",
        "|---|---|---|---|---|",
    ]
    for verdict in card.verdicts:
        page = verdict.chapter.split("/")[-1]
        title = CHAPTER_TITLES.get(verdict.chapter, page)
        cells = [
            f"{verdict.claim}: {CLAIMS[verdict.claim].split(':')[0]}",
            f"**{verdict.outcome}**",
            decisive_text(verdict) or "-",
            " ".join(filter(None, [decided_by(verdict), convergence_sentence(verdict)])),
            f"[{title}]({book_folder}/{page}.ipynb)",
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
