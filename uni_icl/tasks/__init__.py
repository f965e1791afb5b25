"""Task families: generators of few-shot episodes, and the one registry that names them.

- :mod:`~uni_icl.tasks.base`: :class:`Episode`, :class:`TaskFamily` (sampling with an explicit
  generator, parameter checks, ``config()`` for cache keys).
- :mod:`~uni_icl.tasks.synthetic`: pairwise, prototype, amortized, radius (also rescaled) and the mixture.
- :mod:`~uni_icl.tasks.regression`: in-context linear regression, its domains (M2-ICL).
- :mod:`~uni_icl.tasks.images`: few-shot episodes of scikit-learn's 8 x 8 digits.
- :mod:`~uni_icl.tasks.noise_range`: a synthetic family with its input noise drawn per episode.
- :mod:`~uni_icl.tasks.schedules`: which family each training step draws from (curricula).

Every family is registered here, in :data:`TASK_FAMILIES`; nothing registers itself from above.
"""

from __future__ import annotations

from dataclasses import fields

from uni_icl.tasks.base import Episode, TaskFamily, chance_accuracy, make_generator
from uni_icl.tasks.images import DigitsMixtureTask, DigitsTask
from uni_icl.tasks.noise_range import NoiseRangeTask
from uni_icl.tasks.regression import DomainMixtureRegression, LinearRegressionTask, RegressionDomain, domain_task
from uni_icl.tasks.synthetic import (
    MIXTURE_COMPONENTS,
    AmortizedTask,
    MixtureTask,
    PairwiseTask,
    PrototypeTask,
    RadiusTask,
    RescaledRadiusTask,
)
from uni_icl.validation import check_choice

__all__ = [
    "MIXED_FAMILY",
    "MIXTURE_COMPONENTS",
    "SINGLE_FAMILIES",
    "TASK_FAMILIES",
    "UNSEEN_FAMILY",
    "UNSEEN_RESCALED",
    "AmortizedTask",
    "DigitsMixtureTask",
    "DigitsTask",
    "DomainMixtureRegression",
    "Episode",
    "LinearRegressionTask",
    "MixtureTask",
    "NoiseRangeTask",
    "PairwiseTask",
    "PrototypeTask",
    "RadiusTask",
    "RegressionDomain",
    "RescaledRadiusTask",
    "TaskFamily",
    "chance_accuracy",
    "domain_task",
    "make_generator",
    "make_task",
]

TASK_FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        PairwiseTask,
        PrototypeTask,
        AmortizedTask,
        RadiusTask,
        RescaledRadiusTask,
        MixtureTask,
        NoiseRangeTask,
        LinearRegressionTask,
        DomainMixtureRegression,
        DigitsTask,
        DigitsMixtureTask,
    )
}

# The roles the claims give families, read from the registry: the single families are those the
# mixture mixes, each naming its matching meta-learner (``matching_learner``); radius is the family
# no learner is built for, held out as unseen; rescaled to the training input scale, it is a new type
# without an input-scale shift.
SINGLE_FAMILIES: tuple[str, ...] = MIXTURE_COMPONENTS
MIXED_FAMILY = MixtureTask.name
UNSEEN_FAMILY = RadiusTask.name
UNSEEN_RESCALED = RescaledRadiusTask.name


def make_task(name: str, **params) -> TaskFamily:
    """Resolve a family by name and validate its parameters.

    >>> make_task("pairwise", d=2, n_points=10).sample(4, seed=0).xs.shape
    torch.Size([4, 10, 2])
    """
    check_choice("task", name, sorted(TASK_FAMILIES))
    cls = TASK_FAMILIES[name]
    allowed = sorted(f.name for f in fields(cls))
    for key in params:
        check_choice(f"parameter of task '{name}'", key, allowed)
    return cls(**params)
