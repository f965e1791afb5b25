"""Claim 2 (learnability): learners trained on each family, evaluated on each family, against the Bayes limit.

Building blocks, each usable alone:

- ``trained`` / ``cross_table``: train-or-load every (learner, training family) pair at one preset
  and evaluate it on test families; rows are plain dicts (a notebook turns them into a DataFrame).
- ``bayes_scores`` / ``evaluate_bayes_or_load``: the Bayes-optimal in-context predictor of
  :mod:`uni_icl.learners.bayes` scored on exactly the test episodes the learners see (same number, same
  seed, same batches), cached in the result store, with Monte-Carlo diagnostics for ``prototype``.
- ``paired_difference``: mean difference of two learners on the same test episodes, with a 95% CI.
- ``decide_single`` / ``decide_mixed``: the decision rules of claims "2-single" and "2-mixed",
  fixed here before any result was looked at.
- ``run`` computes (or loads) everything the chapter shows and returns it with its tables;
  ``verdicts`` applies the rules and stores both verdicts.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from uni_icl.device import default_device
from uni_icl.evaluation import Difference, EvalResult, paired_difference
from uni_icl.learners import CLASSIFIERS, bayes, display_name
from uni_icl.presets import ClassificationScale, classification_scale, preset_name
from uni_icl.runs import CODE_VERSION, TrainedLearner, evaluate_or_load, train_or_load
from uni_icl.storage import atomic_json_save, cache_root, checked_json_load, config_hash, entry_lock
from uni_icl.tasks import TaskFamily
from uni_icl.training import TrainHistory
from uni_icl.validation import check_choice, check_int
from uni_icl.verdicts import ClaimVerdict, save_verdict

SINGLE_FAMILIES = ("pairwise", "prototype", "amortized")
MIXED_FAMILY = "mixture"
LEARNERS = ("icl", "matchnet", "protonet", "cnp")
META_LEARNERS = ("matchnet", "protonet", "cnp")
MATCHING_LEARNER = {"pairwise": "matchnet", "prototype": "protonet", "amortized": "cnp"}
BAYES_NAME = "Bayes"
CLASSIFICATION_FAMILIES = (*SINGLE_FAMILIES, MIXED_FAMILY, "radius")
CHAPTER = "book/02_learnability"

# The decision margin of claims 2-single and 2-mixed, fixed before any result was seen: a learner
# "matches" another when the 95% CI of their paired difference in mean accuracy (over shot counts and
# test episodes) lies above -MARGIN, and "falls behind" when it lies below -MARGIN.
MARGIN = 0.01


@dataclass(frozen=True)
class LearnabilityScale:
    """Sizes of this chapter's extras (the learners' sizes come from ``ClassificationScale``)."""

    bayes_samples: int  # particles of the prototype Monte-Carlo sampler on the test episodes
    region_shots: tuple[int, ...]  # support-set sizes of the decision-region figures
    region_resolution: int  # grid points per axis of a decision-region panel
    region_bayes_samples: int  # particles of the prototype sampler on the decision-region grid
    authors_families: tuple[str, ...]  # families on which the authors' ICLer is trained (faithfulness)
    bayes_seed: int = 0  # seed of the prototype sampler


LEARNABILITY_SCALES = {
    "smoke": LearnabilityScale(
        bayes_samples=64, region_shots=(2, 8), region_resolution=24, region_bayes_samples=32, authors_families=()
    ),
    "quick": LearnabilityScale(
        bayes_samples=512,
        region_shots=(2, 8, 32),
        region_resolution=50,
        region_bayes_samples=128,
        authors_families=("pairwise",),
    ),
    "paper": LearnabilityScale(
        bayes_samples=2048,
        region_shots=(2, 8, 32),
        region_resolution=80,
        region_bayes_samples=512,
        authors_families=SINGLE_FAMILIES,
    ),
}


def learnability_scale(preset: str | None = None) -> LearnabilityScale:
    """This chapter's extras at ``preset`` (default: $UNI_ICL_PRESET, else quick)."""
    return LEARNABILITY_SCALES[preset_name(preset)]


