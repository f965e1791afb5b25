"""Chapter 3's tables and the words that explain its verdict (presentation of
:mod:`uni_icl.experiments.selection`; its rule is :mod:`uni_icl.experiments.rules.selection`)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from uni_icl.book.formatting import pm, signed
from uni_icl.evaluation import Difference
from uni_icl.experiments.evidence import side, training_note
from uni_icl.experiments.selection import SelectionResults
from uni_icl.verdicts import ClaimVerdict


def accuracy_table(results: SelectionResults, learners: Iterable[str], families: Iterable[str]) -> pd.DataFrame:
    """learner x family: 'mean ± CI (seed means)' of each row, over seeds and test episodes."""
    learners, families = list(learners), list(families)
    records = {
        learner: {family: _with_seeds(results.row(learner, family)) for family in families} for learner in learners
    }
    return pd.DataFrame.from_dict(records, orient="index")[families]


def _with_seeds(row: dict) -> str:
    seeds = ", ".join(f"{value:.3f}" for value in row["seed_means"])
    return f"{row['mean']:.3f} ± {row['ci']:.3f} ({seeds})"


REASONS = {
    "above +m": "the whole interval lies above +{m}: ICL trained on the mixture is more accurate than selection",
    "below -m": "the whole interval lies below -{m}: selection is more accurate than ICL trained on the mixture",
    "within ±m": "the whole interval lies within ±{m}: no practical difference, which the rule counts against "
    "the claim",
    "crosses ±m": "the interval crosses ±{m}, so the rule cannot decide between its outcomes at this preset",
}


def explain(verdict: ClaimVerdict) -> str | None:
    """Why the outcome came out as it did, computed from the verdict's numbers.
    None for a verdict stored under an earlier rule, whose numbers have another form."""
    if "rescaled" not in verdict.numbers:
        return None
    numbers = verdict.numbers
    margin = numbers["margin"]
    rescaled = numbers["rescaled"]
    found = side(Difference(*rescaled["icl_minus_selector"]), margin)
    text = (
        f"On radius rescaled to the training input scale (inputs x {rescaled['input_scale']:.3f}), ICL trained on "
        f"the mixture minus the prequential selector: {pm(rescaled['icl_minus_selector'])} (per seed: "
        f"{signed(rescaled['icl_minus_selector_per_seed'])}); " + REASONS[found].format(m=margin) + "."
    )
    per_seed = rescaled["icl_minus_selector_per_seed"]
    if min(per_seed) < 0 < max(per_seed):
        text += " The seeds disagree on the sign of the difference."
    unrescaled = side(Difference(*numbers["icl_minus_selector"]), margin)
    text += (
        f" On unrescaled radius (reported, not read by the rule): {pm(numbers['icl_minus_selector'])} "
        f"({unrescaled[:-1]}{margin})."
    )
    text += (
        f" Against the best meta-learner in hindsight ({numbers['oracle_radius_candidate']}), not part of the rule: "
        f"{pm(numbers['icl_minus_oracle'])}."
    )
    if "bayes_radius" in numbers:
        text += (
            f" The radius Bayes predictor, the ceiling of any learner there, reaches {numbers['bayes_radius'][0]:.3f}; "
            f"Bayes minus ICL trained on the mixture: {pm(numbers['bayes_minus_icl_mixture'])}, Bayes minus ICL "
            f"trained on radius: {pm(numbers['bayes_minus_icl_radius_ceiling'])}."
        )
    variants = numbers.get("variants", {})
    if len(variants) > 1:
        sides = {layout: side(Difference(*v["minus_selector"]), margin) for layout, v in variants.items()}
        listed = "; ".join(
            f"{layout} {pm(v['minus_selector'])} ({sides[layout][:-1]}{margin})" for layout, v in variants.items()
        )
        text += f" The same difference for each token layout of ICL (not part of the rule): {listed}."
        decided = {layout: found for layout, found in sides.items() if found != "crosses ±m"}
        if len(decided) < len(sides):
            text += " Where an interval crosses the margin, whether the layout changes the outcome is not settled."
        elif len(set(decided.values())) > 1:
            text += (
                " The layouts fall on different sides of the margin: at this preset the rule's outcome would depend "
                "on the token layout."
            )
        else:
            text += " Every layout falls on the same side of the margin."
    return text + training_note(verdict)
