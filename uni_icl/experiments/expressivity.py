"""Claim 1 (expressiveness): exact constructions checked numerically, and ICL trained to imitate meta-learners.

Two parts, one result object:

- :func:`construction_checks`: every hand-set transformer of :mod:`uni_icl.learners.constructions` against
  its meta-learner (the trained teachers and freshly randomised ones) and the gradient-descent
  construction against an explicit autograd step; maximum absolute differences in float64 and
  float32 over many episodes.
- :func:`imitation_table`: the in-context transformer distilled on the predictive distributions of
  each trained meta-learner (the *teacher*: MatchNet on ``pairwise``, ProtoNet on ``prototype``, CNP
  on ``amortized``, the RunSpecs of the learnability chapter), then compared with its teacher per
  shot count: argmax agreement and total variation, next to the agreement of the other
  meta-learners with the same teacher on the same episodes.

The distillation loop (:func:`distill`) is this module's own: Adam on the KL divergence from the
teacher's distribution on fresh episodes of the teacher's family, a validation set with its own
seed, early stopping, best weights kept. The student is cached under a hash of its full
configuration, including the teacher's RunSpec key and ``CODE_VERSION``.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from uni_icl.evaluation import Z_95, test_episodes
from uni_icl.experiments.common import MATCHED_FAMILY, classification_run, classification_task
from uni_icl.learners import LearnerSpec, display_name
from uni_icl.learners.constructions import (
    construct,
    gd_step_reference,
    gd_transformer,
    max_difference,
)
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import ClassificationScale, ImitationScale, Preset
from uni_icl.runs import CODE_VERSION, RunSpec, TrainedLearner, build_seeded, model_entry_validator, train_or_load
from uni_icl.storage import cache_root, cached_entry, config_hash, json_entry
from uni_icl.tasks import TaskFamily, make_task
from uni_icl.training import TrainConfig, TrainHistory, train, validation_episodes
from uni_icl.validation import check_choice
from uni_icl.verdicts import ClaimVerdict

TEACHERS = MATCHED_FAMILY  # teacher (meta-learner) -> the family it is trained on
CLAIMS = ("1",)
TIE_TOLERANCE = 1e-6  # classes within this probability of the teacher's maximum count as its argmax
EXACT_RELATIVE_TOLERANCE = 1e-4  # float32: max |difference| <= this * max(1, max |output|)
CHAPTER = "book/01_expressivity"


def log_probs(learner: nn.Module, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Predictive log-distribution of any classifier following the contract. -> (B, N, C)"""
    return learner(xs, ys).log_softmax(-1)


def teacher_spec(scale: ClassificationScale, name: str) -> RunSpec:
    """The RunSpec of meta-learner ``name`` on its matching family (the learnability chapter's)."""
    check_choice("teacher", name, TEACHERS)
    return classification_run(scale, name, classification_task(scale, TEACHERS[name]))


def teacher(scale: ClassificationScale, name: str, *, progress: bool = True) -> TrainedLearner:
    """The trained meta-learner ``name`` on its matching family (train-or-load)."""
    return train_or_load(teacher_spec(scale, name), progress=progress)


def training_plan(preset: Preset) -> list[Job]:
    """The teachers (stage 0), the warm starts if any, then the students (stage 1)."""
    scale, settings = preset.classification, preset.imitation
    jobs = [run_job(teacher_spec(scale, name)) for name in TEACHERS]
    if settings.warm_start:
        jobs += [run_job(classification_run(scale, "icl", teacher_spec(scale, name).task)) for name in TEACHERS]
    for name in TEACHERS:
        work = functools.partial(_distil_quietly, scale, settings, name)
        jobs.append(Job(f"ICL imitating {display_name(name)}", student_path(scale, settings, name), work, stage=1))
    return jobs


def _distil_quietly(scale: ClassificationScale, settings: ImitationScale, name: str) -> None:
    imitation_student(scale, settings, name, teacher(scale, name, progress=False), progress=False)


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
    for index, (name, trained) in enumerate(teachers.items()):
        task = classification_task(scale, TEACHERS[name])
        learners = [("trained teacher", trained.learner)]
        learners += [
            (f"random weights, seed {k}", randomized(trained.learner, settings.check_seed + 100 * index + k))
            for k in range(settings.n_random_learners)
        ]
        for label, learner in learners:
            row = check_construction(learner, task, settings.n_check_episodes, settings.check_seed + index)
            rows.append({**row, "learner": label})
    rows += check_gd_construction(5, scale.n_points, settings.n_check_episodes, settings.check_seed)
    return rows


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
    learner: nn.Module
    history: TrainHistory
    warm_start: TrainedLearner | None
    loaded_from_cache: bool


def student_config(scale: ClassificationScale, settings: ImitationScale, teacher_spec: RunSpec) -> dict:
    """Everything that determines a distilled student (its cache key)."""
    warm = classification_run(scale, "icl", teacher_spec.task) if settings.warm_start else None
    return {
        "code_version": CODE_VERSION,
        "experiment": "imitation",
        "teacher": teacher_spec.config(),
        "teacher_key": teacher_spec.key,
        "student": LearnerSpec("icl", scale.icl).config(),
        "warm_start": None if warm is None else warm.key,
        "task": teacher_spec.task.config(),
        "distill": settings.distill.__dict__,
        "history": "TrainHistory",  # the stored history's format (distillation had its own type before)
    }


