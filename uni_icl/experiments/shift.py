"""Claim 3(b): distribution shift. Models trained at noise_std = 1, tested at larger noise_std.

For each family with a known optimal learner (``pairwise``, ``prototype``, ``amortized``) and each
test noise level, ``run`` evaluates on the same episodes (same seed), every trained model with each
of the scale's training seeds:

- ICL trained on ``mixture`` and ICL trained on the family itself (the learnability chapter's runs),
- the matching meta-learner (MatchNet / ProtoNet / CNP, trained on the family),
- explicit rules with nothing trained (:mod:`uni_icl.learners.baselines`): nearest class mean on the
  raw inputs, a 5-nearest-neighbour vote and per-prefix logistic regression,
- the prequential algorithm selector over the three meta-learners (``uni_icl.learners.selectors``;
  seed s is built from the seed-s meta-learners),
- beyond the paper, ICL trained on :class:`NoiseRangeTask` (mixture episodes whose noise_std is
  drawn per episode from [noise_low, noise_high]),
- the reference: the Bayes-optimal predictor of the *test* distribution (``uni_icl.learners.bayes``), which
  knows the true prior at each noise level, so its accuracy shows what the label rule itself makes
  easier or harder, and a learner's gap to it shows the learner's own sensitivity.

The test episodes at two noise levels are the same draws (same generator seed; the noise level
scales the same normal draws), so a learner's gap growth is paired by episode as well as by seed
(:func:`growth`). ``verdicts`` decides claim 3(b) with ``RULE_3B`` (:func:`decide_family`,
:func:`decide_3b`), gated by the convergence test of the models it compares.

Not part of the rule, :func:`logistic_penalty_check` measures why logistic regression comes closer
to Bayes as the noise grows: it scores it again with its penalty held relative to the data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from uni_icl.device import default_device, policy_threads
from uni_icl.evaluation import EVAL_BATCH, Difference, EvalResult, evaluate, is_prefix_size
from uni_icl.experiments.common import (
    MATCHING_LEARNER,
    MIXED_FAMILY,
    SINGLE_FAMILIES,
    bayes_code_hash,
    bayes_predictor,
    cached_evaluation,
    classification_job,
    classification_run,
    classification_task,
    evaluate_bayes_or_load,
    selector_identity,
    trained,
)

# the learnability chapter's seeded rows, paired differences, convergence records and gate (one
# definition for every chapter that compares trained models)
from uni_icl.experiments.evidence import (
    MARGIN,
    gated_verdict,
    row_difference,
    seeded_row,
    seeds_needed,
    training_record,
)
from uni_icl.experiments.rules.shift import (
    BASELINES,
    BAYES,
    EXPLICIT,
    ICL_MIXTURE,
    ICL_OWN,
    JUDGED,
    META,
    NAMED_EXPLICIT,
    REMEDY,
    RULE_3B,
    SELECTOR,
    decide_3b,
    decide_family,
    decisive_growth,
    episode_gaps,
    family_comparisons,
    growth,
    growth_matrix,
    growth_per_seed,
    rows_growth,
    status,
)
from uni_icl.experiments.rules.shift import (
    LEARNER_ORDER as LEARNER_ORDER,  # re-exported: the order pages show the learners in
)
from uni_icl.learners import LearnerSpec, display_name
from uni_icl.learners.selectors import AlgorithmSelector
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import ClassificationScale, Preset, ShiftScale
from uni_icl.runs import CODE_VERSION, TrainedLearner, evaluate_or_load, prepare, train_or_load
from uni_icl.storage import cache_root, cached_entry, config_hash
from uni_icl.tasks import TaskFamily, make_generator
from uni_icl.uncertainty import seeded_difference
from uni_icl.validation import check_choice, check_int, check_keys, check_numbers, check_positive
from uni_icl.verdicts import ClaimVerdict, model_record

CHAPTER = "book/04_shift"
CLAIMS = ("3b",)

Evaluator = Callable[[str, TaskFamily], "EvalResult | list[EvalResult]"]  # (family, test task) -> result(s)


def shift_grid(
    evaluators: Mapping[str, Evaluator],
    families: Iterable[str],
    noise_levels: Iterable[float],
    task_at: Callable[[str, float], TaskFamily],
    *,
    progress: bool = True,
) -> list[dict]:
    """Evaluate every learner on every (family, noise level); one row per (family, noise, learner).

    ``evaluators``: display name -> function (family, test task) -> an EvalResult, or one per
    training seed; ``task_at(family, noise_std)`` builds the test task. Rows hold family,
    noise_std, learner and the seeded scores of :func:`uni_icl.experiments.evidence.seeded_row`
    (mean, ci, seed_means, per_position(_ci), per_episode_mean, per_seed_episode_mean).
    """
    families, noise_levels = list(families), [float(s) for s in noise_levels]
    if not families or not noise_levels or not evaluators:
        raise ValueError("evaluators/families/noise_levels: each must be non-empty")
    for sigma in noise_levels:
        check_positive("noise_levels", sigma)
    cells = [(family, sigma) for family in families for sigma in noise_levels]
    rows = []
    for family, sigma in tqdm(cells, desc="shift grid", disable=not progress):
        task = task_at(family, sigma)
        for learner, evaluate_one in evaluators.items():
            result = evaluate_one(family, task)
            results = result if isinstance(result, list) else [result]
            rows.append({"family": family, "noise_std": sigma, "learner": learner, **seeded_row(results)})
    return rows


def gap_rows(rows: list[dict], reference: str = BAYES) -> list[dict]:
    """Gap = reference accuracy - learner accuracy per (family, noise, learner), paired on seeds and episodes."""
    gaps = []
    for row in rows:
        if row["learner"] == reference:
            continue
        family, sigma, learner = row["family"], row["noise_std"], row["learner"]
        per_seed = episode_gaps(rows, family, sigma, learner, reference)
        gap = seeded_difference(per_seed, np.zeros((1, per_seed.shape[1])))
        gaps.append(
            {
                "family": family,
                "noise_std": sigma,
                "learner": learner,
                "gap": gap.mean,
                "ci": gap.ci,
                "seed_gaps": per_seed.mean(1).tolist(),
                "n_tasks": per_seed.shape[1],
            }
        )
    return gaps


@dataclass
class ShiftResults:
    """What ``run`` measured: accuracy rows, gap rows, the models (for the explorer), training records.

    ``models``: learner -> family -> module (seed 0 of a trained learner). ``trainings``: one dict
    per trained model (``learner``, ``train_family``, ``runs``: a training record with the
    convergence test per seed).
    """

    preset: str
    scale: ClassificationScale = field(repr=False)
    sizes: ShiftScale = field(repr=False)
    noise_levels: tuple[float, ...]
    rows: list[dict]
    gaps: list[dict]
    models: dict[str, dict[str, nn.Module]] = field(repr=False)  # learner -> family -> module
    trainings: list[dict]
    meta_learner_names: dict[str, str]  # family -> display name of its matching meta-learner
    wall_seconds: float
    seeds: tuple[int, ...] = (0,)

    def frame(self) -> pd.DataFrame:
        """Mean accuracy per (family, noise_std, learner) with CIs."""
        return pd.DataFrame(self.rows)[["family", "noise_std", "learner", "mean", "ci"]]

    def gap(self, family: str, noise_std: float, learner: str) -> dict:
        for row in self.gaps:
            if (row["family"], row["noise_std"], row["learner"]) == (family, noise_std, learner):
                return row
        raise ValueError(f"family/noise_std/learner: no gap for {learner!r} on {family} at {noise_std}")

    def learner(self, name: str, family: str, noise_std: float) -> nn.Module | Callable:
        """The module behind ``name`` for ``family`` (the Bayes reference is built for ``noise_std``)."""
        if name == BAYES:
            task = classification_task(self.scale, family, noise_std=noise_std)
            return bayes_predictor(task, n_samples=self.sizes.bayes_samples)
        check_choice("name", name, list(self.models))
        return self.models[name][family]

    def training(self, learner: str, train_family: str) -> dict:
        """The training entry of ``learner`` (registry name) on ``train_family``."""
        for entry in self.trainings:
            if (entry["learner"], entry["train_family"]) == (learner, train_family):
                return entry
        raise ValueError(f"learner/train_family: no trained {learner!r} on {train_family!r}")


def remedy_task(scale: ClassificationScale, sizes: ShiftScale) -> TaskFamily:
    """The remedy's training task: mixture episodes with noise_std ~ U[remedy_low, remedy_high]."""
    return classification_task(
        scale, "noise_range", inner="mixture", noise_low=sizes.remedy_low, noise_high=sizes.remedy_high
    )


