"""Claim verdicts: each chapter's experiment stores one per claim; the scorecard collects them.

A verdict holds the quantity measured, the numbers behind it, the rule that decides it (written
in the experiment's code before the numbers were seen) and the outcome. A stored verdict that
is not one (a renamed key, an unknown outcome, a non-finite time) is treated as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from uni_icl.validation import check_choice, check_keys, check_number

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


def check_scorecard_dict(data) -> None:
    """Raise a ValueError unless ``data`` is a stored scorecard: preset, wall time, a list of valid verdicts."""
    check_keys("scorecard", data, ("preset", "wall_seconds", "verdicts"))
    check_number("scorecard.wall_seconds", data["wall_seconds"], minimum=0)
    if not isinstance(data["verdicts"], list):
        raise ValueError("scorecard.verdicts: expected a list of verdicts")
    for verdict in data["verdicts"]:
        check_verdict(verdict)
