"""Claim 2 (learnability): learners trained on each family, evaluated on each family, against the Bayes limit.

Building blocks, each usable alone:

- ``trained`` / ``cross_table``: train-or-load every (learner, training family) pair at one preset
  and evaluate it on test families; rows are plain dicts (a notebook turns them into a DataFrame).
- ``bayes_scores`` / ``evaluate_bayes_or_load``: the Bayes-optimal in-context predictor of
  :mod:`uni_icl.learners.bayes` scored on exactly the test episodes the learners see (same number, same
  seed, same batches), cached in the result store, with Monte-Carlo diagnostics for ``prototype``.
- ``decision_regions``: P(y = 1) of ICL, the matching meta-learner and the Bayes predictor on a
  grid of queries after a few labelled points, stored like a result table.
- ``row_difference``: mean difference of two learners on the same test episodes, over their
  training seeds, with a 95% interval over seeds and episodes (:mod:`uni_icl.uncertainty`).
- ``decide_single`` / ``decide_mixed``: the decision rules of claims "2-single" and "2-mixed",
  fixed before any result was looked at, with the evidence they read, live in
  :mod:`uni_icl.experiments.rules.learnability`.
- ``run`` computes (or loads) everything the chapter shows; ``verdicts`` applies the rules and
  stores both verdicts. The chapter's tables and the words that explain its verdicts are
  presentation: :mod:`uni_icl.book.learnability_page`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from uni_icl.convergence import calibration
from uni_icl.device import default_device, policy_threads
from uni_icl.evaluation import EvalResult, class_probabilities_on_grid
from uni_icl.experiments.common import (
    MATCHING_LEARNER,
    META_LEARNERS,
    MIXED_FAMILY,
    SINGLE_FAMILIES,
    UNSEEN_FAMILY,
    BayesEvaluation,
    bayes_code_hash,
    bayes_predictor,
    classification_job,
    classification_run,
    classification_task,
    evaluate_bayes_or_load,
    evaluate_prior_bayes_or_load,
    rung_scale,
    trained,
)
from uni_icl.experiments.evidence import (
    CONVERGENCE_TOLERANCE,
    MARGIN,
    decisive_ladder_rows,
    gated_verdict,
    seeded_row,
    training_record,
)
from uni_icl.experiments.rules.learnability import (
    RULE_MIXED,
    RULE_SINGLE,
    authors_bias_effects,
    decide_mixed,
    decide_single,
    ladder_rows,
    mixed_decisive,
    mixed_evidence,
    single_decisive,
    single_evidence,
)
from uni_icl.learners import TRAINABLE_CLASSIFIERS, display_name
from uni_icl.parallel import Job, train_all
from uni_icl.presets import ClassificationScale, Preset
from uni_icl.runs import CODE_VERSION, evaluate_or_load, train_or_load
from uni_icl.storage import cache_root, cached_entry, config_hash
from uni_icl.validation import check_choice, check_int, check_keys
from uni_icl.verdicts import ClaimVerdict, model_record

LEARNERS = ("icl", *META_LEARNERS)
AUTHORS_VARIANTS = ("icl_authors_prefix", "icl_authors")  # their computation, and its causal one-pass form
PAGE_ENTRIES = ("decision_regions",)  # what only the chapter's page reads (results status checks it too)
CLAIMS = ("2-single", "2-mixed")
BAYES_NAME = "Bayes"
MIXTURE_BAYES_NAME = "Bayes, mixture prior"
TRAIN_FAMILIES = (*SINGLE_FAMILIES, MIXED_FAMILY)
CLASSIFICATION_FAMILIES = (*SINGLE_FAMILIES, MIXED_FAMILY, UNSEEN_FAMILY)
CHAPTER = "book/02_learnability"
# PAPER.md: the authors' meta-learners embed with 2-2-2 LeakyReLU MLPs (hidden width 2, two layers); the
# book's are wider (ClassificationScale.meta_learner). The 2-single premise is reported for both shapes.
AUTHORS_META_SHAPE = {"hidden": 2, "n_layers": 2}


# ----------------------------------------------------------------------------- learners


def cross_table(
    scale: ClassificationScale,
    learners: Iterable[str] = LEARNERS,
    train_families: Iterable[str] = SINGLE_FAMILIES,
    test_families: Iterable[str] | None = None,
    *,
    seeds: Iterable[int] | None = None,
    progress: bool = True,
) -> list[dict]:
    """One row per (learner, training family, test family): the scores of :func:`seeded_row` over
    ``seeds`` (default: the scale's), and per seed how it was trained (``runs``, with the
    convergence test). ``test_families=None`` tests each model on its own training family only."""
    learners, train_families = list(learners), list(train_families)
    test_families = None if test_families is None else list(test_families)
    seeds = list(scale.seeds if seeds is None else seeds)
    for learner in learners:
        check_choice("learners", learner, TRAINABLE_CLASSIFIERS)
    for family in train_families + (test_families or []):
        check_choice("families", family, CLASSIFICATION_FAMILIES)
    pairs = [(learner, family) for family in train_families for learner in learners]
    rows = []
    for learner, family in tqdm(pairs, desc="learners", disable=not progress):
        models = [trained(scale, learner, family, seed=seed, progress=progress) for seed in seeds]
        runs = [training_record(model) for model in models]
        for test_family in test_families or [family]:
            task = classification_task(scale, test_family)
            results = [
                evaluate_or_load(model, task, n_tasks=scale.n_test_tasks, seed=scale.test_seed) for model in models
            ]
            rows.append(
                {
                    "learner": display_name(learner),
                    "learner_id": learner,
                    "train_family": family,
                    "test_family": test_family,
                    **seeded_row(results),
                    "seeds": seeds,
                    "runs": runs,
                    "preset": scale.preset,
                }
            )
    return rows


# ----------------------------------------------------------------------------- Bayes predictor


def bayes_rows(
    scale: ClassificationScale,
    families: Iterable[str] = SINGLE_FAMILIES,
    *,
    n_samples: int,
    bayes_seed: int = 0,
    n_sampler_seeds: int = 1,
) -> tuple[list[dict], dict[str, BayesEvaluation]]:
    """Rows in the format of :func:`cross_table` for the Bayes predictor of each family, and the
    evaluations (of the first sampler seed).

    The ``prototype`` predictor is a Monte-Carlo approximation (the sampler treats the classes as
    i.i.d. and uses a soft penalty; two sampler seeds flip some decisions): it is run with
    ``n_sampler_seeds`` sampler seeds, which enter its row like training seeds, so every interval
    that reads it includes the Monte-Carlo error. The other families' predictors are exact.
    """
    rows, evaluations = [], {}
    for family in families:
        task = classification_task(scale, family)
        sampler_seeds = [bayes_seed + k for k in range(n_sampler_seeds if family == "prototype" else 1)]
        runs = [
            evaluate_bayes_or_load(
                task, n_tasks=scale.n_test_tasks, seed=scale.test_seed, bayes_seed=seed, n_samples=n_samples
            )
            for seed in sampler_seeds
        ]
        evaluations[family] = runs[0]
        rows.append(
            {
                "learner": BAYES_NAME,
                "learner_id": "bayes",
                "train_family": family,
                "test_family": family,
                **seeded_row([run.result for run in runs]),
                "exact": runs[0].exact,
                "sampler_seeds": sampler_seeds,
                "preset": scale.preset,
            }
        )
    return rows, evaluations


def mixture_prior_rows(
    scale: ClassificationScale, *, n_samples: int, bayes_seed: int = 0, n_sampler_seeds: int = 1
) -> tuple[list[dict], dict[str, list[float]]]:
    """The Bayes predictor of the mixture prior (it must infer the family) on each single family's
    test episodes: rows in the format of :func:`cross_table` (learner_id ``bayes_mixture``, training
    family ``mixture``), and per family the mean P(true family | prefix) at each shot count (first
    sampler seed).

    It is an approximation on every family: the family posterior weighs the prototype component's
    Monte-Carlo evidence. It is run with ``n_sampler_seeds`` sampler seeds, which enter its row like
    training seeds, so every interval that reads it includes the Monte-Carlo error.
    """
    rows, posteriors = [], {}
    prior = classification_task(scale, MIXED_FAMILY)
    sampler_seeds = [bayes_seed + k for k in range(n_sampler_seeds)]
    for family in SINGLE_FAMILIES:
        stored = [
            evaluate_prior_bayes_or_load(
                prior,
                classification_task(scale, family),
                n_tasks=scale.n_test_tasks,
                seed=scale.test_seed,
                bayes_seed=sampler_seed,
                n_samples=n_samples,
            )
            for sampler_seed in sampler_seeds
        ]
        rows.append(
            {
                "learner": MIXTURE_BAYES_NAME,
                "learner_id": "bayes_mixture",
                "train_family": MIXED_FAMILY,
                "test_family": family,
                **seeded_row([EvalResult(**entry["result"]) for entry in stored]),
                "exact": False,
                "sampler_seeds": sampler_seeds,
                "preset": scale.preset,
            }
        )
        posteriors[family] = stored[0]["true_family_posterior"]
    return rows, posteriors


# ----------------------------------------------------------------------------- the whole experiment


@dataclass
class LearnabilityResults:
    """Everything the chapter shows, at one preset.

    ``rows``: every learner row of :func:`cross_table` (single-type, mixed and authors' ICLer
    models) plus the Bayes rows; ``bayes``: the Bayes evaluations by family; ``authors_shapes``: the
    rows of the authors' 2-2-2 meta-learners (single families and mixture); ``ladder``: the rules read
    at every budget of the ladder (:func:`ladder`); ``calibration``: the convergence test's calibration
    on the full curves (:func:`uni_icl.convergence.calibration`); ``type_posterior``: per family, the mean
    P(true family | prefix) of the mixture-prior Bayes predictor by shot count; ``seconds``: wall time of
    :func:`run`. Its tables are built by :func:`uni_icl.book.learnability_page.tables`.
    """

    preset: str
    rows: list[dict]
    bayes: dict[str, BayesEvaluation]
    authors_shapes: list[dict] = field(default_factory=list)
    ladder: list[dict] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    type_posterior: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self, learner_id: str, train_family: str, test_family: str) -> dict:
        """The row of one (learner, training family, test family); KeyError if absent."""
        for row in self.rows:
            if (row["learner_id"], row["train_family"], row["test_family"]) == (learner_id, train_family, test_family):
                return row
        raise KeyError(f"no result for {learner_id} trained on {train_family}, tested on {test_family}")


def training_plan(preset: Preset) -> list[Job]:
    """Every model the chapter trains: each learner on each single family and on the mixture, with
    each of the scale's seeds (their budget ladders stored on the way), the authors' ICLer (seed 0) on
    ``authors_families``, and the authors' 2-2-2 meta-learner shapes on each family and the mixture."""
    scale, extras = preset.classification, preset.learnability
    jobs = [
        classification_job(scale, learner, family, seed)
        for seed in scale.seeds
        for family in TRAIN_FAMILIES
        for learner in LEARNERS
    ]
    jobs += [
        classification_job(scale, variant, family)
        for family in extras.authors_families
        for variant in extras.authors_variants
    ]
    authors = authors_shape_scale(scale)
    jobs += [
        classification_job(authors, learner, family, seed)
        for seed in scale.seeds
        for family in TRAIN_FAMILIES
        for learner in META_LEARNERS
    ]
    return jobs


