"""Command line: ``python -m uni_icl --help``.

Bad input (an unknown experiment, preset, family or learner, an impossible size, a noise so large
that the inputs or the learner's outputs overflow, an ``--output`` that is not a regular file or a
new name or lies in the cache (:mod:`uni_icl.output_paths`), a cache folder that is not writable or
an empty ``UNI_ICL_CACHE``, the ``paper`` preset on a CPU without ``UNI_ICL_CONFIRM_CPU_PAPER=1``
(:mod:`uni_icl.confirm`), a ``--scheduler`` or ``UNI_ICL_SCHEDULER`` that is not an address or
where no Dask scheduler answers within seconds (:mod:`uni_icl.cluster`)) ends with one line on
stderr naming what is wrong and what is allowed, and exit status 2, before any work starts. A cache path the store
cannot use, or a loss that turns inf or NaN during training, ends the same way when it is met,
with nothing cached. Ctrl-C or SIGTERM ends with one line (where training stopped, where its
checkpoint is) and exit status 130 or 143; the same command then resumes. Warnings (a damaged cache entry that is
recomputed) are one line each. The command reads its runtime (:mod:`uni_icl.runtime`) from the environment
once, before any work, and the work runs under it and its thread policy (:func:`~uni_icl.device.policy_threads`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import replace

from uni_icl.confirm import claims_plan, confirm_paper_on_cpu
from uni_icl.device import default_device, memory_bytes, policy_threads
from uni_icl.evaluation import EVAL_BATCH
from uni_icl.experiments.common import (
    MIXED_FAMILY,
    SINGLE_FAMILIES,
    UNSEEN_FAMILY,
    classification_run,
    classification_task,
)
from uni_icl.learners import TRAINABLE_CLASSIFIERS
from uni_icl.learners.icl import ICLConfig
from uni_icl.learners.icler import ICLer
from uni_icl.output_paths import output_file
from uni_icl.parallel import check_cluster, run_job
from uni_icl.presets import PRESET_NAMES, get_preset, preset_from_env
from uni_icl.runs import RunSpec
from uni_icl.runtime import (
    LOCAL_SCHEDULER,
    Runtime,
    check_scheduler_address,
    current_runtime,
    runtime_from_env,
    use_runtime,
)
from uni_icl.stopping import exit_status, terminate_as_interrupt
from uni_icl.storage import StorageError, atomic_json_export, cache_root, check_writable
from uni_icl.validation import NonFiniteError, check_choice, check_int

CLASSIFICATION_FAMILIES = sorted((*SINGLE_FAMILIES, MIXED_FAMILY, UNSEEN_FAMILY))  # the families `train` takes


def run_learnability(preset: str, progress: bool) -> str:
    """Each learner trained and tested on each single family: mean accuracy over the preset's seeds, training time."""
    from uni_icl.experiments.learnability import cross_table

    rows = cross_table(get_preset(preset).classification, progress=progress)
    header = f"{'learner':<10} {'family':<10} {'accuracy':>18} {'train s':>8} {'steps':>14} converged"
    lines = [f"preset: {preset} (accuracy over seeds and test episodes, 95% interval)", header]
    for row in rows:
        accuracy = f"{row['mean']:.4f} +- {row['ci']:.4f}"
        runs = row["runs"]
        steps = "/".join(str(run["steps"]) for run in runs)
        converged = sum(run["converged"] for run in runs)
        timing = f"{sum(run['seconds'] for run in runs):>8.1f} {steps:>14} {converged}/{len(runs)}"
        lines.append(f"{row['learner']:<10} {row['train_family']:<10} {accuracy:>18} {timing}")
    return "\n".join(lines)


EXPERIMENTS: dict[str, Callable[[str, bool], str]] = {
    "learnability": run_learnability,
}


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


