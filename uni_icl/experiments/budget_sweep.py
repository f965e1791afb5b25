"""Chapter 2's budget sweep: does what mixing costs shrink as training grows?

Claim 2-mixed compares models trained to convergence. This sweep shows the trend the verdict sits
on: each learner of ``LearnabilityScale.sweep_learners`` is trained on each single family and on
the mixture at each of ``sweep_budgets`` (doubling; a mixture model gets 3x the steps, so the same
episodes per family: :func:`~uni_icl.experiments.common.per_family_budget`), with a constant
learning rate and no early stopping, for each of ``sweep_seeds``. Each budget is its own run
(resumable and cached like every model); on each family the table gives mixed minus single with a
95% interval over seeds and test episodes.
"""

from __future__ import annotations

from dataclasses import replace

from uni_icl.experiments.common import (
    MIXED_FAMILY,
    SINGLE_FAMILIES,
    classification_run,
    classification_task,
    families_in,
)
from uni_icl.learners import display_name
from uni_icl.parallel import Job, run_job
from uni_icl.presets import Preset
from uni_icl.runs import RunSpec, evaluate_or_load, train_or_load
from uni_icl.uncertainty import seeded_difference


def sweep_run(preset: Preset, learner: str, family: str, budget: int, seed: int) -> RunSpec:
    """``learner`` on ``family`` for ``budget`` single-family steps (x3 on the mixture), no early stopping."""
    scale = preset.classification
    task = classification_task(scale, family)
    base = classification_run(scale, learner, task, seed)
    steps = budget * families_in(task)
    train = replace(base.train, max_steps=steps, stop_tolerance=0.0, patience=0, checkpoint_every=min(steps, 500))
    return replace(base, train=train)


def sweep_grid(preset: Preset) -> list[tuple[str, str, int, int]]:
    """(learner, training family, budget, seed) of every run of the sweep."""
    extras = preset.learnability
    return [
        (learner, family, budget, seed)
        for learner in extras.sweep_learners
        for family in (*SINGLE_FAMILIES, MIXED_FAMILY)
        for budget in extras.sweep_budgets
        for seed in extras.sweep_seeds
    ]


def training_plan(preset: Preset) -> list[Job]:
    return [run_job(sweep_run(preset, *point)) for point in sweep_grid(preset)]


def sweep_table(preset: Preset, *, progress: bool = False) -> list[dict]:
    """One row per (learner, budget, test family): accuracy single and mixed (means over seeds) and
    mixed minus single with its interval over seeds and test episodes, and the per-seed differences."""
    scale, extras = preset.classification, preset.learnability
    rows = []
    for learner in extras.sweep_learners:
        for budget in extras.sweep_budgets:
            for family in SINGLE_FAMILIES:
                task = classification_task(scale, family)
                scores = {}
                for train_family in (family, MIXED_FAMILY):
                    scores[train_family] = [
                        evaluate_or_load(
                            train_or_load(sweep_run(preset, learner, train_family, budget, seed), progress=progress),
                            task,
                            n_tasks=scale.n_test_tasks,
                            seed=scale.test_seed,
                        ).per_episode_mean
                        for seed in extras.sweep_seeds
                    ]
                diff = seeded_difference(scores[MIXED_FAMILY], scores[family])
                per_seed = [
                    sum(m) / len(m) - sum(s) / len(s) for m, s in zip(scores[MIXED_FAMILY], scores[family], strict=True)
                ]
                rows.append(
                    {
                        "learner": display_name(learner),
                        "budget": budget,
                        "test family": family,
                        "single": sum(map(sum, scores[family])) / sum(map(len, scores[family])),
                        "mixed": sum(map(sum, scores[MIXED_FAMILY])) / sum(map(len, scores[MIXED_FAMILY])),
                        "mixed - single": diff.mean,
                        "ci": diff.ci,
                        "per seed": per_seed,
                    }
                )
    return rows
