"""Chapter 7's findings, caveats and closing table in words, computed from its result table
(presentation of :mod:`uni_icl.experiments.digits`, which decides no claim)."""

from __future__ import annotations

import math

from uni_icl.experiments.digits import (
    FIT_MARGIN,
    LEARNERS,
    SEEN,
    SOURCE_LABELS,
    UNSEEN,
    find_row,
    fit_failures,
    paired_difference,
)
from uni_icl.learners import display_name
from uni_icl.presets import get_preset
from uni_icl.validation import check_int


def _compare(difference: tuple[float, float]) -> str:
    """'higher by d +- ci', 'lower by ...' or 'indistinguishable (...)' from a paired difference."""
    value, ci = difference
    if abs(value) <= ci:
        return f"indistinguishable (difference {value:+.3f} +- {ci:.3f}, the 95% interval contains 0)"
    return f"{'higher' if value > 0 else 'lower'} by {abs(value):.3f} +- {ci:.3f}"


def fit_note(results: dict, n_classes: int | None = None) -> str:
    """Markdown naming the training failures of :func:`fit_failures` (chance 1 / C), or saying there are none."""
    n_classes = n_classes or get_preset(results["preset"]).digits.n_classes
    chance = 1 / n_classes
    failed = fit_failures(results, chance)
    if not failed:
        return (
            f"Every trained learner fits its training distribution: on held-out images of the training digits "
            f"each is more than {FIT_MARGIN} above chance ({chance:.2f})."
        )
    names = "; ".join(
        f"{row['learner']} trained on {row['source']} ({row['mean']:.3f} +- {row['ci']:.3f})" for row in failed
    )
    return (
        f"Training failures: {names} on held-out images of the training digits, not more than {FIT_MARGIN} above "
        f"chance ({chance:.2f}). These runs did not fit even the digits they were trained on, so their accuracy on "
        "unseen digits says nothing about their inductive bias; compare them with the others as failed runs."
    )


def findings(results: dict) -> str:
    """The chapter's comparisons on unseen digits, in words, computed from a result table (Markdown)."""
    learners = [display_name(name) for name in LEARNERS]
    typical = learners[1:]
    pixels = find_row(results, "NCM (pixels)", "none")
    pca_name = f"NCM (PCA-{results['pca_size']})"
    pca = find_row(results, pca_name, "none")
    lines = [
        f"- Nothing meta-learned: nearest class mean on raw pixels reaches {pixels['mean']:.3f} +- {pixels['ci']:.3f} "
        f"on unseen digits, on the PCA of the training digits {pca['mean']:.3f} +- {pca['ci']:.3f} "
        f"({pca_name}, its size chosen on validation episodes)."
    ]
    for source in SOURCE_LABELS.values():
        rows = {name: find_row(results, name, source) for name in learners}
        ranking = ", ".join(f"{name} {rows[name]['mean']:.3f}" for name in sorted(rows, key=lambda n: -rows[n]["mean"]))
        best_typical = max(typical, key=lambda name: rows[name]["mean"])
        best = max(learners, key=lambda name: rows[name]["mean"])
        lines.append(f"- Trained on {source}: {ranking} (mean accuracy over shot counts, unseen digits).")
        lines.append(
            f"  ICL versus the best typical meta-learner ({best_typical}): "
            f"{_compare(paired_difference(rows['ICL'], rows[best_typical]))}. "
            f"Best meta-learned learner ({best}) versus pixel nearest class mean: "
            f"{_compare(paired_difference(rows[best], pixels))}."
        )
    for name in learners:
        seen = find_row(results, name, SOURCE_LABELS["digits"], SEEN)
        unseen = find_row(results, name, SOURCE_LABELS["digits"])
        mixed = find_row(results, name, SOURCE_LABELS["mixture"])
        gap_ci = math.hypot(seen["ci"], unseen["ci"])
        lines.append(
            f"- {name}: held-out images of the training digits {seen['mean']:.3f}, unseen digits {unseen['mean']:.3f} "
            f"(gap {seen['mean'] - unseen['mean']:+.3f} +- {gap_ci:.3f}); mixture training versus digits-only "
            f"training on unseen digits: {_compare(paired_difference(mixed, unseen))}."
        )
    lines.append(f"- {fit_note(results)}")
    return "\n".join(lines)


def training_caveats(results: dict, window: int = 4) -> str:
    """Markdown naming the runs that ended at their step cap, with the validation gain over their
    last ``window`` evaluations (a run still gaining had not levelled off)."""
    check_int("window", window, minimum=1)
    notes = []
    for row in results["rows"]:
        if row["test"] != UNSEEN or row["source"] == "none" or row["stopped_early"]:
            continue
        scores = row["val_score"]
        gain = scores[-1] - scores[max(len(scores) - 1 - window, 0)]
        notes.append(
            f"{row['learner']} trained on {row['source']} ran all {row['train_steps']} steps; its validation "
            f"accuracy changed by {gain:+.3f} over its last {window} evaluations (best step {row['best_step']})"
        )
    if not notes:
        return "Every run stopped early: its validation accuracy had levelled off."
    return "Runs that ended at the step cap, not by early stopping: " + "; ".join(notes) + "."


def closing_table(results: dict) -> list[dict]:
    """Per learner: mean accuracy on unseen digits (95% CI) after single-source and mixture training."""
    table = []
    for name in [display_name(learner) for learner in LEARNERS]:
        entry = {"learner": name}
        for source in SOURCE_LABELS.values():
            row = find_row(results, name, source)
            entry[f"trained on {source}"] = f"{row['mean']:.3f} +- {row['ci']:.3f}"
        table.append(entry)
    for row in results["rows"]:
        if row["source"] == "none" and row["test"] == UNSEEN:
            table.append(
                {
                    "learner": row["learner"],
                    **{
                        f"trained on {s}": f"{row['mean']:.3f} +- {row['ci']:.3f} (no training)"
                        for s in SOURCE_LABELS.values()
                    },
                }
            )
    return table
