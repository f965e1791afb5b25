"""Claim 3(a): is ICL trained on a mixture the same as selecting the best known algorithm?

``run`` trains-or-loads, with each of the scale's training seeds, the learnability chapter's models
(ICL on ``mixture``; MatchNet on ``pairwise``, ProtoNet on ``prototype``, CNP on ``amortized``),
an ICL transformer on the unseen ``radius`` family (the ceiling) and ICL on the mixture with the
other token layout; it builds, per seed s, the prequential :class:`AlgorithmSelector` from the
seed-s meta-learners ("seed s" of the selector), and evaluates everything on the same test
episodes, so differences are paired by seed and episode (:func:`uni_icl.uncertainty.seeded_difference`),
on the seen families, on radius and on radius rescaled to the training input scale (``radius_rescaled``:
the same episodes and labels, inputs x 0.498), the arm the rule reads.
``verdicts`` decides claim 3(a) with ``RULE_3A`` (:func:`decide_3a`), gated by the convergence test of
the models it compares, as in the learnability chapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from uni_icl.evaluation import Difference, EvalResult
from uni_icl.experiments.common import (
    MATCHING_LEARNER,
    MIXED_FAMILY,
    SINGLE_FAMILIES,
    UNSEEN_FAMILY,
    cached_evaluation,
    classification_job,
    classification_run,
    classification_task,
    evaluate_prior_bayes_or_load,
    rung_scale,
    selector_identity,
    trained,
)

# the learnability chapter's seeded rows, paired differences, convergence records and gate (one
# definition for every chapter that compares trained models)
from uni_icl.experiments.evidence import (
    MARGIN,
    decisive_ladder_rows,
    gated,
    gated_verdict,
    per_seed_difference,
    row_difference,
    seeded_row,
    seeds_needed,
    training_record,
    unconverged,
)
from uni_icl.experiments.rules.selection import (
    INPUT_SCALE,
    RULE_3A,
    decide_3a,
)
from uni_icl.learners import display_name
from uni_icl.learners.icl import LAYOUTS, ICLConfig
from uni_icl.learners.selectors import AlgorithmSelector
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import ClassificationScale, Preset
from uni_icl.runs import RunSpec, TrainedLearner, evaluate_or_load, train_or_load
from uni_icl.tasks import UNSEEN_RESCALED, TaskFamily
from uni_icl.uncertainty import seeded_difference
from uni_icl.verdicts import ClaimVerdict, Comparison, decisive, model_record

CLAIMS = ("3a",)
CANDIDATES = tuple(MATCHING_LEARNER[family] for family in SINGLE_FAMILIES)  # matchnet, protonet, cnp
ICL_MIXTURE = "ICL (trained on mixture)"
ICL_RADIUS = "ICL (trained on radius, ceiling)"
SELECTOR = "Selector (prequential)"
ORACLE = "Oracle selector"
RADIUS_BAYES = "Bayes"  # the radius family's own Bayes predictor: the ceiling of any learner on it
CHAPTER = "book/03_selection"
RESCALED_DIFFERENCE = "ICL on mixture − selector, rescaled radius episodes"  # what RULE_3A reads
N_CHOICE_TASKS = 256  # episodes used to count which candidate the selector picks


@dataclass
class SelectionResults:
    """What ``run`` measured.

    ``rows``: one dict per (learner, test family) with the seeded scores of
    :func:`uni_icl.experiments.evidence.seeded_row` (``mean``, ``ci``, ``seed_means``,
    ``per_seed_episode_mean``, ...), paired across learners by seed and episode. ``choices``: one
    dict per (family, shot count, candidate) with the fraction of episodes where the selector used
    it (averaged over the seeds' selectors). ``learners``: display name -> seed-0 module (for
    decision regions). ``trainings``: one dict per trained model (``learner``, ``train_family``,
    ``layout``, ``runs``: a :func:`training_record` per seed). ``variants``: the token-layout check,
    one dict per layout of ICL trained on the mixture (see :func:`layout_variants`). ``ladder``: the
    rule read at every budget of the ladder (:func:`ladder`).
    """

    preset: str
    rows: list[dict]
    choices: list[dict]
    learners: dict[str, nn.Module] = field(repr=False)
    trainings: list[dict]
    oracle_radius_candidate: str
    wall_seconds: float
    variants: list[dict] = field(default_factory=list)
    seeds: tuple[int, ...] = (0,)
    oracle_rescaled_candidate: str = ""  # the best meta-learner in hindsight on rescaled radius
    ladder: list[dict] = field(default_factory=list)  # RULE_3A at every budget of the ladder (:func:`ladder`)

    def row(self, learner: str, family: str) -> dict:
        """The row of ``learner`` (display name) on ``family``."""
        for row in self.rows:
            if row["learner"] == learner and row["test_family"] == family:
                return row
        raise ValueError(f"learner/family: no row for {learner!r} on {family!r}")

    def training(self, learner: str, train_family: str, layout: str | None = None) -> dict:
        """The training entry of ``learner`` (registry name) on ``train_family`` (default layout)."""
        for entry in self.trainings:
            if (entry["learner"], entry["train_family"], entry.get("layout")) == (learner, train_family, layout):
                return entry
        raise ValueError(f"learner/train_family: no trained {learner!r} on {train_family!r} (layout {layout})")


def _row(learner: str, family: str, results: list[EvalResult], preset: str, runs: list[dict] | None = None) -> dict:
    return {"learner": learner, "test_family": family, **seeded_row(results), "runs": runs or [], "preset": preset}


@torch.no_grad()
def choice_fractions(
    selector: AlgorithmSelector, task: TaskFamily, *, n_tasks: int, seed: int, family: str
) -> list[dict]:
    """Fraction of episodes in which the selector uses each candidate, per shot count."""
    episode = task.sample(n_tasks, seed=seed, device=next(selector.parameters()).device)
    selector.eval()
    chosen = selector.choices(episode.xs, episode.ys).cpu()  # (n_tasks, N)
    rows = []
    for index, name in enumerate(selector.names):
        fraction = (chosen == index).double().mean(0)
        rows += [
            {"family": family, "shots": shot, "candidate": display_name(name), "fraction": value}
            for shot, value in enumerate(fraction.tolist())
        ]
    return rows


def icl_variant(scale: ClassificationScale, layout: str, seed: int) -> RunSpec:
    """The RunSpec of ICL trained on the mixture with token ``layout`` and training ``seed``.

    The default layout is exactly the chapter's main model at that seed (same spec, so it is loaded).
    """
    overrides = {} if layout == default_layout(scale) else {"layout": layout}
    return classification_run(scale, "icl", classification_task(scale, MIXED_FAMILY), seed, **overrides)


def default_layout(scale: ClassificationScale) -> str:
    """The token layout of the scale's ICL transformer."""
    return scale.icl.get("layout", ICLConfig().layout)


