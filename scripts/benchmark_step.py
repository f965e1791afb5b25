"""Benchmark: one training step of the quick ICL transformer, eager against ``torch.compile``.

Measured side by side in one run, one torch thread, on the same batches: steps per second of
:func:`uni_icl.training.training_step` for the eager model and for the model compiled with
inductor (the compile time reported apart), and the largest difference between their losses over
the timed steps (the two must agree within float tolerance to count). The profile of the eager step
says where the time goes. The package adopts a way only if it wins by at least 1.3x.

    python scripts/benchmark_step.py --steps 200    # about 3 minutes on one core (measured)
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.presets import get_preset
from uni_icl.runs import build_seeded
from uni_icl.training import EpisodeObjective, training_step


def timed_steps(compiled: bool, steps: int) -> tuple[float, float, list[float]]:
    """(seconds per step, seconds of warm-up including compilation, losses) of ``steps`` steps."""
    scale = get_preset("quick").classification
    spec = classification_run(scale, "icl", classification_task(scale, "pairwise"))
    learner = build_seeded(spec.learner, spec.task, 0)
    model = torch.compile(learner) if compiled else learner
    objective = EpisodeObjective(spec.task, spec.train)
    optimizer = torch.optim.Adam(learner.parameters(), lr=spec.train.lr)
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for step in range(5):
        training_step(model, objective, optimizer, spec.train, step, gen)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    losses = [float(training_step(model, objective, optimizer, spec.train, 5 + s, gen)) for s in range(steps)]
    return (time.perf_counter() - started) / steps, warm, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    eager, _, eager_losses = timed_steps(False, args.steps)
    compiled, warm, compiled_losses = timed_steps(True, args.steps)
    gap = max(abs(a - b) for a, b in zip(eager_losses, compiled_losses, strict=True))
    print(f"eager:    {1 / eager:6.1f} steps/s ({eager * 1e3:.1f} ms a step)")
    print(f"compiled: {1 / compiled:6.1f} steps/s ({compiled * 1e3:.1f} ms a step; {warm:.0f} s to compile)")
    print(f"largest loss difference over {args.steps} steps: {gap:.2e}")
    scale = get_preset("quick").classification
    spec = classification_run(scale, "icl", classification_task(scale, "pairwise"))
    learner = build_seeded(spec.learner, spec.task, 0)
    objective = EpisodeObjective(spec.task, spec.train)
    optimizer = torch.optim.Adam(learner.parameters(), lr=spec.train.lr)
    gen = torch.Generator().manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in range(20):
            training_step(learner, objective, optimizer, spec.train, step, gen)
    totals = {}
    for event in prof.key_averages():
        totals[event.key] = event.self_cpu_time_total
    everything = sum(totals.values())
    matmuls = sum(totals.get(name, 0) for name in ("aten::mm", "aten::bmm", "aten::addmm"))
    print(f"eager profile: matrix products take {matmuls / everything:.0%} of the step's CPU time")
    print(f"compiled vs eager: {eager / compiled:.2f}x (adopted only at 1.3x or more)")


if __name__ == "__main__":
    main()
