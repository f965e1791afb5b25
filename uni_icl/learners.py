"""Learner registry: one name -> one constructor, so experiments and caches speak in names.

A :class:`LearnerSpec` (name + keyword parameters) fully describes an untrained learner and is
part of every cache key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from torch import nn

from uni_icl.icl import ICLConfig, ICLTransformer
from uni_icl.meta_learners import ConditionalNeuralProcess, MatchingNetwork, PrototypicalNetwork
from uni_icl.regression import Averaging, CausalRegressionTransformer, LeastSquares, NearestNeighbours, RegressorConfig
from uni_icl.validation import check_choice

CLASSIFIERS = ("icl", "icl_authors", "matchnet", "protonet", "cnp")
REGRESSORS = ("icl_regressor", "least_squares", "averaging", "knn")
LEARNERS = CLASSIFIERS + REGRESSORS
TRAINABLE = ("icl", "icl_authors", "matchnet", "protonet", "cnp", "icl_regressor")

DISPLAY_NAMES = {
    "icl": "ICL",
    "icl_authors": "ICL (authors' ICLer)",
    "matchnet": "MatchNet",
    "protonet": "ProtoNet",
    "cnp": "CNP",
    "icl_regressor": "ICL",
    "least_squares": "Least squares",
    "averaging": "Averaging",
    "knn": "3-NN",
}


@dataclass(frozen=True)
class LearnerSpec:
    """A learner by name with its constructor parameters (JSON-able)."""

    name: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("learner", self.name, LEARNERS)
        for key in self.params:
            check_choice(f"parameter of learner '{self.name}'", key, allowed_params(self.name))

    def config(self) -> dict:
        return asdict(self)

    @property
    def trainable(self) -> bool:
        return self.name in TRAINABLE

    def build(self, d: int, n_classes: int) -> nn.Module:
        """Construct the untrained learner for inputs of dimension d and n_classes classes."""
        params = dict(self.params)
        if self.name == "icl":
            return ICLTransformer(d, n_classes, ICLConfig(**params))
        if self.name == "icl_authors":
            return ICLTransformer(d, n_classes, ICLConfig.authors())
        if self.name == "matchnet":
            return MatchingNetwork(d, n_classes, **params)
        if self.name == "protonet":
            return PrototypicalNetwork(d, n_classes, **params)
        if self.name == "cnp":
            return ConditionalNeuralProcess(d, n_classes, **params)
        if self.name == "icl_regressor":
            return CausalRegressionTransformer(d, RegressorConfig(**params))
        if self.name == "least_squares":
            return LeastSquares()
        if self.name == "averaging":
            return Averaging()
        return NearestNeighbours(**params)


def allowed_params(name: str) -> list[str]:
    """Constructor parameters a learner accepts."""
    if name == "icl":
        return [f.name for f in fields(ICLConfig)]
    if name == "icl_regressor":
        return [f.name for f in fields(RegressorConfig)]
    if name in ("matchnet", "protonet", "cnp"):
        return ["hidden", "n_layers"]
    return ["k"] if name == "knn" else []


def display_name(name: str) -> str:
    """Human-readable learner name for tables and legends."""
    return DISPLAY_NAMES.get(name, name)