# ----------------------------------------------------------------------------- learners


def trained(
    scale: ClassificationScale, learner: str, family: str, *, progress: bool = True, **task_params
) -> TrainedLearner:
    """Train-or-load ``learner`` on ``family`` at ``scale`` (task overrides such as noise_std)."""
    return train_or_load(scale.run(learner, scale.task(family, **task_params)), progress=progress)


def levelled_off(history: TrainHistory, patience: int, min_delta: float) -> bool:
    """True if training stopped early, or if the best validation score of the last ``patience``
    evaluations beats the best one before them by at most ``min_delta`` (a flat curve at max_steps)."""
    if history.stopped_early:
        return True
    scores = history.val_score
    window = max(patience, 1)
    if len(scores) <= window:
        return False
    return max(scores[-window:]) - max(scores[:-window]) <= min_delta


def cross_table(
    scale: ClassificationScale,
    learners: Iterable[str] = LEARNERS,
    train_families: Iterable[str] = SINGLE_FAMILIES,
    test_families: Iterable[str] | None = None,
    *,
    progress: bool = True,
) -> list[dict]:
    """One row per (learner, training family, test family): mean accuracy, its 95% CI, the
    per-shot curve with CIs, each test episode's mean (for paired comparisons), and how the
    model was trained. ``test_families=None`` tests each model on its own training family only."""
    learners, train_families = list(learners), list(train_families)
    test_families = None if test_families is None else list(test_families)
    for learner in learners:
        check_choice("learners", learner, CLASSIFIERS)
    for family in train_families + (test_families or []):
        check_choice("families", family, CLASSIFICATION_FAMILIES)
    pairs = [(learner, family) for family in train_families for learner in learners]
    rows = []
    for learner, family in tqdm(pairs, desc="learners", disable=not progress):
        model = trained(scale, learner, family, progress=progress)
        config = model.spec.train
        history = model.history
        for test_family in test_families or [family]:
            result = evaluate_or_load(model, scale.task(test_family), n_tasks=scale.n_test_tasks, seed=scale.test_seed)
            rows.append(
                {
                    "learner": display_name(learner),
                    "learner_id": learner,
                    "train_family": family,
                    "test_family": test_family,
                    **result.summary(),
                    "train_seconds": history.seconds,
                    "train_steps": history.steps[-1] if history.steps else 0,
                    "max_steps": config.max_steps,
                    "best_step": history.best_step,
                    "best_val": max(history.val_score) if history.val_score else math.nan,
                    "stopped_early": history.stopped_early,
                    "stopped_by_time": history.stopped_by_time,
                    "levelled_off": levelled_off(history, config.patience, config.min_delta),
                    "val_steps": list(history.steps),
                    "val_score": list(history.val_score),
                    "preset": scale.preset,
                }
            )
    return rows


# ----------------------------------------------------------------------------- Bayes predictor


def bayes_code_hash() -> str:
    """Hash of the source of :mod:`uni_icl.learners.bayes` (part of every Bayes cache key)."""
    return hashlib.sha256(inspect.getsource(bayes).encode()).hexdigest()[:16]


