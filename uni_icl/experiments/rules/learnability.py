"""The science of claims 2-single and 2-mixed (chapter 2, learnability), in one place.

The rules' text (``RULE_SINGLE``, ``RULE_MIXED``), the functions that decide them
(:func:`decide_single`, :func:`decide_mixed`), and the evidence they read from the chapter's results
(:func:`single_evidence`, :func:`mixed_evidence`) with the comparison that decided each
(:func:`single_decisive`, :func:`mixed_decisive`). Running the chapter is
:mod:`uni_icl.experiments.learnability`; its tables and figures are in :mod:`uni_icl.book`.

The decision margin (``evidence.MARGIN``, fixed before any result was seen): a learner "matches"
another when the 95% interval of their difference in mean accuracy (over shot counts, seeds and test
episodes) lies above -MARGIN, "falls behind" when below -MARGIN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uni_icl.evaluation import Difference
from uni_icl.experiments.common import MATCHED_FAMILY, MATCHING_LEARNER, META_LEARNERS, MIXED_FAMILY, SINGLE_FAMILIES
from uni_icl.experiments.evidence import MARGIN, RULE_CONVERGED, gated, row_difference, unconverged
from uni_icl.learners import display_name
from uni_icl.uncertainty import combined_difference
from uni_icl.verdicts import Comparison, decisive

if TYPE_CHECKING:
    from uni_icl.experiments.learnability import LearnabilityResults


def matches(diff: Difference, margin: float = MARGIN) -> bool:
    """a is not worse than b by more than ``margin`` (the CI lies above -margin)."""
    return diff.lower > -margin


def falls_behind(diff: Difference, margin: float = MARGIN) -> bool:
    """a is worse than b by more than ``margin`` (the CI lies below -margin)."""
    return diff.upper < -margin


RULE_SINGLE = (
    f"On each of {', '.join(SINGLE_FAMILIES)}, compare learners trained and tested on that family, paired by "
    "test episode (mean accuracy over shot counts). 'reproduced' if, on every family, the 95% CI of "
    f"ICL - (best meta-learner) lies above -{MARGIN} and the 95% CI of (matching meta-learner) - (best other "
    f"meta-learner) lies above -{MARGIN}; 'not reproduced' if on some family the CI of ICL - (best meta-learner) "
    f"lies below -{MARGIN}; 'inconclusive' otherwise (including: ICL matches the best, but the matching "
    "meta-learner is not the best, so the paper's premise fails at this scale). The premise is read on the book's "
    "meta-learner shapes; the same premise for the authors' 2-2-2 shapes is reported beside it and is not part of "
    "the decision (added after the book's quick results had been seen)." + RULE_CONVERGED
)

# Rule of claim 2-mixed, rewritten (issue "Each claim's test made fair") after the seeded quick numbers
# of the previous rule, which compared each mixture-trained meta-learner with the best single-trained
# one, had been seen: that rule counted a learner that was never good on a family as "falling behind"
# whether or not mixing cost it anything. This one tests what the paper says: mixing costs a
# meta-learner more on the families that do not match its bias than on the one that does.
RULE_MIXED = (
    f"Learners trained on '{MIXED_FAMILY}' (with {len(SINGLE_FAMILIES)} times the steps of single-family training, "
    "so that they see as many training episodes of each family) are tested on each single family. A learner's drop "
    "on a family is its mixture-trained accuracy minus its own single-family-trained accuracy there (paired by "
    "seed and test episode). A meta-learner's bias effect is its mean drop on the two families that do not match "
    "its bias minus its drop on the family that does (a difference in differences, 95% interval over seeds and the "
    f"families' test episodes). With the margin m = {MARGIN}: 'reproduced' if ICL's drop lies above -m on every "
    "family (ICL stays as good) and every meta-learner's bias effect lies below -m (mixing costs it more off its "
    "bias); 'not reproduced' if ICL's drop lies below -m on some family, or some meta-learner's bias effect lies "
    "above -m (mixing does not cost it more off its bias by the margin); 'inconclusive' otherwise. ICL's mean drop "
    "beside each meta-learner's mean off-bias drop is reported, not part of the decision." + RULE_CONVERGED
)


def decide_single(
    icl_vs_best: dict[str, Difference], matching_vs_best_other: dict[str, Difference], margin: float = MARGIN
) -> str:
    """Outcome of claim 2-single (see ``RULE_SINGLE``); both dicts are keyed by family."""
    if any(falls_behind(diff, margin) for diff in icl_vs_best.values()):
        return "not reproduced"
    icl_ok = all(matches(diff, margin) for diff in icl_vs_best.values())
    premise_ok = all(matches(diff, margin) for diff in matching_vs_best_other.values())
    return "reproduced" if icl_ok and premise_ok else "inconclusive"


def decide_mixed(icl_drops: dict[str, Difference], bias_effects: dict[str, Difference], margin: float = MARGIN) -> str:
    """Outcome of claim 2-mixed (see ``RULE_MIXED``): ``icl_drops`` by family, ``bias_effects`` by meta-learner."""
    if any(falls_behind(diff, margin) for diff in icl_drops.values()):
        return "not reproduced"
    if any(diff.lower > -margin for diff in bias_effects.values()):
        return "not reproduced"
    icl_ok = all(matches(diff, margin) for diff in icl_drops.values())
    metas_ok = all(falls_behind(diff, margin) for diff in bias_effects.values())
    return "reproduced" if icl_ok and metas_ok else "inconclusive"


def matching_vs_best_other(metas: dict[str, dict], family: str) -> tuple[str, Difference]:
    """The premise's comparison on ``family``: of the meta-learners in ``metas`` (rows keyed by learner,
    trained and tested on ``family``), the best one other than the matching one, and the matching one
    minus it (paired, 95% interval over seeds and episodes)."""
    matching = MATCHING_LEARNER[family]
    best_other = max((m for m in metas if m != matching), key=lambda learner: metas[learner]["mean"])
    return best_other, row_difference(metas[matching], metas[best_other])


def premise_reading(diff: Difference, margin: float = MARGIN) -> str:
    """'holds' (the interval lies above -margin, as the rule requires), 'fails' (it lies below
    -margin) or 'undetermined' (it crosses -margin)."""
    return "holds" if matches(diff, margin) else "fails" if falls_behind(diff, margin) else "undetermined"


def _is_meta_on(row: dict, family: str) -> bool:
    """A meta-learner's row, trained and tested on ``family``."""
    return row["learner_id"] in META_LEARNERS and row["train_family"] == row["test_family"] == family


