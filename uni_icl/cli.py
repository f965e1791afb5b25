"""Command line: ``python -m uni_icl --help``.

Bad input (an unknown experiment, preset, family or learner, an impossible size, a cache folder
that is not writable) ends with one line on stderr naming what is wrong and what is allowed, and
exit status 2, before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from uni_icl.learners import CLASSIFIERS
from uni_icl.presets import PRESET_NAMES, get_preset, preset_from_env
from uni_icl.storage import atomic_json_export, cache_root, check_writable


def run_learnability(preset: str, progress: bool) -> str:
    """Each learner trained and tested on each single family: mean accuracy and training time."""
    from uni_icl.experiments.learnability import cross_table

    rows = cross_table(get_preset(preset).classification, progress=progress)
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
    run.add_argument(
        "--preset", default=None, help=f"one of: {', '.join(PRESET_NAMES)} (default: $UNI_ICL_PRESET or quick)"
    )
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    commands.add_parser("list", help="list the experiments")
    repro = commands.add_parser("reproduce", help="measure every claim of the paper and print the scorecard")
    repro.add_argument(
        "--preset", default=None, help=f"one of: {', '.join(PRESET_NAMES)} (default: $UNI_ICL_PRESET or quick)"
    )
    repro.add_argument("--only", action="append", metavar="CLAIM", help="run only this claim (repeatable)")
    repro.add_argument("--output", default=None, help="also write the scorecard JSON to this file")
    repro.add_argument("--no-progress", action="store_true", help="hide progress bars")
    single = commands.add_parser("train", help="train-or-load one learner on one family and print its test accuracy")
    single.add_argument("learner", help=f"one of: {', '.join(CLASSIFIERS)}")
    single.add_argument("family", help="a task family, e.g. pairwise, prototype, amortized, radius, mixture")
    single.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESET_NAMES)}")
    single.add_argument("--n-points", type=int, default=None, help="points per episode (default: the preset's)")
    single.add_argument("--noise-std", type=float, default=None, help="input noise sigma (default 1)")
    single.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        for name, function in EXPERIMENTS.items():
            print(f"{name}: {function.__doc__.splitlines()[0]}")
        return 0
    try:
        job = prepare_command(args)
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(job())
    return 0


def prepare_command(args: argparse.Namespace) -> Callable[[], str]:
    """Check every argument (raising UsageError / ValueError) and return the work to do."""
    preset = get_preset(args.preset).name if args.preset else preset_from_env().name
    progress = not args.no_progress
    if args.command == "run":
        if args.experiment not in EXPERIMENTS:
            raise UsageError(f"experiment: unknown value {args.experiment!r}; allowed: {', '.join(EXPERIMENTS)}")
        check_writable(cache_root())
        return lambda: EXPERIMENTS[args.experiment](preset, progress)
    if args.command == "reproduce":
        from uni_icl import scorecard

        claims = scorecard.check_claims(args.only)
        if args.output is not None:
            check_writable(Path(args.output).resolve().parent)
        check_writable(cache_root())

        def job() -> str:
            card = scorecard.reproduce(get_preset(preset), claims, progress=progress)
            if args.output is not None:
                atomic_json_export(card.to_dict(), Path(args.output))
            return scorecard.format_table(card)

        return job
    return prepare_training(args, preset, progress)


def prepare_training(args: argparse.Namespace, preset: str, progress: bool) -> Callable[[], str]:
    """The ``train`` subcommand: validate learner, family and sizes, then train-or-load and test."""
    from uni_icl.experiments.common import classification_run, classification_task
    from uni_icl.runs import evaluate_or_load, train_or_load

    if args.learner not in CLASSIFIERS:
        raise UsageError(f"learner: unknown value {args.learner!r}; allowed: {', '.join(CLASSIFIERS)}")
    scale = get_preset(preset).classification
    overrides = {"n_points": args.n_points, "noise_std": args.noise_std}
    task = classification_task(scale, args.family, **{k: v for k, v in overrides.items() if v is not None})
    if task.is_regression:
        raise UsageError(f"family: {args.family!r} is a regression family; allowed: classification families")
    spec = classification_run(scale, args.learner, task)
    check_writable(cache_root())

    def job() -> str:
        model = train_or_load(spec, progress=progress)
        result = evaluate_or_load(model, task, n_tasks=scale.n_test_tasks, seed=scale.test_seed)
        source = "loaded" if model.loaded_from_cache else f"trained in {model.history.seconds:.1f} s"
        return f"{spec.label} ({preset}, {source}): accuracy {result.mean:.4f} +- {result.mean_ci:.4f}"

    return job
