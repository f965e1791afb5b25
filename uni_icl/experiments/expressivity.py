"""Claim 1 (expressiveness): exact constructions checked numerically, and ICL trained to imitate meta-learners.

Two parts, one result object:

- :func:`construction_checks`: every hand-set transformer of :mod:`uni_icl.learners.constructions` against
  its meta-learner (the trained teachers of the first seed and freshly randomised ones) and the
  gradient-descent construction against an explicit autograd step; maximum absolute differences in
  float64 and float32 over many episodes. The constructions are exact by construction, so this is a
  *check of the code* (a failure raises :class:`ConstructionError`), reported but not evidence for
  the verdict.
- :func:`imitation_table`: for each of the scale's training seeds, the in-context transformer
  distilled on the predictive distributions of the trained meta-learner of that seed (the
  *teacher*: MatchNet on ``pairwise``, ProtoNet on ``prototype``, CNP on ``amortized``, the RunSpecs
  of the learnability chapter), then compared with its teacher on the shared test episodes of the
  teacher's family: argmax agreement and total variation per episode and shot count, between a
  ceiling (the teacher trained with the next seed) and floors (the meta-learners of the other kinds,
  same seed, trained on the teacher's family), with the earlier yardstick beside them (the other
  meta-learners on their own families). The verdict reads the differences over seeds and episodes
  (:func:`uni_icl.uncertainty.seeded_difference`).

The distillation loop (:class:`Distillation`) is an objective of :func:`uni_icl.training.train`:
Adam on the KL divergence from the teacher's distribution on fresh episodes of the teacher's family,
a validation set with its own seed, early stopping, best weights kept. The student of seed s starts
from weights drawn with s, sees training episodes drawn with s and imitates the teacher of seed s;
it is cached under a hash of its full configuration, including the seed, the teacher's RunSpec key
and ``CODE_VERSION``.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from uni_icl.convergence import remaining_gain
from uni_icl.evaluation import Z_95, Difference, test_episodes
from uni_icl.experiments.common import (
    MATCHED_FAMILY,
    classification_job,
    classification_run,
    classification_task,
    trained,
)
from uni_icl.experiments.evidence import gated_verdict, seeds_needed
from uni_icl.experiments.rules.expressivity import (
    CEILING,
    CEILING_LABEL,
    EXACT_RELATIVE_TOLERANCE,
    FLOOR,
    IMITATION,
    IMITATION_LABEL,
    OTHER_FAMILY,
    RULE,
    STUDENT_CONVERGENCE_TOLERANCE,
    TEACHER_CONVERGENCE_TOLERANCE,
    WARM,
    WARM_LABEL,
    decide,
    decisive_comparison,
    evidence,
    floor_label,
)
from uni_icl.learners import LearnerSpec, display_name
from uni_icl.learners.constructions import (
    construct,
    gd_step_reference,
    gd_transformer,
    max_difference,
)
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import ClassificationScale, ImitationScale, Preset
from uni_icl.runs import CODE_VERSION, RunSpec, TrainedLearner, build_seeded, derived_model_validator, train_or_load
from uni_icl.storage import cache_root, cached_entry, config_hash, json_entry, weights_hash
from uni_icl.tasks import TaskFamily, make_task
from uni_icl.training import TrainConfig, TrainHistory, train, validation_episodes
from uni_icl.uncertainty import seeded_difference, t_interval
from uni_icl.validation import check_choice
from uni_icl.verdicts import ClaimVerdict, model_record

TEACHERS = MATCHED_FAMILY  # teacher (meta-learner) -> the family it is trained on
CLAIMS = ("1",)
TIE_TOLERANCE = 1e-6  # classes within this probability of the teacher's maximum count as its argmax
CHAPTER = "book/01_expressivity"


class ConstructionError(RuntimeError):
    """A hand-set construction differs from its meta-learner by more than rounding: a bug, not a result."""


def log_probs(learner: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Predictive log-distribution of any classifier following the contract. -> (B, N, C)"""
    return learner(xs, ys).log_softmax(-1)


