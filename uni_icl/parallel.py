"""Train a chapter's whole grid at once, on worker processes: every core busy, no thread thrash.

A chapter lists what it trains as :class:`Job` s (:func:`run_job` for a plain train-or-load
:class:`~uni_icl.runs.RunSpec`; the distillations, curricula and meta-training of other chapters
wrap their own train-or-load function). :func:`train_all` skips the jobs whose entry is stored (in
the cache or shipped), and runs the rest on ``workers`` processes (the runtime's ``workers``,
``UNI_ICL_WORKERS``, default one per CPU core the process may use), each on one torch thread
(:mod:`uni_icl.device`'s policy) and given the parent's runtime (:mod:`uni_icl.runtime`), longest
jobs first.
Jobs of a later ``stage`` start when every job of the earlier stages has finished (students after
their teachers). Afterwards the chapter's code calls the same train-or-load functions and loads
what the workers stored.

Every job is deterministic given its configuration (its own seeded generators, one thread), so the
stored models, and every number computed from them, are the same with 1 and with N workers. A
killed run keeps each unfinished job's last checkpoint, and the next call resumes it. With one
worker, or one job to do, everything runs in this process: no process is started. On CUDA the
seeds of one model train as one batched ensemble (:mod:`uni_icl.ensemble`) by default.

On a cluster the same grid runs on Dask instead of the process pool (an ``executor``, or the
runtime's ``scheduler``: :mod:`uni_icl.cluster`), in the same order, into the same store.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from uni_icl.device import default_device, policy_threads
from uni_icl.learners import kind_of
from uni_icl.runs import (
    RunSpec,
    build_seeded,
    checkpoint_path,
    model_entry_validator,
    model_path,
    rung_milestones,
    train_or_load,
)
from uni_icl.runtime import Runtime, current_runtime, install_runtime
from uni_icl.storage import MissingEntryError, cached_entry, is_offline, is_stored

if TYPE_CHECKING:  # imported only where a scheduler is used (uni_icl.cluster)
    from distributed import Client


@dataclass(frozen=True)
class Job:
    """One train-or-load to run: ``run()`` stores its entry at ``path`` (a stored path is skipped).

    ``run`` must be picklable (a module-level function, or a ``functools.partial`` of one) and
    should not show a progress bar of its own. ``cost`` orders the jobs, biggest first, so the
    longest ones do not start last; ``stage`` orders dependencies (see the module docstring).
    """

    label: str
    path: Path
    run: Callable[[], object]
    cost: float = 1.0
    stage: int = 0
    spec: RunSpec | None = None  # set for a plain train-or-load, so seeds can be batched (ensembles)
    root: Path | None = None
    rungs: tuple[int, ...] = ()  # shorter budgets stored on the way (runs.train_or_load)


def run_job(spec: RunSpec, *, root: Path | None = None, stage: int = 0, rungs: tuple[int, ...] = ()) -> Job:
    """The :class:`Job` that trains ``spec`` with :func:`~uni_icl.runs.train_or_load` (storing ``rungs``)."""
    work = functools.partial(_train_quietly, spec, root, rungs)
    return Job(spec.label, model_path(spec, root), work, training_cost(spec), stage, spec, root, rungs)


def one_job_per_entry(jobs: list[Job]) -> list[Job]:
    """One job per stored path (chapters share models); of jobs for the same path, the one that stores
    the most budget rungs on the way."""
    chosen: dict[Path, Job] = {}
    for job in jobs:
        if job.path not in chosen or len(job.rungs) > len(chosen[job.path].rungs):
            chosen[job.path] = job
    return list(chosen.values())


def training_cost(spec: RunSpec) -> float:
    """A :class:`Job`'s ``cost`` for training ``spec``: steps x batch, four times that for a transformer."""
    return spec.train.max_steps * spec.train.batch_size * (4.0 if kind_of(spec.learner.name) == "in-context" else 1.0)


def _train_quietly(spec: RunSpec, root: Path | None, rungs: tuple[int, ...] = ()) -> None:
    train_or_load(spec, root=root, progress=False, rungs=rungs)


