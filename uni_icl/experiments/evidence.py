"""What every chapter's verdicts rest on: scores over training seeds, intervals over seeds and test
episodes, and the convergence test of each compared run.

Shared by the chapters' rules (one margin, one convergence tolerance, one way to read a difference):
``seeded_row`` turns the evaluations of a model's seeds into one table row with per-seed scores;
``row_difference`` reads a - b between two such rows (:func:`uni_icl.uncertainty.seeded_difference`);
``training_record`` is one run's training with its convergence test (:mod:`uni_icl.convergence`);
``gated`` makes an outcome inconclusive when a compared run failed it, and ``unconverged`` /
``training_note`` say which; ``direction`` reads an effect's sign and size beside the margin's reading;
``seeds_needed`` says how many seeds would decide an interval that straddles the margin.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from uni_icl.convergence import HORIZON_DOUBLINGS, remaining_gain
from uni_icl.evaluation import Difference, EvalResult
from uni_icl.experiments.rules.previous import previous_outcome
from uni_icl.learners import display_name
from uni_icl.presets import MARGIN
from uni_icl.runs import TrainedLearner
from uni_icl.uncertainty import seeded_difference, seeds_to_decide, spreads, t_interval
from uni_icl.verdicts import ClaimVerdict

# The one decision margin of every claim's rule (accuracy), used symmetrically: a difference whose
# 95% interval lies above +MARGIN is a gain, below -MARGIN a loss, within (-MARGIN, +MARGIN) no
# practical difference. Fixed before any result was seen; defined with the presets (MARGIN there),
# whose stopping tolerances derive from it.
# The same for ratios (steps to a threshold, regression errors), on the log scale: a ratio within
# 10% of 1 (|log ratio| < log 1.1) is no practical difference.
LOG_MARGIN = math.log(1.1)
# Every difference is over the scale's training seeds and the shared test episodes
# (uni_icl.uncertainty.seeded_difference), and every seed of every model a rule compares must pass
# the convergence test with this tolerance. The test (uni_icl.convergence.remaining_gain) bounds the
# gain the next HORIZON_DOUBLINGS doublings of the budget could bring; it replaced, on 2026-12-07
# (issue "verdicts decided by the claims, not by the training budget"), the last-quarter test that
# was also the stopping rule and so passed by construction (the previous outcomes are kept in
# uni_icl.experiments.rules.previous).
CONVERGENCE_TOLERANCE = MARGIN

RULE_CONVERGED = (
    f" Differences are over the training seeds and the shared test episodes (95% intervals over both). If any seed "
    "of any model the rule compares fails the convergence test (the upper 95% bound of its validation-accuracy gain "
    f"per doubling of the budget, fitted over the last two doublings, times {HORIZON_DOUBLINGS} doublings to come, "
    f"is not below {CONVERGENCE_TOLERANCE}), the outcome is 'inconclusive' and names the models."
)


def training_record(model: TrainedLearner) -> dict:
    """How one seed of a model was trained, with the convergence test's result (uni_icl.convergence)."""
    history = model.history
    check = remaining_gain(history.steps, history.val_score, CONVERGENCE_TOLERANCE)
    return {
        "seed": model.spec.train.seed,
        "steps": history.steps[-1] if history.steps else 0,
        "max_steps": model.spec.train.max_steps,
        "best_step": history.best_step,
        "best_val": max(history.val_score) if history.val_score else math.nan,
        "stopped_early": history.stopped_early,
        "stopped_by_time": history.stopped_by_time,
        "converged": check.converged,
        "gain_per_doubling": check.per_doubling,
        "remaining_gain_bound": check.bound,
        "seconds": history.seconds,
        "val_steps": list(history.steps),
        "val_score": list(history.val_score),
    }


