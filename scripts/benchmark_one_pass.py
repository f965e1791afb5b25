"""Benchmark: one-pass ICL training against the authors' per-prefix layout, side by side.

Trains the same in-context transformer (same weights, same episodes) for a few Adam steps with
``forward`` (all N positions in one pass) and with ``forward_per_prefix`` (one pass per prefix,
as the authors' scripts do), and prints steps per second of each and their ratio at each N.
The two paths compute the same outputs (tests/test_learners.py checks it), so the ratio is the
speed-up at equal work. Target: >= 20x at N = 50 on a 2-core CPU, growing with N.

Usage: python scripts/benchmark_one_pass.py [--points 50 100 200] [--batch 64] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from uni_icl.icl import ICLConfig, ICLTransformer
from uni_icl.presets import classification_scale
from uni_icl.tasks import make_task


def steps_per_second(model: ICLTransformer, path: str, episodes: list, warmup: int = 1) -> float:
    """Adam steps per second with ``path`` ('one_pass' or 'per_prefix') on the given episodes."""
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
    for episode in episodes[warmup:]:
        step(episode)
    return (len(episodes) - warmup) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[50, 100, 200], help="episode lengths N")
    parser.add_argument("--batch", type=int, default=64, help="episodes per step")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path (plus one warm-up)")
    args = parser.parse_args()
    config = ICLConfig(**classification_scale("quick").icl)
    print(f"model: ICLTransformer {config}; batch {args.batch}; torch threads {torch.get_num_threads()}")
    print(f"{'N':>5} {'one-pass steps/s':>17} {'per-prefix steps/s':>19} {'ratio':>7}")
    for n_points in args.points:
        episodes = make_task("mixture", n_points=n_points).sample(args.batch * (args.steps + 1), seed=0)
        batches = [
            type(episodes)(episodes.xs[i : i + args.batch], episodes.ys[i : i + args.batch], episodes.family)
            for i in range(0, args.batch * (args.steps + 1), args.batch)
        ]
        rates = {}
        for path in ("one_pass", "per_prefix"):
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = ICLTransformer(2, 2, config)
            rates[path] = steps_per_second(model, path, batches)
        ratio = rates["one_pass"] / rates["per_prefix"]
        print(f"{n_points:>5} {rates['one_pass']:>17.2f} {rates['per_prefix']:>19.3f} {ratio:>6.1f}x")


if __name__ == "__main__":
    main()
