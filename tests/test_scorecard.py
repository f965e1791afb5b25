"""The scorecard: one command runs every claim; two cold runs agree exactly; a warm run trains nothing."""

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from uni_icl import scorecard  # noqa: E402
from uni_icl.book import scorecard_page  # noqa: E402
from uni_icl.evaluation import Difference  # noqa: E402
from uni_icl.presets import PRESETS  # noqa: E402
from uni_icl.verdicts import CLAIMS, ClaimVerdict, Comparison, check_scorecard_dict, decisive  # noqa: E402


def reproduce_cli(cache, output, *extra):
    env = {**os.environ, "UNI_ICL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "uni_icl",
        "reproduce",
        "--preset",
        "smoke",
        "--no-progress",
        "--output",
        str(output),
    ]
    result = subprocess.run([*command, *extra], env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text()), result.stdout


def without_times(card):
    return [{k: v for k, v in verdict.items() if k != "wall_seconds"} for verdict in card["verdicts"]]


@pytest.mark.slow
def test_two_cold_runs_agree_and_a_warm_run_only_loads(tmp_path):
    first, table = reproduce_cli(tmp_path / "a", tmp_path / "a.json")
    second, _ = reproduce_cli(tmp_path / "b", tmp_path / "b.json")
    assert [v["claim"] for v in first["verdicts"]] == list(CLAIMS)
    assert without_times(first) == without_times(second)
    assert "Reproduction scorecard, preset smoke" in table
    assert "Claim" in scorecard_page.discussion(scorecard.Scorecard.from_dict(first)) or all(
        v["outcome"] == "reproduced" for v in first["verdicts"]
    )
    models = sorted((tmp_path / "a").rglob("*.pt"))
    stamps = [path.stat().st_mtime_ns for path in models]
    warm, _ = reproduce_cli(tmp_path / "a", tmp_path / "warm.json")
    assert without_times(warm) == without_times(first)
    assert sorted((tmp_path / "a").rglob("*.pt")) == models
    assert [path.stat().st_mtime_ns for path in models] == stamps  # nothing retrained
    assert warm["wall_seconds"] < first["wall_seconds"]


def make_card(outcomes):
    verdicts = [
        ClaimVerdict(claim, "smoke", "q", {"a": {"b": 0.5}}, "rule", outcome, f"book/0{i}_x", 1.0)
        for i, (claim, outcome) in enumerate(outcomes.items())
    ]
    return scorecard.Scorecard("smoke", verdicts, 2.0)


def test_the_table_says_n_a_for_a_number_that_does_not_apply():
    card = make_card({"4a": "inconclusive"})
    card.verdicts[0].numbers.update({"upper_bound": None, "ratio": float("nan"), "pair": [0.5, None]})
    text = scorecard.format_table(card)
    assert "upper_bound: n/a" in text and "ratio: n/a" in text and "pair: [0.5000, n/a]" in text
    assert "None" not in text and "nan" not in text


def test_table_frame_figure_and_discussion():
    card = make_card({"1": "reproduced", "4b": "not reproduced", "4a": "inconclusive"})  # claims without explainer
    text = scorecard.format_table(card)
    assert "a.b: 0.5000" in text and "NOT REPRODUCED" in text
    html = scorecard_page.scorecard_html(scorecard_page.scorecard_frame(card))
    assert 'href="01_x.html"' in html and "not reproduced" in html
    fig = scorecard_page.plot_scorecard(card)
    text_in_figure = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert all(outcome in text_in_figure for outcome in ("reproduced", "not reproduced", "inconclusive"))
    plt.close(fig)
    discussion = scorecard_page.discussion(card)
    assert "Claim 4b" in discussion and "Claim 4a" in discussion and "Claim 1 " not in discussion
    assert scorecard.Scorecard.from_dict(card.to_dict()) == card


