"""The reproduction scorecard: every claim of the paper measured by one call.

:func:`reproduce` runs each claim's experiment at a preset (through train-or-load, so a second
run with everything cached takes seconds), after training every chosen chapter's models at once on
worker processes (:func:`uni_icl.parallel.train_all`; a claim's own wall time then covers loading
and evaluating, the total covers all), collects the verdicts the experiments decide, times
each claim, and writes a machine-readable scorecard (JSON) atomically. A partial run (``only``)
merges its verdicts into the stored scorecard under the scorecard's lock, so two partial runs at
once keep both claims. Each experiment states its own decision rule in code; this module only runs
them and collects what they return.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from tqdm.auto import tqdm

from uni_icl.experiments import curriculum, digits, expressivity, learnability, m2icl, selection, shift
from uni_icl.experiments.rules import curriculum as curriculum_rules
from uni_icl.experiments.rules import expressivity as expressivity_rules
from uni_icl.experiments.rules import learnability as learnability_rules
from uni_icl.experiments.rules import m2icl as m2icl_rules
from uni_icl.experiments.rules import selection as selection_rules
from uni_icl.experiments.rules import shift as shift_rules
from uni_icl.parallel import train_all
from uni_icl.presets import Preset
from uni_icl.storage import DECODING_ERRORS, atomic_json_save, cache_root, checked_json_load, entry_lock
from uni_icl.validation import check_choice
from uni_icl.verdicts import CLAIMS, ClaimVerdict, check_scorecard_dict

# The chapters that decide claims, in the order of the book. Each module has the same interface:
# CLAIMS (the claim ids it decides), run(preset, *, progress) -> results, verdicts(results) -> list of
# ClaimVerdict (pure: nothing is stored), and training_plan(preset) -> the uni_icl.parallel.Job list of
# every model its run trains (uni_icl.experiments.chapter.Chapter).
CHAPTERS = (expressivity, learnability, selection, shift, curriculum, m2icl)
BOOK_CHAPTERS = (*CHAPTERS, digits)  # every experiment a page runs: the scorecard's and the digits chapter
EXPERIMENTS = {claim: chapter for chapter in CHAPTERS for claim in chapter.CLAIMS}


@dataclass(frozen=True)
class Scorecard:
    """Verdicts of the claims run at one preset, with the wall time of each experiment."""

    preset: str
    verdicts: list[ClaimVerdict]
    wall_seconds: float

    def to_dict(self) -> dict:
        """The stored form: the verdicts, and lifted from their notes for scripts to read, the convergence
        test's ``calibration`` and the ``budget_ladder`` rows (claim, steps, decisive effect, ci, ...)."""
        return {
            "preset": self.preset,
            "wall_seconds": self.wall_seconds,
            "verdicts": [asdict(v) for v in self.verdicts],
            "calibration": next((v.notes["calibration"] for v in self.verdicts if "calibration" in v.notes), None),
            "budget_ladder": [row for v in self.verdicts for row in v.notes.get("budget_ladder", [])],
        }

    @staticmethod
    def from_dict(data: dict) -> Scorecard:
        """The scorecard ``data`` holds, after :func:`check_scorecard` (a ValueError naming the claim otherwise)."""
        check_scorecard(data)
        return Scorecard(data["preset"], [ClaimVerdict(**v) for v in data["verdicts"]], data["wall_seconds"])


# The claims whose rule can be applied again to the numbers their verdict stores: the rule's text and
# the rule's outcome, before its gates, from those numbers. A verdict stored under an earlier rule (other
# text) is checked against its own record of its ungated outcome and gates.
RULE_OUTCOMES: dict[str, tuple[str, Callable[[dict], str | None]]] = {
    "1": (expressivity_rules.RULE, expressivity_rules.rule_outcome),
    "2-single": (learnability_rules.RULE_SINGLE, learnability_rules.single_rule_outcome),
    "2-mixed": (learnability_rules.RULE_MIXED, learnability_rules.mixed_rule_outcome),
    "3a": (selection_rules.RULE_3A, selection_rules.rule_outcome),
    "3b": (shift_rules.RULE_3B, shift_rules.rule_outcome),
    "4a": (curriculum_rules.RULE_4A, curriculum_rules.rule_outcome),
    "4b": (m2icl_rules.RULE_4B, m2icl_rules.rule_outcome),
}


def check_scorecard(data) -> None:
    """Raise a ValueError (one line, naming the claim) unless ``data`` is a scorecard whose every outcome
    follows from its evidence: the structure of :func:`~uni_icl.verdicts.check_scorecard_dict` (allowed
    outcomes, each claim once), then :func:`check_outcome` for each verdict."""
    check_scorecard_dict(data)
    for verdict in data["verdicts"]:
        check_outcome(verdict)


