"""Task families: label rules recomputed independently, balance, seeding, and parameter errors."""

import numpy as np
import pytest
import torch

from uni_icl.tasks import TASK_FAMILIES, RegressionDomain, make_task


def test_pairwise_labels_follow_summed_cosine():
    episode = make_task("pairwise", d=3, n_classes=3, k=2, n_points=30).sample(5, seed=1)
    xs, directions = episode.xs.numpy(), episode.params["directions"].numpy()
    for b in range(5):
        for n in range(30):
            x = xs[b, n]
            scores = [
                sum(np.dot(x, w) / (np.linalg.norm(x) * np.linalg.norm(w)) for w in directions[b, c]) for c in range(3)
            ]
            assert episode.ys[b, n].item() == int(np.argmax(scores))


def test_prototype_labels_are_nearest_centre_and_sources_balanced():
    episode = make_task("prototype", d=2, n_classes=3, n_points=31).sample(6, seed=2)
    xs, centres = episode.xs.numpy(), episode.params["centres"].numpy()
    for b in range(6):
        for n in range(31):
            distances = [np.linalg.norm(xs[b, n] - centre) for centre in centres[b]]
            assert episode.ys[b, n].item() == int(np.argmin(distances))
        counts = np.bincount(episode.params["source_class"][b].numpy(), minlength=3)
        assert counts.max() - counts.min() <= 1 and counts.sum() == 31


def test_prototype_points_are_scattered_around_their_source_centre():
    episode = make_task("prototype", d=2, noise_std=0.5, n_points=400).sample(1, seed=3)
    source = episode.params["source_class"][0]
    for c in range(2):
        mean = episode.xs[0, source == c].mean(0)
        assert torch.allclose(mean, episode.params["centres"][0, c], atol=0.15)


def test_amortized_labels_compare_sums():
    episode = make_task("amortized", d=4, n_points=40).sample(4, seed=3)
    w = episode.params["task_vector"].numpy()
    for b in range(4):
        for n in range(40):
            expected = 0 if episode.xs[b, n].numpy().sum() > w[b].sum() else 1
            assert episode.ys[b, n].item() == expected


def test_radius_labels_and_balance_at_d2():
    episode = make_task("radius", n_points=50).sample(400, seed=4)
    radius = episode.params["radius"]
    assert ((radius >= 2) & (radius <= 4)).all()
    norms = episode.xs.norm(dim=-1)
    assert torch.equal(episode.ys, (norms <= radius[:, None]).long())
    assert abs(episode.ys.float().mean().item() - 0.5) < 0.02  # 0.849 r balances the classes at d = 2


def test_mixture_draws_each_component_with_its_own_rule():
    episode = make_task("mixture", n_points=20).sample(300, seed=5)
    component = episode.params["component"]
    assert set(component.tolist()) == {0, 1, 2}
    frequencies = torch.bincount(component, minlength=3).float() / 300
    assert (frequencies - 1 / 3).abs().max() < 0.08
    amortized = component == 2
    w = episode.params["amortized.task_vector"][amortized]
    expected = (episode.xs[amortized].sum(-1) <= w.sum(-1, keepdim=True)).long()
    assert torch.equal(episode.ys[amortized], expected)


def test_linear_regression_targets_active_dims_and_domain():
    episode = make_task("linear_regression", d=5, n_active_dims=2, n_points=11).sample(3, seed=6)
    assert (episode.xs[..., 2:] == 0).all() and (episode.xs[..., :2] != 0).all()
    expected = torch.einsum("bnd,bd->bn", episode.xs, episode.params["weights"])
    assert torch.allclose(episode.ys, expected, atol=1e-5)
    domain = RegressionDomain.sample(5, seed=0)
    shifted = make_task("linear_regression", d=5, domain=domain).sample(2, seed=6)
    plain = make_task("linear_regression", d=5).sample(2, seed=6)
    zs = plain.xs
    assert torch.allclose(shifted.xs, zs @ domain.matrix_tensor() + domain.shift, atol=1e-5)
    expected = domain.scale * torch.einsum("bnd,bd->bn", shifted.xs, shifted.params["weights"])
    assert torch.allclose(shifted.ys, expected, atol=1e-4)


@pytest.mark.parametrize("name", sorted(TASK_FAMILIES))
def test_same_seed_same_episodes_and_generator_continues(name):
    task = make_task(name)
    first, second = task.sample(4, seed=7), task.sample(4, seed=7)
    assert torch.equal(first.xs, second.xs) and torch.equal(first.ys, second.ys)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(task.sample(4, generator=gen).xs, first.xs)
    assert not torch.equal(task.sample(4, generator=gen).xs, first.xs)
    assert first.xs.shape == (4, task.n_points, task.d)
    assert first.ys.dtype == (torch.float32 if task.is_regression else torch.long)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("pairwise", {"n_points": 0}, "n_points"),
        ("pairwise", {"d": 0}, "d:"),
        ("pairwise", {"n_classes": 1}, "n_classes"),
        ("pairwise", {"noise_std": 0.0}, "noise_std"),
        ("pairwise", {"noise_std": -1.0}, "noise_std"),
        ("pairwise", {"k": 0}, "k:"),
        ("amortized", {"n_classes": 3}, "2 classes only"),
        ("radius", {"n_classes": 4}, "2 classes only"),
        ("mixture", {"n_classes": 3}, "2 classes only"),
        ("linear_regression", {"d": 3, "n_active_dims": 4}, "n_active_dims"),
        ("pairwise", {"colour": 3}, "allowed"),
        ("nonsense", {}, "allowed: amortized"),
    ],
)
def test_invalid_parameters_raise_clear_errors(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_task(name, **params)


def test_sample_needs_seed_or_generator():
    with pytest.raises(ValueError, match="seed"):
        make_task("pairwise").sample(2)
    with pytest.raises(ValueError, match="batch_size"):
        make_task("pairwise").sample(0, seed=1)
