"""Algorithm selection: learner contract, the prequential choice, the oracle, the claim 3(a) rule."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.book import selection_page, verdict_prose
from uni_icl.book.formatting import training_table
from uni_icl.evaluation import Difference
from uni_icl.experiments import selection as experiment
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.experiments.evidence import side
from uni_icl.experiments.rules import selection as rules
from uni_icl.learners import LearnerSpec
from uni_icl.learners.selectors import AlgorithmSelector, OracleSelector, prequential_scores, select_best
from uni_icl.presets import PRESETS
from uni_icl.runs import build_seeded
from uni_icl.tasks import make_task
from uni_icl.tasks.synthetic import MIXTURE_INPUT_STD, RADIUS_INPUT_STD, radius_labels


def meta_learners(seed: int = 0) -> dict[str, nn.Module]:
    task = make_task("mixture", n_points=12)
    return {
        name: build_seeded(LearnerSpec(name, {"hidden": 8, "n_layers": 2}), task, seed + index)
        for index, name in enumerate(("matchnet", "protonet", "cnp"))
    }


class FixedLogits(nn.Module):
    """A stand-in learner whose logits are given in advance: (B, N, C)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self.logits


def one_hot_logits(predicted: list[int], confidence: float = 2.0) -> torch.Tensor:
    """Logits (1, N, 2) that predict ``predicted`` with the given margin."""
    return confidence * (2 * F.one_hot(torch.tensor([predicted]), 2).float() - 1)


def test_selector_follows_the_learner_contract():
    selector = AlgorithmSelector(meta_learners())
    episode = make_task("mixture", n_points=12).sample(6, seed=1)
    reference = selector(episode.xs, episode.ys)
    assert reference.shape == (6, 12, 2)
    for i in (0, 5, 11):
        xs, ys = episode.xs.clone(), episode.ys.clone()
        ys[:, i:] = 1 - ys[:, i:]
        xs[:, i + 1 :] = torch.randn_like(xs[:, i + 1 :])
        torch.testing.assert_close(selector(xs, ys)[:, : i + 1], reference[:, : i + 1])


def test_selector_outputs_the_chosen_candidates_log_probabilities():
    selector = AlgorithmSelector(meta_learners())
    episode = make_task("mixture", n_points=12).sample(4, seed=2)
    every = selector.candidate_log_probs(episode.xs, episode.ys)  # (B, N, K, C)
    chosen = selector.choices(episode.xs, episode.ys)
    expected = every.gather(2, chosen[:, :, None, None].expand(-1, -1, 1, 2)).squeeze(2)
    torch.testing.assert_close(selector(episode.xs, episode.ys), expected)


def test_selector_picks_the_best_prequential_candidate_on_a_hand_made_episode():
    ys = torch.tensor([[0, 1, 1, 0, 1, 0]])
    xs = torch.zeros(1, 6, 2)
    right_early = one_hot_logits([0, 1, 1, 1, 0, 1])  # right on points 0-2, wrong on 3-5
    right_late = one_hot_logits([1, 0, 0, 0, 1, 0])  # wrong on 0-2, right on 3-5
    selector = AlgorithmSelector({"early": FixedLogits(right_early), "late": FixedLogits(right_late)})
    # correct counts before i: early 0,1,2,3,3,3 ; late 0,0,0,0,1,2 -> tie at i = 0 goes to the first
    assert selector.choices(xs, ys).tolist() == [[0, 0, 0, 0, 0, 0]]
    swapped = AlgorithmSelector({"late": FixedLogits(right_late), "early": FixedLogits(right_early)})
    assert swapped.choices(xs, ys).tolist() == [[0, 1, 1, 1, 1, 1]]
    right_once = one_hot_logits([0, 0, 0, 1, 0, 1])  # right on point 0 only
    late_wins = AlgorithmSelector({"once": FixedLogits(right_once), "late": FixedLogits(right_late)})
    # counts once 0,1,1,1,1,1 ; late 0,0,0,0,1,2: at i = 4 an exact tie (same log-likelihood) goes to the first
    assert late_wins.choices(xs, ys).tolist() == [[0, 0, 0, 0, 0, 1]]
    torch.testing.assert_close(late_wins(xs, ys)[0, 5], F.log_softmax(right_late[0, 5], -1))