def test_gpu_results_are_shown_beside_this_preset_with_their_device_and_note(tmp_path):
    here = make_card({"2-single": "inconclusive", "2-mixed": "not reproduced"})
    assert "No GPU results" in scorecard_page.gpu_results_markdown(here, tmp_path / "missing")
    gpu = scorecard.Scorecard("paper", make_card({"2-single": "reproduced"}).verdicts, 9.0)
    folder = tmp_path / "paper-h100"
    folder.mkdir()
    (folder / "scorecard-paper.json").write_text(json.dumps(gpu.to_dict()))
    (folder / "device.json").write_text(json.dumps({"device": "NVIDIA H100", "wall_seconds": 321, "note": "limit"}))
    text = scorecard_page.gpu_results_markdown(here, tmp_path)
    assert "**paper-h100**: preset `paper`, run on NVIDIA H100 in 321 s. Note: limit." in text
    assert "| 2-single | reproduced | inconclusive |" in text
    (folder / "learnability-training.csv").write_text(
        "learner,train family,steps run,max steps,levelled off\nICL,pairwise,70,100,False\n"
        "ICL,mixture,40,100,False\nCNP,pairwise,90,50,True\n"
    )
    (folder / "learnability-summary.csv").write_text("family,ICL single\npairwise,0.951 ± 0.001\n")
    text = scorecard_page.gpu_results_markdown(here, tmp_path)
    assert "1 of 3 models levelled off" in text and "ran 40-70 steps (of at most 100)" in text
    assert "| family | ICL single |" in text and "| pairwise | 0.951 ± 0.001 |" in text


def test_unknown_claim_is_rejected_before_work():
    with pytest.raises(ValueError, match="claim: unknown value 'x'; allowed: 1, 2-single"):
        scorecard.check_claims(["x"])
    assert scorecard.check_claims(None) == list(CLAIMS)


def test_partial_run_updates_the_stored_card(tmp_path, monkeypatch):
    calls = []

    def run(preset, *, progress):
        calls.append(preset.name)
        return preset.name

    def verdicts(preset_name):
        return [ClaimVerdict("4a", preset_name, "q", {"x": 1.0}, "r", "reproduced", "book/05_curriculum")]

    fake = SimpleNamespace(CLAIMS=("4a",), run=run, verdicts=verdicts, training_plan=lambda preset: [])
    monkeypatch.setitem(scorecard.EXPERIMENTS, "4a", fake)
    stored = make_card({"1": "reproduced", "4a": "inconclusive"})
    from uni_icl.storage import atomic_json_save

    atomic_json_save(stored.to_dict(), scorecard.scorecard_path("smoke", tmp_path))
    card = scorecard.reproduce(PRESETS["smoke"], ["4a"], progress=False, root=tmp_path)
    assert calls == ["smoke"]
    assert [(v.claim, v.outcome) for v in card.verdicts] == [("1", "reproduced"), ("4a", "reproduced")]
    assert scorecard.load_scorecard("smoke", tmp_path) == card


def test_the_page_shows_what_each_verdict_rests_on():
    runs = [{"seed": 0, "steps": 900, "converged": True}, {"seed": 1, "steps": 4000, "converged": False}]
    models = [
        {"learner": "icl", "train_family": "mixture", "runs": runs},
        {"learner": "cnp", "train_family": "pairwise", "runs": runs[:1]},
    ]
    recorded = ClaimVerdict("2-mixed", "smoke", "q", {}, "rule", "inconclusive", "book/02_x", rests_on=models)
    card = scorecard.Scorecard("smoke", [recorded, make_card({"4a": "reproduced"}).verdicts[0]], 1.0)
    frame = scorecard_page.rests_on_frame(card).set_index("claim")
    assert frame.loc["2-mixed", "models compared"] == 2
    assert frame.loc["2-mixed", "runs converged"] == "2 of 3"
    assert frame.loc["2-mixed", "not converged"] == "ICL on mixture, seed 1"
    assert frame.loc["4a", "models compared"] == "not recorded"
    assert "rests on: 2 models, 2 of 3 runs converged" in scorecard.format_table(card)


M = 0.01  # an accuracy margin for the synthetic comparisons


def picked(comparisons, outcome):
    """The label :func:`decisive` picks among (label, (mean, ci), direction) with the margin M."""
    return decisive([(label, interval, M, direction) for label, interval, direction in comparisons], outcome)["label"]


def test_decisive_of_a_reproduced_rule_is_the_comparison_closest_to_failing():
    # above +m: C has the smallest mean, but B's lower bound (0.015) is the closest to +m
    above = [("A", (0.05, 0.02), "above +m"), ("B", (0.03, 0.015), "above +m"), ("C", (0.025, 0.002), "above +m")]
    assert picked(above, "reproduced") == "B"
    below = [("A", (-0.05, 0.02), "below -m"), ("B", (-0.03, 0.015), "below -m"), ("C", (-0.025, 0.002), "below -m")]
    assert picked(below, "reproduced") == "B"
    # within ±m: the interval whose bound comes nearest either edge
    within = [("A", (0.0, 0.002), "within ±m"), ("B", (-0.004, 0.005), "within ±m")]
    assert picked(within, "reproduced") == "B"


