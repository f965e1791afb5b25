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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from uni_icl.book.interactive import explore
from uni_icl.book.plotting import class_probabilities_on_grid, draw_support_set
from uni_icl.evaluation import EVAL_BATCH, Difference, EvalResult, is_prefix_size
from uni_icl.experiments.common import (
    MATCHING_LEARNER,
    MIXED_FAMILY,
    SINGLE_FAMILIES,
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
    CONVERGENCE_TOLERANCE,
    MARGIN,
    gated,
    row_difference,
    run_columns,
    seeded_row,
    training_note,
    training_record,
    unconverged,
)
from uni_icl.learners import LearnerSpec, display_name
from uni_icl.learners.selectors import AlgorithmSelector
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import ClassificationScale, Preset, ShiftScale
from uni_icl.runs import TrainedLearner, evaluate_or_load, prepare, train_or_load
from uni_icl.tasks import TaskFamily, make_generator
from uni_icl.uncertainty import seeded_difference
from uni_icl.validation import check_choice, check_int, check_positive
from uni_icl.verdicts import ClaimVerdict, Comparison, decisive, model_record, slack_and_beyond

ICL_MIXTURE = "ICL (trained on mixture)"
ICL_OWN = "ICL (trained on the family)"
META = "Matching meta-learner"
SELECTOR = "Selector (prequential)"
REMEDY = "ICL (mixture, noise_std 1-5)"
BAYES = "Bayes (reference)"
# explicit rules with nothing trained: registry name -> display name
BASELINES = {name: display_name(name) for name in ("ncm", "knn_classifier", "logistic")}
NCM, KNN, LOGISTIC = BASELINES.values()
EXPLICIT = (META, NCM, KNN, LOGISTIC)  # the explicit algorithms claim 3(b) is about
LEARNER_ORDER = (ICL_MIXTURE, ICL_OWN, META, NCM, KNN, LOGISTIC, SELECTOR, REMEDY, BAYES)
CHAPTER = "book/04_shift"
CLAIMS = ("3b",)
# Written before any result at quick was seen (issue 17): an equivalence test for "insensitive", a
# paired interval for the growth, non-learned explicit rules beside the meta-learners, one margin.
# Later (issue 17, before the first quick run of this rule in that session): the prototype Bayes
# reference runs with one sampler seed per training seed, which enter the interval like training
# seeds. For the rules with nothing trained this turns an interval over episodes (t with n - 1
# degrees of freedom) into one over sampler seeds and episodes (t with S - 1): wider on prototype,
# and it includes the reference's Monte-Carlo error, which was in no interval before.
RULE_3B = (
    "Per family (pairwise, prototype, amortized) and learner: gap = Bayes reference accuracy - learner accuracy "
    "(mean over shot counts) and growth = gap at the largest test noise_std - gap at noise_std = 1, computed per test "
    "episode (the same episodes at both levels; for prototype the first episodes, where the Monte-Carlo reference "
    "ran) and per training seed (per sampler seed of the prototype reference for a rule with nothing trained), "
    "with a 95% interval over seeds and episodes. With the margin m = "
    f"{MARGIN}, a learner 'degrades' if the interval of its growth lies above +m, and is 'insensitive' if it lies "
    "entirely within (-m, +m). The explicit algorithms are the family's matching meta-learner and three rules with "
    "nothing trained: nearest class mean, a 5-nearest-neighbour vote and per-prefix logistic regression. A family "
    "supports the claim if ICL trained on that family degrades and at least one explicit algorithm is insensitive; "
    "it contradicts the claim if the interval of ICL's growth lies below +m (ICL does not degrade) or every "
    "explicit algorithm degrades; otherwise it is undetermined. 'reproduced' if at least 2 of the 3 families "
    "support the claim, 'not reproduced' if at least 2 contradict it, 'inconclusive' otherwise. If any seed of ICL "
    "trained on a family or of a matching meta-learner fails the convergence test (the upper 95% bound of its "
    f"validation-accuracy gain over the last quarter of training is not below {CONVERGENCE_TOLERANCE}), the outcome "
    "is 'inconclusive' and names the models."
)


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


def _per_seed(row: dict) -> np.ndarray:
    """(S, n) per-seed, per-episode scores of a row (one seed when it only has ``per_episode_mean``)."""
    return np.asarray(row.get("per_seed_episode_mean", [row["per_episode_mean"]]), dtype=np.float64)


