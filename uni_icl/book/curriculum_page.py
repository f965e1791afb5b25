"""The words that explain chapter 5's verdict (presentation of :mod:`uni_icl.experiments.curriculum`;
its rule is :mod:`uni_icl.experiments.rules.curriculum`)."""

from __future__ import annotations

from uni_icl.evaluation import Difference
from uni_icl.experiments.evidence import side
from uni_icl.verdicts import ClaimVerdict


def _placed(where: str) -> str:
    """evidence.side's reading as a verb phrase: 'lies above +m', 'crosses ±m'."""
    return where if where.startswith("crosses") else f"lies {where}"


def explain(verdict: ClaimVerdict) -> str | None:
    """Why the outcome came out as it did, every sentence computed from the verdict's numbers and notes.
    None for a verdict stored under an earlier rule, whose numbers have another form."""
    if "margin" not in verdict.numbers:
        return None
    numbers, notes = verdict.numbers, verdict.notes
    per_seed = numbers["per_seed"]

    def steps(value) -> str:
        return "never" if value is None else str(value)

    pairs = ", ".join(f"seed {seed} {steps(v['none'])} vs {steps(v['paper'])}" for seed, v in per_seed.items())
    parts = [
        f"Steps to the threshold {numbers['threshold']:.3f} (error/d), no curriculum vs the paper's curriculum: "
        f"{pairs}."
    ]
    if numbers.get("speedup") is not None:
        value, low, high = numbers["speedup"]
        interval = Difference(*numbers["log_speedup"])
        parts.append(
            f"Speed-up ratio (geometric mean over {len(per_seed)} seeds): {value:.2f} [{low:.2f}, {high:.2f}] "
            f"(95% t-interval over seeds); its log interval [{interval.lower:+.3f}, {interval.upper:+.3f}] "
            f"{_placed(side(interval, numbers['margin']))} (m = log 1.1), which alone gives "
            f"'{notes.get('ungated_outcome')}'."
        )
    else:
        parts.append("The speed-up is undefined: a run of a compared arm never reached the threshold.")
    baseline, ls = numbers["baseline_error"], numbers["least_squares_error"]
    factor = numbers["premise_factor"]
    parts.append(
        f"The no-curriculum runs end at error/d {baseline:.3f}, {baseline / ls:.2f} times least squares' {ls:.3f} "
        + (f"(within the rule's {factor}x)." if baseline <= factor * ls else f"(more than the rule's {factor}x).")
    )
    runs = [run for record in verdict.rests_on for run in record["runs"]]
    if runs:
        parts.append(
            f"{sum(run['converged'] for run in runs)} of the {len(runs)} compared runs passed the convergence test."
        )
    if notes.get("gates"):
        parts.append("So the outcome is inconclusive: " + "; ".join(notes["gates"]) + ".")
    earlier = numbers.get("earlier_schedule") or {}
    if earlier.get("speedup") is not None:
        value, low, high = earlier["speedup"]
        parts.append(
            "The paper's increments on the earlier schedule (from step 0, reported, not decided): speed-up "
            f"{value:.2f} [{low:.2f}, {high:.2f}]."
        )
    if numbers.get("speedup_garg") is not None:
        value, low, high = numbers["speedup_garg"]
        parts.append(f"Garg et al.'s schedule (reported, not decided): speed-up {value:.2f} [{low:.2f}, {high:.2f}].")
    return " ".join(parts)