def teacher_spec(scale: ClassificationScale, name: str, seed: int = 0) -> RunSpec:
    """The RunSpec of meta-learner ``name`` on its matching family, training ``seed`` (the learnability chapter's)."""
    check_choice("teacher", name, TEACHERS)
    return classification_run(scale, name, classification_task(scale, TEACHERS[name]), seed)


def teacher(scale: ClassificationScale, name: str, seed: int = 0, *, progress: bool = True) -> TrainedLearner:
    """The trained meta-learner ``name`` of training ``seed`` on its matching family (train-or-load)."""
    return train_or_load(teacher_spec(scale, name, seed), progress=progress)


def floor_kinds(name: str) -> tuple[str, ...]:
    """The floors of teacher ``name``: the meta-learners of the other kinds (trained on its family)."""
    check_choice("teacher", name, TEACHERS)
    return tuple(kind for kind in TEACHERS if kind != name)


def training_plan(preset: Preset) -> list[Job]:
    """The teachers and floors of every seed (stage 0; the learnability chapter's runs), the warm starts
    if any, then the students (stage 1)."""
    scale, settings = preset.classification, preset.imitation
    jobs = [run_job(teacher_spec(scale, name, seed)) for seed in scale.seeds for name in TEACHERS]
    jobs += [
        classification_job(scale, kind, TEACHERS[name], seed)
        for seed in scale.seeds
        for name in TEACHERS
        for kind in floor_kinds(name)
    ]
    if settings.warm_start:
        jobs += [
            run_job(classification_run(scale, "icl", teacher_spec(scale, name).task, seed))
            for seed in scale.seeds
            for name in TEACHERS
        ]
    for seed in scale.seeds:
        for name in TEACHERS:
            work = functools.partial(_distil_quietly, scale, settings, name, seed)
            label = f"ICL imitating {display_name(name)} (seed {seed})"
            jobs.append(Job(label, student_path(scale, settings, name, seed), work, stage=1))
    return jobs


def _distil_quietly(scale: ClassificationScale, settings: ImitationScale, name: str, seed: int) -> None:
    imitation_student(scale, settings, name, teacher(scale, name, seed, progress=False), progress=False)


# ----------------------------------------------------------------------------------------------
# Constructions
# ----------------------------------------------------------------------------------------------


def randomized(learner: nn.Module, seed: int, std: float = 0.7) -> nn.Module:
    """A copy of ``learner`` with every parameter (scalars included) drawn from N(0, std^2) with ``seed``."""
    copied = copy.deepcopy(learner)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in copied.parameters():
            parameter.copy_(std * torch.randn(parameter.shape, generator=gen, dtype=parameter.dtype))
    return copied


def check_construction(
    learner: nn.Module, task: TaskFamily, n_episodes: int, seed: int, n_max: int | None = None
) -> dict:
    """Build the construction of ``learner`` and compare on ``n_episodes`` episodes of ``task``.

    Returns max |difference| in float64 and float32, the float32 difference relative to
    max(1, max |output|), and the size of the construction.
    """
    episode = task.sample(n_episodes, seed=seed)
    gaps = {}
    for dtype in (torch.float64, torch.float32):
        reference = copy.deepcopy(learner).cpu().eval().to(dtype)
        construction = construct(reference, n_max=n_max or task.n_points)
        gaps[dtype] = max_difference(reference, construction, episode.xs.to(dtype), episode.ys)
    gap64, gap32 = gaps[torch.float64], gaps[torch.float32]
    with torch.no_grad():
        scale = max(1.0, reference(episode.xs, episode.ys).abs().max().item())
    return {
        "construction": display_name(learner.name),
        "float64_max_abs": gap64,
        "float32_max_abs": gap32,
        "float32_max_rel": gap32 / scale,
        "output_scale": scale,
        "n_episodes": n_episodes,
        "n_points": task.n_points,
        "width": construction.width,
        "sublayers": len(construction.layers),
        "parameters": sum(p.numel() for p in construction.parameters()),
    }