def bayes_predictor(task: TaskFamily, *, seed: int = 0, n_samples: int = bayes.DEFAULT_N_SAMPLES) -> Callable:
    """The Bayes-optimal learner of ``task`` as a function ``(xs (B, N, d), ys (B, N)) -> log-probs (B, N, C)``.

    It follows the learner contract, so it can be passed wherever a learner's forward is expected
    (for example ``uni_icl.book.plotting.plot_decision_regions``). ``seed`` and ``n_samples`` are used by
    the Monte-Carlo sampler of the ``prototype`` family only.
    """
    check_choice("task", task.name, bayes.SUPPORTED_FAMILIES)
    check_int("n_samples", n_samples, minimum=2)

    def predict(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return bayes.bayes_log_probs(task, xs, ys, seed=seed, n_samples=n_samples)

    return predict


@dataclass(frozen=True)
class BayesEvaluation:
    """The Bayes predictor scored on the test episodes, with Monte-Carlo diagnostics (prototype).

    Per shot count i (lists of length N; ``None`` for the exact families): ``ess`` the mean
    effective sample size of the weights the prediction is made with, ``ess_min`` its minimum over
    episodes, ``mc_stderr`` the mean Monte-Carlo standard error of the predicted probability of
    the true class, ``uncertain`` the fraction of test queries whose predicted class is within two
    Monte-Carlo standard errors of flipping (|P(class 0) - 1/2| < 2 s.e.): an upper bound on how
    much the Monte-Carlo error can move the accuracy at i.
    """

    result: EvalResult
    family: str
    exact: bool
    n_samples: int | None = None
    ess: list[float] | None = None
    ess_min: list[float] | None = None
    mc_stderr: list[float] | None = None
    uncertain: list[float] | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(stored: dict) -> BayesEvaluation:
        return BayesEvaluation(**{**stored, "result": EvalResult(**stored["result"])})


def bayes_scores(
    task: TaskFamily,
    n_tasks: int,
    seed: int,
    *,
    bayes_seed: int = 0,
    n_samples: int = bayes.DEFAULT_N_SAMPLES,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, dict]:
    """Per-episode, per-position correctness of the Bayes predictor on the test episodes.

    The episodes are drawn exactly as :func:`uni_icl.evaluation.episode_scores` draws them (one
    generator seeded with ``seed``, batches of 256), so learners and the Bayes predictor are
    compared on the same tasks. Returns ((n_tasks, N) float scores, diagnostics), where the
    diagnostics of ``prototype`` are (n_tasks, N) tensors ``ess``, ``stderr`` (of the true class's
    probability) and ``uncertain``; they are empty for the exact families. Computed on ``device``
    (default: CUDA when present); the episodes are drawn on the CPU first, so they do not depend on it.
    """
    device = device or default_device()
    check_choice("task", task.name, bayes.SUPPORTED_FAMILIES)
    check_int("n_tasks", n_tasks, minimum=1)
    check_int("n_samples", n_samples, minimum=2)
    gen = torch.Generator().manual_seed(seed)
    chunks, diagnostics = [], {"ess": [], "stderr": [], "uncertain": []}
    for start in range(0, n_tasks, 256):
        episode = task.sample(min(256, n_tasks - start), generator=gen, device=device)
        if task.name == "prototype":
            run = bayes.prototype_diagnostics(task, episode.xs, episode.ys, seed=bayes_seed, n_samples=n_samples)
            log_probs = run.log_probs
            truth = episode.ys[..., None]
            diagnostics["ess"].append(run.ess_used)
            diagnostics["stderr"].append(run.mc_stderr.gather(-1, truth)[..., 0])
            margin = (log_probs.exp()[..., 0] - 0.5).abs()
            diagnostics["uncertain"].append((margin < 2 * run.mc_stderr[..., 0]).double())
        else:
            log_probs = bayes.bayes_log_probs(task, episode.xs, episode.ys)
        chunks.append((log_probs.argmax(-1) == episode.ys).float().cpu())
    return torch.cat(chunks), {name: torch.cat(parts).cpu() for name, parts in diagnostics.items() if parts}


def evaluate_bayes_or_load(
    task: TaskFamily,
    *,
    n_tasks: int,
    seed: int,
    bayes_seed: int = 0,
    n_samples: int = bayes.DEFAULT_N_SAMPLES,
    root: Path | None = None,
) -> BayesEvaluation:
    """Score the Bayes predictor of ``task`` on ``n_tasks`` test episodes drawn with ``seed``, cached.

    The cache key covers the task, the test episodes, the sampler's seed and particles (prototype
    only), ``CODE_VERSION`` and the source of :mod:`uni_icl.learners.bayes`.
    """
    check_choice("task", task.name, bayes.SUPPORTED_FAMILIES)
    check_int("n_tasks", n_tasks, minimum=1)
    check_int("n_samples", n_samples, minimum=2)
    exact = task.name != "prototype"
    device = default_device()
    config = {
        "code_version": CODE_VERSION,
        "bayes_code": bayes_code_hash(),
        "task": task.config(),
        "n_tasks": n_tasks,
        "seed": seed,
        # the sampler's random stream depends on the device its generator lives on
        "sampler": None if exact else {"seed": bayes_seed, "n_samples": n_samples, "device": device.type},
    }
    path = (root or cache_root()) / "results" / f"bayes-{task.name}-{config_hash(config)}.json"
    with entry_lock(path):
        stored = checked_json_load(path)
        if stored is not None:
            return BayesEvaluation.from_dict(stored)
        started = time.perf_counter()
        scores, diagnostics = bayes_scores(
            task, n_tasks, seed, bayes_seed=bayes_seed, n_samples=n_samples, device=device
        )
        extra = {}
        if not exact:
            extra = {
                "n_samples": n_samples,
                "ess": diagnostics["ess"].mean(0).tolist(),
                "ess_min": diagnostics["ess"].amin(0).tolist(),
                "mc_stderr": diagnostics["stderr"].mean(0).tolist(),
                "uncertain": diagnostics["uncertain"].mean(0).tolist(),
            }
        evaluation = BayesEvaluation(
            EvalResult.from_scores(scores, "accuracy"),
            task.name,
            exact,
            seconds=time.perf_counter() - started,
            **extra,
        )
        atomic_json_save(evaluation.to_dict(), path)
    return evaluation


def bayes_rows(
    scale: ClassificationScale, families: Iterable[str] = SINGLE_FAMILIES, *, n_samples: int, bayes_seed: int = 0
) -> tuple[list[dict], dict[str, BayesEvaluation]]:
    """Rows in the format of :func:`cross_table` for the Bayes predictor of each family, and the evaluations."""
    rows, evaluations = [], {}
    for family in families:
        evaluation = evaluate_bayes_or_load(
            scale.task(family),
            n_tasks=scale.n_test_tasks,
            seed=scale.test_seed,
            bayes_seed=bayes_seed,
            n_samples=n_samples,
        )
        evaluations[family] = evaluation
        result = evaluation.result
        rows.append(
            {
                "learner": BAYES_NAME,
                "learner_id": "bayes",
                "train_family": family,
                "test_family": family,
                **result.summary(),
                "preset": scale.preset,
            }
        )
    return rows, evaluations


# ----------------------------------------------------------------------------- paired comparisons and rules


def matches(diff: Difference, margin: float = MARGIN) -> bool:
    """a is not worse than b by more than ``margin`` (the CI lies above -margin)."""
    return diff.lower > -margin


def falls_behind(diff: Difference, margin: float = MARGIN) -> bool:
    """a is worse than b by more than ``margin`` (the CI lies below -margin)."""
    return diff.upper < -margin


RULE_SINGLE = (
    f"On each of {', '.join(SINGLE_FAMILIES)}, compare learners trained and tested on that family, paired by "
    "test episode (mean accuracy over shot counts). 'reproduced' if, on every family, the 95% CI of "
    f"ICL - (best meta-learner) lies above -{MARGIN} and the 95% CI of (matching meta-learner) - (best other "
    f"meta-learner) lies above -{MARGIN}; 'not reproduced' if on some family the CI of ICL - (best meta-learner) "
    f"lies below -{MARGIN}; 'inconclusive' otherwise (including: ICL matches the best, but the matching "
    "meta-learner is not the best, so the paper's premise fails at this scale)."
)

RULE_MIXED = (
    f"Learners trained on '{MIXED_FAMILY}' are tested on each single family, paired by test episode. The "
    "reference on a family is the best meta-learner trained on that family alone. 'reproduced' if, on every "
    f"family, the 95% CI of ICL-mixed - ICL-single lies above -{MARGIN}, and every meta-learner trained on the "
    f"mixture falls behind the reference (CI below -{MARGIN}) on at least one family that does not match its "
    f"bias; 'not reproduced' if ICL-mixed falls behind ICL-single (CI below -{MARGIN}) on some family, or some "
    f"meta-learner trained on the mixture matches the reference (CI above -{MARGIN}) on every family that does "
    "not match its bias; 'inconclusive' otherwise."
)


def decide_single(
    icl_vs_best: dict[str, Difference], matching_vs_best_other: dict[str, Difference], margin: float = MARGIN
) -> str:
    """Outcome of claim 2-single (see ``RULE_SINGLE``); both dicts are keyed by family."""
    if any(falls_behind(diff, margin) for diff in icl_vs_best.values()):
        return "not reproduced"
    icl_ok = all(matches(diff, margin) for diff in icl_vs_best.values())
    premise_ok = all(matches(diff, margin) for diff in matching_vs_best_other.values())
    return "reproduced" if icl_ok and premise_ok else "inconclusive"


def decide_mixed(
    icl_mixed_vs_single: dict[str, Difference],
    meta_mixed_vs_reference: dict[str, dict[str, Difference]],
    margin: float = MARGIN,
) -> str:
    """Outcome of claim 2-mixed (see ``RULE_MIXED``).

    ``icl_mixed_vs_single`` is keyed by family; ``meta_mixed_vs_reference[learner][family]`` holds
    the meta-learner's differences on the families that do not match its bias only.
    """
    icl_fails = any(falls_behind(diff, margin) for diff in icl_mixed_vs_single.values())
    meta_fails = any(
        all(matches(diff, margin) for diff in by_family.values()) for by_family in meta_mixed_vs_reference.values()
    )
    if icl_fails or meta_fails:
        return "not reproduced"
    icl_ok = all(matches(diff, margin) for diff in icl_mixed_vs_single.values())
    meta_ok = all(
        any(falls_behind(diff, margin) for diff in by_family.values()) for by_family in meta_mixed_vs_reference.values()
    )
    return "reproduced" if icl_ok and meta_ok else "inconclusive"


# ----------------------------------------------------------------------------- the whole experiment


@dataclass
class LearnabilityResults:
    """Everything the chapter shows, at one preset.

    ``rows``: every learner row of :func:`cross_table` (single-type, mixed and authors' ICLer
    models) plus the Bayes rows; ``bayes``: the Bayes evaluations by family; ``tables``: the
    DataFrames built by :func:`tables`; ``seconds``: wall time of :func:`run`.
    """

    preset: str
    rows: list[dict]
    bayes: dict[str, BayesEvaluation]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self, learner_id: str, train_family: str, test_family: str) -> dict:
        """The row of one (learner, training family, test family); KeyError if absent."""
        for row in self.rows:
            if (row["learner_id"], row["train_family"], row["test_family"]) == (learner_id, train_family, test_family):
                return row
        raise KeyError(f"no result for {learner_id} trained on {train_family}, tested on {test_family}")


