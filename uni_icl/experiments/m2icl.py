"""Claim 4b (meta-level meta-learning): M2-ICL against plain ICL when adapting to a new domain.

Arms, all evaluated on the same held-out domains, prompts and adaptation sets:

- ICL: the causal regressor pre-trained on ``regression_domains`` (a fresh domain per episode),
  used without adaptation, and fine-tuned on the domain's adaptation prompts;
- M2-ICL: the same architecture meta-trained with MAML (one domain per meta-step), fine-tuned with
  the same procedure (:func:`uni_icl.learners.maml.fine_tune`: ``fine_tune_epochs`` epochs of SGD at the
  inner learning rate, mini-batches of 64);
- least squares as the reference (optimal for these noise-free tasks once i >= d).

Adaptation sets of 64, 256 and 1024 prompts are nested (the first K prompts of one draw). Errors
are relative squared errors: the squared error divided by the domain's mean y^2 on its test
prompts (1 = predicting 0), so domains with very different scales s^2 |x|^2 can be compared. They
are averaged over domains on the log scale (geometric means), because a domain with a tiny |s| makes
any error huge relative to its y^2; arms are compared by paired log error ratios. Confidence
intervals are Student-t 95% intervals over held-out domains (the domain is the unit).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from uni_icl.device import default_device
from uni_icl.learners import LearnerSpec
from uni_icl.learners.maml import (
    LOG_FLOOR,
    MetaObjective,
    fine_tune,
    meta_step_seconds,
    relative_errors,
)
from uni_icl.learners.regressors import LeastSquares
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import M2ICLScale, Preset
from uni_icl.runs import CODE_VERSION, RunSpec, TrainedLearner, build_seeded, model_entry_validator, train_or_load
from uni_icl.storage import cache_root, cached_entry, config_hash, json_entry
from uni_icl.tasks import RegressionDomain, TaskFamily, domain_task, make_task
from uni_icl.training import TrainHistory, train
from uni_icl.verdicts import ClaimVerdict

ARMS = ("ICL (no adaptation)", "ICL adapted", "M2-ICL adapted", "M2-ICL (no adaptation)", "least squares")
CHAPTER = "book/06_m2icl"
CLAIMS = ("4b",)


def domains_task(scale: M2ICLScale) -> TaskFamily:
    """Pre-training task of plain ICL: regression prompts, each from a freshly drawn domain."""
    return make_task("regression_domains", d=scale.d, n_points=scale.n_points)


def icl_spec(scale: M2ICLScale) -> RunSpec:
    """What determines the pre-trained plain ICL regressor."""
    return RunSpec(LearnerSpec("icl_regressor", scale.regressor), domains_task(scale), scale.pretrain)


def pretrained_icl(scale: M2ICLScale, *, progress: bool = True) -> TrainedLearner:
    """Plain ICL pre-trained on the mixture of domains (train-or-load)."""
    return train_or_load(icl_spec(scale), progress=progress)


def m2icl_config(scale: M2ICLScale) -> dict:
    """Everything that determines the meta-trained M2-ICL model (its cache key)."""
    return {
        "code_version": CODE_VERSION,
        "experiment": "m2icl",
        "validation": "mean log relative error",
        "history": "TrainHistory",  # the stored history's format (it was MAML's own history type before)
        "learner": icl_spec(scale).learner.config(),
        "d": scale.d,
        "n_points": scale.n_points,
        "maml": scale.maml.__dict__,
        "init": scale.init,
        "init_run": icl_spec(scale).config() if scale.init == "pretrained" else None,
    }


def m2icl_path(scale: M2ICLScale) -> Path:
    """Where the meta-trained M2-ICL model is stored."""
    return cache_root() / "models" / f"m2icl-{config_hash(m2icl_config(scale))}.pt"


def training_plan(preset: Preset) -> list[Job]:
    """The pre-trained ICL regressor (stage 0), then M2-ICL's meta-training from it (stage 1)."""
    scale = preset.m2icl
    meta = Job("M2-ICL meta-training", m2icl_path(scale), functools.partial(_meta_train_quietly, scale), stage=1)
    return [run_job(icl_spec(scale)), meta]


def _meta_train_quietly(scale: M2ICLScale) -> None:
    meta_trained(scale, pretrained_icl(scale, progress=False), progress=False)


