"""What several chapters share: the families and learners they compare, train-or-load at the
classification scale, the Bayes predictor's cached evaluation, and cached evaluations of learners
that are not one trained run (selectors). No chapter imports another chapter; they import this and
:mod:`uni_icl.experiments.evidence` (what verdicts rest on).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from uni_icl.device import default_device, policy_threads
from uni_icl.evaluation import EvalResult, evaluate, test_episodes
from uni_icl.learners import META_LEARNERS as META_LEARNERS  # re-exported: the chapters' vocabulary
from uni_icl.learners import LearnerSpec, bayes, bayes_mixture
from uni_icl.parallel import Job, run_job
from uni_icl.presets import ClassificationScale
from uni_icl.runs import CODE_VERSION, RunSpec, TrainedLearner, rung_spec, train_or_load
from uni_icl.storage import cache_root, config_hash, json_entry
from uni_icl.tasks import MIXED_FAMILY, SINGLE_FAMILIES, TASK_FAMILIES, TaskFamily, make_task
from uni_icl.tasks import UNSEEN_FAMILY as UNSEEN_FAMILY  # re-exported: the chapters' vocabulary
from uni_icl.tasks.synthetic import MIXTURE_COMPONENTS
from uni_icl.training import TrainConfig
from uni_icl.validation import check_choice, check_int

# family -> the meta-learner built for it, and the inverse (from the families' own definitions)
MATCHING_LEARNER = {family: TASK_FAMILIES[family].matching_learner for family in SINGLE_FAMILIES}
MATCHED_FAMILY = {learner: family for family, learner in MATCHING_LEARNER.items()}


def classification_task(scale: ClassificationScale, family: str, **params) -> TaskFamily:
    """A family at the scale's d, C and N, with overrides such as ``noise_std``."""
    base = {"d": scale.d, "n_classes": scale.n_classes, "n_points": scale.n_points}
    return make_task(family, **{**base, **params})


def classification_run(
    scale: ClassificationScale, learner: str, task: TaskFamily, seed: int = 0, **overrides
) -> RunSpec:
    """The RunSpec of ``learner`` trained on ``task`` at the scale; ``overrides`` replace learner
    parameters (e.g. ``layout="support_query"`` for the ICL transformer)."""
    if learner in ("icl", "icl_authors", "icl_authors_prefix"):
        params = scale.icl if learner == "icl" else {}
        train = per_family_budget(_with_seed(scale.icl_train, seed), families_in(task))
        return RunSpec(LearnerSpec(learner, {**params, **overrides}), task, train)
    params = {**scale.meta_learner, **overrides}
    train = per_family_budget(_with_seed(scale.meta_train, seed), families_in(task))
    return RunSpec(LearnerSpec(learner, params), task, train)


def _with_seed(config: TrainConfig, seed: int) -> TrainConfig:
    return TrainConfig(**{**config.__dict__, "seed": seed})


def families_in(task: TaskFamily) -> int:
    """How many task families a model trained on ``task`` sees (3 for the mixture, with or without
    the noise-range wrapper; 1 otherwise)."""
    inner = getattr(task, "inner", task.name)
    return len(MIXTURE_COMPONENTS) if MIXED_FAMILY in (task.name, inner) else 1


def per_family_budget(config: TrainConfig, n_families: int) -> TrainConfig:
    """Fair budgets: a model trained on ``n_families`` families gets ``n_families`` times the steps,
    evaluation interval and checkpoint interval, so it sees as many training episodes of each family
    as a single-family model, and early stopping waits as many episodes per family."""
    if n_families == 1:
        return config
    scaled = {name: getattr(config, name) * n_families for name in ("max_steps", "eval_every", "checkpoint_every")}
    return TrainConfig(**{**config.__dict__, **scaled})


def classification_job(scale: ClassificationScale, learner: str, family: str, seed: int = 0, **task_params) -> Job:
    """The :class:`~uni_icl.parallel.Job` that trains what :func:`trained` loads (same RunSpec), storing
    the models of its budget ladder on the way (:func:`ladder_rungs`)."""
    spec = classification_run(scale, learner, classification_task(scale, family, **task_params), seed)
    return run_job(spec, rungs=ladder_rungs(scale, spec))