def test_ties_are_broken_by_log_likelihood_then_by_order():
    correct = torch.tensor([[[2.0, 2.0, 1.0], [1.0, 1.0, 1.0]]])
    loglik = torch.tensor([[[-3.0, -1.0, 0.0], [-2.0, -2.0, -2.0]]])
    assert select_best(correct, loglik).tolist() == [[1, 0]]
    log_probs = F.log_softmax(torch.tensor([[[[3.0, 0.0]], [[0.0, 1.0]]]]), -1)  # (1, 2, 1, 2)
    counts, ll = prequential_scores(log_probs, torch.tensor([[0, 0]]))
    assert counts[0, :, 0].tolist() == [0.0, 1.0]
    torch.testing.assert_close(ll[0, 1, 0], log_probs[0, 0, 0, 0])


def test_oracle_matches_the_matching_learner_on_its_family():
    candidates = meta_learners()
    oracle = OracleSelector(candidates)
    for family, name in (("pairwise", "matchnet"), ("prototype", "protonet"), ("amortized", "cnp")):
        episode = make_task(family, n_points=12).sample(5, seed=3)
        expected = F.log_softmax(candidates[name](episode.xs, episode.ys), -1)
        torch.testing.assert_close(oracle.for_family(family)(episode.xs, episode.ys), expected)
        torch.testing.assert_close(oracle(episode.xs, episode.ys, family), expected)


def test_oracle_uses_each_episodes_family_in_a_mixed_batch():
    candidates = meta_learners()
    oracle = OracleSelector(candidates)
    episode = make_task("mixture", n_points=12).sample(6, seed=4)
    families = [("pairwise", "prototype", "amortized")[c] for c in episode.params["component"].tolist()]
    output = oracle(episode.xs, episode.ys, families)
    for b, family in enumerate(families):
        single = oracle(episode.xs[b : b + 1], episode.ys[b : b + 1], family)
        torch.testing.assert_close(output[b : b + 1], single)


def test_oracle_refuses_a_family_without_a_candidate_unless_one_is_assigned():
    candidates = meta_learners()
    episode = make_task("radius", n_points=12).sample(2, seed=5)
    with pytest.raises(ValueError, match="radius"):
        OracleSelector(candidates)(episode.xs, episode.ys, "radius")
    hindsight = OracleSelector(candidates, {"radius": "protonet"}, family="radius")
    expected = F.log_softmax(candidates["protonet"](episode.xs, episode.ys), -1)
    torch.testing.assert_close(hindsight(episode.xs, episode.ys), expected)


def test_bad_inputs_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="candidates"):
        AlgorithmSelector({})
    with pytest.raises(ValueError, match="assignment"):
        OracleSelector(meta_learners(), {"pairwise": "nope"})
    with pytest.raises(ValueError, match="ys"):
        AlgorithmSelector(meta_learners())(torch.zeros(2, 5, 2), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="families"):
        OracleSelector(meta_learners())(torch.zeros(2, 5, 2), torch.zeros(2, 5, dtype=torch.long))


def _d(mean: float, ci: float) -> Difference:
    return Difference(mean, ci)


def test_claim_3a_rule_on_synthetic_differences():
    m = experiment.MARGIN
    assert m == 0.01
    assert experiment.decide_3a(_d(0.05, 0.02)) == "reproduced"  # (0.03, 0.07) above +m
    assert experiment.decide_3a(_d(-0.05, 0.02)) == "not reproduced"  # below -m: selection better
    assert experiment.decide_3a(_d(0.002, 0.005)) == "not reproduced"  # within (-m, +m): no practical difference
    assert experiment.decide_3a(_d(0.015, 0.01)) == "inconclusive"  # (0.005, 0.025) crosses +m
    assert experiment.decide_3a(_d(-0.012, 0.01)) == "inconclusive"  # (-0.022, -0.002) crosses -m
    assert experiment.decide_3a(_d(0.0, 0.05)) == "inconclusive"  # crosses both
    # significantly positive is not enough any more: above 0 but not above +m
    assert experiment.decide_3a(_d(0.006, 0.003)) == "not reproduced"  # (0.003, 0.009): above 0, inside +m
    assert experiment.decide_3a(_d(0.012, 0.004)) == "inconclusive"
    assert side(_d(0.05, 0.02)) == "above +m" and side(_d(-0.05, 0.02)) == "below -m"
    assert side(_d(0.0, 0.005)) == "within ±m" and side(_d(0.0, 0.05)) == "crosses ±m"
    for words in (f"m = {m}", "above +m", "below -m", "within (-m, +m)", "convergence test"):
        assert words in experiment.RULE_3A


