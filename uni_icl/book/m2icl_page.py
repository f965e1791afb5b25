"""The words that explain chapter 6's verdict (presentation of :mod:`uni_icl.experiments.m2icl`; its
rule is :mod:`uni_icl.experiments.rules.m2icl`)."""

from __future__ import annotations

import math

from uni_icl.evaluation import Difference
from uni_icl.experiments.evidence import reading, side
from uni_icl.verdicts import ClaimVerdict


def explain(verdict: ClaimVerdict) -> str | None:
    """Why the outcome came out as it did, every sentence computed from the verdict's numbers and notes.
    None for a verdict stored under an earlier rule, whose numbers have another form."""
    if "margin" not in verdict.numbers:
        return None
    numbers, notes = verdict.numbers, verdict.notes
    margin, small, large = numbers["margin"], numbers["smallest_size"], numbers["largest_size"]

    def ratio_text(pair: list[float]) -> str:
        interval = Difference(*pair)
        return (
            f"{math.exp(interval.mean):.2f} [{math.exp(interval.lower):.2f}, {math.exp(interval.upper):.2f}] "
            f"(log interval {side(interval, margin)}: {reading(interval, margin)})"
        )

    seeds = numbers["seeds"]
    parts = [
        f"At K = {small}, over {len(seeds)} seed{'s' if len(seeds) != 1 else ''} and "
        f"{len(numbers['per_domain_log_ratio_adapted'])} held-out domains: error ratio ICL adapted / M2-ICL adapted "
        f"{ratio_text(numbers['log_ratio_adapted'][str(small)])}; ICL without adaptation / M2-ICL adapted "
        f"{ratio_text(numbers['log_ratio_unadapted'])}; so the intervals give '{notes['ungated_outcome']}'."
    ]
    if "direction" in numbers:
        parts.append(
            "Direction, beside the margin's reading (not decided), M2-ICL adapted against ICL adapted: "
            f"{numbers['direction']['adapted']}; against ICL without adaptation: "
            f"{numbers['direction']['unadapted']}."
        )
    per_domain = numbers["per_domain_log_ratio_adapted"]
    better = sum(value > 0 for value in per_domain)
    parts.append(
        f"Per domain, M2-ICL adapted has the lower error on {better} of {len(per_domain)} domains (paired log ratios "
        f"from {min(per_domain):+.2f} to {max(per_domain):+.2f})."
    )
    shrink = Difference(*numbers["shrink"])
    parts.append(
        f"From K = {small} to K = {large} the log ratio changes by {-shrink.mean:+.3f} "
        f"[{-shrink.upper:+.3f}, {-shrink.lower:+.3f}]"
        + (
            ": it falls significantly (the paper: M2-ICL's gain shrinks with more tasks)."
            if shrink.lower > 0
            else ": it rises significantly."
            if shrink.upper < 0
            else ": no significant change."
        )
    )
    icl, ls = numbers["icl_unadapted_error"], numbers["least_squares_error"]
    parts.append(
        f"ICL without adaptation: relative error {icl:.3f} against least squares' {ls:.3f} "
        + (
            f"(a working in-context regressor by the rule's bound {numbers['working_error']})."
            if icl <= numbers["working_error"]
            else f"(above the rule's bound {numbers['working_error']})."
        )
    )
    parts.append(_validation_text(numbers["validation_check"], small))
    runs = [run for record in verdict.rests_on for run in record["runs"]]
    if runs:
        passed = sum(run["converged"] for run in runs)
        parts.append(f"{passed} of the {len(runs)} compared training runs passed the convergence test.")
    if notes.get("gates"):
        parts.append("So the outcome is inconclusive: " + "; ".join(notes["gates"]) + ".")
    return " ".join(parts)


def _validation_text(check: dict, small: int) -> str:
    """Meta-validation against the held-out result, in words computed from :func:`domain_sets_difference`."""
    gap = Difference(*check["log_ratio"])
    same = check["code_paths_log_gap"] < 1e-4
    text = (
        f"M2-ICL's meta-validation score reads {', '.join(f'{v:.3f}' for v in check['meta_validation'])} (final "
        f"models, {check['n_validation']} validation domains) against {check['held_out_geometric']:.3f} on the "
        f"{check['n_held_out']} held-out domains at K = {small}; "
    )
    if not same:
        return text + (
            f"on the same domains the two code paths differ by a log ratio of {check['code_paths_log_gap']:.3f}, "
            "so the procedures are not the same."
        )
    text += (
        f"on the same domains the two code paths agree (log difference {check['code_paths_log_gap']:.1e}), "
        f"so any gap comes from the domains: validation / held-out {math.exp(gap.mean):.2f} "
        f"[{math.exp(gap.lower):.2f}, {math.exp(gap.upper):.2f}] (Welch 95% interval over domains; a domain's log "
        f"error has sd {check['domain_log_sd']:.2f}), "
    )
    return text + (
        "a difference between the two draws of domains."
        if gap.lower > 0 or gap.upper < 0
        else "within what two draws of domains give."
    )
