"""Claim 4b (meta-level meta-learning): M2-ICL against plain ICL when adapting to a new domain.

Arms, all evaluated on the same held-out domains, prompts and adaptation sets, each trained with
every seed of the scale (a seed fixes initial weights and training stream; M2-ICL seed s starts from
ICL seed s; the held-out domains, prompts and adaptation sets are shared by all seeds):

- ICL: the causal regressor pre-trained on ``regression_domains`` (a fresh domain per episode),
  used without adaptation, and fine-tuned on the domain's adaptation prompts;
- M2-ICL: the same architecture meta-trained with MAML (one domain per meta-step), fine-tuned with
  the same procedure (:func:`uni_icl.learners.maml.fine_tune`: ``fine_tune_epochs`` epochs of SGD at the
  inner learning rate, mini-batches of 64);
- least squares as the reference (optimal for these noise-free tasks once i >= d).

Domains' labels are normalised to mean square 1 (:mod:`uni_icl.tasks.regression`): with raw labels
y = s w.x the small regressor fitted the large-scale domains and barely regressed on the rest
(quick preset, one seed: ICL without adaptation 0.90 relative error against 0.21 for least squares;
probe with normalised labels, same size, 4,000 steps: 0.37 over the 12 held-out domains; 0.40 when
pre-training stopped on its convergence test at 2,300 steps).

Adaptation sets of 64, 256 and 1024 prompts are nested (the first K prompts of one draw). Errors
are relative squared errors: the squared error divided by the domain's mean y^2 on its test
prompts (1 = predicting 0). They are averaged over domains on the log scale (geometric means) and
arms are compared by paired log error ratios per seed and domain, with 95% intervals over seeds and
domains (:func:`uni_icl.uncertainty.seeded_difference`, the held-out domains in the place of test
episodes).

**Meta-validation error and held-out error.** M2-ICL's validation score during meta-training is
the same procedure as the held-out K = 64 arm (:func:`uni_icl.learners.maml.adapted_validation_error`:
5 SGD steps on 64 prompts of a domain, the relative error on fresh prompts, the geometric mean over
domains); :func:`validation_check` runs both code paths on the same domains and finds them equal.
What differs is the domains: 8 validation domains (``maml.val_seed``) against the 12 held-out ones
(``test_seed``). With raw labels a few domains with a scale s near 0 dominate a geometric mean: their
labels are tiny, so any absolute error is huge relative to them. A probe (an ICL regressor trained
3,000 steps on raw labels, seed 0, adapted by this procedure) gave 1.46 over the validation domains
and 1.00 over the held-out ones, while least squares, which does not depend on a domain's scale,
gave 0.206 and 0.207. One validation domain has s = 0.003 and an adapted relative error of 418,
which alone multiplies a geometric mean over 8 domains by 418^(1/8) = 2.1 (the other 7 give 0.65);
held-out domains with |s| = 0.009 and 0.031 had 49 and 5.1. A domain's log error had an sd of 2.3
(validation) and 1.4 (held-out), so each geometric mean was uncertain by a factor of about
exp(1.96 * 2.3 / sqrt(8)) = 4.9 and exp(1.96 * 1.4 / sqrt(12)) = 2.3: the quick run with raw
labels reading 1.07-1.22 in meta-validation against 0.78 held out is within what the two draws of
domains give. With normalised labels (probe, one seed) the two read 0.391 and 0.388, and a domain's
log error has an sd of 0.10. :func:`validation_check` and :func:`domain_sets_difference` measure
the difference, with its interval, at every run.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from uni_icl.convergence import remaining_gain
from uni_icl.device import default_device
from uni_icl.evaluation import Difference
from uni_icl.experiments.evidence import LOG_MARGIN, decisive_ladder_rows, seeds_needed
from uni_icl.experiments.rules.m2icl import (
    RULE_4B,
    WORKING_ERROR,
    comparisons_4b,
    decide_4b,
    decisive_4b,
    directions_4b,
    gates_4b,
)
from uni_icl.experiments.rules.previous import previous_outcome
from uni_icl.learners import LearnerSpec
from uni_icl.learners.maml import (
    LOG_FLOOR,
    MetaObjective,
    adapted_validation_error,
    fine_tune,
    meta_step_seconds,
    relative_errors,
    validation_meta_tasks,
)
from uni_icl.learners.regressors import LeastSquares
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import M2ICLScale, Preset
from uni_icl.runs import CODE_VERSION, RunSpec, TrainedLearner, build_seeded, derived_model_validator, train_or_load
from uni_icl.storage import cache_root, cached_entry, config_hash, json_entry, weights_hash
from uni_icl.tasks import RegressionDomain, TaskFamily, domain_task, make_task
from uni_icl.training import TrainConfig, TrainHistory, train
from uni_icl.uncertainty import seeded_difference, t_interval, t_quantile
from uni_icl.verdicts import ClaimVerdict, model_record

ARMS = ("ICL (no adaptation)", "ICL adapted", "M2-ICL adapted", "M2-ICL (no adaptation)", "least squares")
CHAPTER = "book/06_m2icl"
CLAIMS = ("4b",)


def domains_task(scale: M2ICLScale) -> TaskFamily:
    """Pre-training task of plain ICL: regression prompts, each from a freshly drawn domain (labels normalised)."""
    return make_task("regression_domains", d=scale.d, n_points=scale.n_points)


def icl_spec(scale: M2ICLScale, seed: int | None = None) -> RunSpec:
    """What determines the pre-trained plain ICL regressor of ``seed`` (default: the scale's first)."""
    train_config = replace(scale.pretrain, seed=scale.seeds[0] if seed is None else seed)
    return RunSpec(LearnerSpec("icl_regressor", scale.regressor), domains_task(scale), train_config)


def pretrained_icl(scale: M2ICLScale, seed: int | None = None, *, progress: bool = True) -> TrainedLearner:
    """Plain ICL pre-trained on the mixture of domains (train-or-load)."""
    return train_or_load(icl_spec(scale, seed), progress=progress)


def maml_train_config(scale: M2ICLScale, seed: int) -> TrainConfig:
    """The outer loop's settings for ``seed``: the scale's MAML settings, for the whole budget (the claim's
    model gets every meta-step; the rule checks convergence afterwards with ``scale.meta_tolerance``)."""
    return replace(scale.maml, seed=seed).train_config()


def m2icl_config(scale: M2ICLScale, seed: int | None = None) -> dict:
    """Everything that determines the meta-trained M2-ICL model of ``seed`` (its cache key)."""
    seed = scale.seeds[0] if seed is None else seed
    return {
        "code_version": CODE_VERSION,
        "experiment": "m2icl",
        "validation": "mean log relative error",
        "history": "TrainHistory",  # the stored history's format (it was MAML's own history type before)
        "learner": icl_spec(scale, seed).learner.config(),
        "domains": domains_task(scale).config(),  # the domain definition (labels normalised since issue 17)
        "d": scale.d,
        "n_points": scale.n_points,
        "maml": replace(scale.maml, seed=seed).__dict__,
        "meta_tolerance": scale.meta_tolerance,
        "init": scale.init,
        "init_run": icl_spec(scale, seed).config() if scale.init == "pretrained" else None,
    }


def m2icl_path(scale: M2ICLScale, seed: int | None = None) -> Path:
    """Where the meta-trained M2-ICL model of ``seed`` is stored."""
    return cache_root() / "models" / f"m2icl-{config_hash(m2icl_config(scale, seed))}.pt"


def rung_scale(scale: M2ICLScale, meta_steps: int) -> M2ICLScale:
    """``scale`` with M2-ICL's meta-training budget cut to ``meta_steps`` (a rung of its budget ladder: its
    own run from the same pre-trained ICL, stored under its own key)."""
    return replace(scale, maml=replace(scale.maml, meta_steps=meta_steps), budget_rungs=())


def training_plan(preset: Preset) -> list[Job]:
    """Every seed's pre-trained ICL regressor (stage 0), then each seed's M2-ICL meta-training from it (stage 1),
    at the full budget and at each shorter rung of the budget ladder."""
    scale = preset.m2icl
    icl = [run_job(icl_spec(scale, seed)) for seed in scale.seeds]
    budgets = [scale, *(rung_scale(scale, rung) for rung in scale.budget_rungs[:-1])]
    meta = [
        Job(
            f"M2-ICL meta-training, seed {seed}"
            + ("" if at.maml.meta_steps == scale.maml.meta_steps else f", {at.maml.meta_steps} meta-steps"),
            m2icl_path(at, seed),
            functools.partial(_meta_train_quietly, at, seed),
            stage=1,
        )
        for at in budgets
        for seed in scale.seeds
    ]
    return icl + meta


def _meta_train_quietly(scale: M2ICLScale, seed: int) -> None:
    meta_trained(scale, pretrained_icl(scale, seed, progress=False), seed, progress=False)


def meta_trained(
    scale: M2ICLScale, icl: TrainedLearner, seed: int | None = None, *, progress: bool = True
) -> tuple[torch.nn.Module, dict]:
    """Train-or-load M2-ICL of ``seed`` (resumable, from ``icl`` when ``scale.init`` is "pretrained");
    returns the model and its meta-training history as a dict."""
    seed = scale.seeds[0] if seed is None else seed
    config = m2icl_config(scale, seed)
    path = m2icl_path(scale, seed)
    spec = icl_spec(scale, seed)
    model = build_seeded(spec.learner, spec.task, seed).to(default_device())
    sources = {"init": icl.weights_hash if scale.init == "pretrained" else None}

    def fit() -> dict:
        if scale.init == "pretrained":
            model.load_state_dict(icl.learner.state_dict())
        history = train(
            model,
            domains_task(scale),
            maml_train_config(scale, seed),
            objective=MetaObjective(scale.d, scale.n_points, replace(scale.maml, seed=seed)),
            checkpoint_path=path.with_suffix(".ckpt"),
            progress=progress,
            description=f"M2-ICL meta-training, seed {seed}",
        )
        return {"weights": model.state_dict(), "history": history.to_dict(), "config": config, "sources": sources}

    stored, _ = cached_entry(path, fit, derived_model_validator(model, sources), tensors=True)
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
    scale: M2ICLScale,
    icl: torch.nn.Module,
    m2icl: torch.nn.Module,
    *,
    key: dict,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Per held-out domain, arm and adaptation size: the relative squared error per position (cached).

    Rows: {"seed", "domain", "arm", "size", "per_position" (N,)}; the unadapted arms and least squares
    are stored once with size 0 (least squares has no seed; its rows repeat the same numbers per seed).
    """
    path = cache_root() / "results" / f"m2icl-adaptation-{config_hash({**key, 'seed_of_models': seed})}.json"

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
                rows.append(_row(seed, index, arm, 0, relative_errors(model, test)))
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
                    rows.append(_row(seed, index, arm, size, relative_errors(adapted, test)))
        return rows

    return json_entry(path, compute)


def adaptation_key(scale: M2ICLScale, icl: TrainedLearner, m2icl: torch.nn.Module, seed: int) -> dict:
    """What determines :func:`adaptation_table`'s rows for ``seed``'s models (its cache key)."""
    return {
        "m2icl": m2icl_config(scale, seed),
        "icl": icl_spec(scale, seed).config(),
        "sizes": scale.adaptation_sizes,
        "epochs": scale.fine_tune_epochs,
        "batch": scale.fine_tune_batch,
        "domains": scale.n_test_domains,
        "prompts": scale.n_test_prompts,
        "seed": scale.test_seed,
        "weights": {"icl": icl.weights_hash, "m2icl": weights_hash(m2icl)},
    }


def ladder(scale: M2ICLScale, *, progress: bool = True) -> list[dict]:
    """Claim 4b read at every meta-training budget of ``scale.budget_rungs`` with the same pre-trained ICL:
    RULE_4B's two comparisons at the smallest adaptation size (``kind`` "comparison") and its outcome,
    before and after its gates, with the decisive comparison (``kind`` "decisive"); ``steps`` are
    meta-steps. Rows as the learnability chapter's ladder."""
    small = min(scale.adaptation_sizes)
    rows = []
    for rung in scale.budget_rungs:
        at_rung = rung_scale(scale, rung)
        table, records = [], {"icl": [], "m2icl": []}
        for seed in scale.seeds:
            icl = pretrained_icl(scale, seed, progress=progress)
            m2icl, history = meta_trained(at_rung, icl, seed, progress=progress)
            key = adaptation_key(at_rung, icl, m2icl, seed)
            table += adaptation_table(at_rung, icl.learner, m2icl, key=key, seed=seed, progress=progress)
            records["icl"].append(training_record(icl.history.to_dict(), seed, scale.pretrain_tolerance))
            records["m2icl"].append(training_record(history, seed, scale.meta_tolerance))
        adapted = log_ratio(table, "ICL adapted", small)
        unadapted = log_ratio(table, "ICL (no adaptation)", small)
        icl_error = math.exp(float(seed_domain_log_errors(table, "ICL (no adaptation)", small).mean()))
        reasons = gates_4b(icl_error, records)
        ungated = decide_4b(adapted, unadapted)
        for comparison in comparisons_4b(adapted, unadapted, small):
            effect = comparison.interval
            rows.append(
                {"kind": "comparison", "claim": "4b", "steps": rung, "label": comparison.label}
                | {"effect": effect.mean, "ci": effect.ci}
            )
        decided = decisive_4b(adapted, unadapted, small, ungated)
        rows.append(
            {
                "kind": "decisive",
                "claim": "4b",
                "steps": rung,
                "label": decided["label"],
                "effect": decided["effect"],
                "ci": decided["ci"],
                "ungated_outcome": ungated,
                "outcome": "inconclusive" if reasons else ungated,
                "unconverged": reasons,
            }
        )
    return rows


def _first(episode, size: int):
    return replace(episode, xs=episode.xs[:size], ys=episode.ys[:size], params={})


def _row(seed: int, domain: int, arm: str, size: int, errors: torch.Tensor) -> dict:
    return {"seed": seed, "domain": domain, "arm": arm, "size": size, "per_position": errors.mean(0).tolist()}


def held_out_procedure_errors(
    scale: M2ICLScale, model: torch.nn.Module, pairs: list, *, size: int | None = None
) -> list[float]:
    """Per (support, query) domain pair: the relative error after the held-out arm's adaptation (the first
    ``size`` support prompts, default all; :func:`adaptation_table`'s fine-tuning) on the query prompts."""
    errors = []
    for index, (support, query) in enumerate(pairs):
        subset = support if size is None else _first(support, size)
        adapted = fine_tune(
            model,
            subset,
            epochs=scale.fine_tune_epochs,
            lr=scale.maml.inner_lr,
            batch_size=scale.fine_tune_batch,
            seed=scale.test_seed + 1_000_000 + index,
            grad_clip=scale.maml.inner_grad_clip,
        )
        errors.append(relative_errors(adapted, query).mean().item())
    return errors


def validation_check(scale: M2ICLScale, model: torch.nn.Module, rows: list[dict], seed: int) -> dict:
    """Why meta-validation and the held-out K = 64 result differ for one seed's M2-ICL (module docstring).

    ``meta_validation``: the meta-training validation score of the final model, as a geometric mean
    relative error over the validation domains; ``validation_domains``: the same domains' errors through
    the held-out arm's code path (:func:`held_out_procedure_errors` with the smallest adaptation size);
    ``code_paths_log_gap``: |log| of the ratio of the two geometric means (0 when the procedures agree);
    ``held_out``: the held-out domains' errors of "M2-ICL adapted" at the smallest size (from ``rows``).
    """
    config = replace(scale.maml, seed=seed)
    device = next(model.parameters()).device
    pairs = validation_meta_tasks(scale.d, scale.n_points, config, device)
    meta_validation = math.exp(adapted_validation_error(model, pairs, config))
    small = min(scale.adaptation_sizes)
    validation_domains = held_out_procedure_errors(scale, model, pairs, size=small)
    held_out = [
        float(np.mean(r["per_position"]))
        for r in sorted(rows, key=lambda r: r["domain"])
        if r["arm"] == "M2-ICL adapted" and r["size"] == small and r["seed"] == seed
    ]
    geometric = math.exp(float(np.mean(np.log(np.maximum(validation_domains, LOG_FLOOR)))))
    return {
        "seed": seed,
        "meta_validation": meta_validation,
        "validation_domains": validation_domains,
        "code_paths_log_gap": abs(math.log(geometric) - math.log(meta_validation)),
        "held_out": held_out,
    }


def stored_validation_check(
    scale: M2ICLScale, model: torch.nn.Module, rows: list[dict], *, key: dict, seed: int
) -> dict:
    """:func:`validation_check`, computed once per adaptation-table key and seed, then loaded (it fine-tunes
    on every validation domain: 3 s a seed at quick, every time the chapter or the scorecard ran)."""
    path = cache_root() / "results" / f"m2icl-validation-{config_hash({**key, 'seed_of_models': seed})}.json"
    return json_entry(path, lambda: validation_check(scale, model, rows, seed))


def domain_sets_difference(checks: list[dict]) -> dict:
    """log(geometric mean over the validation domains / over the held-out domains) of M2-ICL adapted at the
    smallest size, averaged over seeds, with a Welch 95% interval over the two sets of domains (each domain's
    log error averaged over seeds first: the domains are the unit); and the spread of a domain's log error."""
    validation = np.log(np.maximum(np.array([c["validation_domains"] for c in checks]), LOG_FLOOR)).mean(0)
    held_out = np.log(np.maximum(np.array([c["held_out"] for c in checks]), LOG_FLOOR)).mean(0)
    n1, n2 = len(validation), len(held_out)
    v1, v2 = validation.var(ddof=1) / n1, held_out.var(ddof=1) / n2
    dof = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1)) if v1 + v2 > 0 else 1.0
    difference = Difference(float(validation.mean() - held_out.mean()), t_quantile(dof) * math.sqrt(v1 + v2))
    return {
        "log_ratio": [difference.mean, difference.ci],
        "validation_geometric": math.exp(float(validation.mean())),
        "held_out_geometric": math.exp(float(held_out.mean())),
        "domain_log_sd": float(np.concatenate([validation - validation.mean(), held_out - held_out.mean()]).std()),
        "n_validation": n1,
        "n_held_out": n2,
        "code_paths_log_gap": max(c["code_paths_log_gap"] for c in checks),
        "meta_validation": [c["meta_validation"] for c in checks],
    }