def layout_variants(
    scale: ClassificationScale, selector_radius: list[EvalResult], *, progress: bool = True
) -> list[dict]:
    """ICL trained on the mixture with each token layout, with the scale's seeds, tested on ``radius``.

    Not part of the rule of claim 3(a) (which uses the default layout): it shows whether the
    outcome depends on the token layout. Each dict: layout, radius accuracy (seeded mean and CI),
    ICL - selector on radius (seed s against selector seed s; mean, CI and per seed), each seed's
    mean accuracy on the seen families, and the training records (``runs``).
    """
    radius_task = classification_task(scale, UNSEEN_FAMILY)
    evaluation = {"n_tasks": scale.n_test_tasks, "seed": scale.test_seed}
    selector_scores = np.array([result.per_episode_mean for result in selector_radius])
    variants = []
    for layout in LAYOUTS:
        models = [train_or_load(icl_variant(scale, layout, seed), progress=progress) for seed in scale.seeds]
        radius = [evaluate_or_load(model, radius_task, **evaluation) for model in models]
        scores = np.array([result.per_episode_mean for result in radius])
        difference = seeded_difference(scores, selector_scores)
        seen = [_seen_mean(scale, model) for model in models]
        total = seeded_row(radius)
        variants.append(
            {
                "layout": layout,
                "default": layout == default_layout(scale),
                "radius": total["mean"],
                "radius_ci": total["ci"],
                "minus_selector": difference.mean,
                "minus_selector_ci": difference.ci,
                "per_seed_minus_selector": (scores - selector_scores).mean(1).tolist(),
                "seen_families_mean": seen,
                "runs": [training_record(model) for model in models],
            }
        )
    return variants


def _seen_mean(scale: ClassificationScale, model: TrainedLearner) -> float:
    """Mean accuracy of ``model`` over the three seen families' test episodes."""
    evaluation = {"n_tasks": scale.n_test_tasks, "seed": scale.test_seed}
    tasks = [classification_task(scale, family) for family in SINGLE_FAMILIES]
    return float(np.mean([evaluate_or_load(model, task, **evaluation).mean for task in tasks]))


