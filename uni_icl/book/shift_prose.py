"""Chapter 4's words, computed from its numbers: why claim 3(b) came out as it did (:func:`why`) and
what the outcome means (:func:`meaning`).

Every sentence reads the chapter's results (:class:`uni_icl.experiments.shift.ShiftResults`) or its
verdict, through the functions of :mod:`uni_icl.experiments.rules.shift`, so it follows whatever
the stored numbers say: the families and learners that blocked the outcome, every arm the rule
reads and the remedy beside it, an explicit rule whose accuracy did not move while the Bayes
accuracy did (a change the rule reads as the rule's own), logistic regression's approach to Bayes
with its cause measured (its fixed penalty, :func:`penalty_sentence`) and what that leaves of the
decisions where it is the named explicit algorithm (:func:`penalty_reading`), and any seed that lies far
from the others (:func:`uni_icl.book.answers.far_seeds`), with the result without it shown beside.
"""

from __future__ import annotations

import numpy as np

from uni_icl.book.answers import FAR_SEED_RULE, far_seeds
from uni_icl.book.verdict_prose import decided_by, names, pm, shift_family_sentence
from uni_icl.evaluation import Difference
from uni_icl.experiments.rules import shift as rules
from uni_icl.tasks import SINGLE_FAMILIES
from uni_icl.uncertainty import seeded_difference

# the learners whose growth the page reports per seed: ICL and the meta-learner trained on the family
# (reported), ICL trained on the mixture (the one the rule judges) and the remedy
SEEDED = (rules.ICL_OWN, rules.META, rules.JUDGED, rules.REMEDY)


def _row(results, family: str, learner: str, noise_std: float) -> dict:
    return next(r for r in results.rows if (r["family"], r["learner"], r["noise_std"]) == (family, learner, noise_std))


def _growth_without(results, family: str, learner: str, seed_index: int):
    """Gap growth of ``learner`` on ``family`` without the seed at ``seed_index`` (a Difference)."""
    top = max(results.noise_levels)
    high = rules.episode_gaps(results.rows, family, top, learner)
    low = rules.episode_gaps(results.rows, family, 1.0, learner)
    keep = [index for index in range(high.shape[0]) if index != seed_index]
    return seeded_difference(high[keep], low[keep])


def unmoved_rules(results, margin: float) -> list[str]:
    """Sentences: an explicit rule with nothing trained whose accuracy is the same on every test
    episode at noise_std 1 and at the largest level, while the Bayes accuracy changed; its gap growth
    is then the Bayes accuracy's change alone."""
    top = max(results.noise_levels)
    sentences = []
    for family in SINGLE_FAMILIES:
        same = [
            learner
            for learner in (rules.NCM, rules.KNN, rules.LOGISTIC)
            if np.array_equal(
                _row(results, family, learner, 1.0)["per_episode_mean"],
                _row(results, family, learner, top)["per_episode_mean"],
            )
        ]
        bayes_low, bayes_high = (_row(results, family, rules.BAYES, s)["mean"] for s in (1.0, top))
        if not same or round(bayes_low, 3) == round(bayes_high, 3):
            continue
        accuracy = _row(results, family, same[0], 1.0)["mean"]
        growth = rules.growth(results, family, same[0])
        verb = "rises" if bayes_high > bayes_low else "falls"
        sentences.append(
            f"On {family}, {' and '.join(same)} score the same on every test episode at σ = 1 and σ = {top} "
            f"(accuracy {accuracy:.3f} at both), so their gap growth ({pm((growth.mean, growth.ci))}, "
            f"{rules.status(growth, margin)}) is the change of the Bayes accuracy alone, which {verb} from "
            f"{bayes_low:.3f} to {bayes_high:.3f}: the rule reads a change of the task as a change of the rule."
        )
    return sentences


def remedy_sentences(results, margin: float) -> list[str]:
    """Sentences: per family, the gap growth of ICL trained on the mixture at noise_std 1, of the same
    transformer trained on noise_std in [1, 5], and their paired difference."""
    lines = []
    cut = []
    for family in SINGLE_FAMILIES:
        mixture = rules.growth(results, family, rules.ICL_MIXTURE)
        remedy = rules.growth(results, family, rules.REMEDY)
        difference = seeded_difference(
            rules.growth_matrix(results, family, rules.REMEDY), rules.growth_matrix(results, family, rules.ICL_MIXTURE)
        )
        if difference.upper < -margin:
            cut.append(family)
        lines.append(
            f"{family}: σ = 1 only {pm((mixture.mean, mixture.ci))} ({rules.status(mixture, margin)}), "
            f"σ ∈ [1, 5] {pm((remedy.mean, remedy.ci))} ({rules.status(remedy, margin)}), difference "
            f"{pm((difference.mean, difference.ci))}"
        )
    text = (
        "Not part of the rule, the remedy: the same transformer trained on the mixture with σ drawn from [1, 5] "
        "instead of σ = 1 only; gap growth per family, " + "; ".join(lines) + "."
    )
    if cut:
        text += (
            f" On {names(cut)} the wider pre-training cut the growth by more than the margin (the difference's "
            "interval lies below −m): the sensitivity came from the pre-training distribution, as the paper's "
            "explanation says."
        )
    return [text]


