"""Claim verdicts: each chapter's experiment stores one per claim; the scorecard collects them.

A verdict holds the quantity measured, the numbers behind it, the rule that decides it (written
in the experiment's code before the numbers were seen) and the outcome. A stored verdict that
is not one (a renamed key, an unknown outcome, a non-finite time) is treated as missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import NamedTuple

from uni_icl.validation import check_choice, check_int, check_keys, check_number, check_positive

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
# Where a claim needs a comparison's 95% interval to lie, against its margin m > 0: above +m (a gain),
# above -m (no loss), below -m (a loss), below +m (no gain), or within (-m, +m) (no practical difference).
DIRECTIONS = ("above +m", "above -m", "below -m", "below +m", "within ±m")
DECISIVE_KEYS = ("label", "effect", "ci", "margin")
LABEL_LENGTH = 60  # characters at most in a decisive effect's label (it is shown beside the scorecard figure)


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


class Comparison(NamedTuple):
    """One comparison a rule reads: an effect with its 95% interval against a margin.

    ``interval``: the effect and its 95% half-width, as a :class:`uni_icl.evaluation.Difference`
    (anything with ``mean`` and ``ci``) or a (mean, ci) pair as verdicts store them; ``margin``:
    the rule's margin m > 0 on the effect's scale (an accuracy difference, a log ratio);
    ``direction``: where the claim needs the interval to lie, one of :data:`DIRECTIONS`.
    """

    label: str
    interval: object
    margin: float
    direction: str


def _mean_ci(interval) -> tuple[float, float]:
    if hasattr(interval, "mean") and hasattr(interval, "ci"):
        return float(interval.mean), float(interval.ci)
    mean, ci = interval
    return float(mean), float(ci)


def _one_sided(lower: float, upper: float, direction: str, margin: float) -> tuple[float, float]:
    """(slack, beyond) of an 'above'/'below' direction, in units of the margin (see :func:`decisive`)."""
    threshold = margin if direction.endswith("+m") else -margin
    if direction.startswith("above"):
        return (lower - threshold) / margin, (threshold - upper) / margin
    return (threshold - upper) / margin, (lower - threshold) / margin


def slack_and_beyond(comparison: Comparison) -> tuple[float, float]:
    """How a comparison's interval lies against where its claim needs it, in units of its margin.

    Returns (slack, beyond): ``slack`` is how far the interval's nearer bound lies inside the
    needed region (> 0: the comparison passes; the smaller, the closer to failing); ``beyond`` is
    how far the whole interval lies outside it (> 0: even its farther bound is outside). For
    'within ±m' both bounds count: slack min(lower + m, m - upper) / m, beyond
    max(lower - m, -m - upper) / m.
    """
    mean, ci = _mean_ci(comparison.interval)
    lower, upper, margin = mean - ci, mean + ci, comparison.margin
    if comparison.direction == "within ±m":
        above, below = _one_sided(lower, upper, "above -m", margin), _one_sided(lower, upper, "below +m", margin)
        return min(above[0], below[0]), max(above[1], below[1])
    return _one_sided(lower, upper, comparison.direction, margin)


def straddle(comparison: Comparison) -> float:
    """How far a comparison's interval reaches across the bound its direction reads, on both sides,
    in units of its margin: max over those bounds b of min(b - lower, upper - b) / m (> 0: the
    interval crosses b). The bounds: -m for 'above -m' and 'below -m', +m for 'above +m' and
    'below +m', both for 'within ±m' (an interval that crosses +m says nothing about 'above -m')."""
    mean, ci = _mean_ci(comparison.interval)
    margin = comparison.margin
    bounds = {"-": (-margin,), "+": (margin,), "±": (-margin, margin)}[comparison.direction[-2]]
    return max(min(bound - (mean - ci), mean + ci - bound) for bound in bounds) / margin


def decisive(comparisons: Iterable[Comparison | tuple], outcome: str) -> dict:
    """The comparison that decided ``outcome``, as a verdict's ``numbers["decisive"]``.

    ``comparisons``: every comparison the rule reads (or, for a rule that counts several groups,
    those of the groups that decided it), each a :class:`Comparison` or a (label, interval, margin,
    direction) tuple; ``outcome``: the rule's outcome before any gate that reads no comparison
    (such as a convergence test). Distances are in units of each comparison's margin
    (:func:`slack_and_beyond`, :func:`straddle`), so comparisons on different scales can be ranked:

    - 'not reproduced': the comparison whose interval lies furthest outside where the claim needs it
      (largest ``beyond``);
    - 'reproduced': the comparison closest to failing (smallest ``slack``);
    - 'inconclusive': the comparison whose interval crosses -m or +m the widest (largest
      :func:`straddle`), or, if none crosses, the one closest to failing.

    Returns ``{"label": str, "effect": float, "ci": float, "margin": float}``: the effect, its 95%
    half-width and the margin m > 0, all on the comparison's scale. Raises a ValueError for no
    comparisons, an unknown outcome or direction, a margin that is not > 0, a label longer than
    :data:`LABEL_LENGTH`, or a non-finite effect or half-width.
    """
    check_choice("outcome", outcome, OUTCOMES)
    found = [Comparison(*comparison) for comparison in comparisons]
    if not found:
        raise ValueError("comparisons: expected at least one comparison")
    for comparison in found:
        check_choice("comparison.direction", comparison.direction, DIRECTIONS)
        check_positive("comparison.margin", comparison.margin)
    if outcome == "not reproduced":
        chosen = max(found, key=lambda comparison: slack_and_beyond(comparison)[1])
    elif outcome == "inconclusive" and max(map(straddle, found)) > 0:
        chosen = max(found, key=straddle)
    else:
        chosen = min(found, key=lambda comparison: slack_and_beyond(comparison)[0])
    if not isinstance(chosen.label, str) or len(chosen.label) > LABEL_LENGTH:
        raise ValueError(f"comparison.label: expected at most {LABEL_LENGTH} characters, got {chosen.label!r}")
    effect, ci = _mean_ci(chosen.interval)
    entry = {"label": chosen.label, "effect": effect, "ci": ci, "margin": float(chosen.margin)}
    check_decisive(entry)
    return entry


def check_decisive(data) -> None:
    """Raise a ValueError unless ``data`` is a verdict's decisive effect (see :func:`decisive`)."""
    check_keys("verdict.numbers.decisive", data, DECISIVE_KEYS)
    if not isinstance(data["label"], str) or not data["label"]:
        raise ValueError(f"verdict.numbers.decisive.label: expected a non-empty string, got {data['label']!r}")
    check_number("verdict.numbers.decisive.effect", data["effect"])
    check_number("verdict.numbers.decisive.ci", data["ci"], minimum=0)
    check_positive("verdict.numbers.decisive.margin", data["margin"])