def training_record(history: dict, seed: int, tolerance: float) -> dict:
    """One seed's training with its convergence test (:func:`uni_icl.convergence.remaining_gain` on the
    validation curve; scores: minus the validation error, higher is better)."""
    check = remaining_gain(history["steps"], history["val_score"], tolerance)
    return {
        "seed": seed,
        "steps": history["steps"][-1] if history["steps"] else 0,
        "converged": check.converged,
        "remaining_gain_bound": check.bound,
        "tolerance": tolerance,
    }


@dataclass
class M2ICLResults:
    """What :func:`run` returns: the scale, one row per (seed, held-out domain, arm, adaptation size)
    with its errors, the compared models' training records (``{"icl": [...], "m2icl": [...]}``, one
    per seed), the validation-domain check per seed, ICL's and M2-ICL's training histories by seed
    (and seed 0's alone), whether ICL was loaded, MAML's measured costs, and the wall time of :func:`run`."""

    scale: M2ICLScale
    rows: list[dict]
    records: dict[str, list[dict]]
    validation_check: list[dict]
    wall_seconds: float = 0.0
    icl_history: dict = field(default_factory=dict)
    meta_history: dict = field(default_factory=dict)
    icl_histories: dict[int, dict] = field(default_factory=dict)
    meta_histories: dict[int, dict] = field(default_factory=dict)
    icl_from_cache: bool = False
    costs: dict[str, float] = field(default_factory=dict)
    ladder: list[dict] = field(default_factory=list)  # RULE_4B at every meta-training budget (:func:`ladder`)


