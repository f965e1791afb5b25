"""The words that explain chapter 1's verdict (presentation of :mod:`uni_icl.experiments.expressivity`;
its rule is :mod:`uni_icl.experiments.rules.expressivity`)."""

from __future__ import annotations

from uni_icl.book.formatting import pm
from uni_icl.verdicts import ClaimVerdict


def _position(triple) -> str:
    estimate, low, high = triple
    if low is None:
        return f"{estimate:.2f} (interval unbounded: the ceiling's lead over the floor is not significant)"
    return f"{estimate:.2f} [{low:.2f}, {high:.2f}]"


def explain(verdict: ClaimVerdict) -> str | None:
    """Why the outcome came out as it did, computed from the verdict's numbers (None for a verdict stored
    under an earlier rule, whose numbers have another form)."""
    if "teachers" not in verdict.numbers:
        return None
    numbers = verdict.numbers
    parts = []
    for teacher, entry in numbers["teachers"].items():
        floors = "; ".join(
            f"{label.removesuffix(' (floor)')} {pm(entry['imitation_minus_floor'][label])} (second seed minus it "
            f"{pm(entry['ceiling_minus_floor'][label])})"
            for label in entry["imitation_minus_floor"]
        )
        parts.append(
            f"{teacher}: imitation minus the second seed {pm(entry['imitation_minus_ceiling'])}; imitation minus "
            f"each floor: {floors}; the yardstick {'resolves' if entry['resolves'] else 'does not resolve'}; "
            f"position between floor and ceiling {_position(entry['position'])}; so the teacher "
            f"{'is undetermined' if entry['decision'] == 'undetermined' else entry['decision'] + ' the claim'}"
        )
    text = "Agreement with the teacher (margin " + f"{numbers['margin']}). " + ". ".join(parts) + "."
    failed = verdict.notes.get("unconverged", [])
    runs = [run for record in verdict.rests_on for run in record["runs"]]
    text += f" {sum(run['converged'] for run in runs)} of the {len(runs)} compared runs passed their convergence test."
    if failed:
        text += (
            f" Not converged: {'; '.join(failed)}; so the outcome is inconclusive (without this condition the rule "
            f"would give '{verdict.notes.get('ungated_outcome', '?')}')."
        )
    return text