def meta_trained(scale: M2ICLScale, icl: TrainedLearner, *, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train-or-load M2-ICL (resumable); returns the model and its meta-training history as a dict."""
    config = m2icl_config(scale)
    path = m2icl_path(scale)
    spec = icl_spec(scale)
    model = build_seeded(spec.learner, spec.task, scale.maml.seed).to(default_device())

    def fit() -> dict:
        if scale.init == "pretrained":
            model.load_state_dict(icl.learner.state_dict())
        history = train(
            model,
            domains_task(scale),
            scale.maml.train_config(),
            objective=MetaObjective(scale.d, scale.n_points, scale.maml),
            checkpoint_path=path.with_suffix(".ckpt"),
            progress=progress,
            description="M2-ICL meta-training",
        )
        return {"weights": model.state_dict(), "history": history.to_dict(), "config": config}

    stored, _ = cached_entry(path, fit, model_entry_validator(model), tensors=True)
    model.load_state_dict(stored["weights"])
    return model, TrainHistory(**stored["history"]).to_dict()


def maml_costs(scale: M2ICLScale, model: torch.nn.Module, *, repeats: int = 3) -> dict[str, float]:
    """Seconds per meta-step of first- and second-order MAML at this scale (measured now, not cached)."""
    return {
        "first_order": meta_step_seconds(
            model, scale.d, scale.n_points, replace(scale.maml, second_order=False), repeats=repeats
        ),
        "second_order": meta_step_seconds(
            model, scale.d, scale.n_points, replace(scale.maml, second_order=True), repeats=repeats
        ),
    }


def held_out_domain(scale: M2ICLScale, index: int) -> RegressionDomain:
    """The ``index``-th held-out domain (its own seed, disjoint from training and validation streams)."""
    return RegressionDomain.sample(scale.d, seed=scale.test_seed + index)


def adaptation_table(
    scale: M2ICLScale, icl: torch.nn.Module, m2icl: torch.nn.Module, *, key: dict, progress: bool = True
) -> list[dict]:
    """Per held-out domain, arm and adaptation size: the relative squared error per position (cached).

    Rows: {"domain", "arm", "size", "per_position" (N,)}; the unadapted arms and least squares are
    stored once with size 0.
    """
    path = cache_root() / "results" / f"m2icl-adaptation-{config_hash(key)}.json"

    def compute() -> list[dict]:
        rows = []
        device = next(icl.parameters()).device
        largest = max(scale.adaptation_sizes)
        for index in tqdm(range(scale.n_test_domains), desc="held-out domains", disable=not progress):
            task = domain_task(held_out_domain(scale, index), scale.n_points)
            adaptation_seed = scale.test_seed + 1_000_000 + index
            adaptation = task.sample(largest, seed=adaptation_seed, device=device)
            test = task.sample(scale.n_test_prompts, seed=scale.test_seed + 2_000_000 + index, device=device)
            for arm, model in (
                ("ICL (no adaptation)", icl),
                ("M2-ICL (no adaptation)", m2icl),
                ("least squares", LeastSquares()),
            ):
                rows.append(_row(index, arm, 0, relative_errors(model, test)))
            for size in scale.adaptation_sizes:
                subset = _first(adaptation, size)
                for arm, model in (("ICL adapted", icl), ("M2-ICL adapted", m2icl)):
                    adapted = fine_tune(
                        model,
                        subset,
                        epochs=scale.fine_tune_epochs,
                        lr=scale.maml.inner_lr,
                        batch_size=scale.fine_tune_batch,
                        seed=adaptation_seed,
                        grad_clip=scale.maml.inner_grad_clip,
                    )
                    rows.append(_row(index, arm, size, relative_errors(adapted, test)))
        return rows

    return json_entry(path, compute)


def _first(episode, size: int):
    return replace(episode, xs=episode.xs[:size], ys=episode.ys[:size], params={})


def _row(domain: int, arm: str, size: int, errors: torch.Tensor) -> dict:
    return {"domain": domain, "arm": arm, "size": size, "per_position": errors.mean(0).tolist()}


def run(preset: Preset, *, progress: bool = True) -> dict:
    """Pre-train ICL, meta-train M2-ICL, time both MAML orders, adapt and evaluate on held-out domains."""
    scale = preset.m2icl
    started = time.perf_counter()
    train_all(training_plan(preset), progress=progress, description="chapter 6 models")
    icl = pretrained_icl(scale, progress=progress)
    m2icl, meta_history = meta_trained(scale, icl, progress=progress)
    key = {
        "m2icl": m2icl_config(scale),
        "icl": icl_spec(scale).config(),
        "sizes": scale.adaptation_sizes,
        "epochs": scale.fine_tune_epochs,
        "batch": scale.fine_tune_batch,
        "domains": scale.n_test_domains,
        "prompts": scale.n_test_prompts,
        "seed": scale.test_seed,
    }
    rows = adaptation_table(scale, icl.learner, m2icl, key=key, progress=progress)
    return {
        "scale": scale,
        "icl_history": icl.history.to_dict(),
        "icl_from_cache": icl.loaded_from_cache,
        "meta_history": meta_history,
        "costs": maml_costs(scale, icl.learner),
        "rows": rows,
        "wall_seconds": time.perf_counter() - started,
    }


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the Student-t 95% interval of ``values`` along axis 0."""
    n = values.shape[0]
    mean = values.mean(0)
    if n < 2:
        return mean, np.zeros_like(mean)
    return mean, stats.t.ppf(0.975, n - 1) * values.std(0, ddof=1) / math.sqrt(n)


def arm_errors(rows: list[dict], arm: str, size: int) -> np.ndarray:
    """(n_domains, N) relative errors of ``arm`` (unadapted arms ignore ``size``), ordered by domain."""
    chosen = [r for r in rows if r["arm"] == arm and (r["size"] == size or r["size"] == 0)]
    return np.array([r["per_position"] for r in sorted(chosen, key=lambda r: r["domain"])])


def log_errors(rows: list[dict], arm: str, size: int, *, per_position: bool) -> np.ndarray:
    """log of the relative errors: (n_domains, N) per position, or (n_domains,) of the mean over positions."""
    errors = arm_errors(rows, arm, size)
    return np.log(np.maximum(errors if per_position else errors.mean(1), LOG_FLOOR))


def curves(results: dict) -> list[dict]:
    """Per-position geometric mean over held-out domains with its 95% interval, one row per (arm, size, position)."""
    records = []
    for size in results["scale"].adaptation_sizes:
        for arm in ARMS:
            mean, half = t_interval(log_errors(results["rows"], arm, size, per_position=True))
            for shot, (centre, width) in enumerate(zip(mean, half, strict=True)):
                records.append(
                    {
                        "arm": arm,
                        "size": size,
                        "shots": shot,
                        "value": math.exp(centre),
                        "low": math.exp(centre - width),
                        "high": math.exp(centre + width),
                    }
                )
    return records


def summary(results: dict) -> list[dict]:
    """Per adaptation size: each arm's geometric mean relative error over held-out domains (of each domain's
    mean over positions) with its 95% interval, and the paired error ratios other arm / M2-ICL adapted
    (> 1: M2-ICL adapted is better) with their intervals. ``log_mean`` and ``log_ci`` hold the log scale."""
    records = []
    rows = results["rows"]
    for size in results["scale"].adaptation_sizes:
        for arm in ARMS:
            records.append(_record(size, arm, *t_interval(log_errors(rows, arm, size, per_position=False))))
        m2icl = log_errors(rows, "M2-ICL adapted", size, per_position=False)
        for other in ("ICL adapted", "ICL (no adaptation)"):
            log_ratio = log_errors(rows, other, size, per_position=False) - m2icl
            records.append(_record(size, f"ratio: {other} / M2-ICL adapted", *t_interval(log_ratio)))
    return records


def _record(size: int, arm: str, log_mean: float, log_ci: float) -> dict:
    return {
        "size": size,
        "arm": arm,
        "value": math.exp(log_mean),
        "low": math.exp(log_mean - log_ci),
        "high": math.exp(log_mean + log_ci),
        "log_mean": float(log_mean),
        "log_ci": float(log_ci),
    }


RULE_4B = (
    "Per held-out domain, the relative squared error (mean over positions); arms compared by the paired log error "
    "ratio other arm / M2-ICL adapted over domains, with Student-t 95% CIs. Reproduced if, at the smallest "
    "adaptation size, M2-ICL adapted has a lower error than ICL adapted and than ICL without adaptation with both "
    "CIs of the log ratio above 0, and the log ratio to ICL adapted at the largest size is smaller than at the "
    "smallest; not reproduced if at the smallest size the mean log ratio to ICL adapted is <= 0; inconclusive "
    "otherwise."
)


def decide_4b(gaps: dict[str, dict[int, tuple[float, float]]], sizes: tuple[int, ...]) -> str:
    """The rule RULE_4B on {"adapted" | "unadapted": {size: (mean log ratio, CI half-width)}}."""
    small, large = min(sizes), max(sizes)
    adapted_mean, adapted_ci = gaps["adapted"][small]
    unadapted_mean, unadapted_ci = gaps["unadapted"][small]
    if adapted_mean <= 0:
        return "not reproduced"
    if adapted_mean - adapted_ci > 0 and unadapted_mean - unadapted_ci > 0 and gaps["adapted"][large][0] < adapted_mean:
        return "reproduced"
    return "inconclusive"


def verdicts(results: dict) -> list[ClaimVerdict]:
    """Decide claim 4b with RULE_4B."""
    scale = results["scale"]
    table = summary(results)
    gaps = {"adapted": {}, "unadapted": {}}
    for row in table:
        if row["arm"] == "ratio: ICL adapted / M2-ICL adapted":
            gaps["adapted"][row["size"]] = (row["log_mean"], row["log_ci"])
        elif row["arm"] == "ratio: ICL (no adaptation) / M2-ICL adapted":
            gaps["unadapted"][row["size"]] = (row["log_mean"], row["log_ci"])
    result = ClaimVerdict(
        claim="4b",
        preset=scale.preset,
        quantity="geometric mean over held-out domains of the relative squared error after fine-tuning on K prompts "
        "(value, 95% CI low, high)",
        numbers={f"{row['arm']} @ {row['size']}": [row["value"], row["low"], row["high"]] for row in table},
        rule=RULE_4B,
        outcome=decide_4b(gaps, scale.adaptation_sizes),
        chapter=CHAPTER,
        wall_seconds=results["wall_seconds"],
        notes={"maml_order": "second" if scale.maml.second_order else "first", "init": scale.init},
    )
    return [result]


def explain(verdict: ClaimVerdict) -> str | None:
    """No computed explanation beyond the chapter's own evidence."""
    return None
