"""What decided a verdict, in one or two plain sentences computed from the numbers it stores.

:func:`decided_by` names the families, learners and comparisons that decided a claim's outcome
(and, for an outcome that is not 'reproduced', those that blocked it), reading only
``verdict.numbers`` and ``verdict.notes``: the sentences follow whatever the stored numbers say.
:func:`convergence_sentence` says how many of the compared runs passed the convergence test and
names those that did not. Every interval is a 95% interval written ``mean ± half-width``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from uni_icl.learners import META_LEARNERS, display_name
from uni_icl.tasks import SINGLE_FAMILIES, TASK_FAMILIES


def pm(pair, digits: int = 3) -> str:
    """'+0.012 ± 0.004' for a stored (mean, half-width) pair."""
    mean, ci = float(pair[0]), float(pair[1])
    return f"{mean:+.{digits}f} ± {ci:.{digits}f}"


def accuracy(pair) -> str:
    """'0.638 ± 0.051' for a stored (accuracy, half-width) pair."""
    return f"{float(pair[0]):.3f} ± {float(pair[1]):.3f}"


def position(pair, margin: float) -> str:
    """Where a (mean, half-width) interval lies against ±margin: 'above +m', 'below -m', 'within ±m',
    or, when it reaches across +m or -m, 'across +m' / 'across -m' (the bound it crosses first)."""
    low, high = float(pair[0]) - float(pair[1]), float(pair[0]) + float(pair[1])
    if low > margin:
        return "above +m"
    if high < -margin:
        return "below -m"
    if low > -margin and high < margin:
        return "within ±m"
    return "across +m" if high >= margin else "across -m"


def _above(pair, threshold: float) -> bool:
    return float(pair[0]) - float(pair[1]) > threshold


def _below(pair, threshold: float) -> bool:
    return float(pair[0]) + float(pair[1]) < threshold


def names(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _matching(family: str) -> str:
    return display_name(TASK_FAMILIES[family].matching_learner)


def _expressivity(numbers: dict, outcome: str) -> str:
    margin = numbers["margin"]
    found = {"contradicts": [], "undetermined": [], "supports": []}
    for teacher, entry in numbers["teachers"].items():
        floors = entry["imitation_minus_floor"]
        if entry["decision"] == "contradicts":
            if _below(entry["imitation_minus_ceiling"], -margin):
                text = f"with teacher {teacher}, ICL − its second seed is {pm(entry['imitation_minus_ceiling'])}"
            else:
                close = [
                    f"ICL − {label.removesuffix(' (floor)')} {pm(pair)}"
                    for label, pair in floors.items()
                    if _below(pair, margin)
                ]
                text = f"with teacher {teacher}, {names(close)}"
        elif entry["decision"] == "undetermined":
            open_ = [
                f"ICL − {label.removesuffix(' (floor)')} {pm(pair)}"
                for label, pair in floors.items()
                if not _above(pair, margin)
            ]
            if not _above(entry["imitation_minus_ceiling"], -margin):
                open_.append(f"ICL − its second seed {pm(entry['imitation_minus_ceiling'])}")
            if not entry["resolves"]:
                open_.append("the second seed does not clear every floor by the margin")
            text = f"with teacher {teacher}, {names(open_)}"
        else:
            text = f"teacher {teacher} (position between floor and ceiling {entry['position'][0]:.2f})"
        found[entry["decision"]].append(text)
    if found["contradicts"]:
        return (
            "The distilled ICL falls short of a second training of its teacher by more than the margin, or is no "
            f"closer to it than another algorithm trained on the same episodes (m = {margin}): "
            f"{names(found['contradicts'])}."
        )
    if found["undetermined"]:
        return f"These comparisons reach across the margin m = {margin}: {'; '.join(found['undetermined'])}."
    return (
        "On every teacher the distilled ICL agreed with it more than each algorithm trained on the same episodes "
        f"and as well as a second training of the teacher, within the margin m = {margin}: "
        f"{names(found['supports'])}."
    )


def _learnability_single(numbers: dict, outcome: str) -> str:
    margin = numbers["margin"]
    behind, open_, premise, blocked = [], [], [], set()
    for family in SINGLE_FAMILIES:
        row = numbers[family]
        best = display_name(row["best_meta_learner"])
        gap = f"on {family}, ICL − {best} (the best meta-learner there) is {pm(row['icl_minus_best_meta'])}"
        if _below(row["icl_minus_best_meta"], -margin):
            behind.append(gap)
        elif not _above(row["icl_minus_best_meta"], -margin):
            open_.append(gap)
            blocked.add(family)
        if not _above(row["matching_minus_best_other"], -margin):
            blocked.add(family)
            premise.append(
                f"on {family}, {_matching(family)} (the matching meta-learner) − the best other is "
                f"{pm(row['matching_minus_best_other'])}, not above −m"
            )
    if behind:
        return f"ICL falls behind the best meta-learner by more than m = {margin}: {names(behind)}."
    parts = []
    if open_:
        parts.append(f"ICL's interval reaches below −m = −{margin}: {names(open_)}.")
    if premise:
        parts.append(f"The paper's premise fails: {names(premise)}.")
    if not parts:
        return (
            "On every family ICL is within the margin of the best meta-learner or better, and the matching "
            "meta-learner is the best on its own family."
        )
    fine = [family for family in SINGLE_FAMILIES if family not in blocked]
    if fine:
        parts.append(f"On {names(fine)} ICL matches the best meta-learner.")
    return " ".join(parts)


def _learnability_mixed(numbers: dict, outcome: str) -> str:
    margin = numbers["margin"]
    drops = {family: numbers[family]["icl_mixed_minus_single"] for family in SINGLE_FAMILIES}
    effects = {display_name(name): numbers[f"{name}_bias_effect"] for name in META_LEARNERS}
    icl_loses = [f"{family} {pm(pair)}" for family, pair in drops.items() if _below(pair, -margin)]
    no_bias = [f"{name} {pm(pair)}" for name, pair in effects.items() if _above(pair, -margin)]
    icl_open = [f"{family} {pm(pair)}" for family, pair in drops.items() if not _above(pair, -margin)]
    bias_open = [f"{name} {pm(pair)}" for name, pair in effects.items() if not _below(pair, -margin)]
    parts = []
    if icl_loses:
        parts.append(f"Trained on the mixture, ICL loses more than m = {margin} on {names(icl_loses)}.")
    if no_bias:
        parts.append(
            "Mixing does not cost these meta-learners more off their bias than on it (bias effect above "
            f"−m): {names(no_bias)}."
        )
    if parts:
        if not icl_loses:
            parts.append(f"ICL's own drops: {names([f'{family} {pm(pair)}' for family, pair in drops.items()])}.")
        return " ".join(parts)
    if icl_open or bias_open:
        open_parts = []
        if icl_open:
            open_parts.append(f"ICL's drop reaches across −m on {names(icl_open)}")
        if bias_open:
            open_parts.append(f"the bias effect reaches across −m for {names(bias_open)}")
        return "Undecided: " + "; ".join(open_parts) + "."
    return (
        f"ICL keeps its accuracy on every family (drops {', '.join(pm(p) for p in drops.values())}) while every "
        "meta-learner loses more off its bias than on it."
    )


def _selection(numbers: dict, outcome: str) -> str:
    margin, rescaled = numbers["margin"], numbers["rescaled"]
    d = rescaled["icl_minus_selector"]
    per_seed = ", ".join(f"{v:+.3f}" for v in rescaled.get("icl_minus_selector_per_seed", []))
    where = {
        "above +m": "ICL is more accurate than selection by more than the margin",
        "below -m": "the selector is more accurate",
        "within ±m": "no practical difference, which does not support the claim",
    }.get(position(d, margin), "the interval reaches across the margin")
    return (
        f"On the unseen radius family rescaled to the training input scale (inputs x {rescaled['input_scale']:.3f}), "
        f"ICL trained on the mixture scores {accuracy(rescaled['icl_mixture'])} and the prequential selector "
        f"{accuracy(rescaled['selector'])}: d = {pm(d)} (per seed {per_seed}), so {where} (m = {margin}). "
        f"On radius as drawn (reported): d = {pm(numbers['icl_minus_selector'])}."
    )


def shift_family_sentence(family: str, row: dict, margin: float) -> str:
    """Claim 3(b): why ``family`` (its stored row of the verdict) supports, contradicts or is undetermined,
    from what the rule reads there: ICL trained on the mixture and the family's named explicit algorithm."""
    judged = row["judged"]
    icl, explicit, name = judged["icl"], judged["explicit"], judged["explicit_name"]
    if row["decision"] == "supports":
        return (
            f"{family} supports it (ICL trained on the mixture degrades, {pm(icl['growth'])}; {name}, the named "
            f"explicit algorithm, is insensitive, {pm(explicit['growth'])})"
        )
    if row["decision"] == "contradicts":
        if _below(icl["growth"], margin):
            return (
                f"{family} contradicts it (the growth of ICL trained on the mixture, {pm(icl['growth'])}, lies below "
                "+m: ICL does not degrade)"
            )
        return f"{family} contradicts it (ICL degrades, but so does {name}, the named explicit algorithm)"
    if icl["status"] != "degrades":
        return (
            f"{family} is undetermined: the growth of ICL trained on the mixture, {pm(icl['growth'])}, reaches "
            "across +m"
        )
    return (
        f"{family} is undetermined: ICL trained on the mixture degrades ({pm(icl['growth'])}) but {name}, the named "
        f"explicit algorithm, is not shown insensitive ({explicit['status']}, {pm(explicit['growth'])})"
    )


