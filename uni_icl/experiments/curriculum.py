"""Claim 4a (meta-level curriculum): does growing the number of active dimensions speed up pre-training?

Four arms train the same in-context regressor (same initial weights and data seed per seed) on
in-context linear regression for a fixed number of steps (no early stopping, so every arm gets the
same budget): no curriculum; the paper's curriculum (+1 active dimension per increment from
``start_dims``, the increments spread evenly over the window from the end of the learning-rate
warm-up to ``paper_window_end``: :func:`curriculum_window`); the same increments every
``paper_every`` steps from step 0 (the earlier schedule, reported); Garg et al.'s default (+1
dimension and +2 points every ``garg_every`` steps, reported). Validation always uses the full task.
Each run's cache entry holds its history, its final (best-validated) weights and the raw weights at
``early_step`` (taken on the fly into a ``.early`` side file, so the early checkpoint lies on the
same training trajectory and costs no extra training). An entry is stored only when both sets of
weights are complete and finite; a side file that is missing or damaged when training ends (deleted
during an interrupted run) makes the run train again from the start rather than store an entry
without early weights.

Errors are squared errors divided by d (Garg et al.'s normalisation: predicting 0 scores 1; least
squares averaged over the N positions scores (d + 1) / (2N)).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from uni_icl.convergence import RemainingGain, remaining_gain
from uni_icl.device import default_device, policy_threads
from uni_icl.evaluation import Difference, EvalResult, evaluate
from uni_icl.experiments.evidence import LOG_MARGIN, seeds_needed, unconverged
from uni_icl.experiments.rules.curriculum import (
    ARM_NAMES,
    ARMS,
    CONVERGENCE_FRACTION,
    PREMISE_FACTOR,
    RULE_4A,
    _arm_name,
    decide_4a,
    decide_speedup,
    gates_4a,
    log_speedups,
    run_records,
    speedup_interval,
    ungated_4a,
)
from uni_icl.experiments.rules.previous import previous_outcome
from uni_icl.learners import LearnerSpec
from uni_icl.parallel import Job, train_all, training_cost
from uni_icl.presets import CurriculumScale, Preset
from uni_icl.runs import CODE_VERSION, RunSpec, build_seeded, check_eval_result, evaluate_or_load, prepare
from uni_icl.storage import (
    CacheWarning,
    atomic_torch_save,
    cache_root,
    cached_entry,
    checked_torch_load,
    config_hash,
    weights_hash,
)
from uni_icl.tasks import LinearRegressionTask, TaskFamily, make_task
from uni_icl.tasks.schedules import DimensionCurriculum
from uni_icl.training import Callback, check_history, train, warmup_steps
from uni_icl.validation import check_choice, check_keys, check_state_dict
from uni_icl.verdicts import ClaimVerdict, Comparison, decisive

REFERENCES = ("least_squares", "averaging", "knn")
CHAPTER = "book/05_curriculum"
CLAIMS = ("4a",)


def _garg_start_points(d: int, n_points: int, start_dims: int) -> int:
    """Garg et al. start at 11 points for 5 of 20 dims, i.e. 2 * start_dims + 1, never above n_points."""
    return min(n_points, 2 * start_dims + 1)


def full_task(scale: CurriculumScale) -> LinearRegressionTask:
    """The full task of the scale: linear regression in d dimensions with n_points points."""
    return make_task("linear_regression", d=scale.d, n_points=scale.n_points)


def curriculum_window(scale: CurriculumScale) -> tuple[int, int]:
    """(first step, every_steps) of the paper's curriculum in the rule's arm: the window starts when the
    learning-rate warm-up of ``scale.train`` ends and its d - start_dims increments are spread evenly up to
    ``scale.paper_window_end`` (the last one at or just before it)."""
    start, increments = warmup_steps(scale.train), scale.d - scale.start_dims
    if scale.paper_window_end - start < max(1, increments):
        raise ValueError(
            f"paper_window_end: must leave at least one step per increment after the warm-up's {start} steps "
            f"({increments} increments), got {scale.paper_window_end}"
        )
    return start, (scale.paper_window_end - start) // max(1, increments)


def schedule_of(scale: CurriculumScale, arm: str) -> DimensionCurriculum | None:
    """The training schedule of ``arm`` (None: the full task from the first step)."""
    check_choice("arm", arm, ARMS)
    if arm == "none":
        return None
    if arm == "paper":
        start, every = curriculum_window(scale)
        return DimensionCurriculum(full_task(scale), scale.start_dims, every, first_step=start)
    if arm == "paper_early":
        return DimensionCurriculum(full_task(scale), scale.start_dims, scale.paper_every)
    start_points = _garg_start_points(scale.d, scale.n_points, scale.start_dims)
    return DimensionCurriculum(full_task(scale), scale.start_dims, scale.garg_every, 1, start_points, 2)


def run_spec(scale: CurriculumScale, arm: str, seed: int) -> RunSpec:
    """What determines one run (its config is the cache key, with the early step)."""
    train_config = dataclasses.replace(scale.train, seed=seed)
    return RunSpec(
        LearnerSpec("icl_regressor", scale.regressor), full_task(scale), train_config, schedule_of(scale, arm)
    )


def snapshot_at(step: int, side_file: Path) -> Callback:
    """A training callback that stores the learner's weights in ``side_file`` once ``step`` steps are done."""

    def snapshot(steps_done: int, learner: torch.nn.Module) -> None:
        if steps_done == step:
            atomic_torch_save(copy.deepcopy(learner.state_dict()), side_file)

    return snapshot