def test_decisive_of_a_not_reproduced_rule_is_the_comparison_furthest_beyond_its_margin():
    # above +m: B has the lowest mean, but A's whole interval lies further below (upper bound -0.02)
    above = [("A", (-0.03, 0.01), "above +m"), ("B", (-0.05, 0.04), "above +m"), ("pass", (0.05, 0.01), "above +m")]
    assert picked(above, "not reproduced") == "A"
    below = [("A", (0.03, 0.01), "below -m"), ("B", (0.05, 0.04), "below -m"), ("pass", (-0.05, 0.01), "below -m")]
    assert picked(below, "not reproduced") == "A"
    # no practical difference fails a claim of a gain: its interval lies within ±m, below +m
    assert picked([("tie", (0.0, 0.005), "above +m"), ("gain", (0.05, 0.01), "above +m")], "not reproduced") == "tie"


def test_decisive_of_an_inconclusive_rule_is_the_widest_straddle_else_the_closest_to_failing():
    # X crosses +m by 0.001 on its short side, Y by 0.005; the tie crosses nothing (and is the furthest from +m)
    above = [("X", (0.011, 0.002), "above +m"), ("Y", (0.02, 0.015), "above +m"), ("tie", (0.0, 0.005), "above +m")]
    assert picked(above, "inconclusive") == "Y"
    below = [("X", (-0.011, 0.002), "below -m"), ("Y", (-0.02, 0.015), "below -m"), ("tie", (0.0, 0.005), "below -m")]
    assert picked(below, "inconclusive") == "Y"
    # only the bound a direction reads counts: crossing +m says nothing about 'above -m' (chapter 2's
    # 2-single at quick: amortized (+0.001, +0.013) crosses +m, pairwise (-0.012, 0.000) crosses -m)
    pair = [("amortized", (0.007, 0.006), "above -m"), ("pairwise", (-0.006, 0.006), "above -m")]
    assert picked(pair, "inconclusive") == "pairwise"
    # nothing crosses ±m (a tie within the margin, a clear gain): the closest to failing
    assert picked([("tie", (0.0, 0.005), "above +m"), ("gain", (0.05, 0.01), "above +m")], "inconclusive") == "tie"


def test_decisive_states_the_chosen_effect_on_its_own_scale_and_ranks_in_units_of_margins():
    log_margin = math.log(1.1)
    comparisons = [
        Comparison("accuracy gain", Difference(0.03, 0.01), M, "above +m"),  # lower bound 1 margin above +m
        Comparison("log ratio", (0.2, 0.05), log_margin, "above +m"),  # lower bound 0.57 margins above +m
    ]
    chosen = decisive(comparisons, "reproduced")
    assert chosen == {"label": "log ratio", "effect": 0.2, "ci": 0.05, "margin": pytest.approx(log_margin)}
    assert decisive(comparisons[:1], "reproduced") == {
        "label": "accuracy gain",
        "effect": 0.03,
        "ci": 0.01,
        "margin": M,
    }
    json.dumps(chosen)


@pytest.mark.parametrize(
    ("comparisons", "outcome", "match"),
    [
        ([], "reproduced", "comparisons"),
        ([("a", (0.1, 0.01), M, "above +m")], "maybe", "outcome"),
        ([("a", (0.1, 0.01), M, "upwards")], "reproduced", "direction"),
        ([("a", (0.1, 0.01), 0.0, "above +m")], "reproduced", "margin"),
        ([("a" * 61, (0.1, 0.01), M, "above +m")], "reproduced", "label"),
        ([("a", (0.1, math.inf), M, "above +m")], "reproduced", "ci"),
    ],
)
def test_decisive_refuses_what_it_cannot_state(comparisons, outcome, match):
    with pytest.raises(ValueError, match=match):
        decisive(comparisons, outcome)


def test_a_stored_verdict_with_a_malformed_decisive_effect_is_not_a_verdict():
    effect = {"label": "ICL - selector", "effect": 0.03, "ci": 0.01, "margin": 0.01}
    good = ClaimVerdict("3a", "smoke", "q", {"decisive": effect}, "rule", "reproduced", "book/03_x")
    check_scorecard_dict(scorecard.Scorecard("smoke", [good], 1.0).to_dict())
    for broken in ({**effect, "ci": -0.01}, {**effect, "margin": 0}, {"label": "x", "effect": 0.1}):
        card = scorecard.Scorecard("smoke", [ClaimVerdict(**{**asdict(good), "numbers": {"decisive": broken}})], 1.0)
        with pytest.raises(ValueError, match="decisive"):
            check_scorecard_dict(card.to_dict())