def training_plan(preset: Preset) -> list[Job]:
    """Every model the chapter trains, each with every seed of the scale: the three candidates, ICL on
    the mixture (each token layout; the default one is the main model) and ICL on ``radius``."""
    scale = preset.classification
    jobs = []
    for seed in scale.seeds:
        jobs += [classification_job(scale, learner, family, seed) for family, learner in MATCHING_LEARNER.items()]
        jobs += [run_job(icl_variant(scale, layout, seed)) for layout in LAYOUTS]
        jobs.append(classification_job(scale, "icl", UNSEEN_FAMILY, seed))
    return jobs


def _trained_seeds(scale: ClassificationScale, learner: str, family: str, progress: bool) -> list[TrainedLearner]:
    return [trained(scale, learner, family, seed=seed, progress=progress) for seed in scale.seeds]


def ladder(scale: ClassificationScale, *, progress: bool = True) -> list[dict]:
    """Claim 3(a) read at every budget of ``scale.budget_rungs``, as the learnability chapter reads its
    claims: RULE_3A's difference on rescaled radius with each rung's models (ICL on the mixture at 3x the
    rung, the selector built from the meta-learners at the rung; stored on the way by the full runs),
    gated by their convergence. Rows as :func:`~uni_icl.experiments.rules.learnability.ladder_rows`'."""
    task = classification_task(scale, UNSEEN_RESCALED)
    evaluation = {"n_tasks": scale.n_test_tasks, "seed": scale.test_seed}
    rows = []
    for rung in scale.budget_rungs:
        at_rung = rung_scale(scale, rung)
        icl = _trained_seeds(at_rung, "icl", MIXED_FAMILY, progress)
        candidates = {
            learner: _trained_seeds(at_rung, learner, family, progress) for family, learner in MATCHING_LEARNER.items()
        }
        selected = []
        for index in range(len(scale.seeds)):
            group = {name: models[index] for name, models in candidates.items()}
            selector = AlgorithmSelector({name: model.learner for name, model in group.items()})
            selected.append(cached_evaluation("selector", selector_identity(group), selector, task, **evaluation))
        icl_row = seeded_row([evaluate_or_load(model, task, **evaluation) for model in icl])
        difference = row_difference(icl_row, seeded_row(selected))
        models = [model_record("icl", MIXED_FAMILY, [training_record(model) for model in icl])] + [
            model_record(learner, family, [training_record(model) for model in candidates[learner]])
            for family, learner in MATCHING_LEARNER.items()
        ]
        ungated = decide_3a(difference)
        common = {"claim": "3a", "steps": rung, "label": RESCALED_DIFFERENCE, "effect": difference.mean}
        rows += [
            {"kind": "comparison", **common, "ci": difference.ci},
            {
                "kind": "decisive",
                **common,
                "ci": difference.ci,
                "ungated_outcome": ungated,
                "outcome": gated(ungated, models),
                "unconverged": unconverged(models),
            },
        ]
    return rows