def check_verdict(data) -> None:
    """Raise a ValueError unless ``data`` is a stored :class:`ClaimVerdict` (as ``asdict`` writes it; the
    committed GPU scorecards under ``gpu_results/`` were written before ``rests_on`` existed)."""
    names = [f.name for f in fields(ClaimVerdict)]
    if isinstance(data, dict) and "rests_on" not in data:
        names.remove("rests_on")
    check_keys("verdict", data, names)
    check_choice("verdict.claim", data["claim"], CLAIMS)
    check_choice("verdict.outcome", data["outcome"], OUTCOMES)
    for name in ("preset", "quantity", "rule", "chapter"):
        if not isinstance(data[name], str):
            raise ValueError(f"verdict.{name}: expected a string, got {type(data[name]).__name__}")
    for name in ("numbers", "notes"):
        if not isinstance(data[name], dict):
            raise ValueError(f"verdict.{name}: expected a dict, got {type(data[name]).__name__}")
    if "decisive" in data["numbers"]:
        check_decisive(data["numbers"]["decisive"])
    check_number("verdict.wall_seconds", data["wall_seconds"], minimum=0)
    check_rests_on(data.get("rests_on", []))


def model_record(learner: str, train_family: str, runs: Iterable[dict]) -> dict:
    """One entry of a verdict's ``rests_on``: a compared model (learner, training family) and, per seed,
    the seed, the steps run and whether the run passed the convergence test (read from ``runs``, the
    chapters' training records)."""
    return {
        "learner": learner,
        "train_family": train_family,
        "runs": [
            {
                "seed": r["seed"],
                "steps": r["steps"],
                "converged": bool(r["converged"]),
                "remaining_gain_bound": _finite_or_none(r.get("remaining_gain_bound")),
            }
            for r in runs
        ],
    }