def authors_shape_scale(scale: ClassificationScale) -> ClassificationScale:
    """``scale`` with the authors' meta-learner shape (:data:`AUTHORS_META_SHAPE`): same training."""
    return replace(scale, meta_learner=AUTHORS_META_SHAPE)


def run(preset: Preset, *, progress: bool = True) -> LearnabilityResults:
    """Train-or-load every model of the chapter, evaluate it, score the Bayes predictors."""
    scale, extras = preset.classification, preset.learnability
    started = time.perf_counter()
    train_all(training_plan(preset), progress=progress, description="chapter 2 models")
    rows = cross_table(scale, LEARNERS, SINGLE_FAMILIES, SINGLE_FAMILIES, progress=progress)
    rows += cross_table(scale, LEARNERS, (MIXED_FAMILY,), SINGLE_FAMILIES, progress=progress)
    if extras.authors_families:
        rows += cross_table(
            scale, extras.authors_variants, extras.authors_families, SINGLE_FAMILIES, seeds=(0,), progress=progress
        )
    bayes_part, evaluations = bayes_rows(
        scale,
        SINGLE_FAMILIES,
        n_samples=extras.bayes_samples,
        bayes_seed=extras.bayes_seed,
        n_sampler_seeds=len(scale.seeds),
    )
    prior_part, type_posterior = mixture_prior_rows(
        scale, n_samples=extras.bayes_samples, bayes_seed=extras.bayes_seed, n_sampler_seeds=len(scale.seeds)
    )
    authors = authors_shape_scale(scale)
    authors_shapes = cross_table(authors, META_LEARNERS, SINGLE_FAMILIES, progress=progress)
    authors_shapes += cross_table(authors, META_LEARNERS, (MIXED_FAMILY,), SINGLE_FAMILIES, progress=progress)
    results = LearnabilityResults(
        preset.name,
        rows + bayes_part + prior_part,
        evaluations,
        authors_shapes,
        ladder(scale, bayes_part, progress=progress),
        convergence_calibration(scale, progress=progress),
        type_posterior,
    )
    results.seconds = time.perf_counter() - started
    return results


