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
    rules, its decisive comparison, when and why the rules changed; empty for a claim it lacks."""
    if claim not in PREVIOUS_OUTCOMES:
        return {}
    return {"previous_outcome": {**PREVIOUS_OUTCOMES[claim], "changed": CHANGED, "reason": REASON, "source": SOURCE}}