def training_plan(preset: Preset) -> list[Job]:
    """Every model the chapter trains, each with every seed of the scale: the candidates, ICL on the
    mixture and on each family, and the noise-range remedy."""
    scale, sizes = preset.classification, preset.shift
    jobs = []
    for seed in scale.seeds:
        jobs += [classification_job(scale, learner, family, seed) for family, learner in MATCHING_LEARNER.items()]
        jobs += [classification_job(scale, "icl", family, seed) for family in (MIXED_FAMILY, *SINGLE_FAMILIES)]
        jobs.append(run_job(classification_run(scale, "icl", remedy_task(scale, sizes), seed)))
    return jobs


def bayes_reference(preset: Preset, task: TaskFamily) -> list[EvalResult]:
    """The Bayes predictor of the test distribution ``task`` on the chapter's test episodes: exact,
    except on prototype, where the Monte-Carlo reference runs on a prefix of the episodes with one
    sampler seed per training seed, so the gaps' intervals include its Monte-Carlo error."""
    scale, sizes = preset.classification, preset.shift
    n_tasks, seed = scale.n_test_tasks, scale.test_seed
    if task.name != "prototype":
        return [evaluate_bayes_or_load(task, n_tasks=n_tasks, seed=seed, n_samples=sizes.bayes_samples).result]
    n_ref = min(sizes.n_reference_tasks, n_tasks)
    return [
        evaluate_bayes_or_load(
            task, n_tasks=n_ref, seed=seed, bayes_seed=sampler_seed, n_samples=sizes.bayes_samples
        ).result
        for sampler_seed in range(len(scale.seeds))
    ]