def _finite_or_none(value: float | None) -> float | None:
    """A run's remaining-gain bound as stored: None where there is none or it is infinite (too short a curve)."""
    return value if value is not None and math.isfinite(value) else None


def check_rests_on(records) -> None:
    """Raise a ValueError unless ``records`` is a verdict's list of compared models with their runs."""
    if not isinstance(records, list):
        raise ValueError("verdict.rests_on: expected a list of models")
    for record in records:
        check_keys("verdict.rests_on[]", record, ("learner", "train_family", "runs"))
        if not isinstance(record["runs"], list) or not record["runs"]:
            raise ValueError("verdict.rests_on[].runs: expected a non-empty list of runs")
        for run in record["runs"]:
            check_keys("verdict.rests_on[].runs[]", run, ("seed", "steps", "converged", "remaining_gain_bound"))
            check_int("verdict.rests_on[].runs[].seed", run["seed"], minimum=0)
            check_int("verdict.rests_on[].runs[].steps", run["steps"], minimum=0)
            if not isinstance(run["converged"], bool):
                raise ValueError("verdict.rests_on[].runs[].converged: expected true or false")


def check_calibration(data) -> None:
    """Raise a ValueError unless ``data`` is None or :func:`uni_icl.convergence.calibration`'s record."""
    if data is None:
        return
    keys = ("margin", "horizon_doublings", "runs", "points", "points_converged", "later_gain", "share_below_margin")
    check_keys("scorecard.calibration", data, keys)
    for key in ("runs", "points", "points_converged", "horizon_doublings"):
        check_int(f"scorecard.calibration.{key}", data[key], minimum=0)
    if data["later_gain"] is not None:
        check_keys("scorecard.calibration.later_gain", data["later_gain"], ("median", "p95", "max"))
    if data["share_below_margin"] is not None:
        check_number("scorecard.calibration.share_below_margin", data["share_below_margin"], minimum=0, maximum=1)


def check_budget_ladder(rows) -> None:
    """Raise a ValueError unless ``rows`` is a list of budget-ladder rows (claim, steps, effect, ci, ...)."""
    if not isinstance(rows, list):
        raise ValueError("scorecard.budget_ladder: expected a list of rows")
    for row in rows:
        if not isinstance(row, dict) or not {"claim", "steps", "effect", "ci"} <= set(row):
            raise ValueError("scorecard.budget_ladder[]: expected claim, steps, effect and ci")
        check_int("scorecard.budget_ladder[].steps", row["steps"], minimum=1)
        check_number("scorecard.budget_ladder[].effect", row["effect"])
        check_number("scorecard.budget_ladder[].ci", row["ci"], minimum=0)


def check_scorecard_dict(data) -> None:
    """Raise a ValueError unless ``data`` is a stored scorecard: preset, wall time, a list of valid verdicts
    (outcomes from :data:`OUTCOMES`), each claim at most once. Whether each outcome is what its rule
    gives is :func:`uni_icl.scorecard.check_scorecard`'s part (it needs the chapters' rules)."""
    check_keys("scorecard", data, ("preset", "wall_seconds", "verdicts", "calibration", "budget_ladder"))
    check_number("scorecard.wall_seconds", data["wall_seconds"], minimum=0)
    check_calibration(data["calibration"])
    check_budget_ladder(data["budget_ladder"])
    if not isinstance(data["verdicts"], list):
        raise ValueError("scorecard.verdicts: expected a list of verdicts")
    for verdict in data["verdicts"]:
        check_verdict(verdict)
    claims = [verdict["claim"] for verdict in data["verdicts"]]
    for claim in dict.fromkeys(claims):
        if claims.count(claim) > 1:
            raise ValueError(f"claim {claim}: appears {claims.count(claim)} times in the scorecard; allowed: once")