def seeded_row(results: list[EvalResult]) -> dict:
    """One table row's scores from the evaluations of a model's seeds on one test family.

    ``mean`` and ``ci``: mean accuracy over seeds, shot counts and episodes, with its 95% interval
    over seeds and episodes; ``seed_means``: each seed's mean; ``per_episode_mean``: per episode,
    over seeds; ``per_seed_episode_mean``: (S, n) for paired comparisons (:func:`row_difference`);
    ``per_position`` and its ``per_position_ci``: the per-shot curve over seeds, its interval the
    spread over seeds plus the seeds' mean episode interval (a band for the eye, not a test).
    """
    per_seed = np.array([result.per_episode_mean for result in results])
    total = seeded_difference(per_seed, np.zeros((1, per_seed.shape[1])))
    curves = np.array([result.per_position for result in results])
    episode_ci = np.array([result.per_position_ci for result in results]).mean(0)
    mean_curve, seed_half = t_interval(curves)
    return {
        "mean": total.mean,
        "ci": total.ci,
        "seed_means": [result.mean for result in results],
        "per_position": mean_curve.tolist(),
        "per_position_ci": (seed_half + episode_ci).tolist(),
        "per_episode_mean": per_seed.mean(0).tolist(),
        "per_seed_episode_mean": per_seed.tolist(),
    }


def row_difference(a: dict, b: dict) -> Difference:
    """a - b for two rows on the same test family, over their seeds and the shared test episodes."""
    return seeded_difference(a["per_seed_episode_mean"], b["per_seed_episode_mean"])


def per_seed_difference(a: dict, b: dict) -> list[float]:
    """Each seed's mean of a - b (rows of one test family; a single-row side is paired with every seed)."""
    first, second = np.asarray(a["per_seed_episode_mean"]), np.asarray(b["per_seed_episode_mean"])
    return (first - second).mean(1).tolist()


def side(interval: Difference, margin: float = MARGIN) -> str:
    """Where an interval lies against a symmetric margin: 'above +m', 'below -m', 'within ±m' or 'crosses ±m'."""
    if interval.lower > margin:
        return "above +m"
    if interval.upper < -margin:
        return "below -m"
    if interval.lower > -margin and interval.upper < margin:
        return "within ±m"
    return "crosses ±m"


def reading(interval: Difference, margin: float = MARGIN) -> str:
    """How ``interval`` (of a - b) reads for a claim that a beats b by more than the margin: 'supports'
    (above +m), 'contradicts' (below -m, or within ±m: no practical difference does not support a
    claim of superiority either) or 'undecided' (it crosses +m or -m)."""
    return {"above +m": "supports", "below -m": "contradicts", "within ±m": "contradicts"}.get(
        side(interval, margin), "undecided"
    )


OUTCOME_OF_READING = {"supports": "reproduced", "contradicts": "not reproduced", "undecided": "inconclusive"}


def direction(interval: Difference, margin: float = MARGIN) -> str:
    """The sign of an effect a - b (> 0: better for the claim) and its size against the margin, whether or not
    the rule's reading (:func:`reading`) counts it: 'better, by more than the margin' (interval above +m),
    'better, by less than the margin' (within (0, +m)), 'better, by an amount the interval cannot place
    against the margin' (above 0, crossing +m), 'no significant difference' (the interval holds 0), and the
    same three with 'worse'."""
    if interval.lower <= 0 <= interval.upper:
        return "no significant difference"
    sign = "better" if interval.lower > 0 else "worse"
    near, far = sorted((abs(interval.lower), abs(interval.upper)))
    if near > margin:
        return f"{sign}, by more than the margin"
    if far < margin:
        return f"{sign}, by less than the margin"
    return f"{sign}, by an amount the interval cannot place against the margin"


# The power at which seeds_needed counts the seeds that would decide an interval: the interval
# decides with this probability if the true effect and the spreads are those measured.
DECISION_POWER = 0.8