@dataclass
class CurriculumRun:
    """One trained run: final (best-validated) learner, learner at the early step, and its history."""

    arm: str
    seed: int
    late: torch.nn.Module
    early: torch.nn.Module
    history: dict
    loaded_from_cache: bool


def run_path(scale: CurriculumScale, arm: str, seed: int) -> Path:
    """Where one arm and seed is stored (final and early weights in one entry)."""
    key = config_hash(
        {"run": run_spec(scale, arm, seed).config(), "early_step": scale.early_step, "experiment": "curriculum"}
    )
    return cache_root() / "models" / f"curriculum-{arm}-{key}.pt"


def arm_seeds(scale: CurriculumScale, arm: str) -> tuple[int, ...]:
    """The seeds ``arm`` is trained with: all of the scale's for the compared arms, ``garg_seeds`` for Garg's,
    ``earlier_seeds`` for the earlier schedule."""
    check_choice("arm", arm, ARMS)
    return {"garg": scale.garg_seeds, "paper_early": scale.earlier_seeds}.get(arm, scale.seeds)


def training_plan(preset: Preset, arms: tuple[str, ...] = ARMS) -> list[Job]:
    """Every arm and its seeds (independent runs)."""
    scale = preset.curriculum
    return [
        Job(
            f"{ARM_NAMES[arm]}, seed {seed}",
            run_path(scale, arm, seed),
            functools.partial(_train_quietly, scale, arm, seed),
            training_cost(run_spec(scale, arm, seed)),
        )
        for arm in arms
        for seed in arm_seeds(scale, arm)
    ]


def _train_quietly(scale: CurriculumScale, arm: str, seed: int) -> None:
    train_run(scale, arm, seed, progress=False)


def train_run(scale: CurriculumScale, arm: str, seed: int, *, progress: bool = True) -> CurriculumRun:
    """Train-or-load one arm and seed (resumable; the early weights are part of the same entry)."""
    spec = run_spec(scale, arm, seed)
    path = run_path(scale, arm, seed)
    device = default_device()
    late = build_seeded(spec.learner, spec.task, seed).to(device)
    early = build_seeded(spec.learner, spec.task, seed).to(device)
    validate = _entry_validator(late.state_dict())
    stored, loaded = cached_entry(
        path, lambda: _train_with_snapshot(scale, spec, arm, late, path, progress), validate, tensors=True
    )
    path.with_suffix(".early").unlink(missing_ok=True)  # the snapshot is in the entry now
    late.load_state_dict(stored["weights"])
    early.load_state_dict(stored["early_weights"])
    return CurriculumRun(arm, spec.train.seed, late, early, stored["history"], loaded)


