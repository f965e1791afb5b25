"""Hand-set transformers against the meta-learners they copy, and against an explicit gradient step.

Every construction must agree with its meta-learner to float precision on random episodes, for
random and differently seeded meta-learners, and must stop agreeing when any one of its weights
is changed.
"""

import copy

import pytest
import torch

from uni_icl.experiments.expressivity import randomized
from uni_icl.learners import LearnerSpec
from uni_icl.learners.constructions import (
    AttentionLayer,
    ConstructedTransformer,
    FeedForwardLayer,
    cnp_transformer,
    gd_step_reference,
    gd_transformer,
    matching_network_transformer,
    max_difference,
    protonet_transformer,
)
from uni_icl.learners.meta_learners import ConditionalNeuralProcess, MatchingNetwork, PrototypicalNetwork
from uni_icl.runs import build_seeded
from uni_icl.tasks import make_task

N = 30
FAMILY = {"matchnet": "pairwise", "protonet": "prototype", "cnp": "amortized"}
BUILD = {"matchnet": matching_network_transformer, "protonet": protonet_transformer, "cnp": cnp_transformer}


def meta_learner(name, seed, *, d=2, n_classes=2, hidden=8, n_layers=2, random_weights=False):
    """A freshly initialised meta-learner (seeded), optionally with every weight redrawn (scalars too)."""
    task = make_task(FAMILY[name], d=d, n_classes=n_classes, n_points=N)
    learner = build_seeded(LearnerSpec(name, {"hidden": hidden, "n_layers": n_layers}), task, seed=seed)
    return (randomized(learner, seed + 100) if random_weights else learner).double().eval(), task


def construct(name, learner):
    """The construction of ``learner``, in its dtype."""
    return BUILD[name](learner, n_max=N) if name == "cnp" else BUILD[name](learner)


def gaps(learner, construction, task, n_episodes=48, seed=7):
    """(float64 max |diff|, float32 max |diff|), both / max(1, max |output|).

    ``construction`` (float64, built from the float64 ``learner``) is compared in float64; the
    float32 comparison builds a fresh construction from a float32 copy of the learner.
    """
    episode = task.sample(n_episodes, seed=seed)
    learner64 = copy.deepcopy(learner).double()
    gap64 = max_difference(learner64, construction, episode.xs.double(), episode.ys)
    learner32 = copy.deepcopy(learner).float()
    gap32 = max_difference(learner32, construct(_name(learner32), learner32), episode.xs, episode.ys)
    with torch.no_grad():
        scale = max(1.0, learner32(episode.xs, episode.ys).abs().max().item())
    return gap64 / scale, gap32 / scale


def _name(learner):
    return {MatchingNetwork: "matchnet", PrototypicalNetwork: "protonet", ConditionalNeuralProcess: "cnp"}[
        type(learner)
    ]


CASES = [
    ("matchnet", {}),
    ("matchnet", {"d": 3, "n_classes": 3, "n_layers": 3}),
    ("matchnet", {"n_layers": 1}),
    ("matchnet", {"n_layers": 0}),
    ("protonet", {}),
    ("protonet", {"d": 3, "n_classes": 4, "n_layers": 3}),
    ("protonet", {"n_layers": 0}),
    ("cnp", {}),
    ("cnp", {"d": 3, "n_layers": 3}),
]