def authors_premise(results: LearnabilityResults) -> dict[str, Difference]:
    """The premise of claim 2-single for the authors' 2-2-2 meta-learner shapes, by family: the matching
    meta-learner minus the best other one (reported beside the rule, not part of it)."""
    premise = {}
    for family in SINGLE_FAMILIES:
        metas = {row["learner_id"]: row for row in results.authors_shapes if _is_meta_on(row, family)}
        if metas:
            premise[family] = matching_vs_best_other(metas, family)[1]
    return premise


def single_evidence(results: LearnabilityResults) -> tuple[dict[str, Difference], dict[str, Difference], dict]:
    """Paired differences behind claim 2-single, and the numbers stored with the verdict."""
    icl_vs_best, matching_vs_other, numbers = {}, {}, {}
    for family in SINGLE_FAMILIES:
        metas = {learner: results.row(learner, family, family) for learner in META_LEARNERS}
        best = max(metas, key=lambda learner: metas[learner]["mean"])
        icl = results.row("icl", family, family)
        icl_vs_best[family] = row_difference(icl, metas[best])
        matching_vs_other[family] = matching_vs_best_other(metas, family)[1]
        limit = results.row("bayes", family, family)
        numbers[family] = {
            "icl": [icl["mean"], icl["ci"]],
            **{learner: [row["mean"], row["ci"]] for learner, row in metas.items()},
            "bayes": [limit["mean"], limit["ci"]],
            "best_meta_learner": best,
            "icl_minus_best_meta": [icl_vs_best[family].mean, icl_vs_best[family].ci],
            "matching_minus_best_other": [matching_vs_other[family].mean, matching_vs_other[family].ci],
            "bayes_minus_icl": row_difference(limit, icl)._asdict(),
        }
    for family, diff in authors_premise(results).items():
        numbers[family]["authors_shape_matching_minus_best_other"] = [diff.mean, diff.ci]
    return icl_vs_best, matching_vs_other, numbers