def ladder(scale: ClassificationScale, bayes_part: list[dict], *, progress: bool = True) -> list[dict]:
    """Claims 2-single and 2-mixed read at every budget of ``scale.budget_rungs``: the rows of
    :func:`~uni_icl.experiments.rules.learnability.ladder_rows` for each rung's models (the Bayes rows
    do not depend on the budget)."""
    rows = []
    for rung in scale.budget_rungs:
        at_rung = rung_scale(scale, rung)
        learners = cross_table(at_rung, LEARNERS, SINGLE_FAMILIES, SINGLE_FAMILIES, progress=progress)
        learners += cross_table(at_rung, LEARNERS, (MIXED_FAMILY,), SINGLE_FAMILIES, progress=progress)
        view = LearnabilityResults(scale.preset, learners + bayes_part, {})
        rows += ladder_rows(view, rung, rests_on(view, SINGLE_FAMILIES), rests_on(view, TRAIN_FAMILIES))
    return rows


def convergence_calibration(scale: ClassificationScale, *, progress: bool = True) -> dict:
    """The convergence test's calibration (:func:`uni_icl.convergence.calibration`) on the full validation
    curves of the chapter's compared models: each learner on each family and the mixture, every seed."""
    histories = [
        trained(scale, learner, family, seed=seed, progress=progress).history
        for learner in LEARNERS
        for family in TRAIN_FAMILIES
        for seed in scale.seeds
    ]
    return calibration([(h.steps, h.val_score) for h in histories], CONVERGENCE_TOLERANCE)