def seeds_needed(label: str, per_seed: list[float], interval: Difference, margin: float) -> dict:
    """How many training seeds would decide the comparison ``label`` (an interval over seeds and episodes
    against ±margin), from its per-seed means and interval (:func:`uni_icl.uncertainty.seeds_to_decide`):
    the seeds run now, the seeds that would decide it with probability :data:`DECISION_POWER` (None: no
    number up to 100; the effect lies too close to a bound or the test episodes' part is too wide),
    and the two spreads behind the interval. Stored in a verdict's ``numbers["seeds_to_decide"]``."""
    parts = spreads(per_seed, interval.ci)
    return {
        "comparison": label,
        "seeds": len(per_seed),
        "seeds_to_decide": seeds_to_decide(per_seed, interval.ci, margin, power=DECISION_POWER),
        "power": DECISION_POWER,
        "seed_sd": parts.seed_sd,
        "episode_se": parts.episode_se,
    }


def run_columns(run: dict) -> dict:
    """The columns a chapter's training table shows for one run of :func:`training_record`."""
    return {
        "seed": run["seed"],
        "steps run": run["steps"],
        "max steps": run["max_steps"],
        "best step": run["best_step"],
        "best validation accuracy": run["best_val"],
        "stopped early": run["stopped_early"],
        "converged": run["converged"],
        "remaining-gain bound": run["remaining_gain_bound"],
        "training seconds": run["seconds"],
    }


def model_name(record: dict) -> str:
    """'learner on family': how a ``rests_on`` record names its model."""
    return f"{display_name(record['learner'])} on {record['train_family']}"


def unconverged(records: list[dict], name: Callable[[dict], str] = model_name) -> list[str]:
    """'<name> (seeds ...)' for every model of ``records`` (``rests_on`` entries) with a seed that failed
    the convergence test."""
    return [
        f"{name(r)} (seeds " + ", ".join(str(run["seed"]) for run in r["runs"] if not run["converged"]) + ")"
        for r in records
        if not all(run["converged"] for run in r["runs"])
    ]


def gated(outcome: str, records: list[dict]) -> str:
    """``outcome``, or 'inconclusive' when a compared model failed the convergence test (RULE_CONVERGED)."""
    return "inconclusive" if unconverged(records) else outcome


def decisive_ladder_rows(ladder: list[dict], claim: str) -> list[dict]:
    """The rows of a chapter's budget ladder that the scorecard JSON's ``budget_ladder`` keeps for
    ``claim``: at each budget, the decisive comparison (claim, steps, effect, ci, label) and the rule's
    outcome before and after the convergence gate."""
    keys = ("claim", "steps", "effect", "ci", "label", "ungated_outcome", "outcome")
    return [{key: row[key] for key in keys} for row in ladder if row["kind"] == "decisive" and row["claim"] == claim]


def gated_verdict(
    claim: str,
    ungated: str,
    models: list[dict],
    *,
    preset: str,
    quantity: str,
    numbers: dict,
    rule: str,
    chapter: str,
    wall_seconds: float,
    notes: dict | None = None,
) -> ClaimVerdict:
    """The verdict of ``claim`` whose rule gave ``ungated`` from the comparisons of ``models`` (``rests_on``
    records): its outcome is ``ungated``, or 'inconclusive' when a compared model failed the convergence
    test (RULE_CONVERGED); the notes name those models and keep the ungated outcome, then ``notes``."""
    return ClaimVerdict(
        claim=claim,
        preset=preset,
        quantity=quantity,
        numbers=numbers,
        rule=rule,
        outcome=gated(ungated, models),
        chapter=chapter,
        wall_seconds=wall_seconds,
        notes={
            "unconverged": unconverged(models),
            "ungated_outcome": ungated,
            **(notes or {}),
            **previous_outcome(claim),
        },
        rests_on=models,
    )


def training_note(verdict: ClaimVerdict) -> str:
    runs = [run for record in verdict.rests_on for run in record["runs"]]
    if not runs:
        return ""
    failed = verdict.notes.get("unconverged", [])
    text = f" {sum(run['converged'] for run in runs)} of the {len(runs)} compared runs passed the convergence test."
    if failed:
        text += (
            f" Not converged: {'; '.join(failed)}; so the outcome is inconclusive (without this condition the rule "
            f"would give '{verdict.notes.get('ungated_outcome', '?')}')."
        )
    return text
