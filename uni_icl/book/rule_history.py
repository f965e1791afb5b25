"""What a page says beside a verdict about its rule's history and its seeds.

- :func:`previous_outcome_markdown`: the claim's outcome under the rules before they changed (the
  verdict's ``notes["previous_outcome"]``, :mod:`uni_icl.experiments.rules.previous`) beside its
  outcome now, with the date and the reasons.
- :func:`seeds_markdown`: for an interval that straddles its margin, how many training seeds would
  decide it (``numbers["seeds_to_decide"]``, :func:`uni_icl.experiments.evidence.seeds_needed`).

Both return an empty string when the verdict holds nothing to say.
"""

from __future__ import annotations

from uni_icl.verdicts import ClaimVerdict


def _effect(decisive: dict) -> str:
    return f"{decisive['label']}, {decisive['effect']:+.4f} ± {decisive['ci']:.4f}"


def previous_outcome_markdown(verdict: ClaimVerdict) -> str:
    """The earlier rules' outcome beside this verdict's, with the date the rules changed and why."""
    previous = verdict.notes.get("previous_outcome")
    if not previous:
        return ""
    now = verdict.numbers.get("decisive")
    text = (
        f"**Before and after the rule change of {previous['changed']}.** Under the earlier rules the quick preset "
        f"gave **{previous['outcome']}** (decisive comparison: {_effect(previous['decisive'])}; {previous['source']}). "
        f"Under the rule above, at preset `{verdict.preset}`: **{verdict.outcome}**"
        + (f" (decisive comparison: {_effect(now)})" if now else "")
        + f". Why the rules changed: {previous['reason']}"
    )
    if "comparison_changed" in previous:
        text += f"; and this claim's comparison: {previous['comparison_changed']}"
    return text + ". A rule changed on that date was written in its rules module before any run of it."


def seeds_markdown(verdict: ClaimVerdict) -> str:
    """How many seeds would decide the verdict's straddling interval, from the spreads it measured."""
    needed = verdict.numbers.get("seeds_to_decide")
    if not needed:
        return ""
    text = (
        f"**Seeds where they decide.** With {needed['seeds']} seeds the interval of *{needed['comparison']}* "
        "straddles the rule's margin. If the effect and the spreads were those measured (the seeds' standard "
        f"deviation {needed['seed_sd']:.4f}; the test set's part of the standard error, over its episodes or "
        f"held-out domains, {needed['episode_se']:.4f}, which more seeds do not shrink), "
    )
    if needed["seeds_to_decide"] is None:
        text += (
            f"no number of seeds up to 100 would decide it with probability {needed['power']:.0%}: the effect lies "
            "too close to a bound of the margin, or the test set alone keeps the interval across it."
        )
    else:
        text += (
            f"{needed['seeds_to_decide']} seeds would decide it with probability {needed['power']:.0%} "
            "(uni_icl.uncertainty.seeds_to_decide, a power calculation on a noncentral t)."
        )
    return text + " The preset's seeds are unchanged: more runs do not fit the CPU budget of this build."
