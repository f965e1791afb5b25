"""The scorecard page of the book: the stored scorecard as a table, a figure, explanations and the
committed GPU results. Presentation only; :mod:`uni_icl.scorecard` runs the claims."""

from __future__ import annotations

import html
import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter, SymmetricalLogLocator

from uni_icl.book import (
    curriculum_page,
    expressivity_page,
    learnability_page,
    m2icl_page,
    selection_page,
    shift_page,
)
from uni_icl.book.answers import CHAPTER_TITLES, OUTCOME_COLOURS, chapter_link
from uni_icl.book.ladder import STEP_UNITS
from uni_icl.book.rule_history import seeds_markdown
from uni_icl.experiments import curriculum, expressivity, learnability, m2icl, selection, shift
from uni_icl.learners import display_name
from uni_icl.results import load_manifest
from uni_icl.scorecard import Scorecard
from uni_icl.storage import shipped_results_off
from uni_icl.verdicts import CLAIMS, ClaimVerdict, check_decisive

# each claim's explanation in words, computed from its verdict (None for a verdict of an earlier rule)
EXPLAIN: dict[str, Callable[[ClaimVerdict], str | None]] = {
    claim: explain
    for chapter, explain in (
        (expressivity, expressivity_page.explain),
        (learnability, learnability_page.explain),
        (selection, selection_page.explain),
        (shift, shift_page.explain),
        (curriculum, curriculum_page.explain),
        (m2icl, m2icl_page.explain),
    )
    for claim in chapter.CLAIMS
}
GPU_RESULTS = Path(__file__).resolve().parents[2] / "gpu_results"


def scorecard_frame(card: Scorecard) -> pd.DataFrame:
    """One row per claim: id, statement, outcome, quantity, rule, seconds, chapter page."""
    return pd.DataFrame(
        [
            {
                "claim": v.claim,
                "statement": CLAIMS[v.claim],
                "outcome": v.outcome,
                "quantity measured": v.quantity,
                "decision rule": v.rule,
                "seconds": round(v.wall_seconds, 1),
                "chapter": v.chapter,
            }
            for v in card.verdicts
        ]
    )


def scorecard_html(frame: pd.DataFrame) -> str:
    """The scorecard table as HTML (claim, statement, outcome, chapter), outcomes coloured and chapters
    linked; the quantities and rules are long, see :func:`rules_markdown`. (No run time: a claim whose
    results the chapters already stored takes no time here.)"""
    shown = frame[["claim", "statement", "outcome", "chapter"]].copy()
    shown["outcome"] = [f'<b style="color:{OUTCOME_COLOURS[outcome]}">{outcome}</b>' for outcome in shown["outcome"]]
    shown["chapter"] = [chapter_link(chapter) for chapter in shown["chapter"]]
    return shown.to_html(index=False, escape=False)


def rests_on_frame(card: Scorecard) -> pd.DataFrame:
    """One row per claim: how many trained models its rule compared, the seeds of each, how many
    runs passed the convergence test, and which did not (empty where a chapter does not record
    its models yet)."""
    records = []
    for verdict in card.verdicts:
        runs = [run for model in verdict.rests_on for run in model["runs"]]
        failed = [
            f"{display_name(model['learner'])} on {model['train_family']}, seed {run['seed']}"
            for model in verdict.rests_on
            for run in model["runs"]
            if not run["converged"]
        ]
        seeds = sorted({len(model["runs"]) for model in verdict.rests_on})
        records.append(
            {
                "claim": verdict.claim,
                "models compared": len(verdict.rests_on) or "not recorded",
                "seeds per model": "/".join(map(str, seeds)) or "-",
                "runs converged": f"{sum(run['converged'] for run in runs)} of {len(runs)}" if runs else "-",
                "not converged": "; ".join(failed) or "-",
            }
        )
    return pd.DataFrame(records)


def budget_frame(card: Scorecard) -> pd.DataFrame:
    """One row per claim read on a budget ladder: its outcome at each budget, from the smallest to the full
    one (the rule alone in parentheses where the convergence gate changed it), and the steps of each."""
    rows = []
    for verdict in card.verdicts:
        ladder = sorted(verdict.notes.get("budget_ladder", []), key=lambda row: row["steps"])
        if not ladder:
            continue
        full, unit = ladder[-1]["steps"], STEP_UNITS.get(verdict.claim, "steps")
        row = {"claim": verdict.claim}
        for rung in ladder:
            outcome = rung["outcome"]
            if rung["ungated_outcome"] != outcome:
                outcome += f" (rule alone: {rung['ungated_outcome']})"
            row[_fraction(rung["steps"], full)] = f"{outcome}, {rung['steps']:,} {unit}"
        rows.append(row)
    return pd.DataFrame(rows)