class CheckFailedError(Exception):
    """A check found a difference: its report is printed and the exit status is 1."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2) instead of usage plus message."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    top = OneLineParser(prog="python -m uni_icl", description=__doc__.splitlines()[0])
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a named experiment at a preset and print its result table")
    run.add_argument("experiment", help=f"one of: {', '.join(EXPERIMENTS)}")
    run.add_argument(
        "--preset", default=None, help=f"one of: {', '.join(PRESET_NAMES)} (default: $UNI_ICL_PRESET or quick)"
    )
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_scheduler_option(run)
    commands.add_parser("list", help="list the experiments")
    repro = commands.add_parser("reproduce", help="measure every claim of the paper and print the scorecard")
    repro.add_argument(
        "--preset", default=None, help=f"one of: {', '.join(PRESET_NAMES)} (default: $UNI_ICL_PRESET or quick)"
    )
    repro.add_argument("--only", action="append", metavar="CLAIM", help="run only this claim (repeatable)")
    repro.add_argument("--output", default=None, help="also write the scorecard JSON to this file")
    repro.add_argument("--no-progress", action="store_true", help="hide progress bars")
    repro.add_argument("--fresh", action="store_true", help="ignore the shipped results (results/): recompute them")
    add_scheduler_option(repro)
    results = commands.add_parser("results", help="the shipped results (results/PRESET): status, export, verify")
    results.add_argument("action", help="one of: status, export, verify")
    results.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESET_NAMES)} (default: quick)")
    results.add_argument(
        "--partial", action="store_true", help="export: the stored models of an unfinished grid (no build needed)"
    )
    results.add_argument("--sample", type=int, default=3, help="verify: how many shipped models to retrain")
    results.add_argument("--seed", type=int, default=0, help="verify: the seed that picks them")
    results.add_argument("--max-seconds", type=float, default=None, help="verify: only models that trained this fast")
    results.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="verify: accept accuracies this close (default 0: identical weights)",
    )
    results.add_argument("--no-progress", action="store_true", help="hide progress bars")
    single = commands.add_parser("train", help="train-or-load one learner on one family and print its test accuracy")
    single.add_argument("learner", help=f"one of: {', '.join(TRAINABLE_CLASSIFIERS)}")
    single.add_argument("family", help=f"one of: {', '.join(CLASSIFICATION_FAMILIES)}")
    single.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESET_NAMES)}")
    single.add_argument("--n-points", type=int, default=None, help="points per episode (default: the preset's)")
    single.add_argument("--noise-std", type=float, default=None, help="input noise sigma (default 1)")
    single.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return top


def add_scheduler_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help=f"train the models on Dask: a scheduler's address (tcp://host:8786) or {LOCAL_SCHEDULER} (a LocalCluster "
        "here) (default: $UNI_ICL_SCHEDULER, else this machine's process pool)",
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "list":
        for name, function in EXPERIMENTS.items():
            print(f"{name}: {function.__doc__.splitlines()[0]}")
        return 0
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            runtime = command_runtime(args)
            with use_runtime(runtime):
                job = prepare_command(args)
        except (UsageError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        try:
            with use_runtime(runtime), terminate_as_interrupt(), policy_threads():
                print(job())
        except CheckFailedError as failed:
            print(failed)
            return 1
        except (StorageError, NonFiniteError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as interrupt:
            where = str(interrupt) or "stopped outside training, finished models and results are kept"
            print(f"interrupted: {where}; run the same command again to resume", file=sys.stderr)
            return exit_status(interrupt)
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def command_runtime(args: argparse.Namespace) -> Runtime:
    """The runtime of the environment (a ValueError names a bad variable), fresh under ``reproduce --fresh``,
    on the scheduler of ``--scheduler`` if given."""
    runtime = runtime_from_env()
    if getattr(args, "fresh", False):
        runtime = replace(runtime, fresh=True)
    if getattr(args, "scheduler", None) is not None:
        runtime = replace(runtime, scheduler=check_scheduler_address("--scheduler", args.scheduler))
    return runtime


def prepare_command(args: argparse.Namespace) -> Callable[[], str]:
    """Check every argument (raising UsageError / ValueError) and return the work to do (under the runtime)."""
    preset = (get_preset(args.preset) if args.preset is not None else preset_from_env()).name
    progress = not args.no_progress
    if args.command == "run":
        if args.experiment not in EXPERIMENTS:
            raise UsageError(f"experiment: unknown value {args.experiment!r}; allowed: {', '.join(EXPERIMENTS)}")
        # the only experiment, learnability, trains the models of its chapter's claims
        confirm_paper_on_cpu(get_preset(preset), lambda: claims_plan(get_preset(preset), ["2-single", "2-mixed"]))
        check_writable(cache_root())
        check_cluster(current_runtime())
        return lambda: EXPERIMENTS[args.experiment](preset, progress)
    if args.command == "reproduce":
        from uni_icl import scorecard

        claims = scorecard.check_claims(args.only)
        output = None if args.output is None else output_file(args.output)
        confirm_paper_on_cpu(get_preset(preset), lambda: claims_plan(get_preset(preset), claims))
        check_writable(cache_root())
        check_cluster(current_runtime())

        def job() -> str:
            card = scorecard.reproduce(get_preset(preset), claims, progress=progress)
            if output is not None:
                try:
                    atomic_json_export(card.to_dict(), output_file(str(output)))  # again: it may have changed since
                except ValueError as error:
                    raise StorageError(str(error)) from None
                except StorageError as error:
                    raise StorageError(f"--output: {error}") from None
            return scorecard.format_table(card)

        return job
    if args.command == "results":
        return prepare_results(args, preset)
    return prepare_training(args, preset, progress)


def prepare_results(args: argparse.Namespace, preset: str) -> Callable[[], str]:
    """The ``results`` subcommand: status, export or verify of the shipped results of ``preset``."""
    from uni_icl import results
    from uni_icl.scorecard import BOOK_CHAPTERS

    check_choice("action", args.action, ("status", "export", "verify"))
    chosen = get_preset(preset)
    check_writable(cache_root())
    if args.action == "status":
        return lambda: format_status(chosen.name, results.status(chosen, BOOK_CHAPTERS))
    if args.action == "export":
        plan = [job for chapter in BOOK_CHAPTERS for job in chapter.training_plan(chosen)] if args.partial else None
        return lambda: format_export(results.export(chosen.name, partial_plan=plan))
    check_int("--sample", args.sample, minimum=1)
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise UsageError(f"--max-seconds: got {args.max_seconds}; allowed: a positive number of seconds")
    bound = float("inf") if args.max_seconds is None else args.max_seconds
    if not 0 <= args.tolerance < 1:
        raise UsageError(f"--tolerance: got {args.tolerance}; allowed: an accuracy difference from 0 to below 1")
    if results.load_manifest(chosen.name) is None:
        raise UsageError(f"--preset: no shipped results for {chosen.name}; allowed: a preset under results/")

    def job() -> str:
        rows = list(
            results.verify(
                chosen, BOOK_CHAPTERS, sample=args.sample, seed=args.seed, max_seconds=bound, tolerance=args.tolerance
            )
        )
        lines = [format_verified(row) for row in rows]
        passed = sum(row["passed"] for row in rows)
        lines.append(f"verified {passed} of {len(rows)} shipped {chosen.name} models (retrained from scratch)")
        if passed < len(rows):
            raise CheckFailedError("\n".join(lines))
        return "\n".join(lines)

    return job


def format_status(preset: str, rows: list[dict]) -> str:
    lines = [f"shipped results, preset {preset}: per chapter, its models and whether every entry it reads is found"]
    for row in rows:
        where = f"{row['cached']} cached, {row['shipped']} shipped, {row['missing']} missing of {row['models']} models"
        state = row["state"] if row["state"] == "current" else f"stale (first missing: {row['first_missing']})"
        lines.append(f"{row['chapter']:<14} {where}; entries: {state}")
    stale = [row["chapter"] for row in rows if row["state"] != "current"]
    lines.append(f"stale: {len(stale)} chapters ({', '.join(stale)})" if stale else "every chapter is current")
    return "\n".join(lines)


def format_export(manifest: dict) -> str:
    megabytes = manifest["bytes"] / 2**20
    partial = "" if manifest["complete"] else " (partial: models only, no scorecard)"
    return (
        f"exported{partial} {len(manifest['entries'])} entries ({manifest['models']} models, "
        f"{megabytes:.1f} MiB) of preset {manifest['preset']} at commit {manifest['commit'][:12]} "
        f"into results/{manifest['preset']}/"
    )


def format_verified(row: dict) -> str:
    verdict = "identical weights" if row["identical"] else "DIFFERENT weights"
    score = ""
    if "accuracy" in row:
        score = f", accuracy shipped {row['accuracy'][0]:.4f} retrained {row['accuracy'][1]:.4f}"
    return f"{'ok  ' if row['passed'] else 'FAIL'} {row['label']}: {verdict}{score} ({row['seconds']:.0f} s)"


def prepare_training(args: argparse.Namespace, preset: str, progress: bool) -> Callable[[], str]:
    """The ``train`` subcommand: validate learner, family and sizes, then train-or-load and test."""
    from uni_icl.runs import build_seeded, check_finite_outputs, evaluate_or_load, train_or_load

    if args.learner not in TRAINABLE_CLASSIFIERS:
        allowed = ", ".join(TRAINABLE_CLASSIFIERS)
        raise UsageError(f"learner: unknown value {args.learner!r}; allowed: {allowed}")
    check_choice("family", args.family, CLASSIFICATION_FAMILIES)
    scale = get_preset(preset).classification
    if args.n_points is not None:
        check_n_points(args.n_points, classification_run(scale, args.learner, classification_task(scale, args.family)))
    overrides = {"n_points": args.n_points, "noise_std": args.noise_std}
    task = classification_task(scale, args.family, **{k: v for k, v in overrides.items() if v is not None})
    spec = classification_run(scale, args.learner, task)
    check_finite_outputs(build_seeded(spec.learner, task, spec.train.seed), task, seed=scale.test_seed)
    confirm_paper_on_cpu(get_preset(preset), lambda: [run_job(spec)])
    check_writable(cache_root())

    def job() -> str:
        model = train_or_load(spec, progress=progress)
        result = evaluate_or_load(model, task, n_tasks=scale.n_test_tasks, seed=scale.test_seed)
        source = "loaded" if model.loaded_from_cache else f"trained in {model.history.seconds:.1f} s"
        return f"{spec.label} ({preset}, {source}): accuracy {result.mean:.4f} +- {result.mean_ci:.4f}"

    return job


def step_bytes(spec: RunSpec, n_points: int) -> int:
    """About how many bytes one training step of ``spec`` (a RunSpec) holds with ``n_points`` per episode.

    float32 activations kept for the backward pass, per episode of the batch, layer and head: a T x T
    attention (or pairwise-similarity) matrix and the T tokens' activations (T = N, or 2N for the
    support/query layout; the per-prefix authors' ICLer runs N sequences of 1..N + 1 tokens);
    evaluation forward passes of 256 episodes hold one layer at a time.
    """
    params = spec.learner.params
    if spec.learner.name == "icl":
        config = ICLConfig(**params)
        tokens = 2 * n_points if config.layout == "support_query" else n_points
        layers, heads, width = config.depth, config.n_heads, config.width * (2 + config.mlp_ratio)
    elif spec.learner.name in ("icl_authors", "icl_authors_prefix"):  # support and query tokens, one head
        tokens, layers, heads = 2 * n_points, ICLer.depth, 1
        width = (spec.task.input_dim + 2 * spec.task.n_classes) * (2 + ICLer.mlp_ratio)
    else:
        tokens, layers, heads, width = n_points, params.get("n_layers", 2), 1, 4 * params.get("hidden", 64)
    per_layer = heads * tokens * tokens + tokens * width
    if spec.learner.name == "icl_authors_prefix":  # N sequences of 1..N + 1 tokens, one per prefix
        per_layer = heads * (n_points + 1) ** 3 // 3 + (n_points + 1) ** 2 // 2 * width
    return 4 * max(3 * spec.train.batch_size * layers, EVAL_BATCH) * per_layer


def check_n_points(n_points: int, spec: RunSpec) -> None:
    """Raise a ValueError unless ``n_points`` is >= 1 and a training step of ``spec`` with that many points
    per episode (:func:`step_bytes`) fits in half the memory of the device it would run on."""
    check_int("n_points", n_points, minimum=1)
    budget = memory_bytes(default_device()) // 2
    low, high = 1, max(n_points, 1)
    while low < high:  # the largest n with step_bytes(n) <= budget (step_bytes grows with n)
        middle = (low + high + 1) // 2
        low, high = (middle, high) if step_bytes(spec, middle) <= budget else (low, middle - 1)
    if low < n_points:
        gib = 2 * budget / 2**30
        raise ValueError(
            f"n_points: got {n_points}; allowed: integers from 1 to {low} (a training step of {spec.label} at batch "
            f"{spec.train.batch_size} must fit in half of this device's {gib:.0f} GiB)"
        )
