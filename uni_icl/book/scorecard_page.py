"""The scorecard page of the book: the stored scorecard as a table, a figure, explanations and the
committed GPU results. Presentation only; :mod:`uni_icl.scorecard` runs the claims."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from uni_icl.learners import display_name
from uni_icl.scorecard import EXPERIMENTS, Scorecard
from uni_icl.verdicts import CLAIMS

OUTCOME_COLOURS = {"reproduced": "#1b7837", "not reproduced": "#b2182b", "inconclusive": "#d6a21e"}
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


def chapter_link(chapter: str) -> str:
    """A relative link from a book page to ``chapter`` (e.g. 'book/02_learnability')."""
    page = chapter.split("/")[-1]
    return f'<a href="{page}.html">{page}</a>'


def scorecard_html(frame: pd.DataFrame) -> str:
    """The scorecard table as HTML (claim, statement, outcome, seconds, chapter), outcomes coloured and
    chapters linked; the quantities and rules are long, see :func:`rules_markdown`."""
    shown = frame[["claim", "statement", "outcome", "seconds", "chapter"]].copy()
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


def rules_markdown(card: Scorecard) -> str:
    """Markdown: for each claim, the quantity measured and the rule that decided it."""
    return "\n".join(f"- **{v.claim}** ({v.outcome}): measured {v.quantity}. *Rule:* {v.rule}" for v in card.verdicts)


def plot_scorecard(card: Scorecard, ax: plt.Axes) -> plt.Axes:
    """One coloured bar per claim, labelled with its outcome and the time its experiment took."""
    labels = [f"{v.claim}: {CLAIMS[v.claim].split(':')[0]}" for v in card.verdicts]
    rows = range(len(card.verdicts))[::-1]
    colours = [OUTCOME_COLOURS[v.outcome] for v in card.verdicts]
    ax.barh(list(rows), [1] * len(labels), color=colours, height=0.7)
    for row, verdict in zip(rows, card.verdicts, strict=True):
        ax.text(
            0.02, row, f"{verdict.outcome}  ({verdict.wall_seconds:.0f} s)", va="center", color="white", weight="bold"
        )
    ax.set_yticks(list(rows), labels)
    ax.set_xticks([])
    ax.set_xlim(0, 1)
    ax.set_title(f"Claims of the paper at preset '{card.preset}' (run time of each experiment in brackets)")
    return ax


def discussion(card: Scorecard) -> str:
    """Markdown: every claim that did not reproduce or was inconclusive, with its evidence."""
    failed = [v for v in card.verdicts if v.outcome != "reproduced"]
    if not failed:
        return f"Every claim run at preset `{card.preset}` was reproduced by its rule."
    parts = []
    for verdict in failed:
        page = verdict.chapter.split("/")[-1]
        why = f"the chapter {page} (linked in the table) shows the evidence."
        explanation = EXPERIMENTS[verdict.claim].explain(verdict) if verdict.claim in EXPERIMENTS else None
        if explanation:
            why = f"{explanation} The chapter {page} shows the evidence."
        parts.append(
            f"**Claim {verdict.claim}** ({CLAIMS[verdict.claim]}): **{verdict.outcome}** at preset "
            f"`{verdict.preset}` under the rule above. {why}"
        )
    return "\n\n".join(parts)


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