def budget_reading(card: Scorecard) -> str:
    """Markdown: which claims read on a ladder have the same outcome (before the gate) at every budget, and
    which change, from the smallest to the full budget."""
    same, changed = [], []
    for verdict in card.verdicts:
        ladder = sorted(verdict.notes.get("budget_ladder", []), key=lambda row: row["steps"])
        if not ladder:
            continue
        outcomes = [row["ungated_outcome"] for row in ladder]
        if len(set(outcomes)) == 1:
            same.append(f"{verdict.claim} ({outcomes[0]})")
        else:
            changed.append(f"{verdict.claim} ({' → '.join(outcomes)})")
    if not same and not changed:
        return "No claim was read on a budget ladder at this preset."
    parts = []
    if same:
        parts.append(f"The rule alone gives the same outcome at every budget for {', '.join(same)}.")
    if changed:
        parts.append(f"It changes with the budget for {', '.join(changed)}.")
    return " ".join(parts)


def _fraction(steps: int, full: int) -> str:
    """The column of a budget: "1/8 budget" ... "full budget" (or its share of the full budget)."""
    names = {1.0: "full budget", 0.5: "1/2 budget", 0.25: "1/4 budget", 0.125: "1/8 budget"}
    return names.get(steps / full, f"{steps / full:.3g} of the budget")


def rules_markdown(card: Scorecard) -> str:
    """Markdown: for each claim, the quantity measured and the rule that decided it."""
    return "\n".join(f"- **{v.claim}** ({v.outcome}): measured {v.quantity}. *Rule:* {v.rule}" for v in card.verdicts)


def rules_html(card: Scorecard) -> str:
    """HTML: the quantity measured and the rule of each claim, folded (a click opens it), so the rules'
    text does not bury the table; plain HTML, which the book and Colab both render."""
    items = "".join(
        f"<li><b>{v.claim}</b> ({v.outcome}): measured {html.escape(v.quantity)}. <i>Rule:</i> {html.escape(v.rule)}"
        "</li>"
        for v in card.verdicts
    )
    summary = "<summary>The quantity measured and the decision rule of each claim</summary>"
    return f"<details>{summary}<ul>{items}</ul></details>"


def decisive_effect(verdict) -> dict | None:
    """The effect a verdict turns on, if its chapter states it in ``numbers["decisive"]``:
    ``{"label": str, "effect": float, "ci": float, "margin": float}`` (the estimate, its 95%
    half-width and the rule's margin, on one scale, e.g. an accuracy difference); else None."""
    decisive = verdict.numbers.get("decisive")
    try:
        check_decisive(decisive)
    except ValueError:
        return None
    return {"label": decisive["label"], **{key: float(decisive[key]) for key in ("effect", "ci", "margin")}}


def plot_scorecard(card: Scorecard) -> plt.Figure:
    """The scorecard at a glance.

    A forest plot (each claim's decisive effect with its 95% interval and the rule's margin) when
    some verdict states that effect (:func:`decisive_effect`; a claim without one keeps its row,
    with its outcome and "no effect to plot"); otherwise a table-figure: per claim, its statement,
    its outcome in the outcome's colour, and how many of the runs it compares passed the
    convergence test. No run times: a claim whose results were stored takes no time here, and
    that says nothing about the claim."""
    effects = [decisive_effect(verdict) for verdict in card.verdicts]
    if any(effect is not None for effect in effects):
        return _forest(card, effects)
    return _outcome_table(card)


def figure_caption(card: Scorecard) -> str:
    """Markdown: how to read the figure :func:`plot_scorecard` draws for ``card`` (forest plot or table)."""
    missing = [verdict.claim for verdict in card.verdicts if decisive_effect(verdict) is None]
    if len(missing) < len(card.verdicts):
        without = (
            ""
            if not missing
            else (" Claim " if len(missing) == 1 else " Claims ")
            + ", ".join(missing)
            + (" states" if len(missing) == 1 else " state")
            + " no decisive effect at this preset (e.g. a speed-up that no run reached), so their rows "
            "show only the outcome."
        )
        return (
            "*How to read it.* One row per claim. The dot is the effect that decided the claim's outcome (the text "
            "on the right names the outcome and what the effect is: a difference of accuracies, or the log of a "
            "ratio of errors or of steps) and the bar its 95% interval. Each claim's effect and interval are "
            "divided by its rule's margin m, so all claims share one axis in units of their margins: the dotted "
            "lines at -1 and +1 are -m and +m, the solid line at 0 is no difference. The axis is linear between -1 "
            "and +1 and logarithmic beyond, so that large effects do not squeeze the margins together (an interval "
            "beyond a margin stays beyond it). Most rules need the interval above +1 (the claim's effect exceeds the "
            "margin); the rules above say which side each claim needs." + without
        )
    return (
        "*How to read it.* Each claim's outcome, and how many of the training runs it compares passed the "
        "convergence test (a verdict that compares a run which did not is *inconclusive*). No verdict states a "
        "decisive effect at this preset, so there is no forest plot."
    )


