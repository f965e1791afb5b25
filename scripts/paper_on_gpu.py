"""The learnability chapter (claims 2-single and 2-mixed) at the paper preset on a lent GPU, in a fixed budget.

A lent GPU comes with minutes, not hours, so this script trains the chapter's models (every learner
on every single-type family and on the mixture, plus the authors' ICLer) in parallel processes that
share the GPU, each stopped by a training time limit (``TrainConfig.time_limit_s``) if its early
stopping has not ended it first, and scores the Bayes predictors alongside. Then it runs
``reproduce`` for the two claims (everything loads from the cache) and writes to OUTPUT:

- ``scorecard-paper.json``: the scorecard, as ``python -m uni_icl reproduce --output`` writes it;
- ``learnability-<table>.csv``: the chapter's tables (accuracies, training, Bayes gaps, ...);
- ``device.json``: the GPU, torch, the time limit, the wall time and how each model's training ended.

The time limit is the one deviation from the paper preset; ``device.json`` states it and the book
shows it beside the results. Usage (on the GPU machine, from the repository root):

    PYTHONPATH=. python scripts/paper_on_gpu.py OUTPUT [--train-seconds 180] [--preset paper]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from uni_icl import presets, scorecard
from uni_icl.book import learnability_page
from uni_icl.device import default_device
from uni_icl.experiments import learnability
from uni_icl.runtime import Runtime, current_runtime, install_runtime, runtime_from_env
from uni_icl.storage import atomic_json_export

CLAIMS = ("2-single", "2-mixed")


def time_limited(name: str, seconds: float) -> presets.Preset:
    """The preset ``name`` whose classification training configs stop after ``seconds`` of training."""
    preset = presets.get_preset(name)
    scale = preset.classification
    limited = dataclasses.replace(
        scale,
        icl_train=dataclasses.replace(scale.icl_train, time_limit_s=seconds),
        meta_train=dataclasses.replace(scale.meta_train, time_limit_s=seconds),
    )
    return dataclasses.replace(preset, classification=limited)


def one_thread(runtime: Runtime) -> None:
    """Worker initialiser: the parent's runtime, one torch thread per process (the processes share the GPU)."""
    install_runtime(dataclasses.replace(runtime, threads=1))
    torch.set_num_threads(1)


def jobs(preset: presets.Preset) -> list[tuple[str, str]]:
    """(kind, name) pairs: ('bayes', family) and ('learner', 'learner/family'), longest first."""
    extras = preset.learnability
    bayes = [("bayes", family) for family in learnability.SINGLE_FAMILIES]
    families = (*learnability.SINGLE_FAMILIES, learnability.MIXED_FAMILY)
    models = [("learner", f"{learner}/{family}") for learner in learnability.LEARNERS for family in families]
    models += [("learner", f"icl_authors/{family}") for family in extras.authors_families]
    return bayes + models


def run_job(preset: presets.Preset, job: tuple[str, str]) -> dict:
    """Train-or-load and evaluate one model (or score one Bayes predictor); a summary of what happened."""
    kind, name = job
    started = time.perf_counter()
    scale = preset.classification
    if kind == "bayes":
        extras = preset.learnability
        learnability.bayes_rows(scale, (name,), n_samples=extras.bayes_samples, bayes_seed=extras.bayes_seed)
        summary = {}
    else:
        learner, family = name.split("/")
        rows = learnability.cross_table(scale, (learner,), (family,), learnability.SINGLE_FAMILIES, progress=False)
        row = rows[0]
        summary = {
            key: row[key]
            for key in ("train_steps", "train_seconds", "best_step", "stopped_early", "stopped_by_time", "levelled_off")
        }
    summary.update(kind=kind, name=name, seconds=round(time.perf_counter() - started, 1))
    print(f"[{time.strftime('%H:%M:%S')}] done {kind} {name}: {summary}", flush=True)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="folder for the scorecard, tables and device.json")
    parser.add_argument("--train-seconds", type=float, default=180.0, help="training time limit of each model")
    parser.add_argument(
        "--preset", default="paper", choices=presets.PRESET_NAMES, help="scale (smoke: a local dry run)"
    )
    args = parser.parse_args()
    install_runtime(runtime_from_env())  # this script is an edge: the UNI_ICL_* variables are read here
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    device = default_device()
    about = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor()})",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "preset": args.preset,
        "train_time_limit_s": args.train_seconds,
        "note": (
            f"preset `{args.preset}` with one deviation: each model's training was limited to "
            f"{args.train_seconds:.0f} s of wall time (all models trained at once, sharing the GPU); "
            "models whose early stopping had not ended training by then were stopped there"
        ),
    }
    preset = time_limited(args.preset, args.train_seconds)
    todo = jobs(preset)
    print(f"{about['device']}: {len(todo)} jobs in parallel, training limit {args.train_seconds:.0f} s", flush=True)
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(todo), initializer=one_thread, initargs=(current_runtime(),)) as pool:
        summaries = pool.starmap(run_job, [(preset, job) for job in todo])
    torch.set_num_threads(8)
    card = scorecard.reproduce(preset, CLAIMS, progress=False)
    atomic_json_export(card.to_dict(), args.output / f"scorecard-{args.preset}.json")
    results = learnability.run(preset, progress=False)
    for name, table in learnability_page.tables(results).items():
        named_index = not isinstance(table.index, pd.RangeIndex)  # e.g. the summary's family column
        table.to_csv(args.output / f"learnability-{name}.csv", index=named_index)
    about.update(wall_seconds=round(time.perf_counter() - started, 1), jobs=summaries)
    atomic_json_export(about, args.output / "device.json")
    print(scorecard.format_table(card), flush=True)
    print(f"wall time {about['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