def run(preset: Preset, *, progress: bool = True) -> ShiftResults:
    """Train-or-load the models with every seed, evaluate the grid of families x noise levels, compute gaps."""
    started = time.perf_counter()
    scale, sizes = preset.classification, preset.shift
    if not is_prefix_size(sizes.n_reference_tasks, scale.n_test_tasks):
        raise ValueError(
            f"n_reference_tasks: must equal n_test_tasks ({scale.n_test_tasks}) or be a smaller multiple of "
            f"{EVAL_BATCH} (the first episodes of the test set)"
        )
    train_all(training_plan(preset), progress=progress, description="chapter 4 models")
    seeds = tuple(scale.seeds)

    def seeded(learner: str, family: str) -> list[TrainedLearner]:
        return [trained(scale, learner, family, seed=seed, progress=progress) for seed in seeds]

    candidates = {learner: seeded(learner, family) for family, learner in MATCHING_LEARNER.items()}
    icl_mixture = seeded("icl", MIXED_FAMILY)
    icl_own = {family: seeded("icl", family) for family in SINGLE_FAMILIES}
    remedy = [
        train_or_load(classification_run(scale, "icl", remedy_task(scale, sizes), seed), progress=progress)
        for seed in seeds
    ]
    groups = [{name: models[index] for name, models in candidates.items()} for index in range(len(seeds))]
    selectors = [AlgorithmSelector({name: model.learner for name, model in group.items()}) for group in groups]
    identities = [selector_identity(group) for group in groups]
    baselines = {name: prepare(LearnerSpec(name)) for name in BASELINES}
    n_tasks, seed = scale.n_test_tasks, scale.test_seed

    def stored(models_for: Callable[[str], list[TrainedLearner]]) -> Evaluator:
        return lambda family, task: [
            evaluate_or_load(model, task, n_tasks=n_tasks, seed=seed) for model in models_for(family)
        ]

    def selected(family: str, task: TaskFamily) -> list[EvalResult]:
        return [
            cached_evaluation("selector", identity, selector, task, n_tasks=n_tasks, seed=seed)
            for identity, selector in zip(identities, selectors, strict=True)
        ]

    evaluators: dict[str, Evaluator] = {
        ICL_MIXTURE: stored(lambda family: icl_mixture),
        ICL_OWN: stored(lambda family: icl_own[family]),
        META: stored(lambda family: candidates[MATCHING_LEARNER[family]]),
        **{display: stored(lambda family, name=name: [baselines[name]]) for name, display in BASELINES.items()},
        SELECTOR: selected,
        REMEDY: stored(lambda family: remedy),
        BAYES: lambda family, task: bayes_reference(preset, task),
    }
    rows = shift_grid(
        evaluators,
        SINGLE_FAMILIES,
        sizes.noise_levels,
        lambda family, sigma: classification_task(scale, family, noise_std=sigma),
        progress=progress,
    )
    models = {
        ICL_MIXTURE: dict.fromkeys(SINGLE_FAMILIES, icl_mixture[0].learner),
        ICL_OWN: {family: models[0].learner for family, models in icl_own.items()},
        META: {family: candidates[MATCHING_LEARNER[family]][0].learner for family in SINGLE_FAMILIES},
        **{display: dict.fromkeys(SINGLE_FAMILIES, baselines[name].learner) for name, display in BASELINES.items()},
        SELECTOR: dict.fromkeys(SINGLE_FAMILIES, selectors[0]),
        REMEDY: dict.fromkeys(SINGLE_FAMILIES, remedy[0].learner),
    }
    trained_models = [
        *((learner, family, candidates[learner]) for family, learner in MATCHING_LEARNER.items()),
        ("icl", MIXED_FAMILY, icl_mixture),
        *(("icl", family, icl_own[family]) for family in SINGLE_FAMILIES),
        ("icl", remedy_task(scale, sizes).name, remedy),
    ]
    trainings = [
        {"learner": learner, "train_family": family, "runs": [training_record(model) for model in group]}
        for learner, family, group in trained_models
    ]
    return ShiftResults(
        preset=preset.name,
        scale=scale,
        sizes=sizes,
        noise_levels=tuple(sizes.noise_levels),
        rows=rows,
        gaps=gap_rows(rows),
        models=models,
        trainings=trainings,
        meta_learner_names={family: display_name(MATCHING_LEARNER[family]) for family in SINGLE_FAMILIES},
        wall_seconds=time.perf_counter() - started,
        seeds=seeds,
    )