def card_with_effects(effects):
    """A card of claims 1, 3a and 4a, each verdict stating the decisive effect given for it (None: none)."""
    verdicts = [
        ClaimVerdict(claim, "smoke", "q", {} if effect is None else {"decisive": effect}, "rule", outcome, "book/0x")
        for (claim, outcome), effect in zip(
            (("1", "reproduced"), ("3a", "not reproduced"), ("4a", "inconclusive")), effects, strict=True
        )
    ]
    return scorecard.Scorecard("smoke", verdicts, 1.0)


EFFECTS = [
    {"label": "ICL imitation − ProtoNet, agreement with MatchNet", "effect": 0.03, "ci": 0.01, "margin": 0.01},
    {"label": "ICL on mixture − selector, radius episodes", "effect": -0.05, "ci": 0.02, "margin": 0.01},
    {"label": "log(steps without / with the paper's curriculum)", "effect": 0.2, "ci": 0.3, "margin": math.log(1.1)},
]


def test_the_figure_is_a_forest_of_decisive_effects_in_units_of_margins_when_every_verdict_states_one():
    card = card_with_effects(EFFECTS)
    fig = scorecard_page.plot_scorecard(card)
    try:
        (ax,) = fig.axes
        assert len(ax.containers) == 3 and "margin" in ax.get_xlabel()  # one errorbar per claim
        points = [container.lines[0].get_xdata()[0] for container in ax.containers]
        assert points == pytest.approx([3.0, -5.0, 0.2 / math.log(1.1)])  # effect / margin
        assert ax.get_xscale() == "symlog" and ax.xaxis.get_transform().linthresh == 1.0  # linear within ±margin
        assert fig.get_size_inches()[0] <= 9
        fig.canvas.draw()  # every text beside the effects lies inside the figure
        extents = [text.get_window_extent() for text in ax.texts]
        assert extents and all(0 <= extent.x0 < extent.x1 <= fig.bbox.width for extent in extents)
        assert "ICL on mixture − selector" in " ".join(text.get_text() for text in ax.texts)
    finally:
        plt.close(fig)
    assert "units of their margins" in scorecard_page.figure_caption(card)


def test_a_claim_without_a_decisive_effect_keeps_its_row_in_the_forest():
    card = card_with_effects([EFFECTS[0], None, EFFECTS[2]])
    fig = scorecard_page.plot_scorecard(card)
    try:
        (ax,) = fig.axes
        assert len(ax.containers) == 2 and len(ax.get_yticks()) == 3  # two effects drawn, three rows
        texts = [text.get_text() for text in ax.texts]
        assert "not reproduced\nno effect to plot" in texts
    finally:
        plt.close(fig)
    assert "Claim 3a states no decisive effect" in scorecard_page.figure_caption(card)


def test_the_figure_falls_back_to_the_outcome_table_when_no_verdict_states_a_decisive_effect():
    card = card_with_effects([None, None, None])
    fig = scorecard_page.plot_scorecard(card)
    try:
        (ax,) = fig.axes
        assert not ax.containers and not ax.axison
        assert "not reproduced" in [text.get_text() for text in ax.texts]
    finally:
        plt.close(fig)
    assert scorecard_page.figure_caption(card).endswith("so there is no forest plot.")


def test_every_chapter_module_implements_the_chapter_interface():
    from uni_icl.experiments.chapter import Chapter
    from uni_icl.scorecard import BOOK_CHAPTERS

    for chapter in BOOK_CHAPTERS:
        assert isinstance(chapter, Chapter), chapter.__name__