def check_outcome(verdict: dict) -> None:
    """Raise a ValueError naming the claim unless the verdict's outcome is what its rule gives.

    Where the verdict was decided under the rule in force (same text, :data:`RULE_OUTCOMES`), the rule
    is applied again to its stored numbers, and must give the ungated outcome the verdict records.
    The gates then decide: a verdict whose notes name a gate that held or an unconverged model (and
    its ``rests_on`` must agree) is 'inconclusive', any other has its ungated outcome (None:
    'inconclusive'). A verdict that records no ungated outcome (written before verdicts did) is
    checked for structure only.
    """
    claim, notes, outcome = verdict["claim"], verdict["notes"], verdict["outcome"]
    rule, rule_outcome = RULE_OUTCOMES.get(claim, (None, None))
    reapplied = rule is not None and verdict["rule"] == rule
    if not reapplied and "ungated_outcome" not in notes:
        return
    ungated = notes.get("ungated_outcome")
    if reapplied:
        try:
            ungated = rule_outcome(verdict["numbers"])
        except DECODING_ERRORS as error:
            raise ValueError(f"claim {claim}: the stored numbers lack what its rule reads ({error!r})") from None
        if notes.get("ungated_outcome", ungated) != ungated:
            raise ValueError(
                f"claim {claim}: the rule gives {ungated!r} on the stored numbers, the verdict records "
                f"{notes['ungated_outcome']!r}"
            )
    unconverged_runs = any(not run["converged"] for model in verdict.get("rests_on", []) for run in model["runs"])
    if "unconverged" in notes and bool(notes["unconverged"]) != unconverged_runs:
        raise ValueError(f"claim {claim}: notes.unconverged disagrees with the convergence recorded in rests_on")
    gated = bool(notes.get("gates")) or bool(notes.get("unconverged"))
    expected = "inconclusive" if gated or ungated is None else ungated
    if outcome != expected:
        raise ValueError(f"claim {claim}: outcome {outcome!r}, but its rule gives {expected!r} on the stored evidence")


def scorecard_path(preset: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / "scorecards" / f"scorecard-{preset}.json"


def available_claims() -> list[str]:
    """Claims that have an experiment, in the order of CLAIMS."""
    return [claim for claim in CLAIMS if claim in EXPERIMENTS]


def check_claims(only: Sequence[str] | None) -> list[str]:
    """The claims to run: all available ones, or ``only`` after checking each name."""
    if not only:
        return available_claims()
    for claim in only:
        check_choice("claim", claim, available_claims())
    return list(dict.fromkeys(only))


def reproduce(
    preset: Preset, only: Sequence[str] | None = None, *, progress: bool = True, root: Path | None = None
) -> Scorecard:
    """Run the chapters of the chosen claims, decide their verdicts, store the scorecard; returns it.

    The only place verdicts are stored: a chapter's ``verdicts`` is pure.
    """
    claims = check_claims(only)
    started = time.perf_counter()
    verdicts: dict[str, ClaimVerdict] = {}
    groups: list[tuple[ModuleType, list[str]]] = []  # each chapter once, with the claims asked of it
    for claim in claims:
        chapter = EXPERIMENTS[claim]
        if not any(known is chapter for known, _ in groups):
            groups.append((chapter, []))
        next(asked for known, asked in groups if known is chapter).append(claim)
    # every chapter's models at once, on all workers; the chapters then load them
    plan = [job for chapter, _ in groups for job in chapter.training_plan(preset)]
    train_all(plan, progress=progress, description=f"models ({preset.name})")
    for chapter, group in tqdm(groups, desc=f"claims ({preset.name})", disable=not progress):
        claim_started = time.perf_counter()
        decided = chapter.verdicts(chapter.run(preset, progress=progress))
        seconds = time.perf_counter() - claim_started
        for verdict in decided:
            if verdict.claim in group:
                verdicts[verdict.claim] = ClaimVerdict(**{**asdict(verdict), "wall_seconds": seconds})
    missing = [claim for claim in claims if claim not in verdicts]
    if missing:
        raise RuntimeError(f"experiments returned no verdict for claims {missing}")
    card = Scorecard(preset.name, [verdicts[c] for c in claims], time.perf_counter() - started)
    path = scorecard_path(preset.name, root)
    with entry_lock(path):  # read-modify-write: a concurrent run waits here instead of dropping our claims
        stored = load_scorecard(preset.name, root)
        if stored is not None and only:  # a partial run updates the stored card instead of replacing it
            kept = [v for v in stored.verdicts if v.claim not in verdicts]
            order = list(CLAIMS)
            merged = sorted(kept + card.verdicts, key=lambda v: order.index(v.claim))
            card = Scorecard(preset.name, merged, card.wall_seconds)
        atomic_json_save(card.to_dict(), path)
    return card


def load_scorecard(preset: str, root: Path | None = None) -> Scorecard | None:
    """The stored scorecard of ``preset``, or None."""
    data = checked_json_load(scorecard_path(preset, root), check_scorecard)
    return None if data is None else Scorecard.from_dict(data)


def format_table(card: Scorecard) -> str:
    """The scorecard as a plain-text table (one block per claim)."""
    lines = [f"Reproduction scorecard, preset {card.preset} (wall time {card.wall_seconds:.1f} s)"]
    for verdict in card.verdicts:
        lines.append("")
        lines.append(f"[{verdict.claim}] {CLAIMS[verdict.claim]}")
        lines.append(f"  verdict : {verdict.outcome.upper()}  ({verdict.wall_seconds:.1f} s, {verdict.chapter})")
        lines.append(f"  measured: {verdict.quantity}")
        lines.append(f"  rule    : {verdict.rule}")
        if verdict.rests_on:
            runs = [run for model in verdict.rests_on for run in model["runs"]]
            converged = sum(run["converged"] for run in runs)
            lines.append(f"  rests on: {len(verdict.rests_on)} models, {converged} of {len(runs)} runs converged")
        for name, value in flatten_numbers(verdict.numbers).items():
            lines.append(f"  {name}: {_format_number(value)}")
    return "\n".join(lines)


def flatten_numbers(numbers: dict, prefix: str = "") -> dict:
    """Nested dicts of numbers as one level with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat = {}
    for name, value in numbers.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten_numbers(value, f"{key}."))
        else:
            flat[key] = value
    return flat


def _format_number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"  # a quantity that does not apply (stored as null): not "None" or "nan"
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_number(v) for v in value) + "]"
    return str(value)
