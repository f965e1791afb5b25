"""Claim verdicts: each chapter's experiment stores one per claim; the scorecard collects them.

A verdict holds the quantity measured, the numbers behind it, the rule that decides it (written
in the experiment's code before the numbers were seen) and the outcome. A stored verdict that
is not one (a renamed key, an unknown outcome, a non-finite time) is treated as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from uni_icl.validation import check_choice, check_int, check_keys, check_number

OUTCOMES = ("reproduced", "not reproduced", "inconclusive")
CLAIMS = {
    "1": "Expressiveness: ICL can represent the typical meta-learners' algorithms",
    "2-single": "Learnability, single type: ICL matches the optimal meta-learner on its own family",
    "2-mixed": "Learnability, mixed types: ICL stays optimal on a mixture; meta-learners fall behind",
    "3a": "Unseen task type: ICL handles a task type that selecting among known algorithms cannot",
    "3b": "Distribution shift: ICL degrades with noise, an explicit algorithm does not",
    "4a": "Meta-level curriculum speeds up pre-training convergence",
    "4b": "Meta-level meta-learning (M2-ICL) beats ICL when adapting with few tasks",
}


@dataclass(frozen=True)
class ClaimVerdict:
    """The outcome of one claim at one preset."""

    claim: str  # a key of CLAIMS
    preset: str
    quantity: str  # what was measured, in words
    numbers: dict  # the measurements behind the verdict (means, CIs, ...)
    rule: str  # the decision rule, as stated in the experiment's code
    outcome: str  # one of OUTCOMES
    chapter: str  # the book page that shows the evidence, e.g. "book/02_learnability"
    wall_seconds: float = 0.0  # time the experiment took (0 when loaded from the cache)
    notes: dict = field(default_factory=dict)
    # the trained models the rule compared: {"learner", "train_family", "runs": [{"seed", "steps",
    # "converged"}, ...]} each (empty where a chapter does not record them yet)
    rests_on: list = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("claim", self.claim, CLAIMS)
        check_choice("outcome", self.outcome, OUTCOMES)


def check_verdict(data) -> None:
    """Raise a ValueError unless ``data`` is a stored :class:`ClaimVerdict` (as ``asdict`` writes it)."""
    check_keys("verdict", data, [f.name for f in fields(ClaimVerdict)])
    check_choice("verdict.claim", data["claim"], CLAIMS)
    check_choice("verdict.outcome", data["outcome"], OUTCOMES)
    for name in ("preset", "quantity", "rule", "chapter"):
        if not isinstance(data[name], str):
            raise ValueError(f"verdict.{name}: expected a string, got {type(data[name]).__name__}")
    for name in ("numbers", "notes"):
        if not isinstance(data[name], dict):
            raise ValueError(f"verdict.{name}: expected a dict, got {type(data[name]).__name__}")
    check_number("verdict.wall_seconds", data["wall_seconds"], minimum=0)
    check_rests_on(data["rests_on"])


def check_rests_on(records) -> None:
    """Raise a ValueError unless ``records`` is a verdict's list of compared models with their runs."""
    if not isinstance(records, list):
        raise ValueError("verdict.rests_on: expected a list of models")
    for record in records:
        check_keys("verdict.rests_on[]", record, ("learner", "train_family", "runs"))
        if not isinstance(record["runs"], list) or not record["runs"]:
            raise ValueError("verdict.rests_on[].runs: expected a non-empty list of runs")
        for run in record["runs"]:
            check_keys("verdict.rests_on[].runs[]", run, ("seed", "steps", "converged"))
            check_int("verdict.rests_on[].runs[].seed", run["seed"], minimum=0)
            check_int("verdict.rests_on[].runs[].steps", run["steps"], minimum=0)
            if not isinstance(run["converged"], bool):
                raise ValueError("verdict.rests_on[].runs[].converged: expected true or false")


def check_scorecard_dict(data) -> None:
    """Raise a ValueError unless ``data`` is a stored scorecard: preset, wall time, a list of valid verdicts."""
    check_keys("scorecard", data, ("preset", "wall_seconds", "verdicts"))
    check_number("scorecard.wall_seconds", data["wall_seconds"], minimum=0)
    if not isinstance(data["verdicts"], list):
        raise ValueError("scorecard.verdicts: expected a list of verdicts")
    for verdict in data["verdicts"]:
        check_verdict(verdict)