def ladder_rungs(scale: ClassificationScale, spec: RunSpec) -> tuple[int, ...]:
    """The steps of ``spec``'s budget ladder: the scale's single-family rungs, times the number of
    families it trains on (as its budget is); none for a run whose budget is not the scale's."""
    rungs = tuple(rung * families_in(spec.task) for rung in scale.budget_rungs)
    return rungs if rungs and rungs[-1] == spec.train.max_steps else ()


def ladder_spec(scale: ClassificationScale, spec: RunSpec, rung: int) -> RunSpec:
    """``spec`` at the single-family budget ``rung`` of the scale's ladder (x the number of families)."""
    return rung_spec(spec, rung * families_in(spec.task))


def rung_scale(scale: ClassificationScale, rung: int) -> ClassificationScale:
    """``scale`` with every learner's budget cut to the single-family ``rung`` (x3 on the mixture): its
    runs are the rung's models, stored on the way by the full budget's runs (runs.rung_spec)."""
    return replace(
        scale,
        icl_train=replace(scale.icl_train, max_steps=rung),
        meta_train=replace(scale.meta_train, max_steps=rung),
    )


def candidate_jobs(scale: ClassificationScale) -> list[Job]:
    """The jobs of :func:`candidate_models`."""
    return [classification_job(scale, MATCHING_LEARNER[family], family) for family in SINGLE_FAMILIES]


def trained(
    scale: ClassificationScale, learner: str, family: str, *, seed: int = 0, progress: bool = True, **task_params
) -> TrainedLearner:
    """Train-or-load ``learner`` on ``family`` at ``scale`` with training ``seed`` (task overrides
    such as noise_std)."""
    return train_or_load(
        classification_run(scale, learner, classification_task(scale, family, **task_params), seed),
        progress=progress,
    )


def candidate_models(scale: ClassificationScale, *, progress: bool = True) -> dict[str, TrainedLearner]:
    """The three meta-learners, each trained on its matching family (learnability chapter's runs)."""
    return {
        MATCHING_LEARNER[family]: trained(scale, MATCHING_LEARNER[family], family, progress=progress)
        for family in SINGLE_FAMILIES
    }


def training_summary(model: TrainedLearner) -> dict:
    """Steps run, best step, early stop, seconds and best validation accuracy of a trained model."""
    history = model.history
    return {
        "steps": history.steps[-1] if history.steps else 0,
        "best_step": history.best_step,
        "stopped_early": history.stopped_early,
        "seconds": history.seconds,
        "best_val_accuracy": max(history.val_score) if history.val_score else math.nan,
    }


def selector_identity(candidates: dict[str, TrainedLearner]) -> dict:
    """The cache identity of a selector built from ``candidates``: their RunSpec configs and the hashes
    of their weights, in order."""
    return {
        name: {"run": model.spec.config(), "weights": model.weights_hash}
        for name, model in candidates.items()
        if isinstance(model.spec, RunSpec)
    }


def cached_evaluation(
    kind: str,
    identity: dict,
    learner: nn.Module | Callable[[], nn.Module],
    task: TaskFamily,
    *,
    n_tasks: int,
    seed: int,
) -> EvalResult:
    """Evaluate a learner that is not a single RunSpec (a selector, a Bayes predictor), cached.

    ``identity`` must determine the learner completely (e.g. the RunSpec configs of its parts);
    the key adds the test task, n_tasks, seed and ``CODE_VERSION``. ``learner`` may be a
    zero-argument factory, called only when the result is not stored.
    """
    check_int("n_tasks", n_tasks, minimum=1)
    config = {"code_version": CODE_VERSION, "kind": kind, "identity": identity, "test_task": task.config()}
    config.update({"n_tasks": n_tasks, "seed": seed})
    path = cache_root() / "results" / f"{kind}-{task.name}-{config_hash(config)}.json"

    def compute() -> dict:
        module = learner if isinstance(learner, nn.Module) else learner()
        return evaluate(module, task, n_tasks=n_tasks, seed=seed).to_dict()

    return EvalResult(**json_entry(path, compute))


