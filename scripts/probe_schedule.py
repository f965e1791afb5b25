"""Probe: can a learning-rate schedule sized to the budget replace constant-lr training with early stopping?

Trains the quick preset's ICL transformer (seed 0) on a few families two ways, in one run:

- the preset's recipe: constant learning rate, early stopping on the validation set;
- ``warmup_cosine`` at budgets of 1000, 2000 and 4000 steps (no early stopping), the same peak lr;

and prints, per family, each model's steps, test accuracy (the chapter's 1024 test episodes) and
training time, and the paired difference between consecutive budgets (the "doubling the budget
changes the score by less than the tolerance" convergence test). Models go to a throw-away cache.

    python scripts/probe_schedule.py                       # amortized and mixture, ~10 min on 2 cores
    python scripts/probe_schedule.py --families pairwise
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

from uni_icl.evaluation import paired_difference
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.parallel import run_job, train_all
from uni_icl.presets import get_preset
from uni_icl.runs import evaluate_or_load, train_or_load
from uni_icl.runtime import install_runtime, runtime_from_env

BUDGETS = (1000, 2000, 4000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["amortized", "mixture"])
    args = parser.parse_args()
    install_runtime(runtime_from_env())  # this script is an edge: the UNI_ICL_* variables are read here
    scale = get_preset("quick").classification
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        specs = {}
        for family in args.families:
            preset_spec = classification_run(scale, "icl", classification_task(scale, family))
            specs[(family, "preset")] = preset_spec
            for budget in BUDGETS:
                train = replace(
                    preset_spec.train, max_steps=budget, patience=0, stop_tolerance=0.0, lr_schedule="warmup_cosine"
                )
                specs[(family, budget)] = replace(preset_spec, train=train)
        train_all([run_job(spec, root=root) for spec in specs.values()], progress=False)
        for family in args.families:
            print(f"{family}:")
            results = {}
            for name in ("preset", *BUDGETS):
                model = train_or_load(specs[(family, name)], root=root, progress=False)
                task = classification_task(scale, family)
                result = evaluate_or_load(model, task, n_tasks=scale.n_test_tasks, seed=scale.test_seed, root=root)
                results[name] = result
                label = "constant lr, early stopping" if name == "preset" else f"warmup_cosine, {name} steps"
                print(
                    f"  {label:<28} steps {model.history.steps[-1]:>5}  test accuracy"
                    f" {result.mean:.4f} +- {result.mean_ci:.4f}  ({model.history.seconds:.0f} s)"
                )
            for low, high in zip(BUDGETS, BUDGETS[1:], strict=False):
                diff = paired_difference(results[high].per_episode_mean, results[low].per_episode_mean)
                print(f"  {high} - {low} steps: {diff.mean:+.4f} +- {diff.ci:.4f}")
            diff = paired_difference(results[BUDGETS[-1]].per_episode_mean, results["preset"].per_episode_mean)
            print(f"  {BUDGETS[-1]} cosine - preset recipe: {diff.mean:+.4f} +- {diff.ci:.4f}")


if __name__ == "__main__":
    main()
