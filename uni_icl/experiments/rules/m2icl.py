"""The science of claim 4b (M2-ICL), in one place: the rule's text (``RULE_4B``), the function that
decides it (:func:`decide_4b`, with :func:`gates_4b`), the comparisons it reads
(:func:`comparisons_4b`, :func:`decisive_4b`) and their direction, reported beside the rule
(:func:`directions_4b`).

Running the chapter is :mod:`uni_icl.experiments.m2icl`; it builds the verdict from these.
"""

from __future__ import annotations

from uni_icl.evaluation import Difference
from uni_icl.experiments.evidence import (
    LOG_MARGIN,
    direction,
    reading,
)
from uni_icl.verdicts import Comparison, decisive

# ----------------------------------------------------------------------------- the rule of claim 4b
#
# Written (issue 17) before any run with normalised labels and seeds. The previous rule needed
# intervals above 0 for 'reproduced' but a mean at or below 0 was enough for 'not reproduced', and its
# intervals were over domains only (one seed). Now both outcomes need an interval, one margin is used on
# both sides, and the compared models must be working in-context regressors that finished training.

# The book's one margin for ratios (evidence.LOG_MARGIN), used symmetrically on the log scale.
# ICL without adaptation must regress in context: its geometric-mean relative error over the held-out
# domains (mean over seeds) at most this (predicting 0 scores 1, least squares about 0.2).
WORKING_ERROR = 0.5

RULE_4B = (
    "Per seed s and held-out domain k, each arm's relative squared error (mean over positions and test prompts); "
    "a comparison's effect is the paired log error ratio log(other arm / M2-ICL adapted) on the same domain with "
    "the same seed, averaged over seeds and domains, with a 95% interval over seeds and domains (the seed means' "
    "spread over S - 1 degrees of freedom plus the domains' spread, uni_icl.uncertainty.seeded_difference). At "
    "the smallest adaptation size K, two comparisons: (a) ICL adapted / M2-ICL adapted and (b) ICL without "
    f"adaptation / M2-ICL adapted. With the margin m = log 1.1 = {LOG_MARGIN:.4f} on both sides, a comparison "
    "supports the claim if its interval lies above +m, contradicts it if its interval lies below -m (M2-ICL is "
    "worse) or entirely within (-m, +m) (no practical difference), and is undecided otherwise. 'reproduced' if "
    "both support; 'not reproduced' if either contradicts; 'inconclusive' otherwise. The change of (a) from the "
    "smallest to the largest K (the paper: the gain shrinks with more tasks) is reported with its paired interval "
    "and does not decide. The outcome is 'inconclusive' whatever the intervals, naming the models, if ICL without "
    f"adaptation is not a working in-context regressor (geometric-mean relative error above {WORKING_ERROR} over "
    "the held-out domains and seeds), or if a seed of ICL's pre-training or of M2-ICL's meta-training fails its "
    "convergence test (the upper 95% bound of its validation-score gain per doubling of the budget, over the last "
    "two doublings, times 3 doublings to come, not below the preset's tolerance: relative error for ICL, "
    "mean log relative error after adaptation for M2-ICL)."
)


def decide_4b(adapted: Difference, unadapted: Difference, margin: float = LOG_MARGIN) -> str:
    """RULE_4B without its gates, on the log ratios (a) ICL adapted / M2-ICL adapted and (b) ICL without
    adaptation / M2-ICL adapted at the smallest adaptation size."""
    readings = {reading(adapted, margin), reading(unadapted, margin)}
    if readings == {"supports"}:
        return "reproduced"
    if "contradicts" in readings:
        return "not reproduced"
    return "inconclusive"


def comparisons_4b(adapted: Difference, unadapted: Difference, size: int) -> list[Comparison]:
    """The two comparisons of RULE_4B at adaptation size ``size`` (the smallest), each needed above +m."""
    return [
        Comparison(f"log(ICL adapted / M2-ICL adapted error), K = {size}", adapted, LOG_MARGIN, "above +m"),
        Comparison(f"log(ICL unadapted / M2-ICL adapted error), K = {size}", unadapted, LOG_MARGIN, "above +m"),
    ]


def decisive_4b(adapted: Difference, unadapted: Difference, size: int, outcome: str) -> dict:
    """The comparison that decided RULE_4B's ``outcome`` (:func:`uni_icl.verdicts.decisive`): for
    'not reproduced' only a comparison the rule read as contradicting (an undecided one may lie
    further from +m, but did not decide it)."""
    comparisons = comparisons_4b(adapted, unadapted, size)
    if outcome == "not reproduced":
        comparisons = [c for c in comparisons if reading(c.interval, c.margin) == "contradicts"]
    return decisive(comparisons, outcome)


# Added on 2026-12-07 (issue "each claim tested as the paper states it"), after the quick outcome had
# been seen; the rule is unchanged. Its margin reading says "not reproduced" when M2-ICL is better by
# less than 10%; the direction says which way the effect goes and whether it is significant, so a
# reader sees both ("better, by less than the margin").
def directions_4b(adapted: Difference, unadapted: Difference) -> dict[str, str]:
    """The direction of comparisons (a) and (b) of RULE_4B (:func:`uni_icl.experiments.evidence.direction`;
    'better' means M2-ICL adapted has the lower error), reported beside the rule's reading."""
    return {"adapted": direction(adapted, LOG_MARGIN), "unadapted": direction(unadapted, LOG_MARGIN)}


def gates_4b(icl_error: float, records: dict[str, list[dict]]) -> list[str]:
    """The reasons RULE_4B gives 'inconclusive' whatever the intervals (empty: none), in words."""
    reasons = []
    if not icl_error <= WORKING_ERROR:
        reasons.append(
            f"ICL without adaptation has relative error {icl_error:.3f}, above {WORKING_ERROR}: it barely regresses "
            "in context, so the comparison is between weak learners"
        )
    failed = [
        f"{NAMES[model]} (seeds {', '.join(str(r['seed']) for r in runs if not r['converged'])})"
        for model, runs in records.items()
        if not all(r["converged"] for r in runs)
    ]
    if failed:
        reasons.append("not converged: " + "; ".join(failed))
    return reasons


NAMES = {"icl": "ICL pre-training", "m2icl": "M2-ICL meta-training"}


def rule_outcome(numbers: dict) -> str:
    """``RULE_4B`` without its gates applied again to a stored verdict's log ratios (at its smallest size)."""
    adapted = numbers["log_ratio_adapted"][str(numbers["smallest_size"])]
    return decide_4b(Difference(*adapted), Difference(*numbers["log_ratio_unadapted"]))