# ----------------------------------------------------------------------------- Bayes predictor


def bayes_code_hash() -> str:
    """Hash of the sources of :mod:`uni_icl.learners.bayes` and :mod:`uni_icl.learners.bayes_mixture`
    (part of every Bayes cache key)."""
    source = inspect.getsource(bayes) + inspect.getsource(bayes_mixture)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


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

    The episodes are the test set of :func:`uni_icl.evaluation.test_episodes`, so learners and the
    Bayes predictor are compared on the same tasks. Returns ((n_tasks, N) float scores, diagnostics), where the
    diagnostics of ``prototype`` are (n_tasks, N) tensors ``ess``, ``stderr`` (of the true class's
    probability) and ``uncertain``; they are empty for the exact families. Computed on ``device``
    (default: CUDA when present); the episodes are drawn on the CPU first, so they do not depend on it.
    """
    device = device or default_device()
    check_choice("task", task.name, bayes.SUPPORTED_FAMILIES)
    check_int("n_samples", n_samples, minimum=2)
    chunks, diagnostics = [], {"ess": [], "stderr": [], "uncertain": []}
    for episode in test_episodes(task, n_tasks, seed, device):
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

    def compute() -> dict:
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
            EvalResult.from_scores(scores, "accuracy"), task.name, exact, seconds=time.perf_counter() - started, **extra
        )
        return evaluation.to_dict()

    return BayesEvaluation.from_dict(json_entry(path, compute))


def evaluate_prior_bayes_or_load(
    prior: TaskFamily,
    task: TaskFamily,
    *,
    n_tasks: int,
    seed: int,
    bayes_seed: int = 0,
    n_samples: int = bayes.DEFAULT_N_SAMPLES,
) -> dict:
    """The Bayes predictor of ``prior`` (``mixture`` or ``radius``, :mod:`uni_icl.learners.bayes_mixture`)
    scored on the test episodes of ``task``, cached.

    Returns ``{"result": EvalResult dict, "true_family_posterior": list | None}``; for the mixture
    prior and a single-family ``task``, the second is the mean over test episodes of
    P(the episode's family | prefix) at each shot count (how fast the type is recognised).
    """
    check_choice("prior", prior.name, ("mixture", "radius"))
    check_int("n_tasks", n_tasks, minimum=1)
    config = {
        "code_version": CODE_VERSION,
        "bayes_code": bayes_code_hash(),
        "prior": prior.config(),
        "task": task.config(),
        "n_tasks": n_tasks,
        "seed": seed,
        "sampler": {"seed": bayes_seed, "n_samples": n_samples} if prior.name == "mixture" else None,
    }
    path = cache_root() / "results" / f"bayes-{prior.name}-prior-{task.name}-{config_hash(config)}.json"
    family_index = MIXTURE_COMPONENTS.index(task.name) if task.name in MIXTURE_COMPONENTS else None

    def compute() -> dict:
        scores, posteriors = [], []
        for episode in test_episodes(task, n_tasks, seed):
            if prior.name == "mixture":
                output = bayes_mixture.mixture_bayes(
                    prior, episode.xs, episode.ys, seed=bayes_seed, n_samples=n_samples
                )
                log_probs = output.log_probs
                if family_index is not None:
                    posteriors.append(output.family_log_posterior[..., family_index].exp())
            else:
                log_probs = bayes_mixture.radius_bayes_log_probs(prior, episode.xs, episode.ys)
            scores.append((log_probs.argmax(-1) == episode.ys).float())
        posterior = torch.cat(posteriors).mean(0).tolist() if posteriors else None
        return {
            "result": EvalResult.from_scores(torch.cat(scores), "accuracy").to_dict(),
            "true_family_posterior": posterior,
        }

    with policy_threads():
        return json_entry(path, compute)
