"""The outcomes of the quick preset under the previous rules, kept beside the new ones.

The rules changed on 2026-12-07 after these outcomes had been seen (issues "verdicts decided by the
claims, not by the training budget" and "each claim tested as the paper states it"): the
convergence test became the remaining-gain bound and stopped being the stopping rule, every
classification model got the same fixed budget, and several claims' comparisons changed. These are
the verdicts of the shipped quick results of commit 33d4fe1 (``results/quick/scorecard.json`` there),
with the comparison that decided each; :func:`previous_outcome` puts them in a verdict's notes.
"""

from __future__ import annotations

CHANGED = "2026-12-07"
SOURCE = "results/quick/scorecard.json at commit 33d4fe1 (quick preset, the rules before " + CHANGED + ")"
REASON = (
    "the convergence test that gated it was also the stopping rule, so it passed by construction, and the models "
    "a rule compared had unequal budgets (ICL stopped at 1,000 to 4,000 steps, the meta-learners at up to 8,000)"
)
# The claims whose comparison itself changed on the same day (issue "each claim tested as the paper
# states it"), with why, in words a page shows beside the two outcomes. Each new rule was written in
# its rules module before any run of it at the quick preset.
COMPARISON_CHANGES = {
    "1": (
        "the yardstick was the agreement of meta-learners trained on other families, which disagree with the teacher "
        "for reasons unrelated to what a transformer can express (a lenient test); the new rule places the imitation "
        "between a floor (meta-learners of another kind trained on the teacher's family) and a ceiling (a second seed "
        "of the teacher)"
    ),
    "3a": (
        "radius inputs have standard deviation 0.849 r (1.7 to 3.4) against about 1 to 1.4 in training, so the test "
        "mixed a new task type with an input-scale shift (the mechanism of claim 3b); the rule now reads radius "
        "episodes rescaled to the training scale (same labels) and shows the unrescaled ones beside them"
    ),
    "3b": (
        "a family counted as supporting if any of four explicit algorithms stayed within the margin (multiplicity "
        "in the claim's favour), two of which cannot degrade on pairwise by construction, and it judged ICL trained "
        "on each family; the new rule names one explicit algorithm per family before any run and judges ICL trained "
        "on the mixture (the paper's model)"
    ),
    "4a": (
        "the earlier schedule made its three increments by step 480 of 8,000 while the 400-step warm-up ran; the "
        "new one spreads the paper's increments over the window after the warm-up in which the threshold is "
        "reached; the earlier schedule is reported as a variant"
    ),
    "4b": (
        "the rule is unchanged; the verdict now also reports the direction of the effect and whether it is "
        "significant, beside the margin's reading"
    ),
}

PREVIOUS_OUTCOMES = {
    "1": {
        "outcome": "reproduced",
        "decisive": {"label": "ICL imitation − ProtoNet, agreement with MatchNet", "effect": 0.0560, "ci": 0.0110},
    },
    "2-single": {
        "outcome": "inconclusive",
        "decisive": {"label": "ICL − best meta-learner, pairwise", "effect": -0.0062, "ci": 0.0063},
    },
    "2-mixed": {
        "outcome": "not reproduced",
        "decisive": {"label": "MatchNet bias effect (off − on its bias)", "effect": 0.0015, "ci": 0.0071},
    },
    "3a": {
        "outcome": "not reproduced",
        "decisive": {"label": "ICL on mixture − selector, radius episodes", "effect": -0.0962, "ci": 0.0462},
    },
    "3b": {
        "outcome": "inconclusive",
        "decisive": {"label": "Nearest class mean: gap-to-Bayes growth, amortized", "effect": 0.0103, "ci": 0.0010},
    },
    "4a": {
        "outcome": "inconclusive",
        "decisive": {"label": "log(steps without / with the paper's curriculum)", "effect": 0.0682, "ci": 0.0869},
    },
    "4b": {
        "outcome": "not reproduced",
        "decisive": {"label": "log(ICL adapted / M2-ICL adapted error), K = 64", "effect": 0.0189, "ci": 0.0081},
    },
}


def previous_outcome(claim: str) -> dict:
    """``{"previous_outcome": ...}`` for a verdict's notes: the claim's quick outcome under the previous
    rules, its decisive comparison, when and why the rules changed (``comparison_changed``: why its
    comparison changed too, for a claim of :data:`COMPARISON_CHANGES`); empty for a claim it lacks."""
    if claim not in PREVIOUS_OUTCOMES:
        return {}
    found = {**PREVIOUS_OUTCOMES[claim], "changed": CHANGED, "reason": REASON, "source": SOURCE}
    if claim in COMPARISON_CHANGES:
        found["comparison_changed"] = COMPARISON_CHANGES[claim]
    return {"previous_outcome": found}
