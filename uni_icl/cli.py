"""Command line: ``python -m uni_icl --help``.

Bad input (an unknown experiment, preset, family or learner, an impossible size, a cache folder
that is not writable) ends with one line on stderr naming what is wrong and what is allowed, and
exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from uni_icl.presets import PRESETS, classification_scale, preset_name
from uni_icl.storage import cache_root, check_writable


def run_learnability(preset: str, progress: bool) -> str:
    """Each learner trained and tested on each single family: mean accuracy and training time."""
    from uni_icl.experiments.learnability import cross_table

    rows = cross_table(classification_scale(preset), progress=progress)
    lines = [f"preset: {preset}", f"{'learner':<10} {'family':<10} {'accuracy':>18} {'train s':>8} {'steps':>6}"]
    for row in rows:
        accuracy = f"{row['mean']:.4f} +- {row['ci']:.4f}"
        timing = f"{row['train_seconds']:>8.1f} {row['train_steps']:>6}"
        lines.append(f"{row['learner']:<10} {row['train_family']:<10} {accuracy:>18} {timing}")
    return "\n".join(lines)


EXPERIMENTS: dict[str, Callable[[str, bool], str]] = {
    "learnability": run_learnability,
}


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m uni_icl", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a named experiment at a preset and print its result table")
    run.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    run.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default: $UNI_ICL_PRESET or quick)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    commands.add_parser("list", help="list the experiments")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        for name, function in EXPERIMENTS.items():
            print(f"{name}: {function.__doc__.splitlines()[0]}")
        return 0
    try:
        if args.experiment not in EXPERIMENTS:
            raise UsageError(f"experiment: unknown value {args.experiment!r}; allowed: {', '.join(EXPERIMENTS)}")
        preset = preset_name(args.preset)
        check_writable(cache_root())
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(EXPERIMENTS[args.experiment](preset, not args.no_progress))
    return 0
