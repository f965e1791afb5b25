"""Beyond the paper: few-shot classification of real digit images (chapter 7).

Four learners (ICL transformer, MatchNet, ProtoNet, CNP) are meta-trained on episodes of the
digits 0..4, either alone (source ``digits``) or mixed with the synthetic families at d = 64
(source ``mixture``: digits, pairwise, prototype, amortized, a quarter each), and tested on
episodes of the digits 5..9, which no learner saw. Training validates on held-out images of the
training digits (``FixedTrainingTask``: train episodes from the ``train`` split, validation
episodes from the ``validation`` split). Baselines with nothing meta-learned: nearest class mean
on raw pixels and on a PCA fitted to training-digit images (its size chosen on validation
episodes).

``run(preset)`` returns the result table (a dict with ``rows``), cached in the store under a hash
of everything that determines it; the trained models are train-or-load entries of their own.
"""

from __future__ import annotations

import time
from dataclasses import asdict

import torch
from torch import nn
from tqdm.auto import tqdm

from uni_icl import evaluation
from uni_icl.evaluation import Difference, evaluate
from uni_icl.learners import META_LEARNERS, LearnerSpec, display_name
from uni_icl.learners.baselines import NearestClassMean, fit_pca
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import DigitsScale, Preset
from uni_icl.runs import CODE_VERSION, RunSpec, TrainedLearner, evaluate_or_load, train_or_load
from uni_icl.storage import cache_root, config_hash, json_entry
from uni_icl.tasks import SINGLE_FAMILIES, TaskFamily, make_task
from uni_icl.tasks.images import DigitsMixtureTask, DigitsTask, split_images
from uni_icl.tasks.schedules import FixedTrainingTask
from uni_icl.training import TrainConfig
from uni_icl.validation import check_choice, check_int
from uni_icl.verdicts import ClaimVerdict

LEARNERS = ("icl", *META_LEARNERS)
SOURCES = ("digits", "mixture")
SOURCE_LABELS = {"digits": "digits 0-4", "mixture": "digits 0-4 + synthetic"}
SYNTHETIC_TESTS = SINGLE_FAMILIES
UNSEEN = "digits 5-9 (unseen)"
SEEN = "digits 0-4 (held-out images)"
TABLE_VERSION = "2"  # bump when the table's layout or contents change
CLAIMS: tuple[str, ...] = ()  # beyond the paper: it decides no claim
# A trained learner "fits its training distribution" when its mean accuracy on held-out images of
# its training digits exceeds chance (1 / C) by more than this; one that does not had a training
# failure, and its unseen-digit accuracy says nothing about its inductive bias. This margin was set
# after seeing the quick table of the earlier recipe (three runs were 0.02-0.07 above chance 0.2); it
# labels runs on this page only and decides no claim.
FIT_MARGIN = 0.1


def digits_task(scale: DigitsScale, split: str, *, max_shift: int = 0) -> DigitsTask:
    """Digit episodes of ``split`` at this scale."""
    return DigitsTask(n_classes=scale.n_classes, n_points=scale.n_points, split=split, max_shift=max_shift)


def source_task(scale: DigitsScale, source: str, split: str) -> TaskFamily:
    """Training (``split='train'``, augmented) or validation episodes of a training source."""
    check_choice("source", source, SOURCES)
    shift = scale.max_shift if split == "train" else 0
    if source == "digits":
        return digits_task(scale, split, max_shift=shift)
    return DigitsMixtureTask(n_classes=scale.n_classes, n_points=scale.n_points, split=split, max_shift=shift)


def synthetic_task(scale: DigitsScale, family: str) -> TaskFamily:
    """A synthetic family at d = 64 with the chapter's C and N (amortized: two classes)."""
    check_choice("family", family, SYNTHETIC_TESTS)
    n_classes = 2 if family == "amortized" else scale.n_classes
    return make_task(family, d=64, n_classes=n_classes, n_points=scale.n_points)


def run_spec(scale: DigitsScale, learner: str, source: str, seed: int = 0) -> RunSpec:
    """The RunSpec of ``learner`` meta-trained on ``source``: trains on the ``train`` split (via
    the schedule) and validates on the ``validation`` split (the spec's task)."""
    check_choice("learner", learner, LEARNERS)
    if learner == "icl":
        spec, config = LearnerSpec("icl", scale.icl), scale.icl_train
    else:
        spec, config = LearnerSpec(learner, scale.meta_learner), scale.meta_train
    config = TrainConfig(**{**config.__dict__, "seed": seed, "val_seed": scale.val_seed})
    schedule = FixedTrainingTask(source_task(scale, source, "train"))
    return RunSpec(spec, source_task(scale, source, "validation"), config, schedule)