def seed_sentences(results, margin: float) -> list[str]:
    """Sentences: each seed whose gap growth lies far from the other seeds' (:data:`FAR_SEED_RULE`), with
    the growth and status with and without it, and the family's decision without it where the
    learner is one the rule reads."""
    sentences = []
    for family in SINGLE_FAMILIES:
        for learner in SEEDED:
            values = rules.growth_per_seed(results, family, learner)
            for index in far_seeds(values, margin):
                others = ", ".join(f"{v:+.3f}" for i, v in enumerate(values) if i != index)
                with_all = rules.growth(results, family, learner)
                without = _growth_without(results, family, learner, index)
                text = (
                    f"Seed {results.seeds[index]} of {learner} on {family} lies far from the others: growth "
                    f"{values[index]:+.3f} against {others}. With every seed {pm((with_all.mean, with_all.ci))} "
                    f"({rules.status(with_all, margin)}); without it {pm((without.mean, without.ci))} "
                    f"({rules.status(without, margin)})"
                )
                if learner == rules.JUDGED:
                    text += f"; the family's decision without it: {_decision_without(results, family, index, margin)}"
                sentences.append(text + ".")
    if sentences:
        sentences.append(FAR_SEED_RULE)
    return sentences


def _decision_without(results, family: str, seed_index: int, margin: float) -> str:
    """The family's decision with the seed at ``seed_index`` of the judged ICL left out (the named explicit
    algorithm trains nothing: its growth keeps every seed)."""
    icl = _growth_without(results, family, rules.JUDGED, seed_index)
    explicit = rules.growth(results, family, rules.NAMED_EXPLICIT[family])
    return rules.decide_family(icl, explicit, margin)


def logistic_sentence(results, margin: float) -> str:
    """Sentences naming the families where logistic regression comes closer to Bayes as σ grows, with its
    accuracy at both levels, and what the rule makes of it there: on a family whose named explicit
    algorithm it is, the family cannot support the claim; elsewhere it is reported ('' where it comes
    closer to Bayes nowhere)."""
    top = max(results.noise_levels)
    found = [
        family
        for family in SINGLE_FAMILIES
        if rules.status(rules.growth(results, family, rules.LOGISTIC), margin) == "closer to Bayes"
    ]
    if not found:
        return ""
    accuracies = "; ".join(
        f"{family} {_row(results, family, rules.LOGISTIC, 1.0)['mean']:.3f} → "
        f"{_row(results, family, rules.LOGISTIC, top)['mean']:.3f}"
        for family in found
    )
    text = (
        f"Logistic regression comes closer to Bayes as σ grows on {len(found)} of {len(SINGLE_FAMILIES)} families "
        f"(accuracy at σ = 1 → σ = {top}: {accuracies}); the rule counts that as not insensitive."
    )
    named = [family for family in found if rules.NAMED_EXPLICIT[family] == rules.LOGISTIC]
    if named:
        text += (
            f" On {names(named)} it is the named explicit algorithm, so there the family cannot support the claim "
            "(it contradicts it only if ICL does not degrade)."
        )
    for family in (family for family in found if family not in named):
        text += f" On {family} it is reported beside {rules.NAMED_EXPLICIT[family]}, the named one: it decides nothing."
    return text


# what the penalty check shows per share (:func:`penalty_share`), completing "So the fixed penalty ..."
PENALTY_SHARES = {
    "all": "accounts for the rise on {families} (holding it changes the growth by {changes}, and it no longer "
    "lies below −m)",
    "part": "accounts for part of it on {families} (a change of {changes}; the growth still lies below −m, for a "
    "reason this check does not isolate)",
    "none": "does not account for it on {families} (a change of {changes}, not above +m: the rise has another cause "
    "there)",
}


def penalty_share(entry: dict, margin: float) -> str:
    """What holding logistic regression's penalty relative to the data did to its gap growth on one
    family (a family's entry of :func:`uni_icl.experiments.shift.logistic_penalty_check`): 'all' when
    the growth rose by more than the margin (the interval of the paired change lies above +m) and no
    longer lies below −m, 'part' when it rose by more than the margin but still lies below −m, 'none'
    when it did not rise by more than the margin."""
    if Difference(*entry["relative_minus_fixed"]).lower <= margin:
        return "none"
    relative = Difference(*entry["relative"]["growth"])
    return "part" if rules.status(relative, margin) == "closer to Bayes" else "all"


def _closer_to_bayes(check: dict, margin: float) -> dict:
    """The families of the penalty check where the chapter's logistic regression comes closer to Bayes
    (its growth lies below −m), with their entries."""
    return {
        family: check["families"][family]
        for family in SINGLE_FAMILIES
        if rules.status(Difference(*check["families"][family]["fixed"]["growth"]), margin) == "closer to Bayes"
    }


