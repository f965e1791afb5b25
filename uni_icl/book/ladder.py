"""The budget ladder (chapters 2, 3 and 6) and the convergence test's calibration, as the pages show them.

The numbers come from the chapters' ``ladder`` functions (:mod:`uni_icl.experiments.learnability`,
:mod:`~uni_icl.experiments.selection`, :mod:`~uni_icl.experiments.m2icl`: each rule read on the models of
every budget) and :func:`uni_icl.convergence.calibration`; everything a sentence here says is computed
from them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import NullLocator

from uni_icl.book.plotting import shared_legend, wrap_panel_text

CLAIM_TITLES = {
    "2-single": "Claim 2-single: ICL against the best meta-learner (and the premise)",
    "2-mixed": "Claim 2-mixed: what mixing costs ICL, and each meta-learner's bias effect",
    "3a": "Claim 3a: ICL on the mixture against the selector, on rescaled radius",
    "4b": "Claim 4b: M2-ICL adapted against ICL, at the smallest adaptation size",
}
ACCURACY_AXES = ("single-family training steps (the mixture: 3x)", "effect (accuracy difference)")
AXES = {"4b": ("M2-ICL meta-training steps", "log error ratio (other / M2-ICL adapted)")}
STEP_UNITS = {"4b": "meta-steps"}  # what a budget counts, where it is not training steps


def ladder_frame(ladder: list[dict]) -> pd.DataFrame:
    """The ladder rows as a table (kind, claim, steps, label, effect, ci, outcomes ...)."""
    return pd.DataFrame(ladder)


def ladder_figure(ladder: list[dict], claim: str, margin: float) -> plt.Figure:
    """Every comparison ``claim``'s rule reads, against the single-family budget (log scale), with its 95%
    interval, the margin band (-m, +m) shaded, and the rule's outcome at each budget written above."""
    frame = ladder_frame(ladder)
    rows = frame[(frame["kind"] == "comparison") & (frame["claim"] == claim)]
    decided = frame[(frame["kind"] == "decisive") & (frame["claim"] == claim)].sort_values("steps")
    fig, ax = plt.subplots(figsize=(7.5, 4.2), layout="constrained")
    ax.axhspan(-margin, margin, color="0.92", zorder=0, label=f"margin band (±{margin:.3g})")
    ax.axhline(0, color="grey", linewidth=0.8)
    labels = list(dict.fromkeys(rows["label"]))
    offsets = np.linspace(-0.06, 0.06, len(labels)) if len(labels) > 1 else [0.0]
    for offset, label in zip(offsets, labels, strict=True):
        part = rows[rows["label"] == label].sort_values("steps")
        style = "-" if label.startswith("ICL") else "--"  # ICL's comparisons solid, the others' dashed
        ax.errorbar(
            part["steps"] * 2**offset,
            part["effect"],
            yerr=part["ci"],
            marker="o",
            capsize=3,
            linestyle=style,
            label=label,
        )
    steps = sorted(decided["steps"])
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, labels=[f"{s:,}" for s in steps])
    ax.minorticks_off()
    xlabel, ylabel = AXES.get(claim, ACCURACY_AXES)
    if claim not in AXES:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, -1.0), min(high, 1.0))  # an accuracy difference lies in [-1, 1]
    outcomes = ax.secondary_xaxis("top")
    outcomes.set_xticks(steps, labels=list(decided["outcome"]), fontsize=8)
    outcomes.xaxis.set_minor_locator(NullLocator())  # the log axis's minor ticks would be labelled too
    outcomes.tick_params(length=0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=CLAIM_TITLES.get(claim, claim))
    wrap_panel_text(fig)
    shared_legend(fig, [ax], ncols=2)
    return fig


def _place(effect: float, ci: float, margin: float) -> str:
    lower, upper = effect - ci, effect + ci
    if upper < -margin:
        return "below -m"
    if lower > margin:
        return "above +m"
    if lower > -margin and upper < margin:
        return "within ±m"
    return "across -m" if lower <= -margin <= upper else "across +m"


def ladder_reading(ladder: list[dict], claim: str, margin: float) -> str:
    """Markdown: per comparison, its effect at the smallest and the largest budget, which way it moved
    (by more than the two intervals allow, or not measurably) and where its interval lies against the
    margin at each budget; then the rule's outcome at each budget."""
    frame = ladder_frame(ladder)
    rows = frame[(frame["kind"] == "comparison") & (frame["claim"] == claim)]
    unit = STEP_UNITS.get(claim, "steps")
    lines = []
    for label, part in rows.groupby("label", sort=False):
        part = part.sort_values("steps")
        first, last = part.iloc[0], part.iloc[-1]
        change = last["effect"] - first["effect"]
        measurable = abs(change) > np.hypot(first["ci"], last["ci"])
        direction = ("rises" if change > 0 else "falls") if measurable else "does not move measurably"
        places = [_place(row["effect"], row["ci"], margin) for _, row in part.iterrows()]
        crossing = (
            f"its interval lies {places[0]} at every budget"
            if len(set(places)) == 1
            else "its interval lies "
            + ", ".join(f"{place} at {int(s):,}" for place, s in zip(places, part["steps"], strict=True))
        )
        lines.append(
            f"- **{label}**: {first['effect']:+.3f} ± {first['ci']:.3f} at {int(first['steps']):,} {unit}, "
            f"{last['effect']:+.3f} ± {last['ci']:.3f} at {int(last['steps']):,}: it {direction} "
            f"({change:+.3f}); {crossing}."
        )
    decided = frame[(frame["kind"] == "decisive") & (frame["claim"] == claim)].sort_values("steps")
    outcomes = "; ".join(
        f"{int(row['steps']):,} {unit}: **{row['outcome']}**"
        + (f" (the rule alone: {row['ungated_outcome']})" if row["outcome"] != row["ungated_outcome"] else "")
        for _, row in decided.iterrows()
    )
    return "\n".join(lines) + f"\n\nThe rule at each budget: {outcomes}."


def calibration_frame(record: dict) -> pd.DataFrame:
    """The calibration record (:func:`uni_icl.convergence.calibration`) as a one-row table."""
    later = record.get("later_gain") or {}
    return pd.DataFrame(
        [
            {
                "runs": record["runs"],
                "points judged": record["points"],
                "points called converged": record["points_converged"],
                "later gain, median": later.get("median", np.nan),
                "later gain, 95th percentile": later.get("p95", np.nan),
                "later gain, largest": later.get("max", np.nan),
                "share below the margin": record["share_below_margin"],
            }
        ]
    )


def calibration_reading(record: dict) -> str:
    """One sentence: whether the test met the 95% bar on these curves, from the record."""
    if not record.get("points_converged"):
        return (
            f"On these {record['runs']} curves the test called no point converged, so its calibration "
            "cannot be measured here: every verdict that reads it is gated by it."
        )
    share = record["share_below_margin"]
    verdict = "meets" if share >= 0.95 else "does not meet"
    return (
        f"Of the {record['points_converged']} points it called converged (of {record['points']} judged on "
        f"{record['runs']} curves), {share:.0%} gained less than the margin ({record['margin']}) by the end of "
        f"their curve (largest later gain {record['later_gain']['max']:+.4f}): the test {verdict} the 95% bar."
    )