def run(preset: Preset, *, progress: bool = True) -> SelectionResults:
    """Train-or-load every model with every seed and evaluate them on the seen families and on ``radius``."""
    started = time.perf_counter()
    scale = preset.classification
    train_all(training_plan(preset), progress=progress, description="chapter 3 models")
    candidates = {
        learner: _trained_seeds(scale, learner, family, progress) for family, learner in MATCHING_LEARNER.items()
    }
    icl_mixture = _trained_seeds(scale, "icl", MIXED_FAMILY, progress)
    icl_radius = _trained_seeds(scale, "icl", UNSEEN_FAMILY, progress)
    per_seed = [{name: models[index] for name, models in candidates.items()} for index in range(len(scale.seeds))]
    selectors = [AlgorithmSelector({name: model.learner for name, model in group.items()}) for group in per_seed]
    identities = [selector_identity(group) for group in per_seed]
    evaluation = {"n_tasks": scale.n_test_tasks, "seed": scale.test_seed}
    runs = {
        (learner, family): [training_record(m) for m in candidates[learner]]
        for family, learner in MATCHING_LEARNER.items()
    }
    runs[("icl", MIXED_FAMILY)] = [training_record(model) for model in icl_mixture]
    runs[("icl", UNSEEN_FAMILY)] = [training_record(model) for model in icl_radius]

    def evaluated(models: list[TrainedLearner], task: TaskFamily) -> list[EvalResult]:
        return [evaluate_or_load(model, task, **evaluation) for model in models]

    rows: list[dict] = []
    choices: list[dict] = []
    families = (*SINGLE_FAMILIES, UNSEEN_FAMILY, UNSEEN_RESCALED)
    for family in tqdm(families, desc="test families", disable=not progress):
        task = classification_task(scale, family)
        rows.append(_row(ICL_MIXTURE, family, evaluated(icl_mixture, task), preset.name, runs[("icl", MIXED_FAMILY)]))
        selected = [
            cached_evaluation("selector", identity, selector, task, **evaluation)
            for identity, selector in zip(identities, selectors, strict=True)
        ]
        rows.append(_row(SELECTOR, family, selected, preset.name))
        for matched, learner in MATCHING_LEARNER.items():
            rows.append(
                _row(
                    display_name(learner),
                    family,
                    evaluated(candidates[learner], task),
                    preset.name,
                    runs[(learner, matched)],
                )
            )
        per_selector = [
            choice_fractions(
                selector, task, n_tasks=min(N_CHOICE_TASKS, scale.n_test_tasks), seed=scale.test_seed, family=family
            )
            for selector in selectors
        ]
        for parts in zip(*per_selector, strict=True):
            choices.append({**parts[0], "fraction": float(np.mean([part["fraction"] for part in parts]))})
    radius_task = classification_task(scale, UNSEEN_FAMILY)
    rows.append(
        _row(ICL_RADIUS, UNSEEN_FAMILY, evaluated(icl_radius, radius_task), preset.name, runs[("icl", UNSEEN_FAMILY)])
    )
    limit = evaluate_prior_bayes_or_load(radius_task, radius_task, **evaluation)  # exact: r is the only unknown
    rows.append(_row(RADIUS_BAYES, UNSEEN_FAMILY, [EvalResult(**limit["result"])], preset.name))
    # Rescaled radius episodes are the radius episodes with inputs and radius times a known factor: the
    # Bayes predictor undoes it and predicts as on radius, so its scores are the same.
    rows.append({**_find(rows, RADIUS_BAYES, UNSEEN_FAMILY), "test_family": UNSEEN_RESCALED})
    # The oracle predicts with one candidate per family (its log-softmax: the same decisions), so its
    # scores are that candidate's: the matching one on a seen family, the best one in hindsight on radius
    # (rescaled or not).
    for family in SINGLE_FAMILIES:
        rows.append({**_find(rows, display_name(MATCHING_LEARNER[family]), family), "learner": ORACLE})
    best = {}
    for family in (UNSEEN_FAMILY, UNSEEN_RESCALED):
        best[family] = max(CANDIDATES, key=lambda name, family=family: _find(rows, display_name(name), family)["mean"])
        rows.append({**_find(rows, display_name(best[family]), family), "learner": ORACLE})
    best_candidate = best[UNSEEN_FAMILY]

    selector_radius = [
        cached_evaluation("selector", identity, selector, radius_task, **evaluation)
        for identity, selector in zip(identities, selectors, strict=True)
    ]
    variants = layout_variants(scale, selector_radius, progress=progress)
    seed0 = per_seed[0]
    learners = {
        ICL_MIXTURE: icl_mixture[0].learner,
        SELECTOR: selectors[0],
        **{display_name(name): model.learner for name, model in seed0.items()},
        ICL_RADIUS: icl_radius[0].learner,
    }
    trainings = [
        {"learner": learner, "train_family": family, "layout": None, "runs": records}
        for (learner, family), records in runs.items()
    ]
    trainings += [
        {"learner": "icl", "train_family": MIXED_FAMILY, "layout": variant["layout"], "runs": variant["runs"]}
        for variant in variants
        if not variant["default"]
    ]
    read_at_rungs = ladder(scale, progress=progress)
    return SelectionResults(
        preset=preset.name,
        rows=rows,
        choices=choices,
        learners=learners,
        trainings=trainings,
        oracle_radius_candidate=display_name(best_candidate),
        wall_seconds=time.perf_counter() - started,
        variants=variants,
        seeds=tuple(scale.seeds),
        oracle_rescaled_candidate=display_name(best[UNSEEN_RESCALED]),
        ladder=read_at_rungs,
    )


def _find(rows: list[dict], learner: str, family: str) -> dict:
    return next(row for row in rows if row["learner"] == learner and row["test_family"] == family)


# ----------------------------------------------------------------------------- verdict


def rests_on(results: SelectionResults) -> list[dict]:
    """The models RULE_3A compares: ICL on the mixture and the three candidates of the selector."""
    compared = [("icl", MIXED_FAMILY), *((learner, family) for family, learner in MATCHING_LEARNER.items())]
    return [model_record(learner, family, results.training(learner, family)["runs"]) for learner, family in compared]