# ----------------------------------------------------------------------------- verdicts


def rests_on(results: LearnabilityResults, train_families: Iterable[str]) -> list[dict]:
    """The models of LEARNERS trained on ``train_families``, each with its seeds' steps and convergence."""
    records = []
    for family in train_families:
        tested_on = family if family in SINGLE_FAMILIES else SINGLE_FAMILIES[0]  # every test row has the runs
        for learner in LEARNERS:
            row = results.row(learner, family, tested_on)
            records.append(model_record(learner, family, row["runs"]))
    return records


def verdicts(results: LearnabilityResults) -> list[ClaimVerdict]:
    """Apply the rules of claims 2-single and 2-mixed to ``results``."""
    icl_vs_best, matching_vs_other, single_numbers = single_evidence(results)
    icl_mixed_vs_single, bias_effects, mixed_numbers = mixed_evidence(results)
    single_models = rests_on(results, SINGLE_FAMILIES)
    mixed_models = rests_on(results, TRAIN_FAMILIES)
    single_outcome = decide_single(icl_vs_best, matching_vs_other)
    mixed_outcome = decide_mixed(icl_mixed_vs_single, bias_effects)
    single_numbers["decisive"] = single_decisive(icl_vs_best, matching_vs_other, single_outcome)
    mixed_numbers["decisive"] = mixed_decisive(icl_mixed_vs_single, bias_effects, mixed_outcome)
    for learner, (effect, _, _) in authors_bias_effects(results).items():
        mixed_numbers[f"{learner}_authors_shape_bias_effect"] = [effect.mean, effect.ci]

    def ladder_notes(claim: str) -> dict:
        return {"budget_ladder": decisive_ladder_rows(results.ladder, claim), "calibration": results.calibration}

    return [
        gated_verdict(
            "2-single",
            single_outcome,
            single_models,
            preset=results.preset,
            quantity="mean accuracy over shot counts on each family's test episodes (95% CIs; paired differences)",
            numbers={"margin": MARGIN, **single_numbers},
            rule=RULE_SINGLE,
            chapter=CHAPTER,
            wall_seconds=results.seconds,
            notes=ladder_notes("2-single"),
        ),
        gated_verdict(
            "2-mixed",
            mixed_outcome,
            mixed_models,
            preset=results.preset,
            quantity="mean accuracy over shot counts of mixture-trained learners on each family (paired differences)",
            numbers={"margin": MARGIN, **mixed_numbers},
            rule=RULE_MIXED,
            chapter=CHAPTER,
            wall_seconds=results.seconds,
            notes=ladder_notes("2-mixed"),
        ),
    ]


# ----------------------------------------------------------------------------- decision regions