def test_no_experiment_imports_the_book():
    import ast
    from pathlib import Path

    import uni_icl.experiments

    for path in Path(uni_icl.experiments.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("uni_icl.book"), f"{path.name} imports {node.module}"


def test_changed_rules_are_applied_again_to_their_stored_numbers():
    from uni_icl.experiments.rules import curriculum, selection

    assert {"1", "3a", "3b", "4a", "4b"} <= set(scorecard.RULE_OUTCOMES)
    numbers = {"rescaled": {"icl_minus_selector": [0.05, 0.01]}, "icl_minus_selector": [-0.1, 0.01]}
    verdict = ClaimVerdict("3a", "quick", "q", numbers, selection.RULE_3A, "reproduced", "book/03_selection")
    stored = asdict(verdict) | {"notes": {"ungated_outcome": "reproduced", "unconverged": []}}
    scorecard.check_outcome(stored)  # the rule reads the rescaled arm, not the unrescaled one
    with pytest.raises(ValueError, match="claim 3a: the rule gives 'reproduced'"):
        scorecard.check_outcome(stored | {"notes": {"ungated_outcome": "not reproduced"}})
    per_seed = {str(seed): {"none": 1000, "paper": 500, "log_speedup": math.log(2)} for seed in range(5)}
    per_seed["4"]["none"] = None  # a run that never reached the threshold: no interval
    verdict = ClaimVerdict("4a", "quick", "q", {"per_seed": per_seed}, curriculum.RULE_4A, "inconclusive", "x")
    scorecard.check_outcome(asdict(verdict) | {"notes": {"ungated_outcome": None, "gates": ["never reached"]}})
    with pytest.raises(ValueError, match="claim 4a"):
        scorecard.check_outcome(asdict(verdict) | {"notes": {"ungated_outcome": "reproduced", "gates": []}})


def test_a_page_shows_the_earlier_rules_outcome_and_the_seeds_that_would_decide():
    from uni_icl.book.rule_history import previous_outcome_markdown, seeds_markdown
    from uni_icl.experiments.rules.previous import previous_outcome

    needed = {
        "comparison": "ICL on mixture − selector, rescaled radius episodes",
        "seeds": 3,
        "seeds_to_decide": 9,
        "power": 0.8,
        "seed_sd": 0.012,
        "episode_se": 0.003,
    }
    numbers = {"decisive": {"label": "d", "effect": 0.012, "ci": 0.02, "margin": 0.01}, "seeds_to_decide": needed}
    verdict = ClaimVerdict("3a", "quick", "q", numbers, "r", "inconclusive", "x", notes=previous_outcome("3a"))
    history = previous_outcome_markdown(verdict)
    assert "rule change of 2026-12-07" in history and "gave **not reproduced**" in history
    assert "-0.0962 ± 0.0462" in history and "**inconclusive** (decisive comparison: d, +0.0120 ± 0.0200)" in history
    assert "rescaled to the training scale" in history and "stopping rule" in history
    seeds = seeds_markdown(verdict)
    assert "With 3 seeds" in seeds and "9 seeds would decide it with probability 80%" in seeds
    assert "seeds are unchanged" in seeds
    blurred_numbers = {"seeds_to_decide": {**needed, "seeds_to_decide": None}}
    blurred = ClaimVerdict("3a", "quick", "q", blurred_numbers, "r", "inconclusive", "x")
    assert "no number of seeds up to 100" in seeds_markdown(blurred)
    bare = ClaimVerdict("3a", "quick", "q", {}, "r", "reproduced", "x")
    assert previous_outcome_markdown(bare) == seeds_markdown(bare) == ""


def test_the_budget_table_gives_each_claims_outcome_at_every_budget_and_says_which_change():
    def rung(steps, outcome, ungated=None):
        return {"steps": steps, "outcome": outcome, "ungated_outcome": ungated or outcome, "effect": 0.0, "ci": 0.01}

    card = make_card({"2-single": "inconclusive", "4b": "not reproduced", "4a": "inconclusive"})
    card.verdicts[0].notes["budget_ladder"] = [
        rung(2000, "inconclusive", "not reproduced"),
        rung(1000, "inconclusive"),
        rung(8000, "inconclusive"),
        rung(4000, "reproduced"),
    ]
    card.verdicts[1].notes["budget_ladder"] = [rung(s, "not reproduced") for s in (50, 100, 200, 400)]
    frame = scorecard_page.budget_frame(card)
    assert list(frame["claim"]) == ["2-single", "4b"]  # 4a has no ladder
    assert list(frame.columns) == ["claim", "1/8 budget", "1/4 budget", "1/2 budget", "full budget"]
    assert frame.iloc[0]["1/4 budget"] == "inconclusive (rule alone: not reproduced), 2,000 steps"
    assert frame.iloc[1]["full budget"] == "not reproduced, 400 meta-steps"
    reading = scorecard_page.budget_reading(card)
    assert "same outcome at every budget for 4b (not reproduced)" in reading
    assert "2-single (inconclusive → not reproduced → reproduced → inconclusive)" in reading
    assert scorecard_page.budget_reading(make_card({"1": "reproduced"})).startswith("No claim")


def test_the_committed_gpu_scorecards_load_and_the_page_says_they_predate_the_ladder():
    """The scorecard page reads every gpu_results/*/scorecard-*.json with the current checks (a record the
    checks refuse fails the book build); records without a calibration say what they predate."""
    found = sorted(scorecard_page.GPU_RESULTS.glob("*/scorecard-*.json"))
    assert found
    for path in found:
        scorecard.Scorecard.from_dict(json.loads(path.read_text()))
    text = scorecard_page.gpu_results_markdown(make_card({"2-single": "inconclusive"}))
    assert text.count("predates the fixed budget") == len(found)