def episode_gaps(rows: Iterable[dict], family: str, noise_std: float, learner: str, reference: str = BAYES):
    """(S, n) per-seed, per-episode gap = reference - learner, on the reference's episodes.

    The reference may have been evaluated on fewer episodes: they must be the first episodes of
    every learner's test set (same seed; a size for which :func:`uni_icl.evaluation.is_prefix_size` holds).
    """
    cell = {r["learner"]: r for r in rows if r["family"] == family and r["noise_std"] == noise_std}
    if reference not in cell:
        raise ValueError(f"reference: no {reference!r} row for {family} at noise_std={noise_std}")
    if learner not in cell:
        raise ValueError(f"learner: no {learner!r} row for {family} at noise_std={noise_std}")
    ref, scores = _per_seed(cell[reference]), _per_seed(cell[learner])
    if scores.shape[1] < ref.shape[1]:
        raise ValueError(f"rows: {learner!r} has fewer test episodes than the reference ({ref.shape[1]})")
    return ref - scores[:, : ref.shape[1]]


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


def curves_frame(rows: list[dict]) -> pd.DataFrame:
    """Long table for plots and the explorer: family, noise_std, learner, shots, accuracy, ci."""
    records = []
    for row in rows:
        for shot, (value, ci) in enumerate(zip(row["per_position"], row["per_position_ci"], strict=True)):
            records.append(
                {
                    "family": row["family"],
                    "noise_std": row["noise_std"],
                    "learner": row["learner"],
                    "shots": shot,
                    "accuracy": value,
                    "ci": ci,
                }
            )
    return pd.DataFrame.from_records(records)


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
    n_ref = min(sizes.n_reference_tasks, n_tasks)

    def stored(models_for: Callable[[str], list[TrainedLearner]]) -> Evaluator:
        return lambda family, task: [
            evaluate_or_load(model, task, n_tasks=n_tasks, seed=seed) for model in models_for(family)
        ]

    def selected(family: str, task: TaskFamily) -> list[EvalResult]:
        return [
            cached_evaluation("selector", identity, selector, task, n_tasks=n_tasks, seed=seed)
            for identity, selector in zip(identities, selectors, strict=True)
        ]

    def reference(family: str, task: TaskFamily) -> list[EvalResult]:
        """The Bayes predictor of the test distribution: exact, except on prototype, where the
        Monte-Carlo reference runs on a prefix of the episodes with one sampler seed per training
        seed, so the gaps' intervals include its Monte-Carlo error."""
        if family != "prototype":
            return [evaluate_bayes_or_load(task, n_tasks=n_tasks, seed=seed, n_samples=sizes.bayes_samples).result]
        return [
            evaluate_bayes_or_load(
                task, n_tasks=n_ref, seed=seed, bayes_seed=sampler_seed, n_samples=sizes.bayes_samples
            ).result
            for sampler_seed in range(len(seeds))
        ]

    evaluators: dict[str, Evaluator] = {
        ICL_MIXTURE: stored(lambda family: icl_mixture),
        ICL_OWN: stored(lambda family: icl_own[family]),
        META: stored(lambda family: candidates[MATCHING_LEARNER[family]]),
        **{display: stored(lambda family, name=name: [baselines[name]]) for name, display in BASELINES.items()},
        SELECTOR: selected,
        REMEDY: stored(lambda family: remedy),
        BAYES: reference,
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


def training_table(results: ShiftResults) -> pd.DataFrame:
    """One row per trained model and seed: steps, best validation accuracy, the convergence test."""
    records = []
    for entry in results.trainings:
        for run in entry["runs"]:
            records.append(
                {
                    "model": f"{display_name(entry['learner'])} on {entry['train_family']}",
                    **run_columns(run),
                }
            )
    return pd.DataFrame(records)


def support_set(
    scale: ClassificationScale, family: str, noise_std: float, n_shots: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A support set for decision-region plots: the first ``n_shots`` points of one episode. -> (n, d), (n,)"""
    check_int("n_shots", n_shots, minimum=1)
    episode = classification_task(scale, family, noise_std=noise_std).sample(1, generator=make_generator(seed))
    return episode.xs[0, :n_shots], episode.ys[0, :n_shots]


# ----------------------------------------------------------------------------- gap growth and the rule


def growth_matrix(results: ShiftResults, family: str, learner: str, low: float = 1.0, high: float | None = None):
    """(S, n) per-seed, per-episode growth: gap at ``high`` (default: the largest level) - gap at ``low``."""
    high = max(results.noise_levels) if high is None else high
    return episode_gaps(results.rows, family, high, learner) - episode_gaps(results.rows, family, low, learner)


def growth(results: ShiftResults, family: str, learner: str, low: float = 1.0, high: float | None = None) -> Difference:
    """Gap at the largest noise level (or ``high``) minus gap at ``low``, with a 95% interval over the
    training seeds and the test episodes, each episode paired with itself at the two levels."""
    high = max(results.noise_levels) if high is None else high
    return seeded_difference(
        episode_gaps(results.rows, family, high, learner), episode_gaps(results.rows, family, low, learner)
    )


def growth_per_seed(results: ShiftResults, family: str, learner: str) -> list[float]:
    """Each seed's mean gap growth: per training seed, or per sampler seed of the prototype Bayes
    reference for a learner without training (one value on the exact families)."""
    return growth_matrix(results, family, learner).mean(1).tolist()


def remedy_effect(results: ShiftResults, family: str, noise_std: float) -> Difference:
    """Accuracy of the noise-range ICL minus ICL trained on mixture (seed s against seed s, paired episodes)."""
    rows = {r["learner"]: r for r in results.rows if r["family"] == family and r["noise_std"] == noise_std}
    return row_difference(rows[REMEDY], rows[ICL_MIXTURE])


def remedy_growth_difference(results: ShiftResults, family: str) -> Difference:
    """Gap growth of the noise-range ICL minus that of ICL trained on the mixture at noise_std = 1 only."""
    return seeded_difference(growth_matrix(results, family, REMEDY), growth_matrix(results, family, ICL_MIXTURE))


def status(difference: Difference, margin: float = MARGIN) -> str:
    """A learner's gap growth against the margin: 'degrades' (interval above +m), 'insensitive' (within
    (-m, +m)), 'closer to Bayes' (below -m) or 'undetermined' (crosses +m or -m)."""
    if difference.lower > margin:
        return "degrades"
    if difference.lower > -margin and difference.upper < margin:
        return "insensitive"
    if difference.upper < -margin:
        return "closer to Bayes"
    return "undetermined"


def decide_family(icl: Difference, explicit: Mapping[str, Difference], margin: float = MARGIN) -> str:
    """'supports', 'contradicts' or 'undetermined' for one family (see ``RULE_3B``): ``icl`` is the gap
    growth of ICL trained on the family, ``explicit`` that of each explicit algorithm."""
    statuses = [status(difference, margin) for difference in explicit.values()]
    if status(icl, margin) == "degrades" and "insensitive" in statuses:
        return "supports"
    if icl.upper < margin or all(found == "degrades" for found in statuses):
        return "contradicts"
    return "undetermined"


def decide_3b(decisions: Mapping[str, str]) -> str:
    """The outcome of ``RULE_3B`` (before the convergence gate) from each family's decision."""
    values = list(decisions.values())
    if values.count("supports") >= 2:
        return "reproduced"
    if values.count("contradicts") >= 2:
        return "not reproduced"
    return "inconclusive"


def rule_outcome(numbers: dict) -> str:
    """``RULE_3B`` (before the convergence gate) applied again to the family decisions a verdict stores."""
    return decide_3b({family: numbers["families"][family]["decision"] for family in SINGLE_FAMILIES})


def rests_on(results: ShiftResults) -> list[dict]:
    """The trained models RULE_3B compares: ICL on each family and each family's matching meta-learner."""
    compared = [("icl", family) for family in SINGLE_FAMILIES] + list(
        (learner, family) for family, learner in MATCHING_LEARNER.items()
    )
    return [model_record(learner, family, results.training(learner, family)["runs"]) for learner, family in compared]


def _entry(results: ShiftResults, family: str, learner: str, margin: float) -> dict:
    difference = growth(results, family, learner)
    return {
        "growth": [difference.mean, difference.ci],
        "per_seed": growth_per_seed(results, family, learner),
        "status": status(difference, margin),
    }


def family_comparisons(
    family: str, icl: Difference, explicit: Mapping[str, Difference], names: Mapping[str, str], margin: float = MARGIN
) -> list[Comparison]:
    """The two comparisons RULE_3B reads in ``family``: the gap growth of ICL trained on it (needed above
    +m) and that of the explicit algorithm closest to insensitive (needed within ±m; the rule asks for one).
    ``names``: display name of each explicit algorithm (the matching meta-learner's own name for META)."""
    candidates = [
        Comparison(f"{names.get(name, name)}: gap-to-Bayes growth, {family}", difference, margin, "within ±m")
        for name, difference in explicit.items()
    ]
    best = max(candidates, key=lambda comparison: slack_and_beyond(comparison)[0])
    return [Comparison(f"ICL: gap-to-Bayes growth, {family}", icl, margin, "above +m"), best]


# the family decision behind each outcome of RULE_3B: the families whose comparisons decided it
DECIDING_FAMILIES = {"reproduced": "supports", "not reproduced": "contradicts", "inconclusive": "undetermined"}


def decisive_growth(comparisons: Mapping[str, list[Comparison]], decisions: Mapping[str, str], outcome: str) -> dict:
    """The decisive comparison of RULE_3B (:func:`uni_icl.verdicts.decisive`) among the families whose
    decision gave ``outcome`` (every family if none did); ``comparisons``: family -> its two comparisons."""
    deciding = [family for family, decision in decisions.items() if decision == DECIDING_FAMILIES[outcome]]
    families = deciding or list(decisions)
    if outcome == "not reproduced":  # in a contradicting family, the comparison that contradicted
        return decisive([_contradicting(*comparisons[family]) for family in families], outcome)
    return decisive([c for family in families for c in comparisons[family]], outcome)


def _contradicting(icl: Comparison, explicit: Comparison) -> Comparison:
    """Of a contradicting family's two comparisons, the one RULE_3B read as contradicting: ICL's
    growth if its interval lies below +m (ICL does not degrade), else the explicit algorithm's (every
    explicit algorithm degrades, the one closest to insensitive included)."""
    mean, ci = icl.interval
    return icl if mean + ci < icl.margin else explicit


def verdicts(results: ShiftResults) -> list[ClaimVerdict]:
    """Claim 3(b) decided by ``RULE_3B``."""
    margin = MARGIN
    numbers: dict = {
        "margin": margin,
        "seeds": list(results.seeds),
        "largest_noise_std": max(results.noise_levels),
        "families": {},
    }
    decisions, comparisons = {}, {}
    for family in SINGLE_FAMILIES:
        icl = growth(results, family, ICL_OWN)
        explicit = {name: growth(results, family, name) for name in EXPLICIT}
        decisions[family] = decide_family(icl, explicit, margin)
        names = {META: results.meta_learner_names[family]}
        comparisons[family] = family_comparisons(family, icl, explicit, names, margin)
        remedy_vs_mixture = remedy_growth_difference(results, family)
        numbers["families"][family] = {
            "meta_learner": results.meta_learner_names[family],
            "icl_own": _entry(results, family, ICL_OWN, margin),
            "explicit": {name: _entry(results, family, name, margin) for name in EXPLICIT},
            "not_in_rule": {name: _entry(results, family, name, margin) for name in (ICL_MIXTURE, SELECTOR, REMEDY)},
            "remedy_minus_mixture_growth": [remedy_vs_mixture.mean, remedy_vs_mixture.ci],
            "decision": decisions[family],
        }
    numbers["families_supporting"] = sum(d == "supports" for d in decisions.values())
    numbers["families_contradicting"] = sum(d == "contradicts" for d in decisions.values())
    ungated = decide_3b(decisions)
    numbers["decisive"] = decisive_growth(comparisons, decisions, ungated)
    models = rests_on(results)
    return [
        ClaimVerdict(
            claim="3b",
            preset=results.preset,
            quantity="growth of the gap to the Bayes reference from noise_std = 1 to the largest test noise_std, "
            "paired by training seed and test episode",
            numbers=numbers,
            rule=RULE_3B,
            outcome=gated(ungated, models),
            chapter=CHAPTER,
            wall_seconds=results.wall_seconds,
            notes={"unconverged": unconverged(models), "ungated_outcome": ungated},
            rests_on=models,
        )
    ]


# ----------------------------------------------------------------------------- explorer and figures


def region_extent(support_xs: torch.Tensor) -> float:
    """Half-width of a square view that holds the support points with a margin."""
    return 1.15 * max(float(support_xs.abs().max()), 1.0)


def draw_regions(
    ax: plt.Axes,
    predictor: nn.Module | Callable,
    support_xs: torch.Tensor,
    support_ys: torch.Tensor,
    *,
    extent: float,
    resolution: int = 40,
    title: str = "",
) -> plt.Axes:
    """P(y = 1) on a grid as a colour map, the 0.5 contour, and the support points (no colour bar,
    so a live panel can be redrawn in place). support_xs (n, 2), support_ys (n,)."""
    grid_x, grid_y, probs = class_probabilities_on_grid(
        predictor, support_xs, support_ys, extent=extent, resolution=resolution
    )
    ax.contourf(grid_x, grid_y, probs, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.75, vmin=0, vmax=1)
    if probs.min() < 0.5 < probs.max():
        ax.contour(grid_x, grid_y, probs, levels=[0.5], colors="black", linewidths=1.2)
    draw_support_set(ax, support_xs, support_ys, extent=extent, title=title, marker_size=30, title_size=9)
    return ax


class ShiftExplorer:
    """The live explorer of the shift grid: accuracy curves and decision regions.

    Controls: ``family`` and ``noise_std`` (the grid's, from :func:`uni_icl.book.interactive.explore`),
    plus ``learner`` and ``shots`` that only the decision-region panel uses (the region of the
    selected learner given the first ``shots`` points of one sampled episode at that family and
    noise level; a dashed line marks the shot count on the curves). Regions are computed once
    per redraw. ``set(family=..., noise_std=..., learner=..., shots=...)`` moves
    controls programmatically (tests); ``figure`` and ``axes`` are the explorer's.
    """

    def __init__(self, results: ShiftResults, *, resolution: int = 40, support_seed: int = 0) -> None:
        import ipywidgets

        check_int("resolution", resolution, minimum=4)
        self.results, self.resolution, self.support_seed = results, resolution, support_seed
        self.frame = curves_frame(results.rows)
        n_points = int(self.frame["shots"].max()) + 1
        learners = [name for name in LEARNER_ORDER if name in results.models]
        self.learner = ipywidgets.Dropdown(options=learners, value=learners[0], description="learner")
        self.shots = ipywidgets.IntSlider(value=min(10, n_points - 1), min=1, max=n_points - 1, description="shots")
        self.grid = explore(
            self.frame,
            x="shots",
            y="accuracy",
            ci="ci",
            hue="learner",
            controls=["family", "noise_std"],
            extra_panel=self._draw_panel,
            title=f"Accuracy per shot count ({results.preset} preset; models trained at noise_std = 1)",
            xlabel="shot count i",
            ylabel="accuracy",
            figsize=(12.0, 4.5),
        )
        for widget in (self.learner, self.shots):
            widget.observe(lambda _change: self.grid.redraw(), names="value")
        self.widget = ipywidgets.VBox([ipywidgets.HBox([self.learner, self.shots]), self.grid.widget])

    @property
    def figure(self):
        return self.grid.figure

    @property
    def axes(self) -> list:
        return self.grid.axes

    @property
    def selection(self) -> dict:
        return {**self.grid.selection, "learner": self.learner.value, "shots": self.shots.value}

    def set(self, **values) -> None:
        """Move any of family, noise_std, learner, shots."""
        for column in values:
            check_choice("control", column, ["family", "noise_std", "learner", "shots"])
        if "learner" in values:
            check_choice("learner", values["learner"], self.learner.options)
            self.learner.value = values["learner"]
        if "shots" in values:
            check_int("shots", values["shots"], minimum=self.shots.min, maximum=self.shots.max)
            self.shots.value = values["shots"]
        self.grid.set(**{k: v for k, v in values.items() if k in ("family", "noise_std")})

    def _draw_panel(self, ax: plt.Axes, selection: dict) -> None:
        family, noise_std = selection["family"], selection["noise_std"]
        learner, shots = self.learner.value, self.shots.value
        support_xs, support_ys = support_set(self.results.scale, family, noise_std, shots, seed=self.support_seed)
        module = self.results.learner(learner, family, noise_std)
        draw_regions(
            ax,
            module,
            support_xs,
            support_ys,
            extent=region_extent(support_xs),
            resolution=self.resolution,
            title=f"{learner}: P(y = 1) after {shots} shots",
        )
        ax.figure.axes[0].axvline(shots, color="grey", linestyle="--", linewidth=1)

    def _repr_mimebundle_(self, **kwargs) -> dict:
        return self.widget._repr_mimebundle_(**kwargs)


def region_figure(
    results: ShiftResults,
    family: str,
    noise_levels: Iterable[float],
    *,
    n_shots: int,
    learners: Iterable[str] | None = None,
    resolution: int = 40,
    seed: int = 0,
) -> plt.Figure:
    """Decision regions: one row per learner, one column per noise level, same sampled episode per column."""
    noise_levels = list(noise_levels)
    learners = [name for name in (learners or LEARNER_ORDER) if name in results.models]
    figure, axes = plt.subplots(  # constrained: the title above the column titles, not over them
        len(learners),
        len(noise_levels),
        figsize=(2.6 * len(noise_levels), 2.5 * len(learners)),
        squeeze=False,
        layout="constrained",
    )
    for column, sigma in enumerate(noise_levels):
        support_xs, support_ys = support_set(results.scale, family, sigma, n_shots, seed=seed)
        extent = region_extent(support_xs)
        for row, name in enumerate(learners):
            ax = axes[row][column]
            draw_regions(
                ax, results.learner(name, family, sigma), support_xs, support_ys, extent=extent, resolution=resolution
            )
            ax.set_title(f"noise_std = {sigma}" if row == 0 else "", fontsize=10)
            ax.set_ylabel(f"{name}\n$x_2$" if column == 0 else "", fontsize=9)
            if row < len(learners) - 1:  # one x label per column, under its last panel
                ax.set_xlabel("")
    figure.suptitle(f"{family}: P(y = 1) after {n_shots} shots\n(red = 1, blue = 0; black: the 0.5 boundary)")
    return figure


# ----------------------------------------------------------------------------- explanation


def _pm(pair) -> str:
    return f"{pair[0]:+.3f} ± {pair[1]:.3f}"


DECISION_TEXT = {
    "supports": "supports the claim",
    "contradicts": "contradicts the claim",
    "undetermined": "is undetermined",
}


def _name(name: str, row: dict) -> str:
    return f"{row['meta_learner']} (the matching meta-learner)" if name == META else name


def explain(verdict: ClaimVerdict) -> str | None:
    """Why the outcome came out as it did, computed from the verdict's numbers (every sentence is
    shown only when the numbers it describes are there).
    None for a verdict stored under an earlier rule, whose numbers have another form."""
    if "margin" not in verdict.numbers:
        return None
    numbers = verdict.numbers
    margin, top = numbers["margin"], numbers["largest_noise_std"]
    parts = []
    for family, row in numbers["families"].items():
        explicit = "; ".join(
            f"{_name(name, row)} {_pm(entry['growth'])} ({entry['status']})" for name, entry in row["explicit"].items()
        )
        parts.append(
            f"{family}: ICL trained on it {_pm(row['icl_own']['growth'])} ({row['icl_own']['status']}); {explicit}; "
            f"so the family {DECISION_TEXT[row['decision']]}"
        )
    text = (
        f"Gap growth from noise_std 1 to {top} (margin {margin}): " + ". ".join(parts) + f". "
        f"{numbers['families_supporting']} of {len(parts)} families support the claim and "
        f"{numbers['families_contradicting']} contradict it."
    )
    learned_only = [
        family
        for family, row in numbers["families"].items()
        if row["explicit"][META]["status"] == "degrades"
        and any(row["explicit"][name]["status"] == "insensitive" for name in (NCM, KNN, LOGISTIC))
    ]
    if learned_only:
        text += (
            f" On {', '.join(learned_only)} the matching meta-learner degrades while a rule with nothing trained is "
            "insensitive: we think the sensitivity comes from the meta-learner's trained networks (fitted at "
            "noise_std = 1), not from its explicit rule."
        )
    every_explicit = [
        family
        for family, row in numbers["families"].items()
        if all(entry["status"] == "degrades" for entry in row["explicit"].values())
    ]
    if every_explicit:
        text += f" On {', '.join(every_explicit)} every explicit algorithm degrades too."
    remedy_fixed = [
        family
        for family, row in numbers["families"].items()
        if row["not_in_rule"][ICL_MIXTURE]["status"] == "degrades"
        and row["not_in_rule"][REMEDY]["status"] == "insensitive"
    ]
    remedy_still = [
        family for family, row in numbers["families"].items() if row["not_in_rule"][REMEDY]["status"] == "degrades"
    ]
    if remedy_fixed:
        text += (
            f" Not part of the rule: on {', '.join(remedy_fixed)} ICL trained on the mixture at noise_std = 1 "
            "degrades while the same transformer trained on noise_std in [1, 5] is insensitive, as the claim's "
            "explanation (ICL fits its pre-training distribution) predicts."
        )
    if remedy_still:
        text += f" The noise-range ICL still degrades on {', '.join(remedy_still)}."
    return text + training_note(verdict)