def _train_with_snapshot(
    scale: CurriculumScale, spec: RunSpec, arm: str, late: torch.nn.Module, path: Path, progress: bool
) -> dict:
    """Train ``late`` (resuming a checkpoint) with the early snapshot in ``path``'s ``.early`` side file;
    the entry to store. A side file missing or damaged at the end means training again from the start."""
    side_file = path.with_suffix(".early")
    initial = copy.deepcopy(late.state_dict())
    check_snapshot = functools.partial(check_state_dict, "early snapshot", reference=initial)
    for attempt in range(2):
        history = train(
            late,
            spec.task,
            spec.train,
            schedule=spec.schedule,
            callbacks=(snapshot_at(scale.early_step, side_file),),
            checkpoint_path=path.with_suffix(".ckpt"),
            progress=progress,
            description=f"{ARM_NAMES[arm]}, seed {spec.train.seed}",
        )
        early_weights = checked_torch_load(side_file, check_snapshot)
        if early_weights is not None:
            return {
                "weights": late.state_dict(),
                "early_weights": early_weights,
                "history": history.to_dict(),
                "config": spec.config(),
            }
        if attempt == 0:
            warnings.warn(
                f"early snapshot {side_file} is missing or damaged: training this run again from the start",
                CacheWarning,
                stacklevel=3,
            )
            late.load_state_dict(initial)  # train() removed its checkpoint: the next call starts at step 0
    raise RuntimeError(f"early_step: the snapshot at step {scale.early_step} was not taken; allowed: below max_steps")


def _entry_validator(reference: dict) -> Callable[[object], None]:
    """A check that a curriculum entry holds complete, finite final and early weights and a history."""

    def validate(stored) -> None:
        check_keys("curriculum entry", stored, ("weights", "early_weights", "history", "config"))
        check_state_dict("weights", stored["weights"], reference)
        check_state_dict("early_weights", stored["early_weights"], reference)
        check_history(stored["history"])

    return validate


def steps_to_threshold(history: dict, d: int, threshold: float) -> int | None:
    """First evaluated step whose validation error / d is at most ``threshold`` (None: never)."""
    for step, score in zip(history["steps"], history["val_score"], strict=True):
        if -score / d <= threshold:
            return step
    return None


