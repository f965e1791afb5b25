"""M2-ICL: the domain mixture, the functional MAML inner loop, first- vs second-order meta-gradients."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from uni_icl.book import m2icl_page, verdict_prose
from uni_icl.evaluation import Difference
from uni_icl.experiments import m2icl as experiment
from uni_icl.experiments.rules import m2icl as rules
from uni_icl.learners.maml import (
    MAMLConfig,
    MetaObjective,
    fine_tune,
    inner_adapt,
    meta_gradient,
    prompt_loss,
    relative_errors,
)
from uni_icl.learners.regressors import CausalRegressionTransformer, LeastSquares, RegressorConfig
from uni_icl.presets import PRESETS
from uni_icl.tasks import Episode, RegressionDomain, domain_task, make_task
from uni_icl.training import train
from uni_icl.verdicts import check_rests_on, decisive


class LinearPredictor(nn.Module):
    """prediction = x . w: linear in its parameters, so every gradient has a closed form."""

    is_regression = True

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-0.5, 0.5, d, dtype=torch.float64))

    def forward(self, xs, ys):
        return xs @ self.w


def regression_episode(seed, n_prompts, n_points, d, columns=None):
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(n_prompts, n_points, d, generator=gen, dtype=torch.float64)
    if columns is not None:
        xs = xs * torch.isin(torch.arange(d), torch.tensor(columns)).to(xs.dtype)
    ys = xs @ torch.randn(d, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(n_prompts, n_points, generator=gen)
    return Episode(xs, ys, "test")


def mse_gradient(w, xs, ys):
    """d/dw of mean((X w - y)^2) = 2/n X^T (X w - y), X the (n, d) rows of all prompts and points."""
    X, y = xs.reshape(-1, xs.shape[-1]), ys.reshape(-1)
    return 2.0 / len(y) * X.T @ (X @ w - y)


def mse_hessian(xs):
    X = xs.reshape(-1, xs.shape[-1])
    return 2.0 / X.shape[0] * X.T @ X


def test_domain_mixture_follows_its_definition():
    episode = make_task("regression_domains", d=3, n_points=7).sample(16, seed=0)
    p = episode.params
    assert episode.xs.shape == (16, 7, 3) and episode.ys.shape == (16, 7)
    # labels normalised per domain: sign(s) w.x / sqrt(E|x|^2), E|x|^2 = ||A||_F^2 + d b^2
    rms = torch.sqrt(p["matrix"].pow(2).sum((1, 2)) + 3 * p["shift"] ** 2)
    expected = (torch.sign(p["scale"]) / rms)[:, None] * torch.einsum("bnd,bd->bn", episode.xs, p["weights"])
    assert torch.allclose(episode.ys, expected, atol=1e-5)
    assert p["scale"].std() > 0.1 and p["matrix"].std() > 0.5  # a fresh domain per episode
    raw = make_task("regression_domains", d=3, n_points=7, normalise_labels=False).sample(16, seed=0)
    assert torch.equal(raw.xs, episode.xs)
    assert torch.allclose(raw.ys, p["scale"][:, None] * torch.einsum("bnd,bd->bn", raw.xs, p["weights"]), atol=1e-5)


def test_normalised_domain_labels_have_mean_square_one_and_leave_relative_errors_of_least_squares_unchanged():
    for index in range(4):
        domain = RegressionDomain.sample(4, seed=index)
        normalised = domain_task(domain, 9).sample(4000, seed=index)
        raw = domain_task(domain, 9, normalise_labels=False).sample(4000, seed=index)
        assert torch.equal(normalised.xs, raw.xs)
        assert normalised.ys.pow(2).mean().item() == pytest.approx(1.0, rel=0.1)
        rms = math.sqrt(sum(v * v for row in domain.matrix for v in row) + 4 * domain.shift**2)  # sqrt(E|x|^2)
        assert torch.allclose(normalised.ys * abs(domain.scale) * rms, raw.ys, rtol=1e-4, atol=1e-5)
        assert torch.equal(torch.sign(normalised.ys), torch.sign(raw.ys))  # the sign of s is kept
        test = dataclasses.replace(normalised, xs=normalised.xs[:256], ys=normalised.ys[:256])
        test_raw = dataclasses.replace(raw, xs=raw.xs[:256], ys=raw.ys[:256])
        assert relative_errors(LeastSquares(), test).mean().item() == pytest.approx(
            relative_errors(LeastSquares(), test_raw).mean().item(), rel=1e-3
        )
    assert make_task("linear_regression", d=4, domain=RegressionDomain.sample(4, seed=0)).normalise_labels is False
    with pytest.raises(ValueError, match="normalise_labels"):
        make_task("linear_regression", d=4, normalise_labels=True)


def test_inner_step_matches_hand_computed_sgd():
    model = LinearPredictor(3)
    support = regression_episode(0, 4, 5, 3)
    params = dict(model.named_parameters())
    one = inner_adapt(model, params, support.xs, support.ys, steps=1, lr=0.05, create_graph=False)
    w0 = model.w.detach()
    w1 = w0 - 0.05 * mse_gradient(w0, support.xs, support.ys)
    assert torch.allclose(one["w"], w1, atol=1e-12)
    two = inner_adapt(model, params, support.xs, support.ys, steps=2, lr=0.05, create_graph=True)
    w2 = w1 - 0.05 * mse_gradient(w1, support.xs, support.ys)
    assert torch.allclose(two["w"], w2, atol=1e-12)


def test_clipped_inner_step_matches_hand_computed_clipped_sgd():
    model = LinearPredictor(3)
    support = regression_episode(0, 4, 5, 3)
    w0 = model.w.detach()
    gradient = mse_gradient(w0, support.xs, support.ys)
    clip = 0.5 * gradient.norm().item()  # the clipping is active
    one = inner_adapt(
        model,
        dict(model.named_parameters()),
        support.xs,
        support.ys,
        steps=1,
        lr=0.05,
        create_graph=False,
        grad_clip=clip,
    )
    assert torch.allclose(one["w"], w0 - 0.05 * clip / (gradient.norm() + 1e-6) * gradient, atol=1e-12)
    loose = inner_adapt(
        model,
        dict(model.named_parameters()),
        support.xs,
        support.ys,
        steps=1,
        lr=0.05,
        create_graph=False,
        grad_clip=10 * gradient.norm().item(),
    )
    assert torch.allclose(loose["w"], w0 - 0.05 * gradient, atol=1e-12)  # inactive clipping changes nothing


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_inner_step_matches_an_sgd_optimizer_on_the_transformer(grad_clip):
    torch.manual_seed(0)
    model = CausalRegressionTransformer(2, RegressorConfig(width=8, depth=1, n_heads=2, max_points=5))
    support = make_task("linear_regression", d=2, n_points=5).sample(6, seed=1)
    params = dict(model.named_parameters())
    adapted = inner_adapt(
        model, params, support.xs, support.ys, steps=2, lr=0.1, create_graph=False, grad_clip=grad_clip
    )
    reference = fine_tune(model, support, epochs=2, lr=0.1, batch_size=6, seed=0, grad_clip=grad_clip)  # one batch
    for name, value in reference.named_parameters():
        assert torch.allclose(adapted[name], value, atol=1e-6), name
    assert not torch.allclose(adapted["read_out.weight"], model.read_out.weight)


def test_first_and_second_order_meta_gradients_match_their_closed_forms():
    model = LinearPredictor(3)
    support, query = regression_episode(0, 4, 5, 3), regression_episode(1, 4, 5, 3)
    lr = 0.1
    w0 = model.w.detach()
    w1 = w0 - lr * mse_gradient(w0, support.xs, support.ys)
    g_query = mse_gradient(w1, query.xs, query.ys)
    second = (torch.eye(3, dtype=torch.float64) - lr * mse_hessian(support.xs)) @ g_query
    config = MAMLConfig(inner_steps=1, inner_lr=lr, inner_grad_clip=None)
    _, first_grads = meta_gradient(model, [(support, query)], config)
    _, second_grads = meta_gradient(model, [(support, query)], dataclasses.replace(config, second_order=True))
    assert torch.allclose(first_grads[0], g_query, atol=1e-12)  # FOMAML: the query gradient at the adapted weights
    assert torch.allclose(second_grads[0], second, atol=1e-12)  # MAML: (I - lr H_support) times it
    assert (first_grads[0] - second_grads[0]).abs().max() > 1e-3


def test_orders_agree_when_the_second_order_term_vanishes():
    """Support inputs only on dimension 0, query inputs only on dimensions 1-2: H_support g_query = 0."""
    model = LinearPredictor(3)
    support = regression_episode(0, 4, 5, 3, columns=[0])
    query = regression_episode(1, 4, 5, 3, columns=[1, 2])
    config = MAMLConfig(inner_steps=3, inner_lr=0.1, inner_grad_clip=None)
    _, first = meta_gradient(model, [(support, query)], config)
    _, second = meta_gradient(model, [(support, query)], dataclasses.replace(config, second_order=True))
    assert torch.allclose(first[0], second[0], atol=1e-12)
    assert first[0].abs().max() > 1e-3


def test_orders_differ_on_the_transformer():
    torch.manual_seed(0)
    model = CausalRegressionTransformer(2, RegressorConfig(width=8, depth=1, n_heads=2, max_points=5))
    task = make_task("linear_regression", d=2, n_points=5)
    pairs = [(task.sample(8, seed=0), task.sample(8, seed=1))]
    config = MAMLConfig(inner_steps=2, inner_lr=0.1)
    first_loss, first = meta_gradient(model, pairs, config)
    second_loss, second = meta_gradient(model, pairs, dataclasses.replace(config, second_order=True))
    assert first_loss == pytest.approx(second_loss)  # same forward pass, different backward pass
    assert max((a - b).abs().max().item() for a, b in zip(first, second, strict=True)) > 1e-6


def test_meta_training_runs_and_keeps_the_best_weights(tmp_path):
    torch.manual_seed(0)
    model = CausalRegressionTransformer(2, RegressorConfig(width=8, depth=1, n_heads=2, max_points=5))
    config = MAMLConfig(
        inner_steps=1,
        support_size=8,
        query_size=8,
        meta_steps=4,
        eval_every=2,
        n_val_domains=2,
        n_val_prompts=8,
        meta_lr=1e-3,
    )
    task = make_task("regression_domains", d=2, n_points=5)
    objective = MetaObjective(2, 5, config)
    history = train(
        model, task, config.train_config(), objective=objective, checkpoint_path=tmp_path / "m.ckpt", progress=False
    )
    assert history.steps == [2, 4] and len(history.val_score) == 2
    assert not (tmp_path / "m.ckpt").exists()


def test_fine_tune_leaves_the_original_untouched_and_lowers_the_support_loss():
    model = LinearPredictor(3)
    support = regression_episode(2, 40, 5, 3)
    before = model.w.detach().clone()
    adapted = fine_tune(model, support, epochs=3, lr=0.05, batch_size=16, seed=0)
    assert torch.equal(model.w.detach(), before)
    params = dict(model.named_parameters())
    assert prompt_loss(adapted, dict(adapted.named_parameters()), support.xs, support.ys) < prompt_loss(
        model, params, support.xs, support.ys
    )


M = math.log(1.1)


@pytest.mark.parametrize(
    ("adapted", "unadapted", "outcome"),
    [
        ((0.30, 0.10), (0.40, 0.10), "reproduced"),  # both intervals above +m
        ((0.30, 0.10), (0.40, 0.35), "inconclusive"),  # (b) crosses +m
        ((0.00, 0.05), (0.40, 0.10), "not reproduced"),  # (a) within (-m, +m): no practical difference
        ((-0.30, 0.10), (0.40, 0.10), "not reproduced"),  # (a) below -m: M2-ICL adapted is worse
        ((0.30, 0.10), (0.02, 0.03), "not reproduced"),  # (b) within: no better than ICL without adaptation
        ((0.08, 0.10), (0.40, 0.10), "inconclusive"),  # (a) crosses +m
        # the previous rule's 'not reproduced' on a mean <= 0 alone: now it needs the interval
        ((-0.01, 0.20), (0.40, 0.10), "inconclusive"),
    ],
)
def test_decision_rule_needs_an_interval_for_either_outcome(adapted, unadapted, outcome):
    assert experiment.decide_4b(Difference(*adapted), Difference(*unadapted)) == outcome


def test_gates_name_weak_learners_and_unconverged_seeds():
    converged = {
        "icl": [{"seed": 0, "steps": 10, "converged": True}],
        "m2icl": [{"seed": 0, "steps": 4, "converged": True}],
    }
    assert experiment.gates_4b(0.37, converged) == []
    assert "0.900, above 0.5" in experiment.gates_4b(0.9, converged)[0]
    failed = {
        **converged,
        "m2icl": [{"seed": 0, "steps": 4, "converged": True}, {"seed": 1, "steps": 4, "converged": False}],
    }
    assert experiment.gates_4b(0.37, failed) == ["not converged: M2-ICL meta-training (seeds 1)"]
    check_rests_on(experiment.rests_on(failed))


def _synthetic_rows(seeds, n_domains, log_gap, rng, *, spread=0.02):
    """Rows with per-domain errors; ICL adapted = M2-ICL adapted * exp(log_gap + noise), unadapted ICL 1.5x worse."""
    rows = []
    for seed in seeds:
        for domain in range(n_domains):
            base = 0.15 * math.exp(rng.normal(0, 0.3))
            m2 = base * math.exp(rng.normal(0, 0.01))
            values = {
                "M2-ICL adapted": m2,
                "ICL adapted": m2 * math.exp(log_gap + rng.normal(0, spread)),
                "ICL (no adaptation)": m2 * math.exp(log_gap + 0.4),
                "M2-ICL (no adaptation)": m2 * 1.2,
                "least squares": 0.2,
            }
            for arm, value in values.items():
                sizes = (
                    (0,)
                    if "adapted" not in arm or "no adaptation" in arm or arm == "least squares"
                    else (64, 256, 1024)
                )
                for size in sizes:
                    shrink = {0: 1.0, 64: 1.0, 256: 0.9, 1024: 0.8}[size] if arm == "ICL adapted" else 1.0
                    factor = math.exp(math.log(shrink) * log_gap / max(abs(log_gap), 1e-9)) if log_gap else 1.0
                    rows.append(
                        {"seed": seed, "domain": domain, "arm": arm, "size": size, "per_position": [value * factor] * 5}
                    )
    return rows


def _synthetic_results(log_gap, *, icl_converged=True, seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    scale = dataclasses.replace(PRESETS["quick"].m2icl, seeds=seeds)
    rows = _synthetic_rows(seeds, scale.n_test_domains, log_gap, rng)
    checks = [
        {
            "seed": seed,
            "meta_validation": 0.35,
            "validation_domains": [0.35 * math.exp(0.1 * i) for i in range(8)],
            "code_paths_log_gap": 0.0,
            "held_out": [0.3 * math.exp(0.1 * i) for i in range(scale.n_test_domains)],
        }
        for seed in seeds
    ]
    bound = 0.0 if icl_converged else 0.05
    records = {
        "icl": [{"seed": s, "steps": 3000, "converged": icl_converged, "remaining_gain_bound": bound} for s in seeds],
        "m2icl": [{"seed": s, "steps": 200, "converged": True, "remaining_gain_bound": 0.0} for s in seeds],
    }
    return experiment.M2ICLResults(scale, rows, records, checks, wall_seconds=1.0)


def test_paired_log_ratios_over_seeds_and_domains():
    results = _synthetic_results(0.3)
    ratio = experiment.log_ratio(results.rows, "ICL adapted", 64)
    assert ratio.mean == pytest.approx(0.3, abs=0.01) and 0 < ratio.ci < 0.05
    per_domain = experiment.per_domain_log_ratios(results.rows, "ICL adapted", 64)
    assert len(per_domain) == 12 and all(len(r["per_seed"]) == 3 for r in per_domain)
    assert all(r["mean"] == pytest.approx(0.3, abs=0.05) for r in per_domain)
    table = experiment.summary(results)
    row = next(r for r in table if r["arm"] == "ratio: ICL adapted / M2-ICL adapted" and r["size"] == 64)
    assert row["value"] == pytest.approx(math.exp(ratio.mean)) and len(row["seed_values"]) == 3


def assert_decisive_is_a_log_ratio_the_rule_reads(verdict) -> str:
    """numbers["decisive"] states comparison (a) or (b) of RULE_4B at the smallest K, with the log margin;
    returns which ('adapted' or 'unadapted')."""
    decisive, numbers = verdict.numbers["decisive"], verdict.numbers
    assert set(decisive) == {"label", "effect", "ci", "margin"} and decisive["margin"] == experiment.LOG_MARGIN
    read = {
        "adapted": numbers["log_ratio_adapted"][str(numbers["smallest_size"])],
        "unadapted": numbers["log_ratio_unadapted"],
    }
    which = "unadapted" if "unadapted" in decisive["label"] else "adapted"
    assert [decisive["effect"], decisive["ci"]] == read[which]
    return which


def test_decisive_comparison_is_the_one_that_decided_rule_4b():
    adapted, unadapted = Difference(0.3, 0.1), Difference(0.02, 0.03)  # (b) within ±m: not reproduced
    outcome = experiment.decide_4b(adapted, unadapted)
    chosen = decisive(rules.comparisons_4b(adapted, unadapted, 64), outcome)
    assert outcome == "not reproduced" and chosen["label"] == "log(ICL unadapted / M2-ICL adapted error), K = 64"
    unadapted = Difference(0.4, 0.35)  # (b) crosses +m
    outcome = experiment.decide_4b(adapted, unadapted)
    chosen = decisive(rules.comparisons_4b(adapted, unadapted, 64), outcome)
    assert outcome == "inconclusive" and chosen["effect"] == 0.4
    # (a) within ±m contradicts; (b) crosses -m, undecided, yet its upper bound lies further below +m:
    # the decisive comparison is (a), the one the rule read as contradicting
    margin = experiment.LOG_MARGIN
    adapted, unadapted = Difference(0.0, 0.5 * margin), Difference(-1.4 * margin, 1.6 * margin)
    outcome = experiment.decide_4b(adapted, unadapted)
    chosen = experiment.decisive_4b(adapted, unadapted, 64, outcome)
    assert outcome == "not reproduced" and chosen["label"] == "log(ICL adapted / M2-ICL adapted error), K = 64"


def test_verdict_rests_on_both_models_and_explains_from_its_numbers():
    (verdict,) = experiment.verdicts(_synthetic_results(0.3))
    assert verdict.outcome == "reproduced" and verdict.notes["gates"] == []
    check_rests_on(verdict.rests_on)
    assert [r["learner"] for r in verdict.rests_on] == ["icl_regressor", "m2icl"]
    assert [run["seed"] for run in verdict.rests_on[1]["runs"]] == [0, 1, 2]
    assert verdict.numbers["decisive"]["effect"] == pytest.approx(0.3, abs=0.01)
    # of (a) 0.3 and (b) 0.7, (a) is the closer to failing; (b) ICL without adaptation is 1.5x worse
    assert assert_decisive_is_a_log_ratio_the_rule_reads(verdict) == "adapted"
    assert verdict.numbers["shrink"][0] > 0  # the synthetic gain shrinks with K
    text = m2icl_page.explain(verdict)
    assert "above +m: supports" in text and "M2-ICL adapted has the lower error on 12 of 12 domains" in text
    assert "it falls significantly" in text and "a working in-context regressor" in text
    assert "the two code paths agree" in text and "6 of the 6 compared training runs passed" in text
    json.dumps(dataclasses.asdict(verdict))

    (verdict,) = experiment.verdicts(_synthetic_results(0.0, icl_converged=False))
    assert verdict.outcome == "inconclusive" and verdict.notes["ungated_outcome"] == "not reproduced"
    assert assert_decisive_is_a_log_ratio_the_rule_reads(verdict) == "adapted"  # (a) within ±m: the failing one
    text = m2icl_page.explain(verdict)
    assert "within ±m: contradicts" in text and "no significant change" in text
    assert "So the outcome is inconclusive: not converged: ICL pre-training (seeds 0, 1, 2)" in text


def test_domain_sets_difference_reads_the_two_draws_of_domains():
    checks = _synthetic_results(0.3).validation_check
    gap = experiment.domain_sets_difference(checks)
    # validation domains 0.35 e^{0.1 i}, i < 8; held-out 0.3 e^{0.1 i}, i < 12: log ratio log(0.35/0.3) - 0.2
    assert gap["log_ratio"][0] == pytest.approx(math.log(0.35 / 0.3) + 0.35 - 0.55)
    assert gap["n_validation"] == 8 and gap["n_held_out"] == 12


def test_validation_check_runs_the_held_out_procedure_on_the_validation_domains():
    scale = PRESETS["smoke"].m2icl
    torch.manual_seed(0)
    model = CausalRegressionTransformer(scale.d, RegressorConfig(**scale.regressor))
    small = min(scale.adaptation_sizes)
    assert (small, scale.fine_tune_epochs, scale.fine_tune_batch) == (
        scale.maml.support_size,
        scale.maml.inner_steps,
        scale.maml.support_size,
    )
    rows = [
        {"seed": 0, "domain": k, "arm": "M2-ICL adapted", "size": small, "per_position": [0.5] * scale.n_points}
        for k in range(scale.n_test_domains)
    ]
    check = experiment.validation_check(scale, model, rows, seed=0)
    assert check["code_paths_log_gap"] < 1e-5  # the same procedure: the same numbers on the same domains
    assert len(check["validation_domains"]) == scale.maml.n_val_domains and check["held_out"] == [0.5] * 3


def test_validation_check_is_computed_once_per_key_then_loaded(monkeypatch):
    scale = PRESETS["smoke"].m2icl
    torch.manual_seed(0)
    model = CausalRegressionTransformer(scale.d, RegressorConfig(**scale.regressor))
    small = min(scale.adaptation_sizes)
    rows = [
        {"seed": 0, "domain": k, "arm": "M2-ICL adapted", "size": small, "per_position": [0.5] * scale.n_points}
        for k in range(scale.n_test_domains)
    ]
    first = experiment.stored_validation_check(scale, model, rows, key={"model": "a"}, seed=0)
    fresh = experiment.validation_check(scale, model, rows, seed=0)
    assert first["validation_domains"] == pytest.approx(fresh["validation_domains"], rel=1e-6)
    calls = []
    monkeypatch.setattr(experiment, "validation_check", lambda *args: calls.append(args) or fresh)
    assert experiment.stored_validation_check(scale, model, rows, key={"model": "a"}, seed=0) == first
    assert calls == []  # loaded
    experiment.stored_validation_check(scale, model, rows, key={"model": "b"}, seed=0)
    assert len(calls) == 1  # another model: computed


def test_training_plan_lists_every_seed_of_both_models_and_the_ladders_budgets():
    preset = PRESETS["smoke"]
    assert preset.m2icl.budget_rungs == (2, 4)
    plan = experiment.training_plan(preset)
    labels = [job.label for job in plan]
    assert len(plan) == 3 * len(preset.m2icl.seeds)
    assert [job.stage for job in plan] == [0, 0, 1, 1, 1, 1]
    assert {job.spec.train.seed for job in plan if job.spec is not None} == set(preset.m2icl.seeds)
    assert labels[2:] == [
        "M2-ICL meta-training, seed 0",
        "M2-ICL meta-training, seed 1",
        "M2-ICL meta-training, seed 0, 2 meta-steps",
        "M2-ICL meta-training, seed 1, 2 meta-steps",
    ]
    assert len({job.path for job in plan}) == len(plan)


def test_the_ladder_reads_the_rule_at_every_meta_training_budget(isolated_cache):
    """Claim 4b at every budget of the ladder: both comparisons and a decisive row per rung, each rung's own
    M2-ICL (a shorter meta-training); the last rung's row is the verdict's own."""
    preset = PRESETS["smoke"]
    results = experiment.run(preset, progress=False)
    rungs = preset.m2icl.budget_rungs
    decisive = [row for row in results.ladder if row["kind"] == "decisive"]
    assert [row["steps"] for row in decisive] == list(rungs)
    assert [row["steps"] for row in results.ladder if row["kind"] == "comparison"] == [2, 2, 4, 4]
    (verdict,) = experiment.verdicts(results)
    assert decisive[-1]["effect"] == pytest.approx(verdict.numbers["decisive"]["effect"])
    assert decisive[-1]["outcome"] == verdict.outcome
    assert decisive[0]["effect"] != decisive[-1]["effect"]  # another budget's M2-ICL
    assert [row["steps"] for row in verdict.notes["budget_ladder"]] == list(rungs)


def test_budget_rungs_must_end_at_the_meta_training_budget():
    scale = PRESETS["smoke"].m2icl
    with pytest.raises(ValueError, match="budget_rungs"):
        dataclasses.replace(scale, budget_rungs=(2, 3))
    with pytest.raises(ValueError, match="budget_rungs"):
        dataclasses.replace(scale, budget_rungs=(4, 2))


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="inner_steps"):
        MAMLConfig(inner_steps=0)
    with pytest.raises(ValueError, match="inner_lr"):
        MAMLConfig(inner_lr=-1.0)
    with pytest.raises(ValueError, match="epochs"):
        fine_tune(LinearPredictor(2), regression_episode(0, 2, 3, 2), epochs=-1, lr=0.1, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="init"):
        dataclasses.replace(PRESETS["smoke"].m2icl, init="warm")


def test_the_direction_is_reported_beside_the_margins_reading():
    (verdict,) = experiment.verdicts(_synthetic_results(0.03))  # M2-ICL 3% better: inside the 10% margin
    assert verdict.outcome == "not reproduced"
    assert verdict.numbers["direction"] == {
        "adapted": "better, by less than the margin",
        "unadapted": "better, by more than the margin",
    }
    assert rules.rule_outcome(verdict.numbers) == verdict.notes["ungated_outcome"]  # the rule is unchanged
    assert "against ICL adapted: better, by less than the margin" in m2icl_page.explain(verdict)
    assert "By direction (reported, not decided), M2-ICL adapted against ICL adapted: better, by less" in (
        verdict_prose.decided_by(verdict)
    )
    assert "direction" in verdict.notes["previous_outcome"]["comparison_changed"]
    (level,) = experiment.verdicts(_synthetic_results(0.0))
    assert level.numbers["direction"]["adapted"] == "no significant difference"


def test_an_inconclusive_verdict_says_how_many_seeds_would_decide_it():
    (verdict,) = experiment.verdicts(_synthetic_results(0.1))  # (a) 0.107 ± 0.023 crosses +m = 0.095
    assert verdict.notes["ungated_outcome"] == "inconclusive"
    needed = verdict.numbers["seeds_to_decide"]
    assert needed["comparison"] == verdict.numbers["decisive"]["label"] and needed["seeds"] == 3
    assert needed["seeds_to_decide"] is not None and needed["seeds_to_decide"] > 3
    (on_the_margin,) = experiment.verdicts(_synthetic_results(0.09))  # 0.097: the domains alone blur it
    assert on_the_margin.numbers["seeds_to_decide"]["seeds_to_decide"] is None
    (decided,) = experiment.verdicts(_synthetic_results(0.3))
    assert "seeds_to_decide" not in decided.numbers


def test_icl_pretrains_for_its_whole_budget_and_the_rule_tests_it_with_its_own_tolerance():
    """Equal footing (issue 32): plain ICL is not stopped early by a test; the remaining-gain test the rule
    reads uses ``pretrain_tolerance``."""
    for name in ("quick", "paper"):
        scale = PRESETS[name].m2icl
        assert scale.pretrain.stop_tolerance == 0 and scale.pretrain.patience == 0
        assert scale.pretrain_tolerance == 0.01