def _runs(converged=(True, True)) -> list[dict]:
    return [
        {
            "seed": seed,
            "steps": 20,
            "max_steps": 20,
            "converged": flag,
            "best_step": 20,
            "best_val": 0.7,
            "remaining_gain_bound": 0.0 if flag else 0.05,
        }
        for seed, flag in enumerate(converged)
    ]


def fake_results(
    icl_seeds: list[list[float]], selector_seeds: list[list[float]], converged=(True, True), rescaled=None
):
    """SelectionResults with only the radius rows the verdict reads (two seeds each); on rescaled radius
    ``rescaled`` = (ICL's, the selector's) per-seed scores, by default the same as on radius."""
    icl_rescaled, selector_rescaled = rescaled or (icl_seeds, selector_seeds)

    def row(learner, per_seed, family="radius"):
        flat = [v for seed in per_seed for v in seed]
        return {
            "learner": learner,
            "test_family": family,
            "mean": sum(flat) / len(flat),
            "ci": 0.0,
            "seed_means": [sum(seed) / len(seed) for seed in per_seed],
            "per_seed_episode_mean": per_seed,
        }

    rows = [
        row(experiment.ICL_MIXTURE, icl_seeds),
        row(experiment.SELECTOR, selector_seeds),
        row(experiment.ORACLE, selector_seeds),
        row(experiment.ICL_RADIUS, icl_seeds),
        row(experiment.RADIUS_BAYES, [shifted(BASE, 0.2)]),  # exact: one row, no training seeds
        row(experiment.ICL_MIXTURE, icl_rescaled, "radius_rescaled"),
        row(experiment.SELECTOR, selector_rescaled, "radius_rescaled"),
        row(experiment.ORACLE, selector_rescaled, "radius_rescaled"),
    ]
    trainings = [{"learner": "icl", "train_family": "mixture", "layout": None, "runs": _runs(converged)}]
    trainings += [
        {"learner": learner, "train_family": family, "layout": None, "runs": _runs()}
        for family, learner in experiment.MATCHING_LEARNER.items()
    ]
    return experiment.SelectionResults("smoke", rows, [], {}, trainings, "ProtoNet", 0.0, seeds=(0, 1))


BASE = [0.6, 0.7, 0.65, 0.62, 0.68, 0.66, 0.7, 0.64]


def shifted(values, by):
    return [v + by for v in values]


def assert_decisive_is_icl_minus_selector(verdict):
    """RULE_3A reads one difference: numbers["decisive"] states it, with the accuracy margin."""
    decisive = verdict.numbers["decisive"]
    assert set(decisive) == {"label", "effect", "ci", "margin"} and decisive["margin"] == experiment.MARGIN
    assert [decisive["effect"], decisive["ci"]] == verdict.numbers["rescaled"]["icl_minus_selector"]
    assert "selector, rescaled radius" in decisive["label"] and len(decisive["label"]) <= 60


def test_claim_3a_verdict_reads_the_seeded_difference():
    two = [BASE, shifted(BASE, 0.01)]
    better = [shifted(BASE, 0.1), shifted(BASE, 0.11)]
    verdict = experiment.verdicts(fake_results(better, two))[0]
    assert verdict.outcome == "reproduced"
    assert verdict.numbers["icl_minus_selector"][0] == pytest.approx(0.1)
    assert verdict.numbers["icl_minus_selector_per_seed"] == pytest.approx([0.1, 0.1])
    assert verdict.numbers["bayes_radius"][0] == pytest.approx(sum(BASE) / len(BASE) + 0.2)
    assert verdict.numbers["bayes_minus_icl_radius_ceiling"][0] == pytest.approx(0.095)  # the ceiling is ICL here
    text = selection_page.explain(verdict)
    assert "The radius Bayes predictor, the ceiling of any learner there, reaches 0.856; Bayes minus" in text
    assert experiment.verdicts(fake_results(two, better))[0].outcome == "not reproduced"
    tiny = [[v + 0.001 * (-1) ** i for i, v in enumerate(seed)] for seed in two]
    assert experiment.verdicts(fake_results(tiny, two))[0].outcome == "not reproduced"  # within the margin
    # the seeds disagree: seed 0 +0.1, seed 1 -0.1; the interval over seeds (t with 1 df) is wide
    split = [shifted(BASE, 0.1), shifted(BASE, -0.09)]
    verdict = experiment.verdicts(fake_results(split, two))[0]
    assert verdict.outcome == "inconclusive"
    assert_decisive_is_icl_minus_selector(verdict)
    assert "disagree on the sign" in selection_page.explain(verdict)
    assert verdict.numbers["seeds_to_decide"]["comparison"] == verdict.numbers["decisive"]["label"]