def student_path(scale: ClassificationScale, settings: ImitationScale, name: str) -> Path:
    """Where the ICL imitation of teacher ``name`` is stored."""
    config = student_config(scale, settings, teacher_spec(scale, name))
    return cache_root() / "imitation" / f"icl-imitates-{name}-{config_hash(config)}.pt"


def imitation_student(
    scale: ClassificationScale, settings: ImitationScale, name: str, trained_teacher: TrainedLearner, *, progress: bool
) -> Student:
    """Distil-or-load the ICL imitation of teacher ``name`` (cached in the store)."""
    spec = trained_teacher.spec
    config = student_config(scale, settings, spec)
    path = student_path(scale, settings, name)
    warm = (
        train_or_load(classification_run(scale, "icl", spec.task), progress=progress) if settings.warm_start else None
    )
    learner = build_seeded(LearnerSpec("icl", scale.icl), spec.task, settings.distill.seed)
    if warm is not None:
        learner.load_state_dict(warm.learner.state_dict())
    learner = learner.to(next(trained_teacher.learner.parameters()).device)

    def distil() -> dict:
        history = train(
            learner,
            spec.task,
            settings.distill,
            objective=Distillation(trained_teacher.learner, spec.task, settings.distill),
            progress=progress,
            description=f"ICL imitating {display_name(name)}",
        )
        return {"weights": learner.state_dict(), "history": history.to_dict(), "config": config}

    stored, loaded = cached_entry(path, distil, model_entry_validator(learner), tensors=True)
    learner.load_state_dict(stored["weights"])
    return Student(name, learner.eval(), TrainHistory(**stored["history"]), warm, loaded)


# ----------------------------------------------------------------------------------------------
# Agreement
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def agreement_rows(
    name: str,
    task: TaskFamily,
    reference: nn.Module,
    others: dict[str, nn.Module],
    n_tasks: int,
    seed: int,
) -> list[dict]:
    """Per-shot agreement and total variation of each of ``others`` with ``reference`` on the same episodes."""
    device = next(reference.parameters()).device
    scores: dict[str, list[torch.Tensor]] = {label: [] for label in others}
    distances: dict[str, list[torch.Tensor]] = {label: [] for label in others}
    for episode in test_episodes(task, n_tasks, seed, device):
        target = log_probs(reference.eval(), episode.xs, episode.ys)
        for label, other in others.items():
            predicted = log_probs(other.eval(), episode.xs, episode.ys)
            scores[label].append(agreement(target, predicted).cpu())
            distances[label].append(total_variation(target, predicted).cpu())
    rows = []
    for label in others:
        agree, tv = torch.cat(scores[label]).double(), torch.cat(distances[label]).double()  # (n_tasks, N)
        rows.append(
            {
                "teacher": display_name(name),
                "family": task.name,
                "learner": label,
                "per_position": agree.mean(0).tolist(),
                "per_position_ci": _ci(agree).tolist(),
                "tv_per_position": tv.mean(0).tolist(),
                "tv_per_position_ci": _ci(tv).tolist(),
                "mean": agree.mean().item(),
                "ci": _ci(agree.mean(1, keepdim=True))[0].item(),
                "tv_mean": tv.mean().item(),
                "tv_ci": _ci(tv.mean(1, keepdim=True))[0].item(),
                "n_tasks": n_tasks,
            }
        )
    return rows


def _ci(values: torch.Tensor) -> torch.Tensor:
    """Half-width of the 95% normal interval of the mean over the first axis. (n, K) -> (K,)"""
    n = values.shape[0]
    spread = values.std(0, unbiased=True) if n > 1 else torch.zeros(values.shape[1], dtype=values.dtype)
    return Z_95 * spread / math.sqrt(n)


IMITATION_LABEL = "ICL imitation (distilled)"
WARM_LABEL = "ICL trained on labels (before distillation)"


def imitation_table(
    scale: ClassificationScale,
    settings: ImitationScale,
    teachers: dict[str, TrainedLearner],
    students: dict[str, Student],
) -> list[dict]:
    """For each teacher, on its family: the imitation, the ICL model it started from (if warm-started)
    and every other teacher, each compared with the teacher on the same test episodes."""
    rows = []
    for name, trained in teachers.items():
        others: dict[str, nn.Module] = {IMITATION_LABEL: students[name].learner}
        if students[name].warm_start is not None:
            others[WARM_LABEL] = students[name].warm_start.learner
        for other_name, other in teachers.items():
            if other_name != name:
                others[display_name(other_name)] = other.learner
        task = classification_task(scale, TEACHERS[name])
        rows += agreement_rows(name, task, trained.learner, others, settings.n_test_tasks, settings.test_seed)
    return rows


# ----------------------------------------------------------------------------------------------
# The experiment and its verdict
# ----------------------------------------------------------------------------------------------