def run(preset: Preset, *, progress: bool = True) -> M2ICLResults:
    """Pre-train ICL and meta-train M2-ICL for every seed, time both MAML orders, adapt and evaluate on
    held-out domains, and run the validation check (:func:`validation_check`)."""
    scale = preset.m2icl
    started = time.perf_counter()
    train_all(training_plan(preset), progress=progress, description="chapter 6 models")
    rows, icl_histories, meta_histories, checks = [], {}, {}, []
    icl_records, meta_records, from_cache = [], [], []
    for seed in tqdm(scale.seeds, desc="seeds", disable=not progress):
        icl = pretrained_icl(scale, seed, progress=progress)
        m2icl, meta_history = meta_trained(scale, icl, seed, progress=progress)
        key = adaptation_key(scale, icl, m2icl, seed)
        seed_rows = adaptation_table(scale, icl.learner, m2icl, key=key, seed=seed, progress=progress)
        rows += seed_rows
        checks.append(stored_validation_check(scale, m2icl, seed_rows, key=key, seed=seed))
        icl_histories[seed], meta_histories[seed] = icl.history.to_dict(), meta_history
        icl_records.append(training_record(icl.history.to_dict(), seed, scale.pretrain_tolerance))
        meta_records.append(training_record(meta_history, seed, scale.meta_tolerance))
        from_cache.append(icl.loaded_from_cache)
    first = pretrained_icl(scale, scale.seeds[0], progress=False)
    read_at_rungs = ladder(scale, progress=progress)
    return M2ICLResults(
        scale=scale,
        icl_history=icl_histories[scale.seeds[0]],
        meta_history=meta_histories[scale.seeds[0]],
        icl_histories=icl_histories,
        meta_histories=meta_histories,
        icl_from_cache=all(from_cache),
        records={"icl": icl_records, "m2icl": meta_records},
        validation_check=checks,
        costs=maml_costs(scale, first.learner),
        rows=rows,
        ladder=read_at_rungs,
        wall_seconds=time.perf_counter() - started,
    )