def mixed_evidence(results: LearnabilityResults) -> tuple[dict[str, Difference], dict[str, Difference], dict]:
    """ICL's drop per family, each meta-learner's bias effect (see ``RULE_MIXED``), and the numbers
    stored with the verdict (with, for context, each mixture-trained meta-learner minus the best
    single-trained one, the previous rule's quantity)."""
    icl_mixed_vs_single, meta_vs_reference, numbers = {}, {learner: {} for learner in META_LEARNERS}, {}
    for family in SINGLE_FAMILIES:
        metas = {learner: results.row(learner, family, family) for learner in META_LEARNERS}
        reference = max(metas, key=lambda learner: metas[learner]["mean"])
        icl_single, icl_mixed = results.row("icl", family, family), results.row("icl", MIXED_FAMILY, family)
        icl_mixed_vs_single[family] = row_difference(icl_mixed, icl_single)
        numbers[family] = {
            "icl_single": [icl_single["mean"], icl_single["ci"]],
            "icl_mixed": [icl_mixed["mean"], icl_mixed["ci"]],
            "icl_mixed_minus_single": [icl_mixed_vs_single[family].mean, icl_mixed_vs_single[family].ci],
            "reference": reference,
            "reference_accuracy": [metas[reference]["mean"], metas[reference]["ci"]],
        }
        for learner in META_LEARNERS:
            mixed = results.row(learner, MIXED_FAMILY, family)
            numbers[family][f"{learner}_mixed"] = [mixed["mean"], mixed["ci"]]
            if MATCHING_LEARNER[family] == learner:
                continue
            diff = row_difference(mixed, metas[reference])
            meta_vs_reference[learner][family] = diff
            numbers[family][f"{learner}_mixed_minus_reference"] = [diff.mean, diff.ci]
    bias_effects = {}
    for learner in META_LEARNERS:
        bias_effects[learner], off_bias, drops = bias_effect(results, learner)
        for family, drop in drops.items():
            numbers[family][f"{learner}_drop"] = [drop.mean, drop.ci]
        numbers[f"{learner}_bias_effect"] = [bias_effects[learner].mean, bias_effects[learner].ci]
        numbers[f"{learner}_off_bias_drop"] = [off_bias.mean, off_bias.ci]
    icl_terms = [
        (1 / len(SINGLE_FAMILIES), *_scores(results.row("icl", MIXED_FAMILY, f), results.row("icl", f, f)))
        for f in SINGLE_FAMILIES
    ]
    icl_mean = combined_difference(icl_terms)
    numbers["icl_mean_drop"] = [icl_mean.mean, icl_mean.ci]
    return icl_mixed_vs_single, bias_effects, numbers


def bias_effect(results, learner: str) -> tuple[Difference, Difference, dict[str, Difference]]:
    """A meta-learner's bias effect (``RULE_MIXED``: its mean drop off its bias minus its drop on it), its
    mean drop off its bias, and its drop on each family; ``results`` has its single and mixed rows."""
    pairs = {
        family: (results.row(learner, MIXED_FAMILY, family), results.row(learner, family, family))
        for family in SINGLE_FAMILIES
    }
    own = MATCHED_FAMILY[learner]
    others = [family for family in SINGLE_FAMILIES if family != own]
    terms = [(1 / len(others), *_scores(*pairs[family])) for family in others]
    effect = combined_difference([*terms, (-1.0, *_scores(*pairs[own]))])
    drops = {family: row_difference(mixed, single) for family, (mixed, single) in pairs.items()}
    return effect, combined_difference(terms), drops


def authors_bias_effects(results: LearnabilityResults) -> dict[str, tuple[Difference, Difference, dict]]:
    """:func:`bias_effect` for the authors' 2-2-2 meta-learner shapes (reported beside the rule, which
    reads the book's shapes; added 2026-12-07, issue "each claim tested as the paper states it")."""
    from uni_icl.experiments.learnability import LearnabilityResults  # the rows' container

    view = LearnabilityResults(results.preset, results.authors_shapes, {})
    trained_on = {(row["learner_id"], row["train_family"]) for row in results.authors_shapes}
    return {
        learner: bias_effect(view, learner)
        for learner in META_LEARNERS
        if all((learner, family) in trained_on for family in (*SINGLE_FAMILIES, MIXED_FAMILY))
    }


