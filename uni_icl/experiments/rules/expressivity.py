"""The science of claim 1 (expressivity), in one place: the rule's text (``RULE``), the function
that decides it (:func:`decide`), the evidence it reads (:func:`evidence`: the imitation's agreement
with each teacher minus each other meta-learner's) and the comparisons it states
(:func:`comparisons`), with the convergence tolerances of the compared teachers and students.

Running the chapter is :mod:`uni_icl.experiments.expressivity`; it builds the verdict from these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from uni_icl.evaluation import Difference
from uni_icl.experiments.evidence import (
    MARGIN,
)
from uni_icl.presets import STUDENT_TOLERANCE
from uni_icl.uncertainty import seeded_difference
from uni_icl.verdicts import Comparison

if TYPE_CHECKING:
    from uni_icl.experiments.expressivity import ImitationResults


EXACT_RELATIVE_TOLERANCE = 1e-4  # float32: max |difference| <= this * max(1, max |output|)


# Written with the seeds, before any seeded result was seen (the single-seed quick numbers of the
# previous rule were known): the decision margin on a difference of argmax agreements (fractions of
# predictions) is the book's one margin (evidence.MARGIN), used in both directions.
# Convergence tests (uni_icl.convergence.remaining_gain, since 2026-12-07; before, the last-quarter
# test): a teacher passes when the bound on the validation-accuracy gain the next 3 doublings of its
# budget could bring is below TEACHER_CONVERGENCE_TOLERANCE (chapter 2's, equal to the margin); a
# student, whose validation score is minus its mean KL to the teacher, when the same bound on the KL
# it could still lose is below STUDENT_CONVERGENCE_TOLERANCE nats.
TEACHER_CONVERGENCE_TOLERANCE = MARGIN
STUDENT_CONVERGENCE_TOLERANCE = STUDENT_TOLERANCE  # presets: half the margin, in nats of KL


IMITATION_LABEL = "ICL imitation (distilled)"
WARM_LABEL = "ICL trained on labels (before distillation)"


RULE = (
    "For each teacher (MatchNet trained on pairwise, ProtoNet on prototype, CNP on amortized) and each of the "
    "scale's training seeds s, the ICL transformer distilled from the teacher of seed s (its initial weights and "
    "training episodes drawn with s) is compared with that teacher on the shared test episodes of the teacher's "
    "family by argmax agreement (the fraction of predictions, over shot counts, whose most probable class is one "
    "of the teacher's). The yardstick is the agreement of each other meta-learner of seed s (trained on its own "
    "family) with the same teacher on the same episodes. For every teacher and every other meta-learner, "
    "D = agreement(ICL imitation) - agreement(other meta-learner), with a 95% interval over seeds and test "
    f"episodes. 'reproduced' if every D's interval lies above +{MARGIN}; 'not reproduced' if some D's interval "
    f"lies below -{MARGIN}; 'inconclusive' otherwise. If any seed of a teacher fails the convergence test (upper "
    "95% bound of its validation-accuracy gain per doubling of the budget, over the last two doublings, times 3 "
    f"doublings to come, not below {TEACHER_CONVERGENCE_TOLERANCE}) or any seed of a student does (the same bound on "
    f"the validation KL it could still lose not below {STUDENT_CONVERGENCE_TOLERANCE} nats), the outcome "
    "is 'inconclusive' and "
    "names them. The hand-set constructions (MatchNet, ProtoNet and CNP from any weights, one gradient step on the "
    "squared loss) are exact by construction: they are checked (float32 difference at most "
    f"{EXACT_RELATIVE_TOLERANCE:g} x max(1, max |output|)), reported, and a failed check stops the experiment as a "
    "bug; they are not evidence for this verdict."
)


def decide(differences: dict[str, dict[str, Difference]], margin: float = MARGIN) -> str:
    """Outcome of RULE (before the convergence gate) from ``differences[teacher][other meta-learner]``,
    each the imitation's agreement minus the other meta-learner's, with its interval."""
    every = [diff for by_other in differences.values() for diff in by_other.values()]
    if not every:
        raise ValueError("differences: expected at least one teacher with one other meta-learner")
    if any(diff.upper < -margin for diff in every):
        return "not reproduced"
    if all(diff.lower > margin for diff in every):
        return "reproduced"
    return "inconclusive"


def evidence(results: ImitationResults) -> tuple[dict[str, dict[str, Difference]], dict]:
    """The differences RULE reads (teacher -> other meta-learner -> imitation minus other) and the numbers
    stored with the verdict."""
    rows = {(row["teacher"], row["learner"]): row for row in results.agreements}
    differences: dict[str, dict[str, Difference]] = {}
    numbers: dict = {"margin": MARGIN}
    for teacher_name in dict.fromkeys(row["teacher"] for row in results.agreements):
        imitation = rows[(teacher_name, IMITATION_LABEL)]
        others = [
            label for (name, label) in rows if name == teacher_name and label not in (IMITATION_LABEL, WARM_LABEL)
        ]
        differences[teacher_name] = {
            other: seeded_difference(imitation["per_seed_episode"], rows[(teacher_name, other)]["per_seed_episode"])
            for other in others
        }
        numbers[teacher_name] = {
            "imitation_agreement": [imitation["mean"], imitation["ci"]],
            "imitation_total_variation": [imitation["tv_mean"], imitation["tv_ci"]],
            **{
                f"{other}_agreement": [rows[(teacher_name, other)]["mean"], rows[(teacher_name, other)]["ci"]]
                for other in others
            },
            **{f"imitation_minus_{other}": [diff.mean, diff.ci] for other, diff in differences[teacher_name].items()},
        }
    return differences, numbers


def comparisons(differences: dict[str, dict[str, Difference]], margin: float = MARGIN) -> list[Comparison]:
    """Every difference RULE reads, as a comparison that needs its interval above +margin."""
    return [
        Comparison(f"ICL imitation − {other}, agreement with {teacher_name}", difference, margin, "above +m")
        for teacher_name, by_other in differences.items()
        for other, difference in by_other.items()
    ]
