"""Claim 4a (meta-level curriculum): does growing the number of active dimensions speed up pre-training?

Three arms train the same in-context regressor (same initial weights and data seed per seed) on
in-context linear regression for a fixed number of steps (no early stopping, so every arm gets the
same budget): no curriculum; the paper's curriculum (+1 active dimension every ``paper_every``
steps from ``start_dims``); Garg et al.'s default (+1 dimension and +2 points every ``garg_every``
steps). Validation always uses the full task. Each run's cache entry holds its history, its final
(best-validated) weights and the raw weights at ``early_step`` (taken on the fly into a ``.early``
side file, so the early checkpoint lies on the same training trajectory and costs no extra
training). An entry is stored only when both sets of weights are complete and finite; a side file
that is missing or damaged when training ends (deleted during an interrupted run) makes the run
train again from the start rather than store an entry without early weights.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from uni_icl.device import default_device, policy_threads
from uni_icl.evaluation import EvalResult, evaluate
from uni_icl.learners import LearnerSpec
from uni_icl.parallel import Job, train_all
from uni_icl.presets import CurriculumScale, Preset
from uni_icl.runs import CODE_VERSION, RunSpec, build_seeded, check_eval_result, evaluate_or_load, prepare
from uni_icl.storage import CacheWarning, atomic_torch_save, cache_root, cached_entry, checked_torch_load, config_hash
from uni_icl.tasks import LinearRegressionTask, TaskFamily, make_task
from uni_icl.tasks.schedules import DimensionCurriculum
from uni_icl.training import Callback, check_history, train
from uni_icl.validation import check_choice, check_keys, check_state_dict
from uni_icl.verdicts import ClaimVerdict

ARMS = ("none", "paper", "garg")
ARM_NAMES = {
    "none": "no curriculum",
    "paper": "curriculum (paper: +1 dim)",
    "garg": "curriculum (Garg: +1 dim, +2 pts)",
}
REFERENCES = ("least_squares", "averaging", "knn")
CHAPTER = "book/05_curriculum"
CLAIMS = ("4a",)


def _garg_start_points(d: int, n_points: int, start_dims: int) -> int:
    """Garg et al. start at 11 points for 5 of 20 dims, i.e. 2 * start_dims + 1, never above n_points."""
    return min(n_points, 2 * start_dims + 1)


def full_task(scale: CurriculumScale) -> LinearRegressionTask:
    """The full task of the scale: linear regression in d dimensions with n_points points."""
    return make_task("linear_regression", d=scale.d, n_points=scale.n_points)


def schedule_of(scale: CurriculumScale, arm: str) -> DimensionCurriculum | None:
    """The training schedule of ``arm`` (None: the full task from the first step)."""
    check_choice("arm", arm, ARMS)
    if arm == "none":
        return None
    if arm == "paper":
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


def training_plan(preset: Preset, arms: tuple[str, ...] = ARMS) -> list[Job]:
    """Every arm and seed (independent runs)."""
    scale = preset.curriculum
    return [
        Job(
            f"{ARM_NAMES[arm]}, seed {seed}",
            run_path(scale, arm, seed),
            functools.partial(_train_quietly, scale, arm, seed),
        )
        for arm in arms
        for seed in scale.seeds
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
    """Relative drop of the validation error / d over the last fifth of training (small: levelled off)."""
    errors = [-score / d for score in history["val_score"]]
    cut = max(1, len(errors) // 5)
    before = min(errors[: len(errors) - cut]) if len(errors) > cut else errors[0]
    return (before - min(errors[-cut:])) / before


def evaluate_cached(model: torch.nn.Module, config: dict, task: TaskFamily, scale: CurriculumScale) -> EvalResult:
    """Evaluate ``model`` (identified by ``config``) on ``task``, cached under a hash of both."""
    key = config_hash(
        {
            "code_version": CODE_VERSION,
            "model": config,
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


def run(preset: Preset, *, arms: tuple[str, ...] = ARMS, progress: bool = True) -> dict:
    """Train-or-load every arm and seed, measure steps-to-threshold, evaluate early and late checkpoints.

    Returns a dict with the scale, one row per run (steps to threshold, final error, levelling),
    the validation curves, the per-shot curves (per run and checkpoint, and of the references),
    and the wall time.
    """
    scale = preset.curriculum
    for arm in arms:
        check_choice("arms", arm, ARMS)
    started = time.perf_counter()
    train_all(training_plan(preset, arms), progress=progress, description="chapter 5 runs")
    rows, curves, shots = [], [], []
    jobs = [(arm, seed) for arm in arms for seed in scale.seeds]
    for arm, seed in tqdm(jobs, desc="curriculum runs", disable=not progress):
        result = train_run(scale, arm, seed, progress=progress)
        history = result.history
        rows.append(
            {
                "arm": arm,
                "seed": seed,
                "steps_to_threshold": steps_to_threshold(history, scale.d, scale.threshold),
                "final_error": -history["val_score"][-1] / scale.d,
                "best_error": -max(history["val_score"]) / scale.d,
                "last_fifth_drop": levelled_off(history, scale.d),
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
    return {
        "scale": scale,
        "rows": rows,
        "curves": curves,
        "shots": shots,
        "wall_seconds": time.perf_counter() - started,
    }


def _shot_row(learner: str, checkpoint: str, seed: int, evaluation: EvalResult, d: int) -> dict:
    return {
        "learner": learner,
        "checkpoint": checkpoint,
        "seed": seed,
        "per_position": [value / d for value in evaluation.per_position],
        "per_position_ci": [value / d for value in evaluation.per_position_ci],
        "mean": evaluation.mean / d,
    }


def _median_steps(rows: list[dict], arm: str, never: float) -> float:
    return statistics.median(
        never if r["steps_to_threshold"] is None else r["steps_to_threshold"] for r in rows if r["arm"] == arm
    )


def summary(results: dict, arm: str = "paper") -> dict:
    """Steps to threshold per seed for the baseline and ``arm``, medians and their ratio (arm / baseline)."""
    check_choice("arm", arm, ARMS[1:])
    scale, rows = results["scale"], results["rows"]
    never = float("inf")
    per_seed = {
        seed: {
            a: next(r["steps_to_threshold"] for r in rows if r["arm"] == a and r["seed"] == seed) for a in ("none", arm)
        }
        for seed in scale.seeds
    }
    base, curriculum = _median_steps(rows, "none", never), _median_steps(rows, arm, never)
    ratio = curriculum / base if base not in (0, never) and curriculum != never else float("nan")
    # When the baseline's median run never reached the threshold, it needs more than the budget:
    # the ratio is then below curriculum / max_steps (an upper bound).
    bound = curriculum / scale.train.max_steps if base == never and curriculum != never else float("nan")
    if base != never:
        text = f"{ratio:.2f}" if curriculum != never else "undefined (the curriculum's median run never reached it)"
    else:
        text = f"below {bound:.2f}" if curriculum != never else "undefined (neither arm's median run reached it)"
    return {
        "per_seed": per_seed,
        "median_none": base,
        f"median_{arm}": curriculum,
        "ratio": ratio,
        "ratio_upper_bound": bound,
        "ratio_text": text,
    }


def steps_text(steps: float, max_steps: int) -> str:
    """A median number of steps in words ("not reached within N steps" for infinity)."""
    return f"not reached within {max_steps} steps" if steps == float("inf") else f"{steps:.0f}"


RULE_4A = (
    "Steps to reach validation error/d <= threshold (half-way between predicting 0 and least squares), per seed, "
    "same seed = same initial weights and data. Reproduced if the paper's curriculum reaches the threshold strictly "
    "earlier than no curriculum for every seed (a run that never reaches it counts as infinitely slow; two runs that "
    "both never reach it do not count as earlier); not reproduced if the baseline's median is finite and the "
    "curriculum's median is not lower; inconclusive otherwise (e.g. when neither arm reaches the threshold). "
    "Final error need not improve."
)


def decide_4a(per_seed: dict[int, dict[str, int | None]]) -> str:
    """The rule RULE_4A on {seed: {"none": steps or None, "paper": steps or None}}."""
    never = float("inf")

    def value(steps: int | None) -> float:
        return never if steps is None else float(steps)

    faster = [value(arms["paper"]) < value(arms["none"]) for arms in per_seed.values()]
    median_none = statistics.median(value(arms["none"]) for arms in per_seed.values())
    median_paper = statistics.median(value(arms["paper"]) for arms in per_seed.values())
    if all(faster):
        return "reproduced"
    if median_none != never and not median_paper < median_none:
        return "not reproduced"
    return "inconclusive"


def _finite_or_none(value):
    """JSON-safe: infinities and NaNs become None (recursively in dicts)."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def verdicts(results: dict) -> list[ClaimVerdict]:
    """Decide claim 4a with RULE_4A and store the verdict."""
    scale = results["scale"]
    paper = summary(results, "paper")
    numbers = {
        "threshold": scale.threshold,
        "per_seed": {str(seed): arms for seed, arms in paper["per_seed"].items()},
        "median_none": paper["median_none"],
        "median_paper": paper["median_paper"],
        "ratio_paper_over_none": paper["ratio"],
        "ratio_paper_over_none_upper_bound": paper["ratio_upper_bound"],
        "final_error": {
            arm: statistics.mean(r["final_error"] for r in results["rows"] if r["arm"] == arm)
            for arm in {r["arm"] for r in results["rows"]}
        },
    }
    if any(r["arm"] == "garg" for r in results["rows"]):
        garg = summary(results, "garg")
        numbers.update(
            {
                "median_garg": garg["median_garg"],
                "ratio_garg_over_none": garg["ratio"],
                "ratio_garg_over_none_upper_bound": garg["ratio_upper_bound"],
            }
        )
    result = ClaimVerdict(
        claim="4a",
        preset=scale.preset,
        quantity="training steps until the full-task validation error / d falls below the threshold "
        "(None: not reached within the budget, or no ratio defined)",
        numbers={key: _finite_or_none(value) for key, value in numbers.items()},
        rule=RULE_4A,
        outcome=decide_4a(paper["per_seed"]),
        chapter=CHAPTER,
        wall_seconds=0.0 if all(r["from_cache"] for r in results["rows"]) else results["wall_seconds"],
    )
    return [result]


def explain(verdict: ClaimVerdict) -> str | None:
    """No computed explanation beyond the chapter's own evidence."""
    return None