def _claim_label(verdict, width: int = 44) -> str:
    """'2-single: Learnability, single type', wrapped to ``width`` characters a line (not at hyphens)."""
    return textwrap.fill(f"{verdict.claim}: {CLAIMS[verdict.claim].split(':')[0]}", width, break_on_hyphens=False)


def _converged_text(verdict) -> str:
    runs = [run for model in verdict.rests_on for run in model["runs"]]
    if not runs:
        return "runs not recorded"
    return f"{sum(run['converged'] for run in runs)} of {len(runs)} runs converged"


def _outcome_table(card: Scorecard) -> plt.Figure:
    rows = len(card.verdicts)
    fig, ax = plt.subplots(figsize=(9, 0.6 * rows + 0.9), layout="constrained")
    ax.set_xlim(0, 1)
    ax.set_ylim(rows - 0.5, -1.0)
    ax.axis("off")
    for x, header in ((0.0, "claim"), (0.55, "outcome"), (0.78, "compared runs")):
        ax.text(x, -0.8, header, weight="bold", va="center")
    for row, verdict in enumerate(card.verdicts):
        colour = OUTCOME_COLOURS[verdict.outcome]
        ax.text(0.0, row, _claim_label(verdict), va="center")
        ax.text(
            0.55,
            row,
            verdict.outcome,
            va="center",
            color="white",
            weight="bold",
            bbox={"boxstyle": "round,pad=0.3", "facecolor": colour, "edgecolor": colour},
        )
        ax.text(0.78, row, _converged_text(verdict), va="center", color="#444444")
    ax.set_title(f"The paper's claims at preset '{card.preset}'", loc="left")
    return fig


FOREST_LABEL_WIDTH = 34  # characters a line of the text beside each effect (outcome, then the effect's label)