def run(preset: str | None = None, progress: bool = True) -> LearnabilityResults:
    """Train-or-load every model of the chapter, evaluate it, score the Bayes predictors; build the tables."""
    preset = preset_name(preset)
    scale, extras = classification_scale(preset), learnability_scale(preset)
    started = time.perf_counter()
    rows = cross_table(scale, LEARNERS, SINGLE_FAMILIES, SINGLE_FAMILIES, progress=progress)
    rows += cross_table(scale, LEARNERS, (MIXED_FAMILY,), SINGLE_FAMILIES, progress=progress)
    if extras.authors_families:
        rows += cross_table(scale, ("icl_authors",), extras.authors_families, SINGLE_FAMILIES, progress=progress)
    bayes_part, evaluations = bayes_rows(
        scale, SINGLE_FAMILIES, n_samples=extras.bayes_samples, bayes_seed=extras.bayes_seed
    )
    results = LearnabilityResults(preset, rows + bayes_part, evaluations)
    results.tables = tables(results)
    results.seconds = time.perf_counter() - started
    return results


def _with_ci(mean: float, ci: float) -> str:
    return f"{mean:.3f} ± {ci:.3f}"


def tables(results: LearnabilityResults) -> dict[str, pd.DataFrame]:
    """The chapter's tables: ``cross``, ``training``, ``mixed``, ``bayes_gap``, ``gap_curves``,
    ``faithfulness``, ``bayes_diagnostics``, ``summary`` (one DataFrame each; see the notebook)."""
    learner_rows = [row for row in results.rows if row["learner_id"] != "bayes"]
    cross = pd.DataFrame(
        [
            {
                "learner": row["learner"],
                "train family": row["train_family"],
                "test family": row["test_family"],
                "accuracy": row["mean"],
                "ci": row["ci"],
            }
            for row in learner_rows
            if row["learner_id"] in LEARNERS
        ]
    )
    seen, training = set(), []
    for row in learner_rows:
        key = (row["learner_id"], row["train_family"])
        if key in seen:
            continue
        seen.add(key)
        training.append(
            {
                "learner": row["learner"],
                "train family": row["train_family"],
                "steps run": row["train_steps"],
                "max steps": row["max_steps"],
                "best step": row["best_step"],
                "best validation accuracy": row["best_val"],
                "stopped early": row["stopped_early"],
                "levelled off": row["levelled_off"],
                "training seconds": row["train_seconds"],
            }
        )
    return {
        "cross": cross,
        "training": pd.DataFrame(training),
        "mixed": mixed_table(results),
        "bayes_gap": bayes_gap_table(results),
        "gap_curves": gap_curves(results),
        "faithfulness": faithfulness_table(results),
        "bayes_diagnostics": bayes_diagnostics_table(results),
        "summary": summary_table(results),
    }