def ladder_rows(
    results: LearnabilityResults, steps: int, single_models: list[dict], mixed_models: list[dict]
) -> list[dict]:
    """Both rules read on the models of one budget (``steps`` single-family steps; the mixture's x3):
    one row per comparison each rule reads (``kind`` "comparison") and one per claim with the rule's
    outcome, its outcome after the convergence gate, and its decisive comparison (``kind`` "decisive")."""
    icl_vs_best, matching_vs_other, _ = single_evidence(results)
    drops, effects, _ = mixed_evidence(results)
    single = decide_single(icl_vs_best, matching_vs_other)
    mixed = decide_mixed(drops, effects)
    comparisons = {
        "2-single": {f"ICL − best meta-learner, {f}": d for f, d in icl_vs_best.items()}
        | {f"{display_name(MATCHING_LEARNER[f])} − best other, {f}": d for f, d in matching_vs_other.items()},
        "2-mixed": {f"ICL mixed − ICL single, {f}": d for f, d in drops.items()}
        | {f"{display_name(learner)} bias effect": d for learner, d in effects.items()},
    }
    decided = {
        "2-single": (single, single_decisive(icl_vs_best, matching_vs_other, single), single_models),
        "2-mixed": (mixed, mixed_decisive(drops, effects, mixed), mixed_models),
    }
    rows = []
    for claim, (outcome, decisive_comparison, models) in decided.items():
        rows += [
            {"kind": "comparison", "claim": claim, "steps": steps, "label": label, "effect": d.mean, "ci": d.ci}
            for label, d in comparisons[claim].items()
        ]
        rows.append(
            {
                "kind": "decisive",
                "claim": claim,
                "steps": steps,
                "label": decisive_comparison["label"],
                "effect": decisive_comparison["effect"],
                "ci": decisive_comparison["ci"],
                "ungated_outcome": outcome,
                "outcome": gated(outcome, models),
                "unconverged": unconverged(models),
            }
        )
    return rows


def _scores(a: dict, b: dict) -> tuple[list, list]:
    return a["per_seed_episode_mean"], b["per_seed_episode_mean"]


def single_decisive(icl_vs_best: dict[str, Difference], matching_vs_other: dict[str, Difference], outcome: str) -> dict:
    """The comparison that decided claim 2-single (:func:`uni_icl.verdicts.decisive`): only ICL's
    comparisons can make it 'not reproduced'; the premise's enter the other outcomes."""
    icl = [Comparison(f"ICL − best meta-learner, {f}", d, MARGIN, "above -m") for f, d in icl_vs_best.items()]
    premise = [
        Comparison(f"{display_name(MATCHING_LEARNER[f])} − best other meta-learner, {f}", d, MARGIN, "above -m")
        for f, d in matching_vs_other.items()
    ]
    return decisive(icl if outcome == "not reproduced" else icl + premise, outcome)


def mixed_decisive(icl_drops: dict[str, Difference], bias_effects: dict[str, Difference], outcome: str) -> dict:
    """The comparison that decided claim 2-mixed (:func:`uni_icl.verdicts.decisive`)."""
    comparisons = [Comparison(f"ICL mixed − ICL single, {f}", d, MARGIN, "above -m") for f, d in icl_drops.items()]
    comparisons += [
        Comparison(f"{display_name(learner)} bias effect (off − on its bias)", d, MARGIN, "below -m")
        for learner, d in bias_effects.items()
    ]
    return decisive(comparisons, outcome)


def single_rule_outcome(numbers: dict) -> str:
    """``RULE_SINGLE`` (before the convergence gate) applied again to a stored 2-single verdict's numbers."""
    return decide_single(
        {family: Difference(*numbers[family]["icl_minus_best_meta"]) for family in SINGLE_FAMILIES},
        {family: Difference(*numbers[family]["matching_minus_best_other"]) for family in SINGLE_FAMILIES},
    )


def mixed_rule_outcome(numbers: dict) -> str:
    """``RULE_MIXED`` (before the convergence gate) applied again to a stored 2-mixed verdict's numbers."""
    return decide_mixed(
        {family: Difference(*numbers[family]["icl_mixed_minus_single"]) for family in SINGLE_FAMILIES},
        {learner: Difference(*numbers[f"{learner}_bias_effect"]) for learner in META_LEARNERS},
    )