def _shift(numbers: dict, outcome: str) -> str:
    margin, families = numbers["margin"], numbers["families"]
    parts = [
        shift_family_sentence(family, families[family], margin) for family in SINGLE_FAMILIES if family in families
    ]
    counts = (
        f"{numbers['families_supporting']} of {len(parts)} families support the claim and "
        f"{numbers['families_contradicting']} contradict it (the rule needs 2 either way)"
    )
    return f"{counts}. " + "; ".join(parts) + "."


def _curriculum(numbers: dict, outcome: str) -> str:
    margin = numbers["margin"]
    ratio, low, high = numbers["speedup"]
    where = {
        "above +m": "faster by more than the 10% margin",
        "below -m": "slower by more than the margin",
        "within ±m": "no practical speed-up (within ±10%)",
    }.get(position(numbers["log_speedup"], margin), "an interval that reaches across the 10% margin")
    return (
        f"The paper's curriculum reached the threshold in {numbers['median_paper']:g} steps against "
        f"{numbers['median_none']:g} without it (medians over seeds): a speed-up of {ratio:.2f} "
        f"(95% interval {low:.2f} to {high:.2f}), {where}."
    )


def _m2icl(numbers: dict, outcome: str) -> str:
    margin, size = numbers["margin"], numbers["smallest_size"]
    comparisons = {
        f"ICL adapted against M2-ICL adapted at K = {size}": numbers["log_ratio_adapted"][str(size)],
        "ICL without adaptation against M2-ICL adapted": numbers["log_ratio_unadapted"],
    }
    texts = []
    for label, pair in comparisons.items():
        where = {
            "above +m": "M2-ICL's error is lower by more than the 10% margin",
            "below -m": "M2-ICL's error is higher",
            "within ±m": "no practical difference (within ±10%)",
        }.get(position(pair, margin), "the interval reaches across the 10% margin")
        texts.append(
            f"{label}, log error ratio {pm(pair)} (M2-ICL's error {1 - math.exp(-pair[0]):.1%} lower): {where}"
        )
    text = "; ".join(texts) + "."
    if "direction" in numbers:
        text += (
            f" By direction (reported, not decided), M2-ICL adapted against ICL adapted: "
            f"{numbers['direction']['adapted']}; against ICL without adaptation: {numbers['direction']['unadapted']}."
        )
    return text