def seeds_of(rows: list[dict]) -> list[int]:
    """The seeds present in ``rows`` (rows without a seed count as seed 0), in order."""
    return sorted({r.get("seed", 0) for r in rows})


def arm_errors(rows: list[dict], arm: str, size: int, seed: int | None = None) -> np.ndarray:
    """(n_domains, N) relative errors of ``arm`` (unadapted arms ignore ``size``), ordered by domain: of one
    seed, or (``seed`` None) averaged over the seeds on the log scale (a geometric mean per domain)."""
    if seed is None:
        per_seed = [arm_errors(rows, arm, size, s) for s in seeds_of(rows)]
        return np.exp(np.mean([np.log(np.maximum(e, LOG_FLOOR)) for e in per_seed], axis=0))
    chosen = [r for r in rows if r["arm"] == arm and (r["size"] == size or r["size"] == 0) and r.get("seed", 0) == seed]
    return np.array([r["per_position"] for r in sorted(chosen, key=lambda r: r["domain"])])


def log_errors(rows: list[dict], arm: str, size: int, *, per_position: bool, seed: int | None = None) -> np.ndarray:
    """log of the relative errors: (n_domains, N) per position, or (n_domains,) of the mean over positions."""
    errors = arm_errors(rows, arm, size, seed)
    if seed is None and not per_position:  # per seed first: the log of each seed's mean over positions
        return np.mean([log_errors(rows, arm, size, per_position=False, seed=s) for s in seeds_of(rows)], axis=0)
    return np.log(np.maximum(errors if per_position else errors.mean(1), LOG_FLOOR))


