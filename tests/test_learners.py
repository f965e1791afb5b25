"""The learner contract, the one-pass transformer against its per-prefix reference, and the
explicit handling of positions with no earlier example."""

import pytest
import torch

from uni_icl.learners import CLASSIFIERS, REGRESSORS, LearnerSpec
from uni_icl.learners.icl import ICLConfig, ICLTransformer
from uni_icl.runs import build_seeded
from uni_icl.tasks import make_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 12


def perturb_after(xs, ys, i, regression):
    """Change y_i and every x_j, y_j with j > i."""
    xs, ys = xs.clone(), ys.clone()
    xs[:, i + 1 :] += 2.5
    ys[:, i:] = ys[:, i:] + 1.7 if regression else 1 - ys[:, i:]
    return xs, ys


def relative_change(changed, reference):
    """max |changed - reference| / max |reference|: 0 when nothing moved."""
    return ((changed - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


# Large inputs make a numerical leak visible: a shift that cancels in exact arithmetic (e.g. a max
# taken over future tokens) still changes the rounding once the exponents it shifts are large.
INPUT_SCALES = (1.0, 30.0)


@pytest.mark.parametrize("scale", INPUT_SCALES)
@pytest.mark.parametrize("name", CLASSIFIERS + REGRESSORS)
def test_output_at_i_uses_only_x_i_and_earlier_pairs(name, scale):
    regression = name in REGRESSORS
    task = make_task("linear_regression" if regression else "pairwise", d=3, n_points=N)
    learner = build_seeded(LearnerSpec(name), task, seed=0).eval()
    episode = task.sample(3, seed=1)
    episode_xs = scale * episode.xs
    with torch.no_grad():
        reference = learner(episode_xs, episode.ys)
        # (3, N, C) logits; the authors' ICLer gives its 2C (uni_icl.learners.icler)
        assert reference.shape == ((3, N) if regression else (3, N, getattr(learner, "n_logits", 2)))
        for i in (0, 4, N - 1):
            xs, ys = perturb_after(episode_xs, episode.ys, i, regression)
            changed = learner(xs, ys)
            assert relative_change(changed[:, : i + 1], reference[:, : i + 1]) <= 1e-5, f"position <= {i} changed"
        # the contract is not vacuous: earlier labels do matter for later positions
        xs, ys = perturb_after(episode_xs, episode.ys, 0, regression)
        assert not torch.allclose(learner(episode_xs, ys)[:, 1:], reference[:, 1:])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", ["icl_authors", "icl"])
def test_no_label_leak_at_large_input_scale(name, seed):
    """Flipping y_i, ..., y_{N-1} leaves the logits at positions <= i unchanged, with inputs x 30.

    The label flip alone (no x changes) isolates the leak the authors' linear attention had: its key
    softmax was shifted by a max over all tokens, future supports included, which moved the logits
    at positions <= i by up to a few percent (weights seed 0 and 1 both showed it at N = 50).
    """
    n_points = 50
    task = make_task("pairwise", d=3, n_points=n_points)
    learner = build_seeded(LearnerSpec(name), task, seed=seed).eval()
    episode = task.sample(8, seed=7)
    xs = 30.0 * episode.xs
    with torch.no_grad():
        reference = learner(xs, episode.ys)
        for i in (0, 5, 25, n_points - 1):
            ys = episode.ys.clone()
            ys[:, i:] = 1 - ys[:, i:]
            change = relative_change(learner(xs, ys)[:, : i + 1], reference[:, : i + 1])
            assert change <= 1e-5, f"{name}: flipping labels from {i} on moved positions <= {i} by {change:.2e}"


ONE_PASS_CONFIGS = [
    ICLConfig(width=16, depth=2, n_heads=2, layout="paired"),
    ICLConfig(width=16, depth=2, n_heads=2, layout="support_query"),
    ICLConfig(width=16, depth=2, n_heads=2, attention="linear", layout="paired"),
]


@pytest.mark.parametrize("config", ONE_PASS_CONFIGS)
def test_one_pass_equals_per_prefix_reference(config):
    torch.manual_seed(0)
    learner = ICLTransformer(2, 2, config).eval()
    episode = make_task("mixture", n_points=N).sample(4, seed=2)
    with torch.no_grad():
        one_pass = learner(episode.xs, episode.ys)
        per_prefix = learner.forward_per_prefix(episode.xs, episode.ys)
    assert torch.allclose(one_pass, per_prefix, atol=1e-5)


@pytest.mark.parametrize("scale", INPUT_SCALES)
@pytest.mark.parametrize("config", ONE_PASS_CONFIGS)
def test_both_layouts_honour_the_contract(config, scale):
    torch.manual_seed(0)
    learner = ICLTransformer(3, 3, config).eval()
    episode = make_task("prototype", d=3, n_classes=3, n_points=N).sample(3, seed=4)
    episode_xs = scale * episode.xs
    with torch.no_grad():
        reference = learner(episode_xs, episode.ys)
        for i in (0, 5, N - 1):
            xs, ys = episode_xs.clone(), episode.ys.clone()
            xs[:, i + 1 :] += 2.5 * scale
            ys[:, i:] = (ys[:, i:] + 1) % 3
            assert relative_change(learner(xs, ys)[:, : i + 1], reference[:, : i + 1]) <= 1e-5


def test_paired_layout_uses_n_tokens():
    learner = ICLTransformer(2, 2, ICLConfig(width=16, depth=1, n_heads=1))
    episode = make_task("pairwise", n_points=N).sample(2, seed=5)
    sequence, allowed = learner.tokens(episode.xs, episode.ys)
    assert sequence.shape[:2] == (2, N) and allowed.shape == (N, N)
    assert torch.equal(sequence[:, 1:, 2:4], episode.xs[:, :-1])  # token i carries x_{i-1} ...
    assert torch.equal(sequence[:, 0, 2:], torch.zeros_like(sequence[:, 0, 2:]))  # ... token 0 no pair


@pytest.mark.parametrize("name", ["matchnet", "protonet", "cnp", "icl"])
def test_first_position_has_no_evidence_and_outputs_are_logits(name):
    task = make_task("prototype", n_points=N)
    learner = build_seeded(LearnerSpec(name), task, seed=0).eval()
    episode = task.sample(8, seed=3)
    with torch.no_grad():
        logits = learner(episode.xs, episode.ys)
    assert torch.isfinite(logits).all()
    assert logits.abs().max() < 1e3  # no +-9999 padding
    if name in ("matchnet", "protonet"):  # nothing seen yet: every class equally likely
        assert torch.allclose(logits[:, 0, 0], logits[:, 0, 1])


def test_protonet_unseen_class_uses_default_prototype():
    learner = build_seeded(LearnerSpec("protonet", {"hidden": 4, "n_layers": 0}), make_task("prototype"), 0)
    xs = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [0.0, 0.0]]])
    ys = torch.tensor([[0, 0, 1]])
    with torch.no_grad():
        logits = learner(xs, ys)
    # position 2: class 0 has prototype mean(x_0, x_1) = (2, 0); class 1 none yet -> default (0, 0)
    assert torch.allclose(logits[0, 2], torch.tensor([-4.0, 0.0]))