def check_gd_construction(d: int, n_points: int, n_episodes: int, seed: int) -> list[dict]:
    """The one-step GD construction against the autograd step: zero start (one layer) and a random
    start (MAML's learned initialisation: gating layer + step), on in-context linear regression."""
    gen = torch.Generator().manual_seed(seed)
    task = make_task("linear_regression", d=d, n_points=n_points)
    episode = task.sample(n_episodes, seed=seed + 1)
    rows = []
    for start in ("zero", "random"):
        lr = float(torch.empty(1).uniform_(0.01, 0.1, generator=gen))
        weight = None if start == "zero" else torch.randn(d, generator=gen)
        bias = 0.0 if start == "zero" else float(torch.randn(1, generator=gen))
        construction = gd_transformer(d, lr, weight, bias, dtype=torch.float64)

        def reference(xs, ys, lr=lr, weight=weight, bias=bias):
            return gd_step_reference(xs, ys, lr, weight, bias)

        gap64 = max_difference(reference, construction, episode.xs.double(), episode.ys.double())
        gap32 = max_difference(reference, construction.float(), episode.xs.float(), episode.ys.float())
        scale = max(1.0, reference(episode.xs, episode.ys).abs().max().item())
        rows.append(
            {
                "construction": "GD step",
                "learner": f"{start} start, lr {lr:.3f}",
                "float64_max_abs": gap64,
                "float32_max_abs": gap32,
                "float32_max_rel": gap32 / scale,
                "output_scale": scale,
                "n_episodes": n_episodes,
                "n_points": n_points,
                "width": construction.width,
                "sublayers": len(construction.layers),
                "parameters": sum(p.numel() for p in construction.parameters()),
            }
        )
    return rows


def construction_checks(
    scale: ClassificationScale, settings: ImitationScale, teachers: dict[str, TrainedLearner]
) -> list[dict]:
    """One row per (construction, meta-learner): the trained teacher, then randomised copies."""
    rows = []
    for index, (name, model) in enumerate(teachers.items()):
        task = classification_task(scale, TEACHERS[name])
        learners = [("trained teacher", model.learner)]
        learners += [
            (f"random weights, seed {k}", randomized(model.learner, settings.check_seed + 100 * index + k))
            for k in range(settings.n_random_learners)
        ]
        for label, learner in learners:
            row = check_construction(learner, task, settings.n_check_episodes, settings.check_seed + index)
            rows.append({**row, "learner": label})
    rows += check_gd_construction(5, scale.n_points, settings.n_check_episodes, settings.check_seed)
    return rows


def worst_construction_gaps(rows: list[dict]) -> dict[str, float]:
    """The largest relative float32 difference of each construction over its checks."""
    worst: dict[str, float] = {}
    for row in rows:
        worst[row["construction"]] = max(worst.get(row["construction"], 0.0), row["float32_max_rel"])
    return worst


def require_exact(rows: list[dict], tolerance: float = EXACT_RELATIVE_TOLERANCE) -> None:
    """Raise :class:`ConstructionError` naming every check whose float32 difference exceeds ``tolerance``
    relative to the output's size (the constructions are exact by construction: a failure is a bug)."""
    failed = [
        f"{row['construction']} ({row['learner']}): {row['float32_max_rel']:.2e}"
        for row in rows
        if not row["float32_max_rel"] <= tolerance
    ]
    if failed:
        raise ConstructionError(
            f"constructions differ from their meta-learners by more than {tolerance:g}: " + "; ".join(failed)
        )


# ----------------------------------------------------------------------------------------------
# Distillation
# ----------------------------------------------------------------------------------------------


