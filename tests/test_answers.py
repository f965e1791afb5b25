"""The answers first: verdict boxes, the prose that says what decided a verdict, the far-seed rule and
the README's quick scorecard table, all computed from stored verdicts (synthetic ones here, built by
changing the shipped quick verdicts' numbers, so a sentence that ignored the numbers would fail)."""

from __future__ import annotations

import copy
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import pytest

from uni_icl.book import answers, shift_prose, verdict_prose
from uni_icl.learners import display_name
from uni_icl.scorecard import Scorecard
from uni_icl.verdicts import ClaimVerdict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((ROOT / "results" / "quick" / "scorecard.json").read_text())


def shipped(claim: str) -> ClaimVerdict:
    data = copy.deepcopy(next(v for v in SHIPPED["verdicts"] if v["claim"] == claim))
    return ClaimVerdict(**data)


def with_runs(verdict: ClaimVerdict, converged: bool) -> ClaimVerdict:
    """``verdict`` with every compared run converged (and no convergence named in its notes: the list of
    unconverged models, a gate that says so), or with the first run of the first model not."""
    rests_on = copy.deepcopy(verdict.rests_on)
    notes = copy.deepcopy(verdict.notes)
    for model in rests_on:
        for run in model["runs"]:
            run["converged"] = True
    if converged:
        notes["unconverged"] = []
        if "gates" in notes:
            notes["gates"] = [gate for gate in notes["gates"] if not gate.startswith("not converged")]
    else:
        rests_on[0]["runs"][0]["converged"] = False
    return replace(verdict, rests_on=rests_on, notes=notes)


@pytest.mark.parametrize("claim", [v["claim"] for v in SHIPPED["verdicts"]])
def test_every_shipped_verdict_has_a_box_that_states_its_outcome_effect_and_cause(claim):
    verdict = shipped(claim)
    box = answers.verdict_box(verdict, link=True)
    assert verdict.outcome in box and f"Claim {claim}" in box
    decisive = verdict.numbers["decisive"]
    assert f"{decisive['effect']:+.3f} ± {decisive['ci']:.3f}" in box
    sentence = verdict_prose.decided_by(verdict)
    assert sentence and not sentence.startswith("Decided by"), "the claim's sentence does not read its numbers"
    assert answers.CHAPTER_TITLES[verdict.chapter] in box


@pytest.mark.parametrize("claim", [v["claim"] for v in SHIPPED["verdicts"]])
def test_no_box_blames_convergence_when_every_run_converged(claim):
    converged = answers.verdict_box(with_runs(shipped(claim), converged=True))
    assert "converge" in converged and "did not" not in converged and "not converge" not in converged
    failed = with_runs(shipped(claim), converged=False)
    assert "did not pass the convergence test" in answers.verdict_box(failed)
    model = failed.rests_on[0]
    assert f"seed {model['runs'][0]['seed']}" in verdict_prose.convergence_sentence(failed)


def test_the_shift_meaning_never_blames_convergence_when_every_run_converged():
    verdict = with_runs(shipped("3b"), converged=True)
    text = shift_prose.meaning(verdict)
    assert "converge" not in text
    for family, row in verdict.numbers["families"].items():
        assert (family in text) == (row["decision"] == "undetermined")
    gated = replace(verdict, notes={**verdict.notes, "unconverged": ["ICL on pairwise (seed 0)"]})
    assert "did not converge (ICL on pairwise (seed 0))" in shift_prose.meaning(gated)


def test_the_shift_sentence_follows_the_family_decisions():
    verdict = shipped("3b")
    numbers = copy.deepcopy(verdict.numbers)
    amortized = numbers["families"]["amortized"]
    amortized["judged"]["icl"].update(growth=[0.05, 0.01], status="degrades")
    amortized["judged"]["explicit"].update(growth=[0.0, 0.001], status="insensitive")
    amortized["decision"] = "supports"
    numbers["families_supporting"] = 2
    changed = replace(verdict, numbers=numbers, outcome="reproduced")
    text = verdict_prose.decided_by(changed)
    assert text.startswith("2 of 3 families support the claim")
    name = amortized["judged"]["explicit_name"]
    assert f"amortized supports it (ICL trained on the mixture degrades, +0.050 ± 0.010; {name}" in text
    assert "is insensitive, +0.000 ± 0.001" in text
    assert "amortized is undetermined" not in text
    for family in ("pairwise", "prototype"):
        assert f"{family} {PHRASES[numbers['families'][family]['decision']]}" in text


