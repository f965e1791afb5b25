"""The reproduction scorecard: every claim of the paper measured by one call.

:func:`reproduce` runs each claim's experiment at a preset (through train-or-load, so a second
run with everything cached takes seconds), collects the verdicts the experiments decide, times
each claim, and writes a machine-readable scorecard (JSON) atomically. Each experiment states its
own decision rule in code; this module only runs them and collects what they return.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from uni_icl.presets import preset_name
from uni_icl.storage import atomic_json_save, cache_root, checked_json_load
from uni_icl.validation import check_choice
from uni_icl.verdicts import CLAIMS, ClaimVerdict

# claim ids -> "module:function"; the function takes (preset, progress) and returns the verdicts
# of the claims it measures (one experiment may decide several claims).
EXPERIMENTS: dict[str, str] = {}


@dataclass(frozen=True)
class Scorecard:
    """Verdicts of the claims run at one preset, with the wall time of each experiment."""

    preset: str
    verdicts: list[ClaimVerdict]
    wall_seconds: float

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "wall_seconds": self.wall_seconds,
            "verdicts": [asdict(v) for v in self.verdicts],
        }

    @staticmethod
    def from_dict(data: dict) -> Scorecard:
        return Scorecard(data["preset"], [ClaimVerdict(**v) for v in data["verdicts"]], data["wall_seconds"])


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


def _experiment(claim: str) -> Callable[[str, bool], list[ClaimVerdict]]:
    module, function = EXPERIMENTS[claim].split(":")
    return getattr(importlib.import_module(module), function)


def reproduce(
    preset: str | None = None, only: Sequence[str] | None = None, *, progress: bool = True, root: Path | None = None
) -> Scorecard:
    """Run the experiments of the chosen claims and store the scorecard; returns it."""
    preset = preset_name(preset)
    claims = check_claims(only)
    started = time.perf_counter()
    verdicts: dict[str, ClaimVerdict] = {}
    groups: dict[str, list[str]] = {}
    for claim in claims:
        groups.setdefault(EXPERIMENTS[claim], []).append(claim)
    for group in tqdm(list(groups.values()), desc=f"claims ({preset})", disable=not progress):
        claim_started = time.perf_counter()
        decided = _experiment(group[0])(preset, progress)
        seconds = time.perf_counter() - claim_started
        for verdict in decided:
            if verdict.claim in group:
                verdicts[verdict.claim] = ClaimVerdict(**{**asdict(verdict), "wall_seconds": seconds})
    missing = [claim for claim in claims if claim not in verdicts]
    if missing:
        raise RuntimeError(f"experiments returned no verdict for claims {missing}")
    card = Scorecard(preset, [verdicts[c] for c in claims], time.perf_counter() - started)
    stored = load_scorecard(preset, root)
    if stored is not None and only:  # a partial run updates the stored card instead of replacing it
        kept = [v for v in stored.verdicts if v.claim not in verdicts]
        order = list(CLAIMS)
        merged = sorted(kept + card.verdicts, key=lambda v: order.index(v.claim))
        card = Scorecard(preset, merged, card.wall_seconds)
    atomic_json_save(card.to_dict(), scorecard_path(preset, root))
    return card


def load_scorecard(preset: str, root: Path | None = None) -> Scorecard | None:
    """The stored scorecard of ``preset``, or None."""
    data = checked_json_load(scorecard_path(preset, root))
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
        for name, value in verdict.numbers.items():
            lines.append(f"  {name}: {_format_number(value)}")
    return "\n".join(lines)


def _format_number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4f}" for v in value) + "]"
    return str(value)