@dataclass
class ImitationResults:
    """Everything the chapter shows: construction checks, students, agreement rows, timings."""

    preset: str
    constructions: list[dict]
    agreements: list[dict]
    teachers: dict[str, TrainedLearner]
    students: dict[str, Student]
    seconds: float
    teacher_seconds: float

    def distill_summary(self) -> list[dict]:
        return [
            {
                "teacher": display_name(name),
                "steps run": student.history.steps[-1] if student.history.steps else 0,
                "best step": student.history.best_step,
                "stopped early": student.history.stopped_early,
                "best validation KL (nats)": min(student.history.val_loss, default=math.nan),
                "seconds": student.history.seconds,
                "loaded from cache": student.loaded_from_cache,
            }
            for name, student in self.students.items()
        ]


def run(preset: Preset, *, progress: bool = True) -> ImitationResults:
    """Train-or-load the teachers and students, check every construction, measure the imitation."""
    scale, settings = preset.classification, preset.imitation
    started = time.perf_counter()
    train_all(training_plan(preset), progress=progress, description="chapter 1 models")
    teachers = {name: teacher(scale, name, progress=progress) for name in TEACHERS}
    teacher_seconds = time.perf_counter() - started
    constructions = _cached_checks(scale, settings, teachers)
    students = {
        name: imitation_student(scale, settings, name, trained, progress=progress)
        for name, trained in tqdm(teachers.items(), desc="students", disable=not progress)
    }
    agreements = _cached_agreements(scale, settings, teachers, students)
    return ImitationResults(
        preset.name,
        constructions,
        agreements,
        teachers,
        students,
        time.perf_counter() - started,
        teacher_seconds,
    )


def _cached_checks(
    scale: ClassificationScale, settings: ImitationScale, teachers: dict[str, TrainedLearner]
) -> list[dict]:
    config = {
        "code_version": CODE_VERSION,
        "experiment": "construction_checks",
        "teachers": {name: trained.spec.key for name, trained in teachers.items()},
        "settings": asdict(settings),
        "n_points": scale.n_points,
    }
    path = cache_root() / "results" / f"construction-checks-{config_hash(config)}.json"
    return json_entry(path, lambda: construction_checks(scale, settings, teachers))


def _cached_agreements(
    scale: ClassificationScale,
    settings: ImitationScale,
    teachers: dict[str, TrainedLearner],
    students: dict[str, Student],
) -> list[dict]:
    """:func:`imitation_table`, stored under a hash of the teachers' and students' configurations."""
    config = {
        "code_version": CODE_VERSION,
        "experiment": "imitation_agreements",
        "students": {name: student_config(scale, settings, trained.spec) for name, trained in teachers.items()},
        "settings": asdict(settings),
        "n_points": scale.n_points,
    }
    path = cache_root() / "results" / f"imitation-agreements-{config_hash(config)}.json"
    return json_entry(path, lambda: imitation_table(scale, settings, teachers, students))


RULE = (
    "Reproduced if (a) every construction (MatchNet, ProtoNet, CNP on the trained teachers and on "
    f"randomised meta-learners, and the GD step) matches its meta-learner in float32 to max |difference| <= "
    f"{EXACT_RELATIVE_TOLERANCE:g} x max(1, max |output|), and (b) for every teacher the distilled ICL "
    "model's argmax agreement with it (mean over shot counts and test episodes of the teacher's family) "
    "is at least the agreement of each other meta-learner with that teacher on the same episodes. "
    "Not reproduced if (a) fails. Inconclusive if (a) holds and (b) fails: the algorithm is "
    "representable but was not learned to that precision at this preset."
)


def verdicts(results: ImitationResults) -> list[ClaimVerdict]:
    """Apply RULE (fixed before any result was seen) to ``results``."""
    exact = all(row["float32_max_rel"] <= EXACT_RELATIVE_TOLERANCE for row in results.constructions)
    imitation, reference = {}, {}
    for row in results.agreements:
        if row["learner"] == IMITATION_LABEL:
            imitation[row["teacher"]] = row["mean"]
        elif row["learner"] != WARM_LABEL:
            reference[row["teacher"]] = max(reference.get(row["teacher"], 0.0), row["mean"])
    learned = all(imitation[name] >= reference[name] for name in imitation)
    outcome = "reproduced" if exact and learned else ("not reproduced" if not exact else "inconclusive")
    worst = {}
    for row in results.constructions:
        worst[row["construction"]] = max(worst.get(row["construction"], 0.0), row["float32_max_rel"])
    return [
        ClaimVerdict(
            claim="1",
            preset=results.preset,
            quantity=(
                "max relative float32 difference of each hand-set construction from its meta-learner; argmax "
                "agreement of the distilled ICL model with each teacher vs the best other meta-learner"
            ),
            numbers={
                "construction_max_rel_float32": worst,
                "imitation_agreement": imitation,
                "best_other_meta_learner_agreement": reference,
            },
            rule=RULE,
            outcome=outcome,
            chapter=CHAPTER,
            wall_seconds=results.seconds,
        )
    ]


def explain(verdict: ClaimVerdict) -> str | None:
    """No computed explanation beyond the chapter's own evidence."""
    return None