@pytest.mark.parametrize("name, sizes", CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("random_weights", [False, True])
def test_construction_matches_meta_learner(name, sizes, seed, random_weights):
    learner, task = meta_learner(name, seed, random_weights=random_weights, **sizes)
    gap64, gap32 = gaps(learner, construct(name, learner), task)
    assert gap64 < 1e-10, f"float64 relative gap {gap64:.2e}"
    assert gap32 < 1e-5, f"float32 relative gap {gap32:.2e}"


def test_construction_is_a_stack_of_attention_and_feed_forward_sublayers():
    learner, _ = meta_learner("matchnet", 0)
    construction = matching_network_transformer(learner)
    assert isinstance(construction, ConstructedTransformer)
    kinds = [type(layer) for layer in construction.layers]
    assert kinds == [FeedForwardLayer, AttentionLayer]
    assert construction.layers[1].kind == "softmax"
    assert construction.layers[1].w_q.shape[0] == 1  # one head


def test_construction_follows_the_learner_it_was_built_from():
    """Weights are copied from the learner: another learner's construction does not match."""
    first, task = meta_learner("protonet", 0, random_weights=True)
    second, _ = meta_learner("protonet", 1, random_weights=True)
    gap64, _ = gaps(first, protonet_transformer(second), task)
    assert gap64 > 1e-2


def perturbable_weights(construction):
    """(name, parameter, index) of the first non-zero entry of every sublayer's output matrix,
    of the embedding and of the readout."""
    found = []
    named = [
        (f"layer {i} output", layer.w_o if isinstance(layer, AttentionLayer) else layer.w_out)
        for i, layer in enumerate(construction.layers)
    ]
    named += [("embedding", construction.embed_weight), ("readout", construction.readout_weight)]
    for label, parameter in named:
        index = tuple(int(i) for i in (parameter != 0).nonzero()[0])
        found.append((label, parameter, index))
    return found


@pytest.mark.parametrize("name", ["matchnet", "protonet", "cnp"])
def test_perturbing_any_one_weight_breaks_the_agreement(name):
    learner, task = meta_learner(name, 0, random_weights=True)
    construction = construct(name, learner)
    assert gaps(learner, construction, task)[0] < 1e-10
    for label, parameter, index in perturbable_weights(construction):
        with torch.no_grad():
            parameter[index] += 0.5
        broken, _ = gaps(learner, construction, task)
        with torch.no_grad():
            parameter[index] -= 0.5
        assert broken > 1e-3, f"{name}: perturbing {label} {index} left the output unchanged ({broken:.1e})"


@pytest.mark.parametrize("name", ["matchnet", "protonet", "cnp"])
def test_perturbing_a_scalar_of_the_construction_breaks_the_agreement(name):
    """The temperature of the cosine attention, a key weight of the label-keyed or pooling heads."""
    learner, task = meta_learner(name, 1, random_weights=True)
    construction = construct(name, learner)
    attention = next(
        layer for layer in construction.layers if isinstance(layer, AttentionLayer) and layer.kind == "softmax"
    )
    with torch.no_grad():
        if name == "matchnet":
            attention.cosine_scale += 0.3
        else:
            key = attention.w_k[0]
            key[key != 0] = 0.5  # the large key bias no longer switches tokens off
    assert gaps(learner, construction, task)[0] > 1e-3


def test_cnp_count_is_exact_up_to_n_max_and_refused_beyond():
    learner, _ = meta_learner("cnp", 0, random_weights=True)
    construction = cnp_transformer(learner, n_max=N)
    long_task = make_task("amortized", n_points=N + 1)
    episode = long_task.sample(2, seed=0)
    with pytest.raises(ValueError, match="n_max"):
        construction(episode.xs, episode.ys)


@pytest.mark.parametrize("start", ["zero", "random"])
@pytest.mark.parametrize("d", [1, 5])
def test_gd_construction_equals_one_explicit_gradient_step(start, d):
    gen = torch.Generator().manual_seed(d)
    weight = None if start == "zero" else torch.randn(d, generator=gen)
    bias = 0.0 if start == "zero" else 0.4
    lr = 0.07
    construction = gd_transformer(d, lr, weight, bias, dtype=torch.float64)
    assert len(construction.layers) == (1 if start == "zero" else 2)
    assert all(layer.kind == "linear" for layer in construction.layers)
    episode = make_task("linear_regression", d=d, n_points=N).sample(64, seed=3)

    def reference(xs, ys):
        return gd_step_reference(xs, ys, lr, weight, bias)

    assert max_difference(reference, construction, episode.xs.double(), episode.ys.double()) < 1e-10
    scale = reference(episode.xs, episode.ys).abs().max().item()
    single = gd_transformer(d, lr, weight, bias)
    assert single.embed_weight.dtype == torch.float32
    assert max_difference(reference, single, episode.xs, episode.ys) / scale < 1e-5
    # the reference is a real gradient step: at i = 0 (no data) it predicts with the start
    start_prediction = episode.xs[:, 0] @ (torch.zeros(d) if weight is None else weight) + bias
    assert torch.allclose(reference(episode.xs, episode.ys)[:, 0], start_prediction, atol=1e-6)


@pytest.mark.parametrize("start", ["zero", "random"])
def test_perturbing_the_gd_layer_breaks_the_agreement(start):
    d, lr = 3, 0.05
    weight = None if start == "zero" else torch.tensor([0.5, -1.0, 0.3])
    construction = gd_transformer(d, lr, weight, 0.0 if start == "zero" else 0.2, dtype=torch.float64)
    episode = make_task("linear_regression", d=d, n_points=N).sample(16, seed=4)

    def reference(xs, ys):
        return gd_step_reference(xs, ys, lr, weight, 0.0 if start == "zero" else 0.2)

    for layer in construction.layers:
        for parameter in (layer.w_q, layer.w_k, layer.w_v, layer.w_o):
            index = tuple(int(i) for i in (parameter != 0).nonzero()[0])
            with torch.no_grad():
                parameter[index] += 0.5
            broken = max_difference(reference, construction, episode.xs.double(), episode.ys.double())
            with torch.no_grad():
                parameter[index] -= 0.5
            assert broken > 1e-3


def test_bad_input_is_refused():
    learner, _ = meta_learner("protonet", 0)
    with pytest.raises(ValueError, match="net"):
        matching_network_transformer(learner)
    with pytest.raises(ValueError, match="net"):
        cnp_transformer(MatchingNetwork(2, 2))
    with pytest.raises(ValueError, match="lr"):
        gd_transformer(2, -0.1)
    with pytest.raises(ValueError, match="init_weight"):
        gd_transformer(2, 0.1, torch.ones(3))
    with pytest.raises(ValueError, match="n_max"):
        cnp_transformer(meta_learner("cnp", 0)[0], n_max=1)