def levelled_off(history: dict, d: int) -> float:
    """Relative drop of the validation error / d over the last fifth of training (small: levelled off).

    Descriptive only; the rule reads :func:`run_convergence`."""
    errors = [-score / d for score in history["val_score"]]
    cut = max(1, len(errors) // 5)
    before = min(errors[: len(errors) - cut]) if len(errors) > cut else errors[0]
    return (before - min(errors[-cut:])) / before


def convergence_tolerance(scale: CurriculumScale) -> float:
    """Tolerance of the convergence test for these runs, in validation-score units (minus the mean squared
    error, not divided by d): ``CONVERGENCE_FRACTION`` of least squares' error. A run passes when the upper
    95% bound of the decrease of its validation error / d over the last quarter of training is below
    ``CONVERGENCE_FRACTION`` times least squares' error / d (the error scale of the task)."""
    return CONVERGENCE_FRACTION * scale.least_squares_error * scale.d


def run_convergence(history: dict, scale: CurriculumScale) -> RemainingGain:
    """The convergence test (:func:`uni_icl.convergence.remaining_gain`) on one run's full-task validation curve."""
    return remaining_gain(history["steps"], history["val_score"], convergence_tolerance(scale))


def evaluate_cached(model: torch.nn.Module, config: dict, task: TaskFamily, scale: CurriculumScale) -> EvalResult:
    """Evaluate ``model`` (identified by ``config``) on ``task``, cached under a hash of both."""
    key = config_hash(
        {
            "code_version": CODE_VERSION,
            "model": config,
            "weights": weights_hash(model),
            "task": task.config(),
            "n": scale.n_test_tasks,
            "seed": scale.test_seed,
        }
    )
    path = cache_root() / "results" / f"curriculum-eval-{key}.pt"

    def compute() -> dict:
        with policy_threads():
            return evaluate(model, task, n_tasks=scale.n_test_tasks, seed=scale.test_seed).to_dict()

    return EvalResult(**cached_entry(path, compute, check_eval_result, tensors=True)[0])


@dataclass
class CurriculumResults:
    """What :func:`run` returns: the scale, one row per (arm, seed) run (steps to the threshold, final
    error, convergence), the validation curves, the per-shot errors of the early and late checkpoints
    and of the references, and the wall time of :func:`run`."""

    scale: CurriculumScale
    rows: list[dict]
    curves: list[dict] = field(default_factory=list)
    shots: list[dict] = field(default_factory=list)
    wall_seconds: float = 0.0


def run(preset: Preset, *, arms: tuple[str, ...] = ARMS, progress: bool = True) -> CurriculumResults:
    """Train-or-load every arm and seed, measure steps-to-threshold, evaluate early and late checkpoints.

    Returns a dict with the scale, one row per run (steps to threshold, final and best validation
    error / d, the convergence test: ``converged`` and ``remaining_gain_bound``, the bound on the
    error / d decrease over the last quarter), the validation curves, the per-shot curves (per run
    and checkpoint, and of the references), and the wall time.
    """
    scale = preset.curriculum
    for arm in arms:
        check_choice("arms", arm, ARMS)
    started = time.perf_counter()
    train_all(training_plan(preset, arms), progress=progress, description="chapter 5 runs")
    rows, curves, shots = [], [], []
    jobs = [(arm, seed) for arm in arms for seed in arm_seeds(scale, arm)]
    for arm, seed in tqdm(jobs, desc="curriculum runs", disable=not progress):
        result = train_run(scale, arm, seed, progress=progress)
        history = result.history
        check = run_convergence(history, scale)
        rows.append(
            {
                "arm": arm,
                "seed": seed,
                "steps_to_threshold": steps_to_threshold(history, scale.d, scale.threshold),
                "final_error": -history["val_score"][-1] / scale.d,
                "best_error": -max(history["val_score"]) / scale.d,
                "last_fifth_drop": levelled_off(history, scale.d),
                "steps": history["steps"][-1],
                "converged": check.converged,
                "remaining_gain_bound": check.bound / scale.d,
                "train_seconds": history["seconds"],
                "from_cache": result.loaded_from_cache,
            }
        )
        for step, score in zip(history["steps"], history["val_score"], strict=True):
            curves.append({"arm": arm, "seed": seed, "step": step, "val_error": -score / scale.d})
        for checkpoint, model in (("early", result.early), ("late", result.late)):
            config = {"run": run_spec(scale, arm, seed).config(), "checkpoint": checkpoint, "early": scale.early_step}
            evaluation = evaluate_cached(model, config, full_task(scale), scale)
            shots.append(_shot_row(ARM_NAMES[arm], checkpoint, seed, evaluation, scale.d))
    for name in REFERENCES:
        reference = prepare(LearnerSpec(name, {"k": 3} if name == "knn" else {}))
        evaluation = evaluate_or_load(reference, full_task(scale), n_tasks=scale.n_test_tasks, seed=scale.test_seed)
        shots.append(_shot_row(name, "reference", -1, evaluation, scale.d))
    return CurriculumResults(scale, rows, curves, shots, time.perf_counter() - started)


def _shot_row(learner: str, checkpoint: str, seed: int, evaluation: EvalResult, d: int) -> dict:
    return {
        "learner": learner,
        "checkpoint": checkpoint,
        "seed": seed,
        "per_position": [value / d for value in evaluation.per_position],
        "per_position_ci": [value / d for value in evaluation.per_position_ci],
        "mean": evaluation.mean / d,
    }


# ----------------------------------------------------------------------------- the rule of claim 4a
#
# Written (issue 17) before any run at the quick sizes it is applied to. The previous rule ("faster for
# every one of 3 seeds") was at best a one-sided sign test with p = 2^-3 = 0.125, and read runs that
# ended at about 1.8x least squares' error. Now the speed-up has an interval over seeds, one margin is
# used on both sides, and the runs must have learned the task and converged.


def _median_steps(rows: list[dict], arm: str, never: float, seeds: Sequence[int]) -> float:
    return statistics.median(
        never if r["steps_to_threshold"] is None else r["steps_to_threshold"]
        for r in rows
        if r["arm"] == arm and r["seed"] in seeds
    )


def summary(results: CurriculumResults, arm: str = "paper") -> dict:
    """Steps to threshold per seed (the seeds ``arm`` was trained with) for the baseline and ``arm``; medians
    over those seeds and their ratio (arm / baseline, as before); and the speed-up of RULE_4A: per-seed
    log(baseline / arm), their mean with its Student-t 95% interval (``log_speedup``, ``log_speedup_ci``:
    None when a run never reached the threshold) and the geometric-mean speed-up ratio with its interval
    (``speedup``, ``speedup_low``, ``speedup_high``; > 1: ``arm`` is faster)."""
    check_choice("arm", arm, ARMS[1:])
    scale, rows = results.scale, results.rows
    never = float("inf")
    seeds = [seed for seed in arm_seeds(scale, arm) if any(r["arm"] == arm and r["seed"] == seed for r in rows)]
    per_seed = {
        seed: {
            a: next(r["steps_to_threshold"] for r in rows if r["arm"] == a and r["seed"] == seed) for a in ("none", arm)
        }
        for seed in seeds
    }
    base, curriculum = _median_steps(rows, "none", never, seeds), _median_steps(rows, arm, never, seeds)
    ratio = curriculum / base if base not in (0, never) and curriculum != never else float("nan")
    # When the baseline's median run never reached the threshold, it needs more than the budget:
    # the ratio is then below curriculum / max_steps (an upper bound).
    bound = curriculum / scale.train.max_steps if base == never and curriculum != never else float("nan")
    if base != never:
        text = f"{ratio:.2f}" if curriculum != never else "undefined (the curriculum's median run never reached it)"
    else:
        text = f"below {bound:.2f}" if curriculum != never else "undefined (neither arm's median run reached it)"
    per_seed_log = log_speedups(per_seed, arm)
    interval = (
        speedup_interval(list(per_seed_log.values())) if all(v is not None for v in per_seed_log.values()) else None
    )
    return {
        "per_seed": per_seed,
        "median_none": base,
        f"median_{arm}": curriculum,
        "ratio": ratio,
        "ratio_upper_bound": bound,
        "ratio_text": text,
        "log_speedups": per_seed_log,
        "log_speedup": None if interval is None else interval.mean,
        "log_speedup_ci": None if interval is None else interval.ci,
        "speedup": None if interval is None else math.exp(interval.mean),
        "speedup_low": None if interval is None else math.exp(interval.lower),
        "speedup_high": None if interval is None else math.exp(interval.upper),
    }


def _finite_or_none(value):
    """JSON-safe: infinities and NaNs become None (recursively in dicts and lists)."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _interval_triple(speedups: dict) -> list[float] | None:
    """[geometric-mean speed-up, low, high] of a :func:`summary` (None when undefined)."""
    if speedups["speedup"] is None:
        return None
    return [speedups["speedup"], speedups["speedup_low"], speedups["speedup_high"]]


def _mean_error(rows: list[dict], arm: str, key: str) -> float:
    return statistics.mean(r[key] for r in rows if r["arm"] == arm)


def verdicts(results: CurriculumResults) -> list[ClaimVerdict]:
    """Decide claim 4a with RULE_4A and store the verdict (with the runs it rests on)."""
    scale, rows = results.scale, results.rows
    paper = summary(results, "paper")
    records = run_records(results)
    baseline_error = _mean_error(rows, "none", "best_error")
    trained_arms = [arm for arm in ARMS if any(r["arm"] == arm for r in rows)]
    numbers = {
        "threshold": scale.threshold,
        "least_squares_error": scale.least_squares_error,
        "margin": LOG_MARGIN,
        "premise_factor": PREMISE_FACTOR,
        "convergence_tolerance": CONVERGENCE_FRACTION * scale.least_squares_error,
        "per_seed": {
            str(seed): {**arms, "log_speedup": paper["log_speedups"][seed]} for seed, arms in paper["per_seed"].items()
        },
        "log_speedup": None if paper["log_speedup"] is None else [paper["log_speedup"], paper["log_speedup_ci"]],
        "speedup": _interval_triple(paper),
        "median_none": paper["median_none"],
        "median_paper": paper["median_paper"],
        "ratio_paper_over_none": paper["ratio"],
        "ratio_paper_over_none_upper_bound": paper["ratio_upper_bound"],
        "baseline_error": baseline_error,
        "final_error": {arm: _mean_error(rows, arm, "final_error") for arm in trained_arms},
        "best_error": {arm: _mean_error(rows, arm, "best_error") for arm in trained_arms},
    }
    if paper["log_speedup"] is not None and math.isfinite(paper["log_speedup_ci"]):
        interval = Difference(paper["log_speedup"], paper["log_speedup_ci"])
        comparison = Comparison("log(steps without / with the paper's curriculum)", interval, LOG_MARGIN, "above +m")
        numbers["decisive"] = decisive([comparison], decide_speedup(interval))
    if any(r["arm"] == "garg" for r in rows):
        garg = summary(results, "garg")
        numbers.update(
            {
                "median_garg": garg["median_garg"],
                "ratio_garg_over_none": garg["ratio"],
                "ratio_garg_over_none_upper_bound": garg["ratio_upper_bound"],
                "speedup_garg": _interval_triple(garg),
            }
        )
    if any(r["arm"] == "paper_early" for r in rows):
        earlier = summary(results, "paper_early")
        numbers["earlier_schedule"] = {
            "median": earlier["median_paper_early"],
            "ratio_over_none": earlier["ratio"],
            "log_speedup": None
            if earlier["log_speedup"] is None
            else [earlier["log_speedup"], earlier["log_speedup_ci"]],
            "speedup": _interval_triple(earlier),
        }
    ungated = ungated_4a(paper["per_seed"])
    if ungated == "inconclusive" and "decisive" in numbers:
        interval = Difference(paper["log_speedup"], paper["log_speedup_ci"])
        label = numbers["decisive"]["label"]
        numbers["seeds_to_decide"] = seeds_needed(label, list(paper["log_speedups"].values()), interval, LOG_MARGIN)
    reasons = gates_4a(paper["per_seed"], baseline_error, scale.least_squares_error, records)
    result = ClaimVerdict(
        claim="4a",
        preset=scale.preset,
        quantity="training steps until the full-task validation error / d falls below the threshold; speed-up "
        "ratio no curriculum / curriculum per seed, geometric mean with a 95% interval over seeds",
        numbers=_finite_or_none(numbers),
        rule=RULE_4A,
        outcome=decide_4a(paper["per_seed"], baseline_error, scale.least_squares_error, records),
        chapter=CHAPTER,
        wall_seconds=0.0 if all(r["from_cache"] for r in rows) else results.wall_seconds,
        notes={
            "gates": reasons,
            "ungated_outcome": ungated,
            "unconverged": unconverged(records, _arm_name),
            **previous_outcome("4a"),
        },
        rests_on=records,
    )
    return [result]
