"""Algorithm selection: learner contract, the prequential choice, the oracle, the claim 3(a) rule."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.experiments import selection as experiment
from uni_icl.experiments.common import classification_run, classification_task
from uni_icl.learners import LearnerSpec
from uni_icl.learners.selectors import AlgorithmSelector, OracleSelector, prequential_scores, select_best
from uni_icl.presets import PRESETS
from uni_icl.runs import build_seeded
from uni_icl.tasks import make_task


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


def fake_results(icl_episodes: list[float], selector_episodes: list[float]) -> experiment.SelectionResults:
    def row(learner, values):
        mean = sum(values) / len(values)
        return {"learner": learner, "test_family": "radius", "mean": mean, "ci": 0.0, "per_episode_mean": values}

    rows = [
        row(experiment.ICL_MIXTURE, icl_episodes),
        row(experiment.SELECTOR, selector_episodes),
        row(experiment.ORACLE, selector_episodes),
        row(experiment.ICL_RADIUS, icl_episodes),
    ]
    return experiment.SelectionResults("smoke", rows, [], {}, {}, "ProtoNet", 0.0)


def test_claim_3a_rule():
    base = [0.6, 0.7, 0.65, 0.62, 0.68, 0.66, 0.7, 0.64]
    better = [v + 0.1 for v in base]
    assert experiment.verdicts(fake_results(better, base))[0].outcome == "reproduced"
    assert experiment.verdicts(fake_results(base, better))[0].outcome == "not reproduced"
    tiny = [v + 0.001 * (-1) ** i for i, v in enumerate(base)]
    assert experiment.verdicts(fake_results(tiny, base))[0].outcome == "not reproduced"
    noisy = [v + 0.2 * (-1) ** i for i, v in enumerate(base)]
    assert experiment.verdicts(fake_results(noisy, base))[0].outcome == "inconclusive"


def test_paired_difference_matches_a_hand_computation():
    mean, ci = experiment.paired_difference([1.0, 0.5, 0.0], [0.5, 0.5, 0.5])
    assert mean == pytest.approx(0.0)
    assert ci == pytest.approx(1.959964 * 0.5 / 3**0.5)


def test_layout_variants_reuse_the_main_model_and_vary_only_layout_or_seed():

    scale = PRESETS["smoke"].classification
    main = classification_run(scale, "icl", classification_task(scale, "mixture"))
    assert experiment.icl_variant(scale, "paired", 0).config() == main.config()  # loaded, not retrained
    other_layout = experiment.icl_variant(scale, "support_query", 0).config()
    other_seed = experiment.icl_variant(scale, "paired", 1).config()
    assert other_layout["learner"]["params"] == {**main.config()["learner"]["params"], "layout": "support_query"}
    assert other_layout["train"] == main.config()["train"]
    assert other_seed["learner"] == main.config()["learner"] and other_seed["train"]["seed"] == 1


def test_variants_are_reported_but_do_not_change_the_outcome():
    base = [0.6, 0.7, 0.65, 0.62, 0.68, 0.66, 0.7, 0.64]
    results = fake_results(base, [v + 0.1 for v in base])
    results.variants = [
        {"layout": "paired", "seed": 0, "minus_selector": -0.1, "minus_selector_ci": 0.01},
        {"layout": "support_query", "seed": 0, "minus_selector": 0.05, "minus_selector_ci": 0.01},
    ]
    verdict = experiment.verdicts(results)[0]
    assert verdict.outcome == "not reproduced"
    assert verdict.numbers["variants"] == {"paired/seed0": [-0.1, 0.01], "support_query/seed0": [0.05, 0.01]}