def test_claim_3a_reads_the_rescaled_arm_and_shows_the_unrescaled_one():
    two = [BASE, shifted(BASE, 0.01)]
    better = [shifted(BASE, 0.1), shifted(BASE, 0.11)]
    verdict = experiment.verdicts(fake_results(two, better, rescaled=(better, two)))[0]
    assert verdict.outcome == "reproduced"  # selection wins on unrescaled radius, ICL on rescaled
    assert verdict.numbers["rescaled"]["icl_minus_selector"][0] == pytest.approx(0.1)
    assert verdict.numbers["icl_minus_selector"][0] == pytest.approx(-0.1)
    assert verdict.numbers["rescaled"]["input_scale"] == pytest.approx(0.4977, abs=1e-4)
    assert rules.rule_outcome(verdict.numbers) == "reproduced" == verdict.notes["ungated_outcome"]
    assert "On unrescaled radius (reported, not read by the rule): -0.100" in selection_page.explain(verdict)
    assert "rescaled" in verdict.notes["previous_outcome"]["comparison_changed"]
    assert "0.498" in experiment.RULE_3A and "unrescaled" in experiment.RULE_3A
    box = verdict_prose.decided_by(verdict)  # the verdict box reads the rescaled arm
    assert "rescaled to the training input scale" in box and "d = +0.100 ± " in box
    assert "so ICL is more accurate than selection by more than the margin" in box


def test_rescaled_radius_keeps_the_episodes_labels_at_the_training_input_scale():
    radius = make_task("radius", n_points=50).sample(4000, seed=3)
    rescaled = make_task("radius_rescaled", n_points=50).sample(4000, seed=3)
    scale = rescaled.xs.flatten()[0] / radius.xs.flatten()[0]
    assert float(scale) == pytest.approx(MIXTURE_INPUT_STD / RADIUS_INPUT_STD, rel=1e-5)
    assert torch.equal(rescaled.ys, radius.ys)
    assert torch.equal(rescaled.ys, radius_labels(rescaled.xs, rescaled.params["radius"]))
    assert float(radius.xs.std()) == pytest.approx(RADIUS_INPUT_STD, rel=0.02)
    assert float(rescaled.xs.std()) == pytest.approx(MIXTURE_INPUT_STD, rel=0.02)
    mixture = make_task("mixture", n_points=50).sample(4000, seed=3)
    assert float(mixture.xs.std()) == pytest.approx(MIXTURE_INPUT_STD, rel=0.02)
    with pytest.raises(ValueError, match="input_scale"):
        make_task("radius_rescaled", input_scale=0.0)


def test_claim_3a_is_inconclusive_when_a_compared_model_did_not_converge():
    better = [shifted(BASE, 0.1), shifted(BASE, 0.11)]
    verdict = experiment.verdicts(fake_results(better, [BASE, BASE], converged=(True, False)))[0]
    assert verdict.outcome == "inconclusive" and verdict.notes["ungated_outcome"] == "reproduced"
    assert verdict.notes["unconverged"] == ["ICL on mixture (seeds 1)"]
    assert "Not converged: ICL on mixture (seeds 1)" in selection_page.explain(verdict)
    compared = {(record["learner"], record["train_family"]) for record in verdict.rests_on}
    assert compared == {("icl", "mixture"), ("matchnet", "pairwise"), ("protonet", "prototype"), ("cnp", "amortized")}


def test_layout_variants_reuse_the_main_model_and_vary_only_layout_or_seed():
    scale = PRESETS["smoke"].classification
    main = classification_run(scale, "icl", classification_task(scale, "mixture"))
    assert experiment.icl_variant(scale, "paired", 0).config() == main.config()  # loaded, not retrained
    other_layout = experiment.icl_variant(scale, "support_query", 0).config()
    other_seed = experiment.icl_variant(scale, "paired", 1).config()
    assert other_layout["learner"]["params"] == {**main.config()["learner"]["params"], "layout": "support_query"}
    assert other_layout["train"] == main.config()["train"]
    assert other_seed["learner"] == main.config()["learner"] and other_seed["train"]["seed"] == 1


def test_training_plan_trains_every_compared_model_with_every_seed():
    preset = PRESETS["smoke"]
    labels = [job.label for job in experiment.training_plan(preset)]
    paths = {job.path for job in experiment.training_plan(preset)}
    seeds = preset.classification.seeds
    # 3 candidates, ICL on mixture with 2 layouts, ICL on radius: 6 models per seed, all distinct
    assert len(paths) == 6 * len(seeds) == len(labels)


