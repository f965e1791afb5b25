"""Learners: every model and predictor of the book under one contract, and the one registry.

The contract: ``learner(xs (B, N, d), ys (B, N)) -> (B, N, C)`` logits (or (B, N) predictions for
a regressor), where output i uses only x_i and the pairs (x_j, y_j) with j < i. The authors' ICLer
returns its readout's 2C logits, (B, N, 2C), the last C for padding labels that never occur
(:mod:`~uni_icl.learners.icler`): its cross-entropy and argmax are then the authors'.

- :mod:`~uni_icl.learners.modules`: masks, attention, MLPs shared by the networks.
- :mod:`~uni_icl.learners.icl`: the in-context transformer.
- :mod:`~uni_icl.learners.icler`: the authors' ICLer, parameter for parameter, in one causal pass.
- :mod:`~uni_icl.learners.icl_prefix`: the authors' ICLer run as they run it, once per prefix.
- :mod:`~uni_icl.learners.meta_learners`: MatchNet, ProtoNet, CNP.
- :mod:`~uni_icl.learners.regressors`: the causal regression transformer and its baselines.
- :mod:`~uni_icl.learners.baselines`: nearest class mean, k-NN vote, per-prefix logistic regression
  (explicit rules, nothing meta-learned).
- :mod:`~uni_icl.learners.selectors`: explicit algorithm selection among trained learners.
- :mod:`~uni_icl.learners.bayes`: Bayes-optimal predictors of the synthetic families.
- :mod:`~uni_icl.learners.constructions`: hand-set transformers that run a meta-learner exactly.
- :mod:`~uni_icl.learners.maml`: MAML over the in-context regressor (M2-ICL).

:data:`LEARNERS` maps a name to how to build it; a :class:`LearnerSpec` (name + parameters) fully
describes an untrained learner and is part of every cache key, with the learner's ``revision``
when it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

from torch import nn

from uni_icl.learners.baselines import KNearestClassifier, NearestClassMean, PrefixLogisticRegression
from uni_icl.learners.icl import ICLConfig, ICLTransformer
from uni_icl.learners.icl_prefix import ICLPrefixTransformer
from uni_icl.learners.icler import ICLer
from uni_icl.learners.meta_learners import ConditionalNeuralProcess, MatchingNetwork, PrototypicalNetwork
from uni_icl.learners.regressors import (
    Averaging,
    CausalRegressionTransformer,
    LeastSquares,
    NearestNeighbours,
    RegressorConfig,
)
from uni_icl.validation import check_choice

META_LEARNER_PARAMS = ("hidden", "n_layers")
# What a learner is, as the claims compare them: an in-context learner (a transformer that learns the
# algorithm from episodes), a meta-learner (an algorithm with a built-in bias whose parts are
# meta-learned), or an explicit rule (nothing learned across episodes). The Bayes predictors
# (uni_icl.learners.bayes) are the fourth kind, the reference; they are not built from this registry.
KINDS = ("in-context", "meta-learner", "explicit", "bayes")


def _field_names(config_class: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(config_class))


@dataclass(frozen=True)
class Learner:
    """One registry entry: how to build the learner and how to show it."""

    display_name: str
    build: Callable[[int, int, dict], nn.Module]  # (d, n_classes, params) -> untrained module
    params: tuple[str, ...]  # constructor parameters it accepts
    trainable: bool
    regression: bool = False
    kind: str = "explicit"  # one of KINDS
    # bump when a change to the learner invalidates its stored models: a revision > 0 is part of its
    # specs' keys (so other learners' keys stay as they are)
    revision: int = 0

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)


LEARNERS: dict[str, Learner] = {
    "icl": Learner(
        "ICL", lambda d, c, p: ICLTransformer(d, c, ICLConfig(**p)), _field_names(ICLConfig), True, kind="in-context"
    ),
    # the authors' ICLer made causal so that one pass serves every prefix (uni_icl.learners.icler);
    # revision 1: their parametrisation (bias-free q, k, v, no output projection, d_h^-1/2, 2C-logit readout)
    "icl_authors": Learner(
        "ICL (authors' ICLer)", lambda d, c, p: ICLer(d, c), (), True, kind="in-context", revision=1
    ),
    "matchnet": Learner(
        "MatchNet", lambda d, c, p: MatchingNetwork(d, c, **p), META_LEARNER_PARAMS, True, kind="meta-learner"
    ),
    "protonet": Learner(
        "ProtoNet", lambda d, c, p: PrototypicalNetwork(d, c, **p), META_LEARNER_PARAMS, True, kind="meta-learner"
    ),
    "cnp": Learner(
        "CNP", lambda d, c, p: ConditionalNeuralProcess(d, c, **p), META_LEARNER_PARAMS, True, kind="meta-learner"
    ),
    # the authors' ICLer as they compute it: same parameters as icl_authors (its causal one-pass
    # form), but one non-causal pass per prefix (uni_icl.learners.icl_prefix); revision as icl_authors
    "icl_authors_prefix": Learner(
        "ICL (authors' ICLer, per prefix)",
        lambda d, c, p: ICLPrefixTransformer(d, c),
        (),
        True,
        kind="in-context",
        revision=1,
    ),
    "icl_regressor": Learner(
        "ICL",
        lambda d, c, p: CausalRegressionTransformer(d, RegressorConfig(**p)),
        _field_names(RegressorConfig),
        True,
        regression=True,
        kind="in-context",
    ),
    "least_squares": Learner("Least squares", lambda d, c, p: LeastSquares(), (), False, regression=True),
    "averaging": Learner("Averaging", lambda d, c, p: Averaging(), (), False, regression=True),
    "knn": Learner("3-NN", lambda d, c, p: NearestNeighbours(**p), ("k",), False, regression=True),
    # explicit classification rules with nothing fitted across episodes (uni_icl.learners.baselines)
    "ncm": Learner("Nearest class mean", lambda d, c, p: NearestClassMean(c), (), False),
    "knn_classifier": Learner("5-NN classifier", lambda d, c, p: KNearestClassifier(c, **p), ("k",), False),
    "logistic": Learner(
        "Logistic regression", lambda d, c, p: PrefixLogisticRegression(c, **p), ("l2", "steps"), False
    ),
}
CLASSIFIERS = tuple(name for name, learner in LEARNERS.items() if not learner.regression)
TRAINABLE_CLASSIFIERS = tuple(name for name in CLASSIFIERS if LEARNERS[name].trainable)
REGRESSORS = tuple(name for name, learner in LEARNERS.items() if learner.regression)
META_LEARNERS = tuple(name for name, learner in LEARNERS.items() if learner.kind == "meta-learner")


def kind_of(name: str) -> str:
    """The kind (one of :data:`KINDS`) of the registered learner ``name``."""
    check_choice("learner", name, tuple(LEARNERS))
    return LEARNERS[name].kind


@dataclass(frozen=True)
class LearnerSpec:
    """A learner by name with its constructor parameters (JSON-able)."""

    name: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("learner", self.name, tuple(LEARNERS))
        for key in self.params:
            check_choice(f"parameter of learner '{self.name}'", key, LEARNERS[self.name].params)

    def config(self) -> dict:
        """The spec as JSON-able data (part of cache keys): name, params and the learner's revision if > 0."""
        revision = LEARNERS[self.name].revision
        return {**asdict(self), "revision": revision} if revision else asdict(self)

    @property
    def trainable(self) -> bool:
        return LEARNERS[self.name].trainable

    def build(self, d: int, n_classes: int) -> nn.Module:
        """Construct the untrained learner for inputs of dimension d and n_classes classes."""
        return LEARNERS[self.name].build(d, n_classes, dict(self.params))


def display_name(name: str) -> str:
    """Human-readable learner name for tables and legends (unknown names are shown as they are)."""
    return LEARNERS[name].display_name if name in LEARNERS else name