def seed_ensembles(jobs: list[Job]) -> list[Job]:
    """Merge the plain train-or-load jobs that differ only in their seed into one ensemble job each
    (:func:`uni_icl.ensemble.train_ensemble`); other jobs are kept as they are."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        if job.spec is None or job.spec.schedule is not None:
            groups[(id(job),)] = [job]
            continue
        unseeded = replace(job.spec, train=replace(job.spec.train, seed=0))
        groups.setdefault((unseeded.key, job.stage, job.root, job.rungs), []).append(job)
    merged = []
    for members in groups.values():
        if len(members) == 1:
            merged += members
            continue
        specs = [job.spec for job in members]
        label = f"{members[0].spec.label}, {len(specs)} seeds as one ensemble"
        work = functools.partial(_train_ensemble, specs, members[0].root, members[0].rungs)
        merged.append(Job(label, members[0].path, work, sum(job.cost for job in members), members[0].stage))
    return merged


def _train_ensemble(specs: list[RunSpec], root: Path | None, rungs: tuple[int, ...] = ()) -> None:
    """Train ``specs`` as one ensemble, checkpointed where train_or_load checkpoints each, and store each
    member (and its ``rungs``) where train_or_load finds it."""
    from uni_icl.ensemble import train_ensemble

    checkpoints = [checkpoint_path(spec, root) for spec in specs]
    shape = build_seeded(specs[0].learner, specs[0].task, 0)  # validates every member's entries
    milestones = [rung_milestones(spec, rungs, shape, root) for spec in specs]
    trained = train_ensemble(specs, checkpoint_paths=checkpoints, milestones=milestones)
    for spec, (learner, history) in zip(specs, trained, strict=True):
        entry = {"weights": learner.state_dict(), "history": history.to_dict(), "config": spec.config()}
        cached_entry(model_path(spec, root), lambda entry=entry: entry, model_entry_validator(learner), tensors=True)


def check_cluster(runtime: Runtime) -> None:
    """Raise a ValueError (one line) unless the runtime's scheduler, if any, can be used: ``distributed``
    installed, and a scheduler answering at its address (:mod:`uni_icl.cluster`). The commands and the
    book build call it before any work starts."""
    if runtime.scheduler is None:
        return
    if importlib.util.find_spec("distributed") is None:
        raise ValueError(
            "scheduler: Dask is not installed; allowed: install it (pip install distributed), or no scheduler"
        )
    from uni_icl.cluster import check_scheduler

    check_scheduler(runtime.scheduler)


def train_all(
    jobs: Iterable[Job],
    *,
    workers: int | None = None,
    ensembles: bool | None = None,
    progress: bool = True,
    description: str = "training",
    executor: Client | None = None,
) -> list[str]:
    """Run every job whose entry is not stored, on ``workers`` processes; returns the labels it ran.

    ``workers`` defaults to the runtime's. ``ensembles`` (default: on CUDA only) trains the seeds of a
    model as one batched ensemble (:func:`seed_ensembles`); on the 2-core CPU a loop of single models
    was faster (``scripts/benchmark_ensemble.py``). One progress bar counts finished jobs for the
    whole grid. An error in a job (e.g. a NonFiniteError) stops the other workers and is raised here;
    finished jobs stay stored, unfinished ones keep their checkpoints.

    ``executor``: a Dask ``distributed.Client`` runs the jobs on its cluster's workers instead
    (:mod:`uni_icl.cluster`; ``workers`` is then the cluster's, and ``ensembles`` defaults to whether
    the workers have GPUs); left out, the runtime's ``scheduler`` is used if it names one, else the
    process pool.
    """
    plan = list(jobs)
    pending = one_job_per_entry([job for job in plan if not is_stored(job.path)])
    if pending and is_offline():
        raise MissingEntryError(pending[0].path)
    if not pending:
        return []
    runtime = current_runtime()
    if executor is None and runtime.scheduler is None:
        workers = runtime.workers if workers is None else workers
        ensembles = default_device().type == "cuda" if ensembles is None else ensembles
        run_stage = functools.partial(_run_batch, workers=workers)
        return _train_grid(pending, ensembles, run_stage, progress, description)
    from uni_icl.cluster import dask_grid

    with dask_grid(executor or runtime.scheduler, plan) as grid:
        ensembles = grid.gpus if ensembles is None else ensembles
        return _train_grid(pending, ensembles, grid.run_stage, progress, description)


def _train_grid(
    pending: list[Job],
    ensembles: bool,
    run_stage: Callable[[list[Job]], Iterable[str]],
    progress: bool,
    description: str,
) -> list[str]:
    """Run ``pending`` stage by stage, longest first, through ``run_stage``, with one progress bar."""
    todo = sorted(seed_ensembles(pending) if ensembles else pending, key=lambda job: (job.stage, -job.cost))
    bar = tqdm(total=len(todo), desc=description, unit="model", disable=not progress)
    try:
        for stage in sorted({job.stage for job in todo}):
            for label in run_stage([job for job in todo if job.stage == stage]):
                bar.update(1)
                bar.set_postfix_str(label)
    finally:
        bar.close()
    return [job.label for job in todo]


def _run_batch(jobs: list[Job], *, workers: int) -> Iterable[str]:
    """Run ``jobs`` (no dependencies among them) on at most ``workers`` processes, yielding each label as it
    finishes."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        for job in jobs:
            with policy_threads():
                job.run()
            yield job.label
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
    runtime = replace(current_runtime(), threads=1)  # a worker owns one core
    pool = context.Pool(workers, initializer=_start_worker, initargs=(runtime,))
    try:
        yield from pool.imap_unordered(_run_in_worker, jobs, chunksize=1)
    except BaseException:
        pool.terminate()  # on an error or an interrupt: stop the others (checkpoints stay)
        pool.join()
        raise
    pool.close()
    pool.join()


def _start_worker(runtime: Runtime) -> None:
    """Install the parent's ``runtime`` (a spawned worker starts without one), whose thread count is one:
    a worker owns one core, whatever ``UNI_ICL_THREADS`` says for a single process.

    It ignores Ctrl-C (the parent, which gets it too, stops the pool) and dies on SIGTERM (what
    ``pool.terminate`` sends), keeping its last periodic checkpoint, as after kill -9: a worker's
    training never defers these signals (:func:`~uni_icl.training.deferred_interrupt`).
    """
    install_runtime(runtime)
    torch.set_num_threads(runtime.threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_in_worker(job: Job) -> str:
    with policy_threads():
        job.run()
    return job.label