def seed_domain_log_errors(rows: list[dict], arm: str, size: int) -> np.ndarray:
    """(S, n_domains): log of each seed's relative error per held-out domain (mean over positions)."""
    return np.array([log_errors(rows, arm, size, per_position=False, seed=s) for s in seeds_of(rows)])


def log_ratio(rows: list[dict], other: str, size: int, reference: str = "M2-ICL adapted") -> Difference:
    """log(other / reference) per seed and domain, averaged, with its 95% interval over seeds and domains."""
    return seeded_difference(seed_domain_log_errors(rows, other, size), seed_domain_log_errors(rows, reference, size))


def per_domain_log_ratios(rows: list[dict], other: str, size: int, reference: str = "M2-ICL adapted") -> list[dict]:
    """Per held-out domain: log(other / reference) per seed, and its mean over seeds (> 0: reference better)."""
    ratios = seed_domain_log_errors(rows, other, size) - seed_domain_log_errors(rows, reference, size)
    return [
        {"domain": domain, "per_seed": ratios[:, domain].tolist(), "mean": float(ratios[:, domain].mean())}
        for domain in range(ratios.shape[1])
    ]


def curves(results: M2ICLResults) -> list[dict]:
    """Per-position geometric mean over held-out domains (each domain's errors first averaged over seeds on the
    log scale) with a 95% band over domains (for the eye), one row per (arm, size, position)."""
    records = []
    for size in results.scale.adaptation_sizes:
        for arm in ARMS:
            mean, half = t_interval(log_errors(results.rows, arm, size, per_position=True))
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