def mixed_table(results: LearnabilityResults) -> pd.DataFrame:
    """Per learner and test family: single-type vs mixture-trained accuracy and their paired difference."""
    records = []
    for learner in LEARNERS:
        for family in SINGLE_FAMILIES:
            single = results.row(learner, family, family)
            mixed = results.row(learner, MIXED_FAMILY, family)
            diff = paired_difference(mixed["per_episode_mean"], single["per_episode_mean"])
            records.append(
                {
                    "learner": display_name(learner),
                    "test family": family,
                    "single-type": single["mean"],
                    "single ci": single["ci"],
                    "mixed": mixed["mean"],
                    "mixed ci": mixed["ci"],
                    "mixed - single": diff.mean,
                    "difference ci": diff.ci,
                }
            )
    return pd.DataFrame(records)


def bayes_gap_table(results: LearnabilityResults) -> pd.DataFrame:
    """Per learner (single-type on the family, and mixture-trained) and family: Bayes - learner, paired."""
    records = []
    for family in SINGLE_FAMILIES:
        limit = results.row("bayes", family, family)
        for learner in LEARNERS:
            for train_family in (family, MIXED_FAMILY):
                row = results.row(learner, train_family, family)
                diff = paired_difference(limit["per_episode_mean"], row["per_episode_mean"])
                records.append(
                    {
                        "family": family,
                        "learner": display_name(learner),
                        "trained on": "single type" if train_family == family else "mixture",
                        "accuracy": row["mean"],
                        "Bayes accuracy": limit["mean"],
                        "gap to Bayes": diff.mean,
                        "gap ci": diff.ci,
                    }
                )
    return pd.DataFrame(records)