def trained_learner(scale: DigitsScale, learner: str, source: str, *, progress: bool = True) -> TrainedLearner:
    """Train-or-load ``learner`` on ``source`` at ``scale``."""
    return train_or_load(run_spec(scale, learner, source), progress=progress)


def pixel_baseline(scale: DigitsScale) -> NearestClassMean:
    """Nearest class mean on raw pixels."""
    return NearestClassMean(scale.n_classes)


def pca_baseline(scale: DigitsScale, n_components: int) -> NearestClassMean:
    """Nearest class mean on the first ``n_components`` principal axes of the training-split images."""
    images, _ = split_images("train")
    center, components = fit_pca(images, n_components)
    return NearestClassMean(scale.n_classes, center, components)


def choose_pca_size(scale: DigitsScale) -> tuple[int, dict[int, float]]:
    """The PCA size with the best mean accuracy on validation episodes, and every candidate's accuracy."""
    val_task = digits_task(scale, "validation")
    scores = {
        k: evaluate(pca_baseline(scale, k), val_task, n_tasks=scale.n_pca_val_tasks, seed=scale.val_seed).mean
        for k in scale.pca_candidates
    }
    return max(scores, key=scores.get), scores


def table_config(scale: DigitsScale) -> dict:
    """Everything that determines the result table (its cache key)."""
    return {
        "code_version": CODE_VERSION,
        "table_version": TABLE_VERSION,
        "experiment": "digits",
        "scale": asdict(scale),
        "runs": [run_spec(scale, learner, source).config() for source in SOURCES for learner in LEARNERS],
    }


def _row(learner: str, source: str, test: str, result, model: TrainedLearner | None, preset: str) -> dict:
    history = model.history if model is not None else None
    return {
        "learner": learner,
        "source": source,
        "test": test,
        **result.summary(),
        "train_seconds": history.seconds if history else 0.0,
        "train_steps": history.steps[-1] if history and history.steps else 0,
        "best_step": history.best_step if history else 0,
        "stopped_early": history.stopped_early if history else False,
        "val_score": list(history.val_score) if history else [],
        "preset": preset,
    }


def training_plan(preset: Preset) -> list[Job]:
    """Every learner on both sources."""
    return [run_job(run_spec(preset.digits, learner, source)) for source in SOURCES for learner in LEARNERS]


def run(preset: Preset, *, progress: bool = True) -> dict:
    """Train-or-load every learner on both sources, evaluate, and return the (cached) result table.

    Returns ``{"preset", "rows", "pca_size", "pca_validation", "wall_seconds"}``; each row has
    learner (display name), source (a ``SOURCE_LABELS`` value or "none"), test, mean, ci,
    per-shot curve with CIs, and the training summary.
    """
    scale = preset.digits
    started = time.perf_counter()
    train_all(training_plan(preset), progress=progress, description="chapter 7 models")
    weights = {
        f"{learner}/{source}": trained_learner(scale, learner, source, progress=progress).weights_hash
        for source in SOURCES
        for learner in LEARNERS
    }
    path = cache_root() / "tables" / f"digits-{config_hash({**table_config(scale), 'weights': weights})}.json"

    def compute() -> dict:
        unseen_task, seen_task = digits_task(scale, "test"), digits_task(scale, "validation")
        rows = []
        jobs = [(source, learner) for source in SOURCES for learner in LEARNERS]
        for source, learner in tqdm(jobs, desc="digits learners", disable=not progress):
            model = trained_learner(scale, learner, source, progress=progress)
            name, label = display_name(learner), SOURCE_LABELS[source]
            result = evaluate_or_load(model, unseen_task, n_tasks=scale.n_test_tasks, seed=scale.test_seed)
            rows.append(_row(name, label, UNSEEN, result, model, scale.preset))
            result = evaluate_or_load(model, seen_task, n_tasks=scale.n_other_test_tasks, seed=scale.test_seed)
            rows.append(_row(name, label, SEEN, result, model, scale.preset))
            if source == "mixture":
                for family in SYNTHETIC_TESTS:
                    test = synthetic_task(scale, family)
                    result = evaluate_or_load(model, test, n_tasks=scale.n_other_test_tasks, seed=scale.test_seed)
                    rows.append(_row(name, label, f"{family} (d = 64)", result, model, scale.preset))
        pca_size, pca_scores = choose_pca_size(scale)
        for name, baseline in (
            ("NCM (pixels)", pixel_baseline(scale)),
            (f"NCM (PCA-{pca_size})", pca_baseline(scale, pca_size)),
        ):
            for test, task, n_tasks in (
                (UNSEEN, unseen_task, scale.n_test_tasks),
                (SEEN, seen_task, scale.n_other_test_tasks),
            ):
                result = evaluate(baseline, task, n_tasks=n_tasks, seed=scale.test_seed)
                rows.append(_row(name, "none", test, result, None, scale.preset))
        results = {
            "preset": scale.preset,
            "rows": rows,
            "pca_size": pca_size,
            "pca_validation": {str(k): v for k, v in pca_scores.items()},
            "wall_seconds": time.perf_counter() - started,
        }
        return results

    return json_entry(path, compute)