def region_support(scale: ClassificationScale, family: str, n_support: int, seed: int = 7) -> tuple:
    """A support set of ``n_support`` labelled points of ``family`` (the first points of one episode).

    -> (support_xs (n, 2), support_ys (n,)); the same episode for every n, so panels with more
    shots add points to the ones before.
    """
    check_choice("family", family, SINGLE_FAMILIES)
    check_int("n_support", n_support, minimum=0, maximum=scale.n_points)
    episode = classification_task(scale, family).sample(1, seed=seed)
    return episode.xs[0, :n_support], episode.ys[0, :n_support]


REGION_EXTENT = 3.0  # the decision-region grid spans [-3, 3] on both axes


def region_predictors(family: str) -> tuple[str, str, str]:
    """Whose decision regions are drawn on ``family``: ICL, the matching meta-learner, the Bayes predictor."""
    return ("icl", MATCHING_LEARNER[family], "bayes")


def predictor_name(predictor: str) -> str:
    """The display name of a learner id, or of ``"bayes"`` (the Bayes predictor)."""
    return BAYES_NAME if predictor == "bayes" else display_name(predictor)


@dataclass(frozen=True)
class DecisionRegions:
    """P(y = 1) on a square grid for each family, support size and predictor (learners: seed 0,
    trained on the family), given the first points of :func:`region_support`'s episode.

    ``axis`` (R,): the grid's coordinates on both axes; ``probs["family/shots/predictor"]`` (R, R),
    row j at x_2 = axis[j], column i at x_1 = axis[i] (as :func:`class_probabilities_on_grid` returns).
    """

    axis: np.ndarray
    probs: dict[str, np.ndarray]

    def panel(self, family: str, shots: int, predictor: str) -> np.ndarray:
        return self.probs[f"{family}/{shots}/{predictor}"]


def decision_regions(preset: Preset) -> DecisionRegions:
    """The chapter's decision-region grids, computed once and stored (cached by configuration).

    The prototype Bayes predictor is a Monte-Carlo sampler run per grid point (R * R episodes per
    panel): most of the chapter's page time when recomputed on every build.
    """
    scale, extras = preset.classification, preset.learnability
    models = {  # seed 0's runs: the key holds their configurations and the hashes of their weights
        f"{family}/{learner}": train_or_load(
            classification_run(scale, learner, classification_task(scale, family)), progress=False
        )
        for family in SINGLE_FAMILIES
        for learner in region_predictors(family)[:2]
    }
    keys = [
        f"{family}/{shots}/{predictor}"
        for family in SINGLE_FAMILIES
        for shots in extras.region_shots
        for predictor in region_predictors(family)
    ]
    config = {
        "code_version": CODE_VERSION,
        "bayes_code": bayes_code_hash(),
        "models": {name: {"run": model.spec.config(), "weights": model.weights_hash} for name, model in models.items()},
        "tasks": {family: classification_task(scale, family).config() for family in SINGLE_FAMILIES},
        "shots": list(extras.region_shots),
        "resolution": extras.region_resolution,
        "extent": REGION_EXTENT,
        "bayes": {"seed": extras.bayes_seed, "n_samples": extras.region_bayes_samples},
        "device": default_device().type,
    }
    path = cache_root() / "results" / f"decision-regions-{config_hash(config)}.pt"

    def compute() -> dict[str, torch.Tensor]:
        grids = {}
        with policy_threads():
            for family in SINGLE_FAMILIES:
                predictors = {name: models[f"{family}/{name}"].learner for name in region_predictors(family)[:2]}
                predictors["bayes"] = bayes_predictor(
                    classification_task(scale, family), seed=extras.bayes_seed, n_samples=extras.region_bayes_samples
                )
                for shots in extras.region_shots:
                    support_xs, support_ys = region_support(scale, family, shots)
                    for name, predictor in predictors.items():
                        axis, _, probs = class_probabilities_on_grid(
                            predictor, support_xs, support_ys, extent=REGION_EXTENT, resolution=extras.region_resolution
                        )
                        grids[f"{family}/{shots}/{name}"] = torch.from_numpy(probs)
        grids["axis"] = torch.from_numpy(axis)
        return grids

    def validate(grids) -> None:
        check_keys("decision regions", grids, [*keys, "axis"])
        size = extras.region_resolution
        for key in keys:
            probs = grids[key]
            if tuple(probs.shape) != (size, size) or not bool(((probs >= 0) & (probs <= 1)).all()):
                raise ValueError(f"decision regions: {key} is not a ({size}, {size}) grid of probabilities")

    grids, _ = cached_entry(path, compute, validate, tensors=True)
    return DecisionRegions(grids["axis"].numpy(), {key: grids[key].numpy() for key in keys})