def summary(results: M2ICLResults) -> list[dict]:
    """Per adaptation size: each arm's geometric mean relative error over seeds and held-out domains (of
    each domain's mean over positions) with its 95% interval over seeds and domains, and the paired error
    ratios other arm / M2-ICL adapted (> 1: M2-ICL adapted is better) with their intervals. ``log_mean``
    and ``log_ci`` hold the log scale; ``seed_values`` each seed's geometric mean."""
    records = []
    rows = results.rows
    for size in results.scale.adaptation_sizes:
        for arm in ARMS:
            values = seed_domain_log_errors(rows, arm, size)
            interval = seeded_difference(values, np.zeros((1, values.shape[1])))
            records.append(_record(size, arm, interval, np.exp(values.mean(1)).tolist()))
        for other in ("ICL adapted", "ICL (no adaptation)"):
            ratios = seed_domain_log_errors(rows, other, size) - seed_domain_log_errors(rows, "M2-ICL adapted", size)
            records.append(
                _record(
                    size,
                    f"ratio: {other} / M2-ICL adapted",
                    log_ratio(rows, other, size),
                    np.exp(ratios.mean(1)).tolist(),
                )
            )
    return records


def _record(size: int, arm: str, interval: Difference, seed_values: list[float]) -> dict:
    return {
        "size": size,
        "arm": arm,
        "value": math.exp(interval.mean),
        "low": math.exp(interval.lower),
        "high": math.exp(interval.upper),
        "log_mean": float(interval.mean),
        "log_ci": float(interval.ci),
        "seed_values": seed_values,
    }