def penalty_sentence(check: dict, margin: float) -> str:
    """Why logistic regression comes closer to Bayes as σ grows, from the penalty check
    (:func:`uni_icl.experiments.shift.logistic_penalty_check`): on each family where its growth lies
    below −m, its growth and accuracy with the penalty held relative to the data beside the chapter's,
    and what that shows (:func:`penalty_share`); '' where it comes closer to Bayes on no family."""
    top = check["noise_levels"][1]
    found = _closer_to_bayes(check, margin)
    if not found:
        return ""

    def held(entry: dict) -> str:
        relative = entry["relative"]
        accuracy = " → ".join(f"{value:.3f}" for value in relative["accuracy"])
        status = rules.status(Difference(*relative["growth"]), margin)
        return f"{pm(relative['growth'])} ({status}; accuracy {accuracy}) instead of {pm(entry['fixed']['growth'])}"

    measured = "; ".join(f"{family} {held(entry)}" for family, entry in found.items())
    shares = {family: penalty_share(entry, margin) for family, entry in found.items()}

    def where(share: str) -> tuple[str, str]:
        """The families with this share, and their changes of growth."""
        chosen = [family for family in found if shares[family] == share]
        return names(chosen), " and ".join(pm(found[family]["relative_minus_fixed"]) for family in chosen)

    clauses = []
    for share, text in PENALTY_SHARES.items():
        families, changes = where(share)
        if families:
            clauses.append(text.format(families=families, changes=changes))
    return (
        f"Why logistic regression comes closer to Bayes: its penalty (l2 = {check['l2']:g} on weights and bias) is "
        "fixed while the inputs grow with σ, so relative to the data the penalty on its weights weakens σ²-fold. "
        "Scored on the same episodes with the penalty held at its σ = 1 strength relative to the data (the inputs "
        f"divided by σ), its gap growth from σ = 1 to σ = {top} is {measured}. So the fixed penalty "
        + "; ".join(clauses)
        + "."
    )


def penalty_reading(check: dict, verdict) -> str:
    """What the penalty check does to claim 3(b)'s decisions: on the families where logistic regression,
    their named explicit algorithm, comes closer to Bayes, the rule reads it as named (fixed penalty), so
    the check explains its growth and leaves each family's decision as the verdict states it; '' where
    there is no such family."""
    families = verdict.numbers["families"]
    named = [
        family
        for family in _closer_to_bayes(check, verdict.numbers["margin"])
        if families[family]["judged"]["explicit_name"] == rules.LOGISTIC
    ]
    if not named:
        return ""
    decisions = ", ".join(f"{family} {families[family]['decision']}" for family in named)
    return (
        f"On {names(named)} the rule reads logistic regression as it was named before any run, with its fixed "
        "penalty: holding the penalty relative to the data diagnoses its growth and is not an arm of the rule, "
        f"so the decisions stand ({decisions})."
    )


def why(results, verdict, penalty_check: dict | None = None) -> str:
    """Markdown: why claim 3(b) came out as it did, from the verdict and the chapter's results (and,
    where given, the logistic penalty check of :func:`penalty_sentence`)."""
    margin = verdict.numbers["margin"]
    parts = [decided_by(verdict)]
    parts += unmoved_rules(results, margin)
    logistic = logistic_sentence(results, margin)
    if logistic:
        parts.append(logistic)
    penalty = penalty_sentence(penalty_check, margin) if penalty_check is not None else ""
    if penalty:
        parts.append(" ".join(filter(None, (penalty, penalty_reading(penalty_check, verdict)))))
    parts += remedy_sentences(results, margin)
    parts += seed_sentences(results, margin)
    return "\n\n".join(parts)


def meaning(verdict) -> str:
    """One sentence: what the outcome of claim 3(b) means, naming the families that decided or blocked it."""
    families = verdict.numbers["families"]
    margin = verdict.numbers["margin"]
    if verdict.outcome == "reproduced":
        return (
            "what ICL learns at σ = 1 is tied to that noise level: its own loss grows with the shift while an "
            "explicit algorithm's does not, on "
            + ", ".join(f for f in SINGLE_FAMILIES if families[f]["decision"] == "supports")
            + "."
        )
    if verdict.outcome == "not reproduced":
        return (
            "the evidence goes against the claim: "
            + "; ".join(
                shift_family_sentence(f, families[f], margin)
                for f in SINGLE_FAMILIES
                if families[f]["decision"] == "contradicts"
            )
            + "."
        )
    unconverged = verdict.notes.get("unconverged") or []
    if unconverged:
        return (
            "the rule cannot decide at this preset: runs it compares did not converge (" + "; ".join(unconverged) + ")."
        )
    return (
        "the rule cannot decide at this preset: "
        + "; ".join(
            shift_family_sentence(f, families[f], margin)
            for f in SINGLE_FAMILIES
            if families[f]["decision"] == "undetermined"
        )
        + "."
    )
