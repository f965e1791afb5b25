"""Benchmark: an S-seed ensemble (uni_icl.ensemble.train_ensemble) against single-model training.

At the quick preset's ICL size (transformer, N, batch size and learning rate of
``get_preset("quick").classification``, pairwise family), on the default device, it times
``train_ensemble`` on S seeds and ``train`` on one seed for the same number of steps, alternating
the two ``--repeats`` times (median shown). Each timed call is a whole run: building the models,
drawing the episodes on the CPU, the steps, and one validation of ``batch_size`` episodes at the end.

What is printed, per S:

- ``ensemble S``: ensemble steps per second (each step advances all S models);
- ``single``: steps per second of one model trained alone;
- ``ensemble/single-per-model ratio``: ensemble steps/s over single steps/s, the cost of one
  model's step over the cost of an ensemble step; 1 means S models train as fast as one;
- ``ensemble efficiency (S=…)``: E = (model-steps per second of the ensemble, S x ensemble
  steps/s) / (model-steps per second of a loop of single models, = single steps/s), i.e. how many
  times faster the ensemble trains its S models than training them one after another. E = S x
  the ratio above.

The issue's target, for a GPU: S-seed ensemble steps/s >= 0.7 x one model's steps/s, that is a
ratio >= 0.7 and E >= 0.7 S (2.1 at S = 3, 3.5 at S = 5). On a CPU nothing is promised (there the
batched step does S times the arithmetic on the same cores): measure, and use the faster choice.

Usage: python scripts/benchmark_ensemble.py [--seeds 3 5] [--steps 100] [--repeats 3] [--family pairwise]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from uni_icl.device import default_device
from uni_icl.ensemble import train_ensemble
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.presets import get_preset
from uni_icl.runs import RunSpec, build_seeded
from uni_icl.runtime import current_runtime, install_runtime, runtime_from_env
from uni_icl.training import train


def timed(run) -> float:
    """Wall seconds of ``run()``, with the GPU's queued work finished before the clock stops."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def single_run(spec: RunSpec, device: torch.device) -> None:
    train(build_seeded(spec.learner, spec.task, spec.train.seed).to(device), spec.task, spec.train, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5], help="ensemble sizes S")
    parser.add_argument("--steps", type=int, default=100, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timings of each; the median is shown")
    parser.add_argument("--family", default="pairwise", help="task family trained on")
    args = parser.parse_args()
    install_runtime(runtime_from_env())  # this script is an edge: the UNI_ICL_* variables are read here
    device = default_device()
    scale = get_preset("quick").classification
    base = classification_run(scale, "icl", classification_task(scale, args.family))
    config = dataclasses.replace(
        base.train,
        max_steps=args.steps,
        eval_every=args.steps,
        n_val_tasks=base.train.batch_size,
        patience=0,
        checkpoint_every=args.steps,
    )
    specs = [dataclasses.replace(base, train=dataclasses.replace(config, seed=seed)) for seed in range(max(args.seeds))]
    print(
        f"device {device}; {current_runtime().threads} torch thread(s) (the package's thread policy); "
        f"ICL {scale.icl}, N = {scale.n_points}, batch {config.batch_size}, {args.steps} steps per timed run"
    )
    warmup = dataclasses.replace(specs[0], train=dataclasses.replace(config, max_steps=2, eval_every=2))
    single_run(warmup, device)
    train_ensemble([warmup, warmup], device=device)
    efficiencies = {}
    for n_seeds in args.seeds:
        members = specs[:n_seeds]
        single_seconds, ensemble_seconds = [], []
        for _ in range(args.repeats):
            single_seconds.append(timed(lambda members=members: single_run(members[0], device)))
            ensemble_seconds.append(timed(lambda members=members: train_ensemble(members, device=device)))
        single = args.steps / statistics.median(single_seconds)
        ensemble = args.steps / statistics.median(ensemble_seconds)
        efficiencies[n_seeds] = n_seeds * ensemble / single
        print(
            f"ensemble S={n_seeds}: {ensemble:.2f} steps/s, single: {single:.2f} steps/s, "
            f"ensemble/single-per-model ratio {ensemble / single:.3f} (GPU target >= 0.7)"
        )
    for n_seeds, efficiency in efficiencies.items():
        print(f"ensemble efficiency (S={n_seeds}): {efficiency:.2f} (GPU target >= 0.7 S = {0.7 * n_seeds:.1f})")


if __name__ == "__main__":
    main()
