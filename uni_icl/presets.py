"""Presets: one environment variable, ``UNI_ICL_PRESET``, picks the scale of every experiment.

- ``smoke``: seconds per notebook; CI executes the whole book with it. Numbers are meaningless.
- ``quick`` (default): the whole book on 2 CPU cores in about half an hour; every model is
  trained until its validation accuracy levels off (early stopping on a validation set).
- ``paper``: the authors' scale, for a GPU.

Experiment modules keep their own scale tables keyed by preset name; the name itself always comes
from :func:`preset_name`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from uni_icl.learners import LearnerSpec
from uni_icl.runs import RunSpec
from uni_icl.tasks import TaskFamily, make_task
from uni_icl.training import TrainConfig
from uni_icl.validation import check_choice

PRESET_ENV = "UNI_ICL_PRESET"
PRESETS = ("smoke", "quick", "paper")
DEFAULT_PRESET = "quick"


def preset_name(name: str | None = None) -> str:
    """``name`` if given, else $UNI_ICL_PRESET, else 'quick'; validated."""
    chosen = name if name is not None else (os.environ.get(PRESET_ENV) or DEFAULT_PRESET)
    check_choice("preset", chosen, PRESETS)
    return chosen


@dataclass(frozen=True)
class ClassificationScale:
    """Sizes shared by the classification chapters (PAPER.md defaults: d = 2, C = 2, N = 50)."""

    preset: str
    n_points: int  # N, points per episode
    icl: dict  # ICLConfig parameters of the default in-context transformer
    meta_learner: dict  # hidden width and layers of the meta-learners' networks
    icl_train: TrainConfig  # optimisation of the transformers
    meta_train: TrainConfig  # optimisation of MatchNet, ProtoNet and CNP
    n_test_tasks: int  # test episodes per evaluation
    test_seed: int = 2_000_003  # seed of the test episodes (distinct from training and validation)
    d: int = 2
    n_classes: int = 2
    extra: dict = field(default_factory=dict)

    def task(self, family: str, **params) -> TaskFamily:
        """A family at this scale (d, C, N), with overrides such as ``noise_std``."""
        base = {"d": self.d, "n_classes": self.n_classes, "n_points": self.n_points}
        return make_task(family, **{**base, **params})

    def run(self, learner: str, task: TaskFamily, seed: int = 0, **overrides) -> RunSpec:
        """The RunSpec of ``learner`` trained on ``task`` at this scale; ``overrides`` replace
        learner parameters (e.g. ``layout="support_query"`` for the ICL transformer)."""
        if learner in ("icl", "icl_authors"):
            params = self.icl if learner == "icl" else {}
            return RunSpec(LearnerSpec(learner, {**params, **overrides}), task, _with_seed(self.icl_train, seed))
        params = {**self.meta_learner, **overrides}
        return RunSpec(LearnerSpec(learner, params), task, _with_seed(self.meta_train, seed))


def _with_seed(config: TrainConfig, seed: int) -> TrainConfig:
    return TrainConfig(**{**config.__dict__, "seed": seed})


CLASSIFICATION_SCALES = {
    "smoke": ClassificationScale(
        preset="smoke",
        n_points=20,
        icl={"width": 16, "depth": 1, "n_heads": 2},
        meta_learner={"hidden": 8, "n_layers": 2},
        icl_train=TrainConfig(max_steps=20, batch_size=16, eval_every=10, n_val_tasks=32, checkpoint_every=10),
        meta_train=TrainConfig(max_steps=20, batch_size=16, eval_every=10, n_val_tasks=32, checkpoint_every=10),
        n_test_tasks=64,
    ),
    "quick": ClassificationScale(
        preset="quick",
        n_points=50,
        icl={"width": 32, "depth": 3, "n_heads": 1},
        meta_learner={"hidden": 32, "n_layers": 2},
        # patience 6 x 100 steps: with 4 the paired-layout transformers stopped while their validation
        # accuracy still rose by about 0.002 per 100 steps (they reached far more on the GPU run)
        icl_train=TrainConfig(
            max_steps=4000, batch_size=64, lr=2e-3, eval_every=100, n_val_tasks=512, patience=6, min_delta=0.002
        ),
        meta_train=TrainConfig(
            max_steps=8000, batch_size=64, lr=3e-3, eval_every=200, n_val_tasks=512, patience=5, min_delta=0.001
        ),
        n_test_tasks=1024,
    ),
    "paper": ClassificationScale(
        preset="paper",
        n_points=50,
        icl={"width": 64, "depth": 6, "n_heads": 4},
        meta_learner={"hidden": 64, "n_layers": 3},
        icl_train=TrainConfig(
            max_steps=100_000,
            batch_size=256,
            lr=1e-3,
            eval_every=1000,
            n_val_tasks=2048,
            patience=10,
            checkpoint_every=2000,
        ),
        meta_train=TrainConfig(
            max_steps=50_000,
            batch_size=256,
            lr=1e-3,
            eval_every=1000,
            n_val_tasks=2048,
            patience=10,
            checkpoint_every=2000,
        ),
        n_test_tasks=4096,
    ),
}


def classification_scale(preset: str | None = None) -> ClassificationScale:
    """The classification sizes of ``preset`` (default: $UNI_ICL_PRESET, else quick)."""
    return CLASSIFICATION_SCALES[preset_name(preset)]