def test_least_squares_recovers_noiseless_weights():
    task = make_task("linear_regression", d=3, n_points=10)
    episode = task.sample(4, seed=0)
    preds = LearnerSpec("least_squares").build(3, 1)(episode.xs, episode.ys)
    assert torch.allclose(preds[:, 4:], episode.ys[:, 4:], atol=1e-3)
    assert not torch.allclose(preds[:, 1:3], episode.ys[:, 1:3], atol=1e-2)


def test_knn_averages_three_nearest_earlier_points():
    xs = torch.tensor([[[0.0], [1.0], [2.0], [10.0], [1.1]]])
    ys = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]])
    preds = LearnerSpec("knn").build(1, 1)(xs, ys)
    assert preds[0, 0] == 0 and preds[0, 1] == 1.0 and preds[0, 2] == 1.5
    assert torch.isclose(preds[0, 4], torch.tensor(2.0))  # neighbours of 1.1: 1.0, 2.0, 0.0


def test_unknown_learner_and_parameter_are_rejected():
    with pytest.raises(ValueError, match="allowed: icl"):
        LearnerSpec("svm")
    with pytest.raises(ValueError, match="allowed: hidden, n_layers"):
        LearnerSpec("matchnet", {"depth": 3})
    with pytest.raises(ValueError, match="attention"):
        ICLConfig(attention="sparse")
    with pytest.raises(ValueError, match="layout.*allowed: paired, support_query"):
        ICLConfig(layout="interleaved")


def test_the_vocabulary_of_the_claims_comes_from_the_registries():
    from uni_icl.learners import KINDS, LEARNERS, META_LEARNERS, kind_of
    from uni_icl.presets import MARGIN, STOP_TOLERANCE, STUDENT_TOLERANCE
    from uni_icl.tasks import MIXTURE_COMPONENTS, SINGLE_FAMILIES, TASK_FAMILIES

    assert all(learner.kind in KINDS for learner in LEARNERS.values())
    assert {name for name in LEARNERS if kind_of(name) == "in-context"} == {
        "icl",
        "icl_authors",
        "icl_authors_prefix",
        "icl_regressor",
    }
    # each single family names its matching meta-learner, and those are the registry's meta-learners
    assert SINGLE_FAMILIES == MIXTURE_COMPONENTS
    assert tuple(TASK_FAMILIES[family].matching_learner for family in SINGLE_FAMILIES) == META_LEARNERS
    assert [name for name, cls in TASK_FAMILIES.items() if cls.matching_learner] == list(SINGLE_FAMILIES)
    assert (STOP_TOLERANCE, STUDENT_TOLERANCE) == (MARGIN, MARGIN / 2) == (0.01, 0.005)