def baselines_from(results: dict, scale: DigitsScale) -> dict[str, NearestClassMean]:
    """The two baselines of a result table, by display name."""
    return {
        "NCM (pixels)": pixel_baseline(scale),
        f"NCM (PCA-{results['pca_size']})": pca_baseline(scale, results["pca_size"]),
    }


@torch.no_grad()
def example_episode(
    scale: DigitsScale,
    learners: dict[str, nn.Module],
    *,
    shots: int = 2,
    n_queries: int = 10,
    seed: int = 0,
) -> dict:
    """One unseen-digit episode split into a support set and queries, with every learner's predictions.

    The support set holds ``shots`` images per class; each query is predicted as the next point
    after the whole support set (position shots * C). Returns support_xs (S, 64), support_ys (S,),
    query_xs (Q, 64), query_ys (Q,), classes (C,) the digit behind each label, and
    predictions {name: (Q,) long}.
    """
    check_int("shots", shots, minimum=1)
    check_int("n_queries", n_queries, minimum=1)
    needed = shots * scale.n_classes + n_queries
    if needed > scale.n_points:
        raise ValueError(f"shots, n_queries: need {needed} points, an episode has {scale.n_points}")
    episode = digits_task(scale, "test").sample(1, seed=seed)
    xs, ys = episode.xs[0], episode.ys[0]
    support = torch.cat([torch.nonzero(ys == c)[:shots, 0] for c in range(scale.n_classes)])
    rest = torch.tensor([i for i in range(len(ys)) if i not in set(support.tolist())])[:n_queries]
    support_xs, support_ys = xs[support], ys[support]
    batch_xs = torch.cat([support_xs.expand(n_queries, -1, -1), xs[rest][:, None, :]], dim=1)  # (Q, S + 1, 64)
    batch_ys = torch.cat([support_ys.expand(n_queries, -1), torch.zeros(n_queries, 1, dtype=torch.long)], dim=1)
    predictions = {}
    for name, learner in learners.items():
        device = next(iter(learner.parameters()), torch.empty(0)).device
        was_training = learner.training
        learner.eval()
        logits = learner(batch_xs.to(device), batch_ys.to(device))  # (Q, S + 1, C)
        learner.train(was_training)
        predictions[name] = logits[:, -1].argmax(-1).cpu()
    return {
        "support_xs": support_xs,
        "support_ys": support_ys,
        "query_xs": xs[rest],
        "query_ys": ys[rest],
        "classes": episode.params["classes"][0],
        "predictions": predictions,
    }


def fit_failures(results: dict, chance: float, margin: float = FIT_MARGIN) -> list[dict]:
    """The rows (trained learner, source) whose mean accuracy on held-out images of the training digits
    is not more than ``margin`` above ``chance``: training failures (see ``FIT_MARGIN``)."""
    return [
        row
        for row in results["rows"]
        if row["test"] == SEEN and row["source"] != "none" and not row["mean"] > chance + margin
    ]


def find_row(results: dict, learner: str, source: str, test: str = UNSEEN) -> dict:
    """The row of ``learner`` (display name) trained on ``source`` (a label or "none") tested on ``test``."""
    for row in results["rows"]:
        if (row["learner"], row["source"], row["test"]) == (learner, source, test):
            return row
    raise ValueError(f"learner, source, test: no row for {learner!r}, {source!r}, {test!r}")


def paired_difference(row_a: dict, row_b: dict) -> Difference:
    """Mean of row_a minus row_b over the same test episodes, and its 95% CI half-width."""
    return evaluation.paired_difference(row_a["per_episode_mean"], row_b["per_episode_mean"])


def shot_accuracy(row: dict, shots_per_class: int, n_classes: int) -> tuple[float, float]:
    """Accuracy and CI of ``row`` at shot count ``shots_per_class * n_classes`` (k-shot on average)."""
    position = shots_per_class * n_classes
    check_int("shots_per_class", shots_per_class, minimum=0, maximum=(len(row["per_position"]) - 1) // n_classes)
    return row["per_position"][position], row["per_position_ci"][position]


def verdicts(results: dict) -> list[ClaimVerdict]:
    """This chapter goes beyond the paper: it decides no claim."""
    return []