def rescaled_numbers(results: SelectionResults) -> dict:
    """The arm RULE_3A reads, on radius rescaled to the training input scale: ICL on the mixture, the
    selector and the best meta-learner in hindsight, with ICL's differences to both (per seed too)."""
    icl = results.row(ICL_MIXTURE, UNSEEN_RESCALED)
    selector = results.row(SELECTOR, UNSEEN_RESCALED)
    oracle = results.row(ORACLE, UNSEEN_RESCALED)
    difference, versus_oracle = row_difference(icl, selector), row_difference(icl, oracle)
    return {
        "input_scale": INPUT_SCALE,
        "icl_mixture": [icl["mean"], icl["ci"]],
        "icl_mixture_per_seed": icl["seed_means"],
        "selector": [selector["mean"], selector["ci"]],
        "selector_per_seed": selector["seed_means"],
        "icl_minus_selector": [difference.mean, difference.ci],
        "icl_minus_selector_per_seed": per_seed_difference(icl, selector),
        "oracle_candidate": results.oracle_rescaled_candidate,
        "oracle": [oracle["mean"], oracle["ci"]],
        "icl_minus_oracle": [versus_oracle.mean, versus_oracle.ci],
    }


def verdicts(results: SelectionResults) -> list[ClaimVerdict]:
    """Claim 3(a) decided by ``RULE_3A`` from the seeded, paired results on rescaled radius; the unrescaled
    radius results are reported beside them."""
    icl = results.row(ICL_MIXTURE, UNSEEN_FAMILY)
    selector = results.row(SELECTOR, UNSEEN_FAMILY)
    oracle = results.row(ORACLE, UNSEEN_FAMILY)
    ceiling = results.row(ICL_RADIUS, UNSEEN_FAMILY)
    bayes = results.row(RADIUS_BAYES, UNSEEN_FAMILY)
    unrescaled = row_difference(icl, selector)
    versus_oracle = row_difference(icl, oracle)
    rescaled = rescaled_numbers(results)
    difference = Difference(*rescaled["icl_minus_selector"])
    ungated = decide_3a(difference)
    models = rests_on(results)
    label = RESCALED_DIFFERENCE
    numbers = {
        "margin": MARGIN,
        "rescaled": rescaled,
        "seeds": list(results.seeds),
        "icl_mixture_radius": [icl["mean"], icl["ci"]],
        "icl_mixture_radius_per_seed": icl["seed_means"],
        "selector_radius": [selector["mean"], selector["ci"]],
        "selector_radius_per_seed": selector["seed_means"],
        "icl_minus_selector": [unrescaled.mean, unrescaled.ci],
        "icl_minus_selector_per_seed": per_seed_difference(icl, selector),
        "oracle_radius_candidate": results.oracle_radius_candidate,
        "oracle_radius": [oracle["mean"], oracle["ci"]],
        "icl_minus_oracle": [versus_oracle.mean, versus_oracle.ci],
        "icl_minus_oracle_per_seed": per_seed_difference(icl, oracle),
        "icl_radius_ceiling": [ceiling["mean"], ceiling["ci"]],
        # not used by the rule: the radius Bayes predictor, the ceiling of any learner on radius
        "bayes_radius": [bayes["mean"], bayes["ci"]],
        "bayes_minus_icl_radius_ceiling": list(row_difference(bayes, ceiling)),
        "bayes_minus_icl_mixture": list(row_difference(bayes, icl)),
        "decisive": decisive([Comparison(label, difference, MARGIN, "above +m")], ungated),
        # not used by the rule: ICL (mixture) - selector on radius for each token layout
        "variants": {
            v["layout"]: {
                "minus_selector": [v["minus_selector"], v["minus_selector_ci"]],
                "per_seed": v["per_seed_minus_selector"],
                "default": v["default"],
            }
            for v in results.variants
        },
    }
    if ungated == "inconclusive" and len(results.seeds) > 1:
        numbers["seeds_to_decide"] = seeds_needed(label, rescaled["icl_minus_selector_per_seed"], difference, MARGIN)
    return [
        gated_verdict(
            "3a",
            ungated,
            models,
            preset=results.preset,
            quantity="accuracy on radius rescaled to the training input scale (mean over shot counts): "
            "ICL trained on mixture minus the prequential selector, over training seeds and test episodes; the same on "
            "unrescaled radius beside it",
            numbers=numbers,
            rule=RULE_3A,
            chapter=CHAPTER,
            wall_seconds=results.wall_seconds,
            notes={"budget_ladder": decisive_ladder_rows(results.ladder, "3a")},
        )
    ]
