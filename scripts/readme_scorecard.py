"""Write the quick scorecard table of README.md from the shipped results (results/quick/scorecard.json).

Usage: python scripts/readme_scorecard.py          # rewrite the table in README.md
       python scripts/readme_scorecard.py --check  # exit 1 if README.md's table is not the generated one

The table sits between the two marker lines below; everything in it is computed from the stored
verdicts by :func:`uni_icl.book.answers.readme_table` (outcome, decisive effect, what decided it),
so it changes only when the shipped scorecard does. tests/test_answers.py checks that README.md
holds exactly what this script writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- quick scorecard: written by scripts/readme_scorecard.py from results/quick/scorecard.json -->"
END = "<!-- end of the quick scorecard -->"


def generated_block(root: Path = ROOT) -> str:
    """The table with its marker lines, from ``root``'s shipped quick scorecard."""
    from uni_icl.book.answers import readme_table
    from uni_icl.scorecard import Scorecard

    card = Scorecard.from_dict(json.loads((root / "results" / "quick" / "scorecard.json").read_text()))
    return f"{BEGIN}\n{readme_table(card)}\n{END}"


def current_block(readme: str) -> str:
    """The marked block of ``readme`` (a ValueError when its markers are missing)."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md: no block between {BEGIN!r} and {END!r}")
    return readme[start : end + len(END)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check README.md; exit 1 if it differs")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    readme = path.read_text()
    block = generated_block()
    if args.check:
        if current_block(readme) != block:
            print("README.md: the quick scorecard table is not the generated one; run scripts/readme_scorecard.py")
            return 1
        return 0
    path.write_text(readme.replace(current_block(readme), block))
    print("README.md: quick scorecard table written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
