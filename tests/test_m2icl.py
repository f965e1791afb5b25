"""M2-ICL: the domain mixture, the functional MAML inner loop, first- vs second-order meta-gradients."""

import dataclasses

import pytest
import torch
from torch import nn

from uni_icl.experiments import m2icl as experiment
from uni_icl.learners.maml import (
    MAMLConfig,
    MetaObjective,
    fine_tune,
    inner_adapt,
    meta_gradient,
    prompt_loss,
)
from uni_icl.learners.regressors import CausalRegressionTransformer, RegressorConfig
from uni_icl.presets import PRESETS
from uni_icl.tasks import Episode, make_task
from uni_icl.training import train


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
    expected = p["scale"][:, None] * torch.einsum("bnd,bd->bn", episode.xs, p["weights"])
    assert torch.allclose(episode.ys, expected, atol=1e-5)
    assert p["scale"].std() > 0.1 and p["matrix"].std() > 0.5  # a fresh domain per episode


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


@pytest.mark.parametrize(
    ("small", "large", "unadapted", "outcome"),
    [
        ((0.10, 0.03), (0.02, 0.01), (0.2, 0.05), "reproduced"),
        ((0.10, 0.03), (0.12, 0.01), (0.2, 0.05), "inconclusive"),
        ((0.10, 0.20), (0.02, 0.01), (0.2, 0.05), "inconclusive"),
        ((-0.01, 0.03), (0.02, 0.01), (0.2, 0.05), "not reproduced"),
    ],
)
def test_decision_rule(small, large, unadapted, outcome):
    gaps = {"adapted": {64: small, 1024: large}, "unadapted": {64: unadapted, 1024: unadapted}}
    assert experiment.decide_4b(gaps, (64, 256, 1024)) == outcome


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="inner_steps"):
        MAMLConfig(inner_steps=0)
    with pytest.raises(ValueError, match="inner_lr"):
        MAMLConfig(inner_lr=-1.0)
    with pytest.raises(ValueError, match="epochs"):
        fine_tune(LinearPredictor(2), regression_episode(0, 2, 3, 2), epochs=-1, lr=0.1, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="init"):
        dataclasses.replace(PRESETS["smoke"].m2icl, init="warm")
