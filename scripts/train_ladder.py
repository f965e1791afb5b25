"""Train chapter 2's budget ladder in priority order, resumably (each model stored as it finishes).

The decisive models first: ICL and the three meta-learners on each single family (claim 2-single),
then on the mixture (claim 2-mixed), then the authors' 2-2-2 meta-learner shapes on both; then,
with ``--book``, every other model the book trains. Each group goes through the parallel trainer
(``--workers`` processes of one torch thread), which skips what is stored (in the cache or in the
shipped results), so running it again resumes where a stopped run left off.

    UNI_ICL_PRESET=quick python scripts/train_ladder.py --workers 2 [--book]
"""

from __future__ import annotations

import argparse
import time

from uni_icl.experiments.common import MIXED_FAMILY, SINGLE_FAMILIES, classification_job
from uni_icl.experiments.learnability import LEARNERS, authors_shape_scale
from uni_icl.learners import META_LEARNERS
from uni_icl.parallel import train_all
from uni_icl.presets import preset_from_env
from uni_icl.runtime import install_runtime, runtime_from_env
from uni_icl.scorecard import BOOK_CHAPTERS


def groups(preset, book: bool, chapters: tuple[str, ...] = ()) -> list[tuple[str, list]]:
    scale = preset.classification
    authors = authors_shape_scale(scale)
    out = []
    for name, families in (("single families", SINGLE_FAMILIES), ("mixture", (MIXED_FAMILY,))):
        out.append(
            (
                f"chapter 2 ladder, {name}",
                [
                    classification_job(scale, learner, family, seed)
                    for seed in scale.seeds
                    for family in families
                    for learner in LEARNERS
                ],
            )
        )
    out.append(
        (
            "chapter 2 ladder, authors' meta-learner shapes",
            [
                classification_job(authors, learner, family, seed)
                for seed in scale.seeds
                for family in (*SINGLE_FAMILIES, MIXED_FAMILY)
                for learner in META_LEARNERS
            ],
        )
    )
    if book:
        chosen = [chapter for chapter in BOOK_CHAPTERS if not chapters or chapter.__name__.split(".")[-1] in chapters]
        rest = [job for chapter in chosen for job in chapter.training_plan(preset)]
        out.append(("the rest of the book", rest))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--book", action="store_true", help="then train every other model of the book")
    names = [chapter.__name__.split(".")[-1] for chapter in BOOK_CHAPTERS]
    parser.add_argument("--chapters", nargs="+", choices=names, default=(), help="with --book: only these chapters")
    args = parser.parse_args()
    install_runtime(runtime_from_env())  # this script is an edge: the UNI_ICL_* variables are read here
    preset = preset_from_env()
    for label, jobs in groups(preset, args.book, tuple(args.chapters)):
        started = time.perf_counter()
        train_all(jobs, workers=args.workers, progress=False, description=label)
        print(f"{label}: {len(jobs)} models stored, {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