def test_variants_are_reported_but_do_not_change_the_outcome():
    results = fake_results([BASE, BASE], [shifted(BASE, 0.1), shifted(BASE, 0.1)])
    results.variants = [
        {
            "layout": "paired",
            "default": True,
            "minus_selector": -0.1,
            "minus_selector_ci": 0.01,
            "per_seed_minus_selector": [-0.1, -0.1],
        },
        {
            "layout": "support_query",
            "default": False,
            "minus_selector": 0.05,
            "minus_selector_ci": 0.01,
            "per_seed_minus_selector": [0.04, 0.06],
        },
    ]
    verdict = experiment.verdicts(results)[0]
    assert verdict.outcome == "not reproduced"
    assert verdict.numbers["variants"]["support_query"] == {
        "minus_selector": [0.05, 0.01],
        "per_seed": [0.04, 0.06],
        "default": False,
    }
    assert "different sides of the margin" in selection_page.explain(verdict)


def test_run_at_smoke_rests_on_every_seed_of_the_compared_models(isolated_cache):
    preset = PRESETS["smoke"]
    results = experiment.run(preset, progress=False)
    seeds = list(preset.classification.seeds)
    for row in results.rows:
        if row["learner"] == experiment.RADIUS_BAYES:  # the exact Bayes predictor has no training seeds
            assert len(row["per_seed_episode_mean"]) == 1
            continue
        assert len(row["per_seed_episode_mean"]) == len(seeds) == len(row["seed_means"])
    (verdict,) = experiment.verdicts(results)
    assert verdict.outcome in ("reproduced", "not reproduced", "inconclusive")
    compared = {(record["learner"], record["train_family"]) for record in verdict.rests_on}
    assert compared == {("icl", "mixture"), ("matchnet", "pairwise"), ("protonet", "prototype"), ("cnp", "amortized")}
    for record in verdict.rests_on:
        assert [run["seed"] for run in record["runs"]] == seeds
        assert all(set(run) == {"seed", "steps", "converged", "remaining_gain_bound"} for run in record["runs"])
    assert verdict.outcome == "inconclusive" or not verdict.notes["unconverged"]
    assert_decisive_is_icl_minus_selector(verdict)
    assert len(verdict.numbers["icl_minus_selector_per_seed"]) == len(seeds)
    assert {v["layout"] for v in results.variants} == {"paired", "support_query"}
    table = training_table(results.trainings)
    assert len(table) == 6 * len(seeds)  # every trained model and seed, with its convergence test
    assert selection_page.explain(verdict).startswith("On radius")
    # the oracle predicts with one candidate: its scores are that candidate's
    oracle = results.row(experiment.ORACLE, "pairwise")
    assert oracle["per_seed_episode_mean"] == results.row("MatchNet", "pairwise")["per_seed_episode_mean"]


def test_the_ladder_reads_the_rule_at_every_rung(isolated_cache):
    """Claim 3(a) at every budget of the ladder: a comparison and a decisive row per rung, each rung's
    models (ICL on the mixture at 3x the rung); the last rung's row is the verdict's own."""
    preset = PRESETS["smoke"]
    results = experiment.run(preset, progress=False)
    rungs = preset.classification.budget_rungs
    assert len(rungs) > 1
    decisive = [row for row in results.ladder if row["kind"] == "decisive"]
    assert [row["steps"] for row in decisive] == list(rungs)
    (verdict,) = experiment.verdicts(results)
    assert decisive[-1]["effect"] == pytest.approx(verdict.numbers["rescaled"]["icl_minus_selector"][0])
    assert decisive[-1]["ci"] == pytest.approx(verdict.numbers["rescaled"]["icl_minus_selector"][1])
    assert decisive[-1]["outcome"] == verdict.outcome
    assert decisive[0]["effect"] != decisive[-1]["effect"]  # another budget's models
    assert [row["steps"] for row in verdict.notes["budget_ladder"]] == list(rungs)
    assert {row["claim"] for row in verdict.notes["budget_ladder"]} == {"3a"}


def test_the_radius_bayes_ceiling_is_shown_beside_the_learners(isolated_cache):
    results = experiment.run(PRESETS["smoke"], progress=False)
    limit = results.row(experiment.RADIUS_BAYES, "radius")
    icl = results.row(experiment.ICL_RADIUS, "radius")
    assert 0.5 < limit["mean"] <= 1.0 and len(limit["per_seed_episode_mean"]) == 1
    assert len(limit["per_episode_mean"]) == len(icl["per_episode_mean"])
