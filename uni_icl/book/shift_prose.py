"""Chapter 4's words, computed from its numbers: why claim 3(b) came out as it did (:func:`why`) and
what the outcome means (:func:`meaning`).

Every sentence reads the chapter's results (:class:`uni_icl.experiments.shift.ShiftResults`) or its
verdict, through the functions of :mod:`uni_icl.experiments.rules.shift`, so it follows whatever
the stored numbers say: the families and learners that blocked the outcome, every arm the rule
reads and the remedy beside it, an explicit rule whose accuracy did not move while the Bayes
accuracy did (a change the rule reads as the rule's own), and any seed that lies far from the
others (:func:`uni_icl.book.answers.far_seeds`), with the result without it shown beside.
"""

from __future__ import annotations

import numpy as np

from uni_icl.book.answers import FAR_SEED_RULE, far_seeds
from uni_icl.book.verdict_prose import decided_by, names, pm, shift_family_sentence
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
    """A sentence naming the families where logistic regression comes closer to Bayes as σ grows, with its
    accuracy at both levels ('' where it does nowhere)."""
    top = max(results.noise_levels)
    found = [
        f"{family} {_row(results, family, rules.LOGISTIC, 1.0)['mean']:.3f} → "
        f"{_row(results, family, rules.LOGISTIC, top)['mean']:.3f}"
        for family in SINGLE_FAMILIES
        if rules.status(rules.growth(results, family, rules.LOGISTIC), margin) == "closer to Bayes"
    ]
    if not found:
        return ""
    return (
        f"Logistic regression comes closer to Bayes as σ grows on {len(found)} of {len(SINGLE_FAMILIES)} families "
        f"(accuracy at σ = 1 → σ = {top}: {'; '.join(found)}); the rule counts that as not insensitive."
    )


def why(results, verdict) -> str:
    """Markdown: why claim 3(b) came out as it did, from the verdict and the chapter's results."""
    margin = verdict.numbers["margin"]
    parts = [decided_by(verdict)]
    parts += unmoved_rules(results, margin)
    logistic = logistic_sentence(results, margin)
    if logistic:
        parts.append(logistic)
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