def _forest(card: Scorecard, effects: list[dict]) -> plt.Figure:
    """Each claim's decisive effect and 95% interval in units of its margin, one row per claim, with
    the claim on the left and its outcome and what the effect is on the right (inside 9 inches)."""
    rows = len(card.verdicts)
    fig, ax = plt.subplots(figsize=(9, 0.6 * rows + 1.2), layout="constrained")
    for row, (verdict, effect) in enumerate(zip(card.verdicts, effects, strict=True)):
        colour = OUTCOME_COLOURS[verdict.outcome]
        label = "no effect to plot" if effect is None else effect["label"]
        if effect is not None:  # each claim on its own scale: effect and interval in units of its margin
            scale = effect["margin"] or 1.0
            ax.errorbar(effect["effect"] / scale, row, xerr=effect["ci"] / scale, fmt="o", color=colour, capsize=3)
        ax.annotate(
            f"{verdict.outcome}\n{textwrap.fill(label, FOREST_LABEL_WIDTH)}",
            xy=(1.0, row),
            xycoords=("axes fraction", "data"),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color=colour,
            annotation_clip=False,
        )
    for x in (-1, 1):
        ax.axvline(x, color="grey", linestyle=":", linewidth=1)
    ax.axvline(0, color="black", linewidth=0.8)
    # linear within the margins, logarithmic beyond: large effects do not squeeze the margins together
    ax.set_xscale("symlog", linthresh=1.0)
    ax.xaxis.set_major_locator(SymmetricalLogLocator(linthresh=1.0, base=10, subs=(1, 3)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_yticks(range(rows), [_claim_label(v, width=36) for v in card.verdicts], fontsize=9)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlabel(
        "decisive effect in units of the rule's margin (dotted: ±margin), 95% interval; log scale beyond ±margin"
    )
    ax.set_title(f"The paper's claims at preset '{card.preset}'", loc="left")
    return fig


def discussion(card: Scorecard) -> str:
    """Markdown: every claim that did not reproduce or was inconclusive, with its evidence."""
    failed = [v for v in card.verdicts if v.outcome != "reproduced"]
    if not failed:
        return f"Every claim run at preset `{card.preset}` was reproduced by its rule."
    parts = []
    for verdict in failed:
        page = CHAPTER_TITLES.get(verdict.chapter, verdict.chapter.split("/")[-1])
        why = f"{page} (linked in the table) shows the evidence."
        explanation = EXPLAIN[verdict.claim](verdict) if verdict.claim in EXPLAIN else None
        if explanation:
            why = f"{explanation} {page} shows the evidence."
        parts.append(
            f"**Claim {verdict.claim}** ({CLAIMS[verdict.claim]}): **{verdict.outcome}** at preset "
            f"`{verdict.preset}` under the rule above. {why} {seeds_markdown(verdict)}".rstrip()
        )
    return "\n\n".join(parts)


def provenance_markdown(preset: str) -> str:
    """Where this page's numbers come from (the shipped results' manifest, or this machine) and how to
    recompute or check them."""
    manifest = None if shipped_results_off() else load_manifest(preset)
    redo = (
        "To recompute everything here, run `UNI_ICL_FRESH=1 bash scripts/build_book.sh` (or "
        f"`python -m uni_icl reproduce --preset {preset} --fresh`); to check the shipped numbers in minutes, "
        f"`python -m uni_icl results verify --preset {preset} --sample 3` retrains three shipped models from "
        "scratch and compares their weights."
    )
    if manifest is None:
        return f"The numbers on this page were computed on the machine that built it. {redo}"
    hours = manifest["training_core_seconds"] / 3600
    return (
        f"Where a result was not in this machine's cache, it comes from the shipped results "
        f"(`results/{preset}/`, listed with checksums in its `manifest.json`): computed at commit "
        f"`{manifest['commit'][:12]}` on {manifest['machine']} ({manifest['device']}, {manifest['workers']} "
        f"workers of {manifest['threads']} torch thread each, torch {manifest['torch']}), "
        f"{manifest['models']} trained models, {hours:.1f} core-hours of training. {redo}"
    )


def gpu_results_markdown(card: Scorecard, folder: Path = GPU_RESULTS) -> str:
    """Markdown comparing ``card`` with the committed GPU scorecards under ``folder``, if any."""
    found = sorted(folder.glob("*/scorecard-*.json")) if folder.exists() else []
    if not found:
        return "No GPU results are stored in this checkout (`gpu_results/` is empty or missing)."
    blocks = []
    for path in found:
        gpu = Scorecard.from_dict(json.loads(path.read_text()))
        about_path = path.parent / "device.json"
        about = json.loads(about_path.read_text()) if about_path.exists() else {}
        device = about.get("device", "unknown GPU")
        seconds = about.get("wall_seconds", gpu.wall_seconds)
        lines = [f"**{path.parent.name}**: preset `{gpu.preset}`, run on {device} in {seconds:.0f} s."]
        if about.get("note"):
            lines[0] += f" Note: {about['note']}."
        if not any("calibration" in verdict.notes for verdict in gpu.verdicts):
            lines[0] += (
                " This record predates the fixed budget and the remaining-gain convergence test (it carries no"
                " calibration and no budget ladder): its outcomes are those of the rules and training of its time."
            )
        lines += [
            "",
            f"| claim | outcome at `{gpu.preset}` (GPU) | outcome at `{card.preset}` (this page) |",
            "|---|---|---|",
        ]
        here = {v.claim: v.outcome for v in card.verdicts}
        lines += [f"| {v.claim} | {v.outcome} | {here.get(v.claim, 'not run')} |" for v in gpu.verdicts]
        lines += _gpu_tables_markdown(path.parent)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _gpu_tables_markdown(folder: Path) -> list[str]:
    """Lines describing a GPU run's stored learnability tables: how training ended, accuracies."""
    lines = []
    training_path = folder / "learnability-training.csv"
    if training_path.exists():
        training = pd.read_csv(training_path)
        flat = int(training["levelled off"].sum())
        icl = training[training["learner"] == "ICL"]
        lines += [
            "",
            f"{flat} of {len(training)} models levelled off (early stopping, or a flat validation curve) before "
            f"training ended; the ICL transformers ran {icl['steps run'].min()}-{icl['steps run'].max()} steps "
            f"(of at most {icl['max steps'].max()}).",
        ]
    summary_path = folder / "learnability-summary.csv"
    if summary_path.exists():
        summary = pd.read_csv(summary_path)
        lines += ["", "Mean test accuracy (95% CI), by test family:", ""]
        lines += ["| " + " | ".join(summary.columns) + " |", "|" + "---|" * len(summary.columns)]
        lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in summary.itertuples(index=False)]
    return lines