PHRASES = {"supports": "supports it", "contradicts": "contradicts it", "undetermined": "is undetermined"}


def test_the_learnability_sentences_name_the_blocking_family_and_learner():
    single = verdict_prose.decided_by(shipped("2-single"))
    pairwise = shipped("2-single").numbers["pairwise"]
    assert "pairwise" in single and "premise fails" in single
    numbers = copy.deepcopy(shipped("2-single").numbers)
    numbers["pairwise"]["matching_minus_best_other"] = [0.02, 0.005]
    numbers["pairwise"]["icl_minus_best_meta"] = [-0.05, 0.01]
    behind = verdict_prose.decided_by(replace(shipped("2-single"), numbers=numbers, outcome="not reproduced"))
    assert behind.startswith("ICL falls behind") and "-0.050 ± 0.010" in behind and "premise" not in behind
    icl_mean, icl_ci = pairwise["icl_minus_best_meta"]
    if icl_mean - icl_ci < -0.01:  # ICL's interval reaches below -m: its sentence names the best meta-learner
        assert display_name(pairwise["best_meta_learner"]) in single
    matching_mean, matching_ci = pairwise["matching_minus_best_other"]
    if matching_mean - matching_ci < -0.01:  # the premise fails on pairwise: its sentence names MatchNet
        assert "on pairwise, MatchNet (the matching meta-learner) − the best other is" in single
    mixed = verdict_prose.decided_by(shipped("2-mixed"))
    decisive = shipped("2-mixed").numbers["decisive"]
    learner = decisive["label"].split(" bias effect")[0]  # the meta-learner whose bias effect decided it
    assert f"{learner} {decisive['effect']:+.3f} ± {decisive['ci']:.3f}" in mixed


def test_the_m2icl_and_curriculum_sentences_follow_the_margin():
    verdict = shipped("4b")
    numbers = copy.deepcopy(verdict.numbers)
    numbers["log_ratio_adapted"][str(numbers["smallest_size"])] = [0.3, 0.05]
    numbers["log_ratio_unadapted"] = [0.3, 0.05]
    text = verdict_prose.decided_by(replace(verdict, numbers=numbers, outcome="reproduced"))
    assert text.count("lower by more than the 10% margin") == 2 and "no practical difference" not in text
    curriculum = verdict_prose.decided_by(shipped("4a"))
    assert "reaches across the 10% margin" in curriculum


@pytest.mark.parametrize(
    ("values", "flagged"),
    [
        ([0.126, 0.038, 0.028], [0]),  # chapter 4's ICL on the mixture, amortized: seed 0 collapses
        ([0.0675, 0.0679, 0.0358], []),  # 3.2 margins from the others: not far
        ([0.1, 0.0], []),  # two seeds: nothing is far from "the others"
        ([0.0, 0.01, 0.02, 0.5], [3]),
        ([0.0, 0.2, 0.4], []),  # evenly spread: no seed stands out
    ],
)
def test_far_seeds(values, flagged):
    assert answers.far_seeds(values, margin=0.01) == flagged


def test_decisive_text_and_links_name_the_chapter_by_title():
    verdict = shipped("3b")
    decisive = verdict.numbers["decisive"]
    assert answers.decisive_text(verdict).startswith(f"{decisive['label']}: {decisive['effect']:+.3f} ± ")
    assert answers.chapter_link("book/04_shift") == '<a href="04_shift.html">Chapter 4, Distribution shift</a>'
    assert answers.decisive_text(replace(verdict, numbers={})) == ""


def test_chapter_titles_match_the_pages():
    for chapter, title in answers.CHAPTER_TITLES.items():
        cells = json.loads((ROOT / f"{chapter}.ipynb").read_text())["cells"]
        heading = next(line for line in "".join(cells[0]["source"]).splitlines() if line.startswith("# "))
        name = title.split(", ", 1)[1].split(" (")[0]
        assert name.split()[-1].lower() in heading.lower(), f"{chapter}: {title!r} against {heading!r}"


def test_readme_holds_the_generated_quick_scorecard_table():
    spec = importlib.util.spec_from_file_location("readme_scorecard", ROOT / "scripts" / "readme_scorecard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    assert module.current_block(readme) == module.generated_block(), "run: python scripts/readme_scorecard.py"
    card = Scorecard.from_dict(SHIPPED)
    for verdict in card.verdicts:
        assert f"**{verdict.outcome}**" in module.current_block(readme)