def gap_curves(results: LearnabilityResults) -> pd.DataFrame:
    """Long table: Bayes - learner accuracy at each shot count (single-type learners on their family).

    The CI combines the two curves' intervals as if independent (sqrt(a^2 + b^2)), which is
    conservative: the episodes are shared, and a paired interval would be narrower.
    """
    records = []
    for family in SINGLE_FAMILIES:
        limit = results.row("bayes", family, family)
        for learner in LEARNERS:
            for train_family in (family, MIXED_FAMILY):
                row = results.row(learner, train_family, family)
                suffix = "" if train_family == family else " (mixture)"
                for shot, (a, a_ci, b, b_ci) in enumerate(
                    zip(
                        limit["per_position"],
                        limit["per_position_ci"],
                        row["per_position"],
                        row["per_position_ci"],
                        strict=True,
                    )
                ):
                    records.append(
                        {
                            "family": family,
                            "learner": display_name(learner) + suffix,
                            "shots": shot,
                            "value": a - b,
                            "ci": math.hypot(a_ci, b_ci),
                        }
                    )
    return pd.DataFrame(records)


def faithfulness_table(results: LearnabilityResults) -> pd.DataFrame:
    """The authors' ICLer next to the default ICL transformer, trained on the same family, per test family."""
    records = []
    for row in results.rows:
        if row["learner_id"] != "icl_authors":
            continue
        default = results.row("icl", row["train_family"], row["test_family"])
        diff = paired_difference(row["per_episode_mean"], default["per_episode_mean"])
        records.append(
            {
                "train family": row["train_family"],
                "test family": row["test_family"],
                "authors' ICLer": row["mean"],
                "ICLer ci": row["ci"],
                "default ICL": default["mean"],
                "default ci": default["ci"],
                "ICLer - default": diff.mean,
                "difference ci": diff.ci,
                "ICLer steps": row["train_steps"],
                "ICLer seconds": row["train_seconds"],
            }
        )
    return pd.DataFrame(records)


