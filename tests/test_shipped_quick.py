"""The shipped quick results reproduce the shipped quick scorecard (issue 31, point 5).

``reproduce --preset quick`` in an empty cache, from the shipped results only (computing is switched
off, so a missing entry fails instead of training for hours), must give every claim the shipped
scorecard's outcome, numbers and runs. Skipped, with the reason, when nothing ships or when the
shipped results are stale for this code (``results status``; CI says so in one line).
"""

import json
from pathlib import Path

import pytest

from uni_icl import results
from uni_icl.presets import PRESETS
from uni_icl.scorecard import BOOK_CHAPTERS, reproduce
from uni_icl.storage import offline

pytestmark = pytest.mark.slow
SHIPPED = Path(__file__).resolve().parents[1] / "results" / "quick"


def test_scorecard_differences_names_each_changed_claim():
    verdict = {"claim": "1", "outcome": "reproduced", "numbers": {"x": 1.0}, "rests_on": [], "wall_seconds": 3.0}
    card = {"verdicts": [verdict, {**verdict, "claim": "3a"}]}
    flipped = {"verdicts": [{**verdict, "outcome": "not reproduced", "wall_seconds": 9.0}]}
    assert results.scorecard_differences(card, card) == []
    assert results.scorecard_differences(card, flipped) == ["3a: only in one scorecard", "1: outcome differs"]


def test_shipped_results_rebuild_the_shipped_scorecard(set_runtime):
    if not (SHIPPED / "manifest.json").exists():
        pytest.skip("no shipped quick results")
    set_runtime(shipped=SHIPPED.parent, fresh=False)
    preset = PRESETS["quick"]
    stale = [row for row in results.status(preset, BOOK_CHAPTERS) if row["state"] != "current"]
    if stale:
        pytest.skip(f"shipped quick results are stale for this code: {[row['chapter'] for row in stale]}")
    with offline():
        card = reproduce(preset, progress=False)
    shipped = json.loads((SHIPPED / "scorecard.json").read_text())
    assert results.scorecard_differences(shipped, card.to_dict()) == []