def support_set(
    scale: ClassificationScale, family: str, noise_std: float, n_shots: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A support set for decision-region plots: the first ``n_shots`` points of one episode. -> (n, d), (n,)"""
    check_int("n_shots", n_shots, minimum=1)
    episode = classification_task(scale, family, noise_std=noise_std).sample(1, generator=make_generator(seed))
    return episode.xs[0, :n_shots], episode.ys[0, :n_shots]


# ----------------------------------------------------------------------------- gap growth and the rule


def remedy_effect(results: ShiftResults, family: str, noise_std: float) -> Difference:
    """Accuracy of the noise-range ICL minus ICL trained on mixture (seed s against seed s, paired episodes)."""
    rows = {r["learner"]: r for r in results.rows if r["family"] == family and r["noise_std"] == noise_std}
    return row_difference(rows[REMEDY], rows[ICL_MIXTURE])


def remedy_growth_difference(results: ShiftResults, family: str) -> Difference:
    """Gap growth of the noise-range ICL minus that of ICL trained on the mixture at noise_std = 1 only."""
    return seeded_difference(growth_matrix(results, family, REMEDY), growth_matrix(results, family, ICL_MIXTURE))


def rests_on(results: ShiftResults) -> list[dict]:
    """The trained model RULE_3B compares (its explicit algorithms train nothing): ICL on the mixture."""
    return [model_record("icl", MIXED_FAMILY, results.training("icl", MIXED_FAMILY)["runs"])]


def _entry(results: ShiftResults, family: str, learner: str, margin: float) -> dict:
    difference = growth(results, family, learner)
    return {
        "growth": [difference.mean, difference.ci],
        "per_seed": growth_per_seed(results, family, learner),
        "status": status(difference, margin),
    }


def verdicts(results: ShiftResults) -> list[ClaimVerdict]:
    """Claim 3(b) decided by ``RULE_3B``."""
    margin = MARGIN
    numbers: dict = {
        "margin": margin,
        "seeds": list(results.seeds),
        "largest_noise_std": max(results.noise_levels),
        "families": {},
    }
    decisions, comparisons, per_seed = {}, {}, {}
    for family in SINGLE_FAMILIES:
        named = NAMED_EXPLICIT[family]
        icl, explicit = growth(results, family, JUDGED), growth(results, family, named)
        decisions[family] = decide_family(icl, explicit, margin)
        comparisons[family] = family_comparisons(family, icl, explicit, margin)
        for comparison, learner in zip(comparisons[family], (JUDGED, named), strict=True):
            per_seed[comparison.label] = growth_per_seed(results, family, learner)
        remedy_vs_mixture = remedy_growth_difference(results, family)
        numbers["families"][family] = {
            "meta_learner": results.meta_learner_names[family],
            # what the rule reads: ICL trained on the mixture and the family's named explicit algorithm
            "judged": {
                "icl": _entry(results, family, JUDGED, margin),
                "explicit_name": named,
                "explicit": _entry(results, family, named, margin),
            },
            # reported beside them: ICL trained on the family, every explicit algorithm, the others
            "icl_own": _entry(results, family, ICL_OWN, margin),
            "explicit": {name: _entry(results, family, name, margin) for name in EXPLICIT},
            "not_in_rule": {name: _entry(results, family, name, margin) for name in (SELECTOR, REMEDY)},
            "remedy_minus_mixture_growth": [remedy_vs_mixture.mean, remedy_vs_mixture.ci],
            "decision": decisions[family],
        }
    numbers["families_supporting"] = sum(d == "supports" for d in decisions.values())
    numbers["families_contradicting"] = sum(d == "contradicts" for d in decisions.values())
    ungated = decide_3b(decisions)
    numbers["decisive"] = decisive_growth(comparisons, decisions, ungated)
    if ungated == "inconclusive" and len(results.seeds) > 1:
        label = numbers["decisive"]["label"]
        interval = Difference(numbers["decisive"]["effect"], numbers["decisive"]["ci"])
        numbers["seeds_to_decide"] = seeds_needed(label, per_seed[label], interval, margin)
    models = rests_on(results)
    return [
        gated_verdict(
            "3b",
            ungated,
            models,
            preset=results.preset,
            quantity="growth of the gap to the Bayes reference from noise_std = 1 to the largest test noise_std, "
            "paired by training seed and test episode: ICL trained on the mixture and one named explicit algorithm "
            "per family",
            numbers=numbers,
            rule=RULE_3B,
            chapter=CHAPTER,
            wall_seconds=results.wall_seconds,
        )
    ]


# ----------------------------------------------------------------------------- logistic regression's penalty


class ScaledInputs(nn.Module):
    """``learner`` applied to the inputs times ``factor``: forward(xs (B, N, d), ys (B, N)) -> logits (B, N, C)."""

    is_regression = False

    def __init__(self, learner: nn.Module, factor: float) -> None:
        super().__init__()
        check_positive("factor", factor)
        self.learner, self.factor = learner, float(factor)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self.learner(xs * self.factor, ys)


PENALTY_ARMS = ("fixed", "relative")  # the chapter's logistic regression; its penalty held relative to the data


def logistic_penalty_check(preset: Preset) -> dict:
    """Logistic regression with its penalty as the chapter runs it and held relative to the data, cached.

    The chapter's logistic regression penalises weights and bias with a fixed l2 while the inputs grow
    with σ, so relative to the data its penalty on the weights weakens σ²-fold. This scores it at
    noise_std = 1 and at the largest level, on the chapter's test episodes of each family, as the
    chapter does ('fixed', the chapter's stored evaluations) and on the inputs divided by σ
    ('relative': the penalty of σ = 1 relative to the data; on the raw inputs, a weight penalty of
    σ² l2 with the bias's kept at l2), each against the chapter's Bayes reference. Returns
    ``{"l2": l2, "noise_levels": [1, top], "families": {family: {"bayes": [accuracy at 1, at top],
    arm: {"accuracy": [at 1, at top], "growth": [mean, ci]}, "relative_minus_fixed": [mean, ci]}}}``:
    growth as :func:`growth` (the gap to Bayes at top minus at 1, paired by episode), and the paired
    difference of the two arms' growths (the Bayes reference cancels in it). Keyed by the test tasks
    and episodes, the learner, the reference's settings and ``CODE_VERSION``.
    """
    scale, sizes = preset.classification, preset.shift
    n_tasks, seed, top = scale.n_test_tasks, scale.test_seed, max(sizes.noise_levels)
    logistic = prepare(LearnerSpec("logistic"))
    config = {
        "code_version": CODE_VERSION,
        "kind": "logistic-penalty-check",
        "learner": logistic.spec.config(),
        "tasks": [classification_task(scale, f, noise_std=s).config() for f in SINGLE_FAMILIES for s in (1.0, top)],
        "n_tasks": n_tasks,
        "seed": seed,
        "reference": {
            "n_tasks": min(sizes.n_reference_tasks, n_tasks),
            "n_samples": sizes.bayes_samples,
            "sampler_seeds": len(scale.seeds),
            "bayes_code": bayes_code_hash(),
            "device": default_device().type,
        },
    }

    def relative(family: str, task: TaskFamily) -> EvalResult:
        with policy_threads():
            return evaluate(ScaledInputs(logistic.learner, 1 / task.noise_std), task, n_tasks=n_tasks, seed=seed)

    def compute() -> dict:
        evaluators: dict[str, Evaluator] = {
            "fixed": lambda family, task: evaluate_or_load(logistic, task, n_tasks=n_tasks, seed=seed),
            "relative": relative,
            BAYES: lambda family, task: bayes_reference(preset, task),
        }
        rows = shift_grid(
            evaluators,
            SINGLE_FAMILIES,
            (1.0, top),
            lambda family, sigma: classification_task(scale, family, noise_std=sigma),
            progress=False,
        )
        cell = {(r["family"], r["noise_std"], r["learner"]): r["mean"] for r in rows}

        def paired(family: str, arm: str) -> np.ndarray:  # (S, n) per-episode growth
            return episode_gaps(rows, family, top, arm) - episode_gaps(rows, family, 1.0, arm)

        families = {}
        for family in SINGLE_FAMILIES:
            entry = {"bayes": [cell[family, s, BAYES] for s in (1.0, top)]}
            for arm in PENALTY_ARMS:
                difference = rows_growth(rows, family, arm, 1.0, top)
                entry[arm] = {
                    "accuracy": [cell[family, s, arm] for s in (1.0, top)],
                    "growth": [difference.mean, difference.ci],
                }
            change = seeded_difference(paired(family, "relative"), paired(family, "fixed"))
            entry["relative_minus_fixed"] = [change.mean, change.ci]
            families[family] = entry
        return {"l2": logistic.learner.l2, "noise_levels": [1.0, top], "families": families}

    def validate(entry) -> None:
        name = "logistic penalty check"
        check_keys(name, entry, ["l2", "noise_levels", "families"])
        check_numbers(f"{name}.l2", [entry["l2"]], minimum=0.0)
        check_numbers(f"{name}.noise_levels", entry["noise_levels"], minimum=0.0)
        check_keys(f"{name}.families", entry["families"], SINGLE_FAMILIES)
        for family, found in entry["families"].items():
            check_keys(f"{name}.{family}", found, ["bayes", *PENALTY_ARMS, "relative_minus_fixed"])
            check_numbers(f"{name}.{family}.bayes", found["bayes"], minimum=0.0, maximum=1.0)
            check_numbers(f"{name}.{family}.relative_minus_fixed", found["relative_minus_fixed"])
            for arm in PENALTY_ARMS:
                check_keys(f"{name}.{family}.{arm}", found[arm], ["accuracy", "growth"])
                check_numbers(f"{name}.{family}.{arm}.accuracy", found[arm]["accuracy"], minimum=0.0, maximum=1.0)
                check_numbers(f"{name}.{family}.{arm}.growth", found[arm]["growth"])

    path = cache_root() / "results" / f"logistic-penalty-{config_hash(config)}.json"
    return cached_entry(path, compute, validate)[0]