def bayes_diagnostics_table(results: LearnabilityResults) -> pd.DataFrame:
    """Long table of the prototype sampler's diagnostics per shot count (empty if no Monte Carlo ran)."""
    records = []
    for family, evaluation in results.bayes.items():
        if evaluation.exact:
            continue
        for shot in range(len(evaluation.result.per_position)):
            records.append(
                {
                    "family": family,
                    "shots": shot,
                    "mean ESS": evaluation.ess[shot],
                    "min ESS": evaluation.ess_min[shot],
                    "particles": evaluation.n_samples,
                    "MC s.e. of P(true class)": evaluation.mc_stderr[shot],
                    "MC-uncertain decisions": evaluation.uncertain[shot],
                }
            )
    return pd.DataFrame(records)


def summary_table(results: LearnabilityResults) -> pd.DataFrame:
    """The closing note's numbers: per family, mean accuracy (95% CI) of every learner, single and mixed, and Bayes."""
    records = []
    for family in SINGLE_FAMILIES:
        record = {"family": family}
        for learner in LEARNERS:
            for train_family, label in ((family, "single"), (MIXED_FAMILY, "mixed")):
                row = results.row(learner, train_family, family)
                record[f"{display_name(learner)} {label}"] = _with_ci(row["mean"], row["ci"])
        limit = results.row("bayes", family, family)
        record[BAYES_NAME] = _with_ci(limit["mean"], limit["ci"])
        records.append(record)
    return pd.DataFrame(records).set_index("family")


# ----------------------------------------------------------------------------- verdicts


def single_evidence(results: LearnabilityResults) -> tuple[dict[str, Difference], dict[str, Difference], dict]:
    """Paired differences behind claim 2-single, and the numbers stored with the verdict."""
    icl_vs_best, matching_vs_other, numbers = {}, {}, {}
    for family in SINGLE_FAMILIES:
        metas = {learner: results.row(learner, family, family) for learner in META_LEARNERS}
        best = max(metas, key=lambda learner: metas[learner]["mean"])
        matching = MATCHING_LEARNER[family]
        best_other = max((m for m in META_LEARNERS if m != matching), key=lambda learner: metas[learner]["mean"])
        icl = results.row("icl", family, family)
        icl_vs_best[family] = paired_difference(icl["per_episode_mean"], metas[best]["per_episode_mean"])
        matching_vs_other[family] = paired_difference(
            metas[matching]["per_episode_mean"], metas[best_other]["per_episode_mean"]
        )
        limit = results.row("bayes", family, family)
        numbers[family] = {
            "icl": [icl["mean"], icl["ci"]],
            **{learner: [row["mean"], row["ci"]] for learner, row in metas.items()},
            "bayes": [limit["mean"], limit["ci"]],
            "best_meta_learner": best,
            "icl_minus_best_meta": [icl_vs_best[family].mean, icl_vs_best[family].ci],
            "matching_minus_best_other": [matching_vs_other[family].mean, matching_vs_other[family].ci],
            "bayes_minus_icl": paired_difference(limit["per_episode_mean"], icl["per_episode_mean"])._asdict(),
        }
    return icl_vs_best, matching_vs_other, numbers