def kl_to_teacher(student: nn.Module, teacher_net: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Mean over episodes and positions of KL(teacher || student) in nats (a scalar with gradients)."""
    with torch.no_grad():
        target = log_probs(teacher_net, xs, ys)  # (B, N, C)
    predicted = log_probs(student, xs, ys)
    return (target.exp() * (target - predicted)).sum(-1).mean()


def agreement(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """1 where ``other``'s argmax is (one of) ``reference``'s most probable classes. log-probs (B, N, C) -> (B, N)"""
    probs = reference.exp()
    chosen = probs.gather(-1, other.argmax(-1, keepdim=True))[..., 0]
    return (chosen >= probs.amax(-1) - TIE_TOLERANCE).float()


def total_variation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance between two predictive distributions. log-probs (B, N, C) -> (B, N)"""
    return 0.5 * (a.exp() - b.exp()).abs().sum(-1)


class Distillation:
    """Distillation as an objective of :func:`uni_icl.training.train`: the student's KL to the
    teacher's predictive distribution (:func:`kl_to_teacher`) on ``config.batch_size`` fresh
    episodes of ``task`` per step, validated by the mean KL on ``config.n_val_tasks`` episodes drawn
    with ``config.val_seed`` (score: minus the KL, so early stopping's ``min_delta`` is in nats)."""

    def __init__(self, teacher_net: nn.Module, task: TaskFamily, config: TrainConfig) -> None:
        self.teacher_net, self.task, self.config = teacher_net, task, config
        self._val_set: list | None = None

    def step_loss(self, student: nn.Module, step: int, gen: torch.Generator) -> torch.Tensor:
        device = next(student.parameters()).device
        episode = self.task.sample(self.config.batch_size, generator=gen, device=device)
        loss = kl_to_teacher(student, self.teacher_net.to(device).eval(), episode.xs, episode.ys)
        loss.backward()
        return loss.detach()

    @torch.no_grad()
    def validate(self, student: nn.Module) -> tuple[float, float]:
        device = next(student.parameters()).device
        if self._val_set is None:
            self._val_set = validation_episodes(self.task, self.config, device)
        was_training = student.training
        student.eval()
        teacher = self.teacher_net.to(device).eval()
        kls = [
            kl_to_teacher(student, teacher, episode.xs, episode.ys).item() * episode.batch_size
            for episode in self._val_set
        ]
        student.train(was_training)
        kl = sum(kls) / sum(episode.batch_size for episode in self._val_set)
        return -kl, kl


@dataclass
class Student:
    """A distilled in-context transformer and how it was obtained."""

    teacher: str
    seed: int
    learner: nn.Module
    history: TrainHistory
    warm_start: TrainedLearner | None
    loaded_from_cache: bool


def distill_config(settings: ImitationScale, seed: int) -> TrainConfig:
    """The preset's distillation settings with training ``seed`` (initial weights and training episodes)."""
    return TrainConfig(**{**settings.distill.__dict__, "seed": seed})


def student_config(scale: ClassificationScale, settings: ImitationScale, teacher_spec: RunSpec) -> dict:
    """Everything that determines a distilled student (its cache key); its seed is the teacher's."""
    seed = teacher_spec.train.seed
    warm = classification_run(scale, "icl", teacher_spec.task, seed) if settings.warm_start else None
    return {
        "code_version": CODE_VERSION,
        "experiment": "imitation",
        "seed": seed,
        "teacher": teacher_spec.config(),
        "teacher_key": teacher_spec.key,
        "student": LearnerSpec("icl", scale.icl).config(),
        "warm_start": None if warm is None else warm.key,
        "task": teacher_spec.task.config(),
        "distill": distill_config(settings, seed).__dict__,
        "history": "TrainHistory",  # the stored history's format (distillation had its own type before)
    }


def student_path(scale: ClassificationScale, settings: ImitationScale, name: str, seed: int = 0) -> Path:
    """Where the ICL imitation of the teacher ``name`` of training ``seed`` is stored."""
    config = student_config(scale, settings, teacher_spec(scale, name, seed))
    return cache_root() / "imitation" / f"icl-imitates-{name}-seed{seed}-{config_hash(config)}.pt"


def imitation_student(
    scale: ClassificationScale, settings: ImitationScale, name: str, trained_teacher: TrainedLearner, *, progress: bool
) -> Student:
    """Distil-or-load the ICL imitation of teacher ``name``, with the teacher's training seed (cached)."""
    spec = trained_teacher.spec
    seed = spec.train.seed
    config = student_config(scale, settings, spec)
    path = student_path(scale, settings, name, seed)
    distill = distill_config(settings, seed)
    warm = (
        train_or_load(classification_run(scale, "icl", spec.task, seed), progress=progress)
        if settings.warm_start
        else None
    )
    learner = build_seeded(LearnerSpec("icl", scale.icl), spec.task, seed)
    if warm is not None:
        learner.load_state_dict(warm.learner.state_dict())
    learner = learner.to(next(trained_teacher.learner.parameters()).device)
    sources = {"teacher": trained_teacher.weights_hash, "warm_start": None if warm is None else warm.weights_hash}

    def distil() -> dict:
        history = train(
            learner,
            spec.task,
            distill,
            objective=Distillation(trained_teacher.learner, spec.task, distill),
            progress=progress,
            description=f"ICL imitating {display_name(name)} (seed {seed})",
        )
        return {"weights": learner.state_dict(), "history": history.to_dict(), "config": config, "sources": sources}

    stored, loaded = cached_entry(path, distil, derived_model_validator(learner, sources), tensors=True)
    learner.load_state_dict(stored["weights"])
    return Student(name, seed, learner.eval(), TrainHistory(**stored["history"]), warm, loaded)


# ----------------------------------------------------------------------------------------------
# Agreement
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def agreement_scores(
    task: TaskFamily, reference: nn.Module, others: dict[str, nn.Module], n_tasks: int, seed: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per episode and shot count, the agreement and total variation of each of ``others`` with
    ``reference`` on the test episodes of ``task``: label -> ((n_tasks, N), (n_tasks, N)) float64."""
    device = next(reference.parameters()).device
    scores: dict[str, list[torch.Tensor]] = {label: [] for label in others}
    distances: dict[str, list[torch.Tensor]] = {label: [] for label in others}
    for episode in test_episodes(task, n_tasks, seed, device):
        target = log_probs(reference.eval(), episode.xs, episode.ys)
        for label, other in others.items():
            predicted = log_probs(other.eval(), episode.xs, episode.ys)
            scores[label].append(agreement(target, predicted).cpu())
            distances[label].append(total_variation(target, predicted).cpu())
    return {label: (torch.cat(scores[label]).double(), torch.cat(distances[label]).double()) for label in others}


def _ci(values: np.ndarray) -> np.ndarray:
    """Half-width of the 95% normal interval of the mean over the first axis. (n, K) -> (K,)"""
    n = values.shape[0]
    spread = values.std(0, ddof=1) if n > 1 else np.zeros(values.shape[1])
    return Z_95 * spread / math.sqrt(n)


def seeded_curves(per_seed: np.ndarray) -> dict:
    """Summary of (S, n, N) scores (seeds, test episodes, shot counts), as chapter 2's rows: ``mean`` and
    ``ci`` over seeds and episodes (:func:`~uni_icl.uncertainty.seeded_difference` against 0),
    ``seed_means``, ``per_seed_episode`` (S, n) for paired comparisons, and the per-shot curve
    over seeds with a band (the spread over seeds plus the seeds' mean episode interval; for the
    eye, not a test)."""
    S, n, _ = per_seed.shape
    by_episode = per_seed.mean(axis=2)  # (S, n)
    total = seeded_difference(by_episode, np.zeros((1, n)))
    curves = per_seed.mean(axis=1)  # (S, N)
    episode_ci = np.stack([_ci(per_seed[s]) for s in range(S)]).mean(0)
    mean_curve, seed_half = t_interval(curves)
    return {
        "mean": total.mean,
        "ci": total.ci,
        "seed_means": by_episode.mean(axis=1).tolist(),
        "per_seed_episode": by_episode.tolist(),
        "per_position": mean_curve.tolist(),
        "per_position_ci": (seed_half + episode_ci).tolist(),
    }


def imitation_table(
    scale: ClassificationScale,
    settings: ImitationScale,
    teachers: dict[str, list[TrainedLearner]],
    students: dict[str, list[Student]],
    floors: dict[str, dict[str, list[TrainedLearner]]],
) -> list[dict]:
    """For each teacher, on its family's test episodes, everything compared with the teacher of seed s:
    the imitation of seed s, the ICL model it started from (if warm-started), the ceiling (the teacher of
    the next seed, cyclically), the floors (``floors[teacher][kind]``: the other kinds, seed s, trained
    on the teacher's family) and the other meta-learners of seed s on their own families (the earlier
    yardstick).

    One row per (teacher, learner): its ``role`` (rules.expressivity's IMITATION, WARM, CEILING, FLOOR or
    OTHER_FAMILY), agreement (``mean``, ``ci``, ``per_seed_episode``, curves) and total variation (the
    same keys prefixed ``tv_``), over the scale's seeds (:func:`seeded_curves`).
    """
    rows = []
    for name, by_seed in teachers.items():
        task = classification_task(scale, TEACHERS[name])
        agree: dict[str, list[np.ndarray]] = {}
        distance: dict[str, list[np.ndarray]] = {}
        roles: dict[str, str] = {IMITATION_LABEL: IMITATION, WARM_LABEL: WARM, CEILING_LABEL: CEILING}
        for index, trained_teacher in enumerate(by_seed):
            student = students[name][index]
            others: dict[str, nn.Module] = {IMITATION_LABEL: student.learner}
            if student.warm_start is not None:
                others[WARM_LABEL] = student.warm_start.learner
            others[CEILING_LABEL] = by_seed[(index + 1) % len(by_seed)].learner
            for kind, models in floors[name].items():
                label = floor_label(display_name(kind), TEACHERS[name])
                others[label], roles[label] = models[index].learner, FLOOR
            for other_name, other in teachers.items():
                if other_name != name:
                    others[display_name(other_name)] = other[index].learner
                    roles[display_name(other_name)] = OTHER_FAMILY
            scores = agreement_scores(task, trained_teacher.learner, others, settings.n_test_tasks, settings.test_seed)
            for label, (a, tv) in scores.items():
                agree.setdefault(label, []).append(a.numpy())
                distance.setdefault(label, []).append(tv.numpy())
        for label in agree:
            tv_summary = seeded_curves(np.stack(distance[label]))
            rows.append(
                {
                    "teacher": display_name(name),
                    "family": task.name,
                    "learner": label,
                    "role": roles[label],
                    **seeded_curves(np.stack(agree[label])),
                    **{f"tv_{key}": value for key, value in tv_summary.items()},
                    "seeds": [model.spec.train.seed for model in by_seed],
                    "n_tasks": settings.n_test_tasks,
                }
            )
    return rows


# ----------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------


@dataclass
class ImitationResults:
    """Everything the chapter shows: construction checks, teachers, students and floors of every seed
    (lists in the order of ``seeds``; ``floors``: teacher -> floor kind -> its seeds), agreement rows,
    timings."""

    preset: str
    constructions: list[dict]
    agreements: list[dict]
    teachers: dict[str, list[TrainedLearner]]
    students: dict[str, list[Student]]
    seconds: float
    teacher_seconds: float
    seeds: tuple[int, ...] = (0,)
    floors: dict[str, dict[str, list[TrainedLearner]]] = field(default_factory=dict)

    def distill_summary(self) -> list[dict]:
        """One row per student (teacher and seed): how its distillation ran, with the convergence test."""
        rows = []
        for name, by_seed in self.students.items():
            for student in by_seed:
                record = student_record(student)
                rows.append(
                    {
                        "teacher": display_name(name),
                        "seed": student.seed,
                        "steps run": record["steps"],
                        "best step": student.history.best_step,
                        "stopped early": student.history.stopped_early,
                        "best validation KL (nats)": min(student.history.val_loss, default=math.nan),
                        "KL still to lose (bound, nats)": record["remaining_gain_bound"],
                        "converged": record["converged"],
                        "seconds": student.history.seconds,
                        "loaded from cache": student.loaded_from_cache,
                    }
                )
        return rows


def run(preset: Preset, *, progress: bool = True) -> ImitationResults:
    """Train-or-load the teachers, floors and students of every seed, check every construction (raising
    :class:`ConstructionError` if one is not exact), measure the imitation."""
    scale, settings = preset.classification, preset.imitation
    if len(scale.seeds) < 2:
        raise ValueError(f"seeds: the ceiling is a teacher's second seed, so at least 2 are needed; got {scale.seeds}")
    started = time.perf_counter()
    train_all(training_plan(preset), progress=progress, description="chapter 1 models")
    teachers = {name: [teacher(scale, name, seed, progress=progress) for seed in scale.seeds] for name in TEACHERS}
    floors = {
        name: {
            kind: [trained(scale, kind, TEACHERS[name], seed=seed, progress=progress) for seed in scale.seeds]
            for kind in floor_kinds(name)
        }
        for name in TEACHERS
    }
    teacher_seconds = time.perf_counter() - started
    constructions = _cached_checks(scale, settings, {name: by_seed[0] for name, by_seed in teachers.items()})
    require_exact(constructions)
    students = {
        name: [imitation_student(scale, settings, name, trained, progress=progress) for trained in by_seed]
        for name, by_seed in tqdm(teachers.items(), desc="students", disable=not progress)
    }
    agreements = _cached_agreements(scale, settings, teachers, students, floors)
    return ImitationResults(
        preset.name,
        constructions,
        agreements,
        teachers,
        students,
        time.perf_counter() - started,
        teacher_seconds,
        tuple(scale.seeds),
        floors,
    )


def _cached_checks(
    scale: ClassificationScale, settings: ImitationScale, teachers: dict[str, TrainedLearner]
) -> list[dict]:
    config = {
        "code_version": CODE_VERSION,
        "experiment": "construction_checks",
        "teachers": {name: trained.spec.key for name, trained in teachers.items()},
        "weights": {name: trained.weights_hash for name, trained in teachers.items()},
        "settings": asdict(settings),
        "n_points": scale.n_points,
    }
    path = cache_root() / "results" / f"construction-checks-{config_hash(config)}.json"
    return json_entry(path, lambda: construction_checks(scale, settings, teachers))


def _cached_agreements(
    scale: ClassificationScale,
    settings: ImitationScale,
    teachers: dict[str, list[TrainedLearner]],
    students: dict[str, list[Student]],
    floors: dict[str, dict[str, list[TrainedLearner]]],
) -> list[dict]:
    """:func:`imitation_table`, stored under a hash of every seed's teacher, student and floor configuration."""
    config = {
        "code_version": CODE_VERSION,
        "experiment": "imitation_agreements",
        # rows over seeds with their roles: ceiling and floors beside the earlier yardstick (before:
        # "seeded", the earlier yardstick only; the single-seed table had no per_seed_episode)
        "table": "yardsticks",
        "floors": {
            name: {kind: [[model.spec.key, model.weights_hash] for model in models] for kind, models in by_kind.items()}
            for name, by_kind in floors.items()
        },
        "students": {
            name: [student_config(scale, settings, trained.spec) for trained in by_seed]
            for name, by_seed in teachers.items()
        },
        "weights": {
            name: [
                [trained.weights_hash, weights_hash(student.learner)]
                for trained, student in zip(by_seed, students[name], strict=True)
            ]
            for name, by_seed in teachers.items()
        },
        "settings": asdict(settings),
        "n_points": scale.n_points,
    }
    path = cache_root() / "results" / f"imitation-agreements-{config_hash(config)}.json"
    return json_entry(path, lambda: imitation_table(scale, settings, teachers, students, floors))


# ----------------------------------------------------------------------------------------------
# The rule and the verdict
# ----------------------------------------------------------------------------------------------


def _record(history: TrainHistory, seed: int, tolerance: float) -> dict:
    check = remaining_gain(history.steps, history.val_score, tolerance)
    return {
        "seed": seed,
        "steps": history.steps[-1] if history.steps else 0,
        "best_step": history.best_step,
        "stopped_early": history.stopped_early,
        "converged": check.converged,
        "remaining_gain_bound": check.bound,
    }


def teacher_record(model: TrainedLearner) -> dict:
    """How one seed of a teacher was trained, with the convergence test on its validation accuracy."""
    return _record(model.history, model.spec.train.seed, TEACHER_CONVERGENCE_TOLERANCE)


def student_record(student: Student) -> dict:
    """How one seed of a student was distilled, with the convergence test on its validation score (minus KL)."""
    return _record(student.history, student.seed, STUDENT_CONVERGENCE_TOLERANCE)


def rests_on(results: ImitationResults) -> list[dict]:
    """The models the rule compares: every teacher (the ceilings are teachers too), every floor and every
    student, with each seed's steps and convergence."""
    records = []
    for name, by_seed in results.teachers.items():
        runs = [teacher_record(model) for model in by_seed]
        records.append(model_record(name, TEACHERS[name], runs))
    for name, by_kind in results.floors.items():
        for kind, by_seed in by_kind.items():
            records.append(model_record(kind, TEACHERS[name], [teacher_record(model) for model in by_seed]))
    for name, by_seed in results.students.items():
        runs = [student_record(student) for student in by_seed]
        records.append(model_record(f"ICL imitating {display_name(name)}", TEACHERS[name], runs))
    return records


def verdicts(results: ImitationResults) -> list[ClaimVerdict]:
    """Apply RULE (written before any run of it) to ``results``."""
    teachers, numbers, per_seed = evidence(results)
    models = rests_on(results)
    ungated = decide(teachers)
    numbers["decisive"] = decisive_comparison(teachers, ungated)
    if ungated == "inconclusive" and len(results.seeds) > 1:
        label = numbers["decisive"]["label"]
        interval = Difference(numbers["decisive"]["effect"], numbers["decisive"]["ci"])
        numbers["seeds_to_decide"] = seeds_needed(label, per_seed[label], interval, numbers["margin"])
    return [
        gated_verdict(
            "1",
            ungated,
            models,
            preset=results.preset,
            quantity=(
                "argmax agreement of the distilled ICL model with each teacher, against a ceiling (the teacher "
                "trained with another seed) and floors (meta-learners of other kinds trained on the teacher's "
                "family); same seed, same test episodes, 95% intervals over seeds and episodes"
            ),
            numbers=numbers,
            rule=RULE,
            chapter=CHAPTER,
            wall_seconds=results.seconds,
            notes={
                "seeds": list(results.seeds),
                "construction_check": {
                    "passed": all(row["float32_max_rel"] <= EXACT_RELATIVE_TOLERANCE for row in results.constructions),
                    "tolerance": EXACT_RELATIVE_TOLERANCE,
                    "max_rel_float32": worst_construction_gaps(results.constructions),
                },
            },
        )
    ]
