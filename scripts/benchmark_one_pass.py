"""Benchmark: one-pass ICL training against the authors' per-prefix layout, side by side.

Trains the same in-context transformer (same weights, same episodes) for a few Adam steps with
``forward`` (all N positions in one pass) and with ``forward_per_prefix`` (one pass per prefix,
as the authors' scripts do), and prints steps per second of each and their ratio at each N.
The two paths compute the same outputs (tests/test_learners.py checks it), so the ratio is the
speed-up at equal work. Target: >= 20x at N = 50 on a 2-core CPU, growing with N.

Usage: python scripts/benchmark_one_pass.py [--points 50 100 200] [--batch 64] [--min-seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from uni_icl.learners.icl import ICLConfig, ICLTransformer
from uni_icl.presets import PRESETS
from uni_icl.tasks import make_task


def steps_per_second(model: ICLTransformer, path: str, episodes: list, min_seconds: float, warmup: int = 1) -> float:
    """Adam steps per second with ``path`` ('one_pass' or 'per_prefix').

    Cycles through ``episodes`` (batches) until at least ``min_seconds`` and one full cycle have
    passed, so a fast path is timed over many steps rather than a few milliseconds.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = model.forward if path == "one_pass" else model.forward_per_prefix

    def step(episode) -> None:
        logits = forward(episode.xs, episode.ys)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), episode.ys.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for episode in episodes[:warmup]:
        step(episode)
    started = time.perf_counter()
    n_steps = 0
    while n_steps < len(episodes) or time.perf_counter() - started < min_seconds:
        step(episodes[n_steps % len(episodes)])
        n_steps += 1
    return n_steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[50, 100, 200], help="episode lengths N")
    parser.add_argument("--batch", type=int, default=64, help="episodes per step")
    parser.add_argument("--steps", type=int, default=5, help="distinct batches per path (cycled while timing)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="least time spent timing each path")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timings per path; the median is shown")
    args = parser.parse_args()
    config = ICLConfig(**PRESETS["quick"].classification.icl)
    print(f"model: ICLTransformer {config}; batch {args.batch}; torch threads {torch.get_num_threads()}")
    print(f"{'N':>5} {'one-pass steps/s':>17} {'per-prefix steps/s':>19} {'ratio':>7}")
    for n_points in args.points:
        episodes = make_task("mixture", n_points=n_points).sample(args.batch * (args.steps + 1), seed=0)
        batches = [
            type(episodes)(episodes.xs[i : i + args.batch], episodes.ys[i : i + args.batch], episodes.family)
            for i in range(0, args.batch * (args.steps + 1), args.batch)
        ]
        timings: dict[str, list[float]] = {"one_pass": [], "per_prefix": []}
        for _ in range(args.repeats):
            for path in timings:
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    model = ICLTransformer(2, 2, config)
                timings[path].append(steps_per_second(model, path, batches, args.min_seconds))
        rates = {path: statistics.median(values) for path, values in timings.items()}
        ratio = rates["one_pass"] / rates["per_prefix"]
        print(f"{n_points:>5} {rates['one_pass']:>17.2f} {rates['per_prefix']:>19.3f} {ratio:>6.1f}x")


if __name__ == "__main__":
    main()