def mixed_evidence(
    results: LearnabilityResults,
) -> tuple[dict[str, Difference], dict[str, dict[str, Difference]], dict]:
    """Paired differences behind claim 2-mixed, and the numbers stored with the verdict."""
    icl_mixed_vs_single, meta_vs_reference, numbers = {}, {learner: {} for learner in META_LEARNERS}, {}
    for family in SINGLE_FAMILIES:
        metas = {learner: results.row(learner, family, family) for learner in META_LEARNERS}
        reference = max(metas, key=lambda learner: metas[learner]["mean"])
        icl_single, icl_mixed = results.row("icl", family, family), results.row("icl", MIXED_FAMILY, family)
        icl_mixed_vs_single[family] = paired_difference(icl_mixed["per_episode_mean"], icl_single["per_episode_mean"])
        numbers[family] = {
            "icl_single": [icl_single["mean"], icl_single["ci"]],
            "icl_mixed": [icl_mixed["mean"], icl_mixed["ci"]],
            "icl_mixed_minus_single": [icl_mixed_vs_single[family].mean, icl_mixed_vs_single[family].ci],
            "reference": reference,
            "reference_accuracy": [metas[reference]["mean"], metas[reference]["ci"]],
        }
        for learner in META_LEARNERS:
            mixed = results.row(learner, MIXED_FAMILY, family)
            numbers[family][f"{learner}_mixed"] = [mixed["mean"], mixed["ci"]]
            if MATCHING_LEARNER[family] == learner:
                continue
            diff = paired_difference(mixed["per_episode_mean"], metas[reference]["per_episode_mean"])
            meta_vs_reference[learner][family] = diff
            numbers[family][f"{learner}_mixed_minus_reference"] = [diff.mean, diff.ci]
    return icl_mixed_vs_single, meta_vs_reference, numbers


def verdicts(results: LearnabilityResults, *, save: bool = True, root: Path | None = None) -> dict[str, ClaimVerdict]:
    """Apply the rules of claims 2-single and 2-mixed to ``results``; store the verdicts unless ``save=False``."""
    icl_vs_best, matching_vs_other, single_numbers = single_evidence(results)
    icl_mixed_vs_single, meta_vs_reference, mixed_numbers = mixed_evidence(results)
    found = {
        "2-single": ClaimVerdict(
            claim="2-single",
            preset=results.preset,
            quantity="mean accuracy over shot counts on each family's test episodes (95% CIs; paired differences)",
            numbers={"margin": MARGIN, **single_numbers},
            rule=RULE_SINGLE,
            outcome=decide_single(icl_vs_best, matching_vs_other),
            chapter=CHAPTER,
            wall_seconds=results.seconds,
        ),
        "2-mixed": ClaimVerdict(
            claim="2-mixed",
            preset=results.preset,
            quantity="mean accuracy over shot counts of mixture-trained learners on each family (paired differences)",
            numbers={"margin": MARGIN, **mixed_numbers},
            rule=RULE_MIXED,
            outcome=decide_mixed(icl_mixed_vs_single, meta_vs_reference),
            chapter=CHAPTER,
            wall_seconds=results.seconds,
        ),
    }
    if save:
        for verdict in found.values():
            save_verdict(verdict, root)
    return found


# ----------------------------------------------------------------------------- decision regions


def region_support(scale: ClassificationScale, family: str, n_support: int, seed: int = 7) -> tuple:
    """A support set of ``n_support`` labelled points of ``family`` (the first points of one episode).

    -> (support_xs (n, 2), support_ys (n,)); the same episode for every n, so panels with more
    shots add points to the ones before.
    """
    check_choice("family", family, SINGLE_FAMILIES)
    check_int("n_support", n_support, minimum=0, maximum=scale.n_points)
    episode = scale.task(family).sample(1, seed=seed)
    return episode.xs[0, :n_support], episode.ys[0, :n_support]
