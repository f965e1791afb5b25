"""The words that explain chapter 1's verdict (presentation of :mod:`uni_icl.experiments.expressivity`;
its rule is :mod:`uni_icl.experiments.rules.expressivity`)."""

from __future__ import annotations

from uni_icl.verdicts import ClaimVerdict


def explain(verdict: ClaimVerdict) -> str | None:
    """Why the outcome came out as it did, computed from the verdict's numbers (None for a verdict stored
    under the single-seed rule, whose numbers have another form)."""
    if "margin" not in verdict.numbers:
        return None
    margin = verdict.numbers["margin"]
    parts = []
    for teacher_name, numbers in verdict.numbers.items():
        if teacher_name in ("margin", "decisive"):
            continue
        gaps = {
            key.removeprefix("imitation_minus_"): value
            for key, value in numbers.items()
            if key.startswith("imitation_minus_")
        }
        closest = min(gaps, key=lambda other: gaps[other][0])
        mean, ci = gaps[closest]
        parts.append(
            f"{teacher_name}: imitation minus the closest other meta-learner ({closest}) {mean:+.3f} ± {ci:.3f}"
        )
    text = "Agreement with the teacher, " + "; ".join(parts) + f" (margin {margin})."
    failed = verdict.notes.get("unconverged", [])
    runs = [run for record in verdict.rests_on for run in record["runs"]]
    text += f" {sum(run['converged'] for run in runs)} of the {len(runs)} compared runs passed their convergence test."
    if failed:
        text += (
            f" Not converged: {'; '.join(failed)}; so the outcome is inconclusive (without this condition the rule "
            f"would give '{verdict.notes.get('ungated_outcome', '?')}')."
        )
    return text