def rests_on(records: dict[str, list[dict]]) -> list[dict]:
    """The compared models with their seeds' steps and convergence (the verdict's ``rests_on``)."""
    learners = {"icl": "icl_regressor", "m2icl": "m2icl"}
    return [model_record(learners[model], "regression_domains", runs) for model, runs in records.items()]


def _pair(interval: Difference) -> list[float]:
    return [interval.mean, interval.ci]


def verdicts(results: M2ICLResults) -> list[ClaimVerdict]:
    """Decide claim 4b with RULE_4B (the verdict lists the models it rests on)."""
    scale, rows = results.scale, results.rows
    table = summary(results)
    small, large = min(scale.adaptation_sizes), max(scale.adaptation_sizes)
    adapted = {size: log_ratio(rows, "ICL adapted", size) for size in scale.adaptation_sizes}
    unadapted = log_ratio(rows, "ICL (no adaptation)", small)
    gain = {
        size: seed_domain_log_errors(rows, "ICL adapted", size) - seed_domain_log_errors(rows, "M2-ICL adapted", size)
        for size in (small, large)
    }
    shrink = seeded_difference(gain[small], gain[large])
    unadapted_gain = seed_domain_log_errors(rows, "ICL (no adaptation)", small) - seed_domain_log_errors(
        rows, "M2-ICL adapted", small
    )
    icl_error = next(r["value"] for r in table if r["arm"] == "ICL (no adaptation)" and r["size"] == small)
    records = results.records
    reasons = gates_4b(icl_error, records)
    ungated = decide_4b(adapted[small], unadapted)
    numbers = {
        **{f"{row['arm']} @ {row['size']}": [row["value"], row["low"], row["high"]] for row in table},
        "seeds": list(scale.seeds),
        "margin": LOG_MARGIN,
        "working_error": WORKING_ERROR,
        "smallest_size": small,
        "largest_size": large,
        "icl_unadapted_error": icl_error,
        "least_squares_error": next(r["value"] for r in table if r["arm"] == "least squares" and r["size"] == small),
        "log_ratio_adapted": {str(size): _pair(value) for size, value in adapted.items()},
        "log_ratio_unadapted": _pair(unadapted),
        "shrink": _pair(shrink),
        "per_domain_log_ratio_adapted": [r["mean"] for r in per_domain_log_ratios(rows, "ICL adapted", small)],
        "validation_check": domain_sets_difference(results.validation_check),
        "decisive": decisive_4b(adapted[small], unadapted, small, ungated),
        # reported beside the rule: which way each comparison goes, significant or not, against the margin
        "direction": directions_4b(adapted[small], unadapted),
    }
    if ungated == "inconclusive" and len(scale.seeds) > 1:
        label = numbers["decisive"]["label"]
        per_seed = (unadapted_gain if "unadapted" in label else gain[small]).mean(1).tolist()
        interval = Difference(numbers["decisive"]["effect"], numbers["decisive"]["ci"])
        numbers["seeds_to_decide"] = seeds_needed(label, per_seed, interval, LOG_MARGIN)
    result = ClaimVerdict(
        claim="4b",
        preset=scale.preset,
        quantity="geometric mean over seeds and held-out domains of the relative squared error after fine-tuning "
        "on K prompts (value, 95% CI low, high); paired log error ratios with 95% intervals over seeds and domains",
        numbers=numbers,
        rule=RULE_4B,
        outcome="inconclusive" if reasons else ungated,
        chapter=CHAPTER,
        wall_seconds=results.wall_seconds,
        notes={
            "maml_order": "second" if scale.maml.second_order else "first",
            "init": scale.init,
            "gates": reasons,
            "ungated_outcome": ungated,
            "budget_ladder": decisive_ladder_rows(results.ladder, "4b"),
            **previous_outcome("4b"),
        },
        rests_on=rests_on(records),
    )
    return [result]