SENTENCES: dict[str, Callable[[dict, str], str]] = {
    "1": _expressivity,
    "2-single": _learnability_single,
    "2-mixed": _learnability_mixed,
    "3a": _selection,
    "3b": _shift,
    "4a": _curriculum,
    "4b": _m2icl,
}


def decided_by(verdict) -> str:
    """One or two sentences naming what decided ``verdict`` (a ClaimVerdict), from its stored numbers; for
    a gated verdict, the gates come first. Numbers of another form (an earlier rule) give the decisive
    effect's label only."""
    gates = [str(gate) for gate in verdict.notes.get("gates", [])]
    text = "Gate: " + "; ".join(gates) + ". " if gates else ""
    try:
        return text + SENTENCES[verdict.claim](verdict.numbers, verdict.outcome)
    except (KeyError, TypeError, ValueError, IndexError):
        decisive = verdict.numbers.get("decisive")
        return text + (f"Decided by {decisive['label']}." if isinstance(decisive, dict) else "")


NAMED_RUNS = 4  # unconverged runs named in a sentence; the chapter's training table lists them all


def convergence_sentence(verdict) -> str:
    """'All 36 compared runs passed the convergence test.', or how many did not, named; '' when the
    verdict records no runs."""
    runs = [(model, run) for model in verdict.rests_on for run in model["runs"]]
    if not runs:
        return ""
    failed = [
        f"{display_name(model['learner'])} on {model['train_family']}, seed {run['seed']}"
        for model, run in runs
        if not run["converged"]
    ]
    if not failed:
        return f"All {len(runs)} compared runs ({len(verdict.rests_on)} models) passed the convergence test."
    named = "; ".join(failed[:NAMED_RUNS]) + (
        f"; and {len(failed) - NAMED_RUNS} more" if len(failed) > NAMED_RUNS else ""
    )
    return (
        f"{len(failed)} of the {len(runs)} compared runs did not pass the convergence test ({named}), "
        "so the outcome is inconclusive whatever the intervals say."
    )
