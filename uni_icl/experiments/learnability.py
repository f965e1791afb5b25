"""Claim 2 (learnability): learners trained on each family, evaluated on each family.

``cross_table`` trains-or-loads every (learner, training family) pair and evaluates it on every
test family at one preset; rows are plain dicts so a notebook can turn them into a DataFrame.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm

from uni_icl.learners import display_name
from uni_icl.presets import ClassificationScale
from uni_icl.runs import TrainedLearner, evaluate_or_load, train_or_load

SINGLE_FAMILIES = ("pairwise", "prototype", "amortized")
LEARNERS = ("icl", "matchnet", "protonet", "cnp")
MATCHING_LEARNER = {"pairwise": "matchnet", "prototype": "protonet", "amortized": "cnp"}


def trained(
    scale: ClassificationScale, learner: str, family: str, *, progress: bool = True, **task_params
) -> TrainedLearner:
    """Train-or-load ``learner`` on ``family`` at ``scale`` (task overrides such as noise_std)."""
    return train_or_load(scale.run(learner, scale.task(family, **task_params)), progress=progress)


def cross_table(
    scale: ClassificationScale,
    learners: Iterable[str] = LEARNERS,
    train_families: Iterable[str] = SINGLE_FAMILIES,
    test_families: Iterable[str] | None = None,
    *,
    progress: bool = True,
) -> list[dict]:
    """One row per (learner, training family, test family): mean accuracy, its 95% CI, the
    per-shot curve with CIs, and the training time. ``test_families=None`` tests each model on
    its own training family only."""
    pairs = [(learner, family) for family in train_families for learner in learners]
    rows = []
    for learner, family in tqdm(pairs, desc="learners", disable=not progress):
        model = trained(scale, learner, family, progress=progress)
        for test_family in test_families or [family]:
            result = evaluate_or_load(model, scale.task(test_family), n_tasks=scale.n_test_tasks, seed=scale.test_seed)
            rows.append(
                {
                    "learner": display_name(learner),
                    "train_family": family,
                    "test_family": test_family,
                    "mean": result.mean,
                    "ci": result.mean_ci,
                    "per_position": result.per_position,
                    "per_position_ci": result.per_position_ci,
                    "train_seconds": model.history.seconds,
                    "train_steps": model.history.steps[-1] if model.history.steps else 0,
                    "best_step": model.history.best_step,
                    "preset": scale.preset,
                }
            )
    return rows
