"""Benchmark: a chapter's grid trained one model after another vs on the parallel trainer's workers.

Trains the quick preset's chapter-2 grid (every learner on every training family, cut to
``--steps`` steps each, into throw-away caches) three ways, measured side by side in one run:

- sequential, one process, ``--threads`` torch threads (what a plain PyTorch setup does),
- sequential, one process, one torch thread (the package's thread policy alone),
- :func:`uni_icl.parallel.train_all` with ``--workers`` processes of one thread each,

first on the idle machine, then beside one busy process that this script starts and stops itself
(a spinning Python loop, as a browser or another job would be). It prints models per minute, the
ratios, and how much of its idle speed each way keeps when a core is taken. It starts with the
engine line: the same grid through the process pool, through Dask as ``--scheduler local`` runs it
(a ``LocalCluster`` of ``--workers`` single-thread processes started for the grid, on the clock) and
through a ``LocalCluster`` already running (:mod:`uni_icl.cluster`), twice in alternation, models
per minute side by side. The last line reads ``parallel speed-up: R.Rx``: parallel vs the faster
sequential way, idle machine.

    python scripts/benchmark_training.py            # about 14 minutes on 2 cores (measured)
    python scripts/benchmark_training.py --steps 50 # a quicker look
    python scripts/benchmark_training.py --engine   # only the engine line: process pool vs Dask
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.experiments.learnability import LEARNERS, TRAIN_FAMILIES
from uni_icl.parallel import run_job, train_all
from uni_icl.presets import get_preset
from uni_icl.runtime import current_runtime, install_runtime, runtime_from_env, use_runtime


def grid_jobs(steps: int, root: Path) -> list:
    scale = get_preset("quick").classification
    jobs = []
    for family in TRAIN_FAMILIES:
        for learner in LEARNERS:
            spec = classification_run(scale, learner, classification_task(scale, family))
            train = replace(spec.train, max_steps=steps, eval_every=max(steps // 2, 1), patience=0, n_val_tasks=256)
            jobs.append(run_job(replace(spec, train=train), root=root))
    return jobs


def models_per_minute(steps: int, *, workers: int, threads: int, executor=None, scheduler=None) -> float:
    """Train the grid into a fresh cache with ``workers`` processes (1: in this process) of ``threads``, or
    on ``executor`` (a Dask client), or on the runtime's ``scheduler`` (``local``: a LocalCluster it starts)."""
    runtime = replace(current_runtime(), threads=threads, workers=workers, scheduler=scheduler)
    with tempfile.TemporaryDirectory() as folder, use_runtime(replace(runtime, cache=Path(folder) / "cache")):
        jobs = grid_jobs(steps, Path(folder))
        started = time.perf_counter()
        train_all(jobs, workers=workers, progress=False, executor=executor)
        return len(jobs) / (time.perf_counter() - started) * 60


def measure_engine(steps: int, workers: int, rounds: int = 2) -> None:
    """The grid through the process pool, through ``--scheduler local`` (a LocalCluster of ``workers``
    processes started for the grid, its start timed), and through a LocalCluster already running, in turn."""
    from distributed import Client, LocalCluster

    options = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    with LocalCluster(**options) as cluster, Client(cluster) as client:
        ways = {
            "process pool": {},
            "Dask, --scheduler local": {"scheduler": "local"},
            "Dask, a running cluster": {"executor": client},
        }
        speeds: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, way in ways.items():
                speeds[name].append(models_per_minute(steps, workers=workers, threads=1, **way))
    for name, values in speeds.items():
        print(f"  {name:<26} {' '.join(f'{value:6.1f}' for value in values)} models/min", flush=True)
    pool, local, running = (sum(values) / rounds for values in speeds.values())
    print(
        f"engine, {workers} workers, models/min: process pool {pool:.1f}, Dask --scheduler local {local:.1f} "
        f"({local / pool:.2f}x), Dask on a running LocalCluster {running:.1f} ({running / pool:.2f}x)"
    )


def measure(steps: int, workers: int, threads: int) -> dict[str, float]:
    ways = {
        f"sequential, {threads} threads": (1, threads),
        "sequential, 1 thread": (1, 1),
        f"parallel, {workers} workers": (workers, 1),
    }
    speeds = {}
    for name, (n_workers, n_threads) in ways.items():
        speeds[name] = models_per_minute(steps, workers=n_workers, threads=n_threads)
        print(f"  {name:<26} {speeds[name]:6.1f} models/min", flush=True)
    return speeds


def main() -> None:
    install_runtime(runtime_from_env())  # this script is an edge: the UNI_ICL_* variables are read here
    cores = current_runtime().workers
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps per model (default 500)")
    parser.add_argument("--workers", type=int, default=cores, help="parallel workers (default: cores)")
    parser.add_argument("--threads", type=int, default=cores, help="threads of the plain sequential way")
    parser.add_argument("--engine", action="store_true", help="only the process pool vs a Dask LocalCluster")
    args = parser.parse_args()
    print(f"chapter-2 grid at quick size, {args.steps} steps per model, {os.cpu_count()} cores", flush=True)
    print("the engine:")
    measure_engine(args.steps, args.workers)
    if args.engine:
        return
    print("idle machine:")
    idle = measure(args.steps, args.workers, args.threads)
    busy_process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        print("one busy process beside it:")
        busy = measure(args.steps, args.workers, args.threads)
    finally:
        busy_process.kill()
        busy_process.wait()
    names = list(idle)
    for name in names:
        print(f"{name}: keeps {busy[name] / idle[name]:.0%} of its idle speed with a busy process")
    parallel, sequential = names[2], max(names[:2], key=idle.get)
    print(f"with a busy process: parallel / ({sequential}) = {busy[parallel] / busy[sequential]:.1f}x")
    print(f"parallel speed-up: {idle[parallel] / idle[sequential]:.1f}x")


if __name__ == "__main__":
    main()
