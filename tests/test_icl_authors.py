"""The authors' ICLer computed as the authors compute it (``icl_authors_prefix``): one non-causal
pass per prefix, batched; and the masked linear attention it and the one-pass variant share."""

import pytest
import torch
import torch.nn.functional as F

from uni_icl.learners import LEARNERS, LearnerSpec
from uni_icl.learners.icl import ICLConfig, ICLTransformer, causal_mask, episode_mask
from uni_icl.learners.icl_prefix import ICLPrefixTransformer
from uni_icl.learners.modules import _linear_attention_chunked, _linear_attention_dense, linear_attention
from uni_icl.runs import build_seeded
from uni_icl.tasks import make_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def prefix_loop(learner, xs, ys):
    """The authors' computation written out: for each i, the supports [x_j, one_hot(y_j)] (label
    part 2C wide), j < i, then the query [x_i, 0], through the blocks with no mask; logits of the
    query token."""
    B, N, _ = xs.shape
    support = torch.cat([xs, F.one_hot(ys, 2 * learner.n_classes).to(xs.dtype)], dim=-1)
    query = torch.cat([xs, torch.zeros_like(support[..., xs.shape[-1] :])], dim=-1)
    outputs = []
    for i in range(N):
        h = torch.cat([support[:, :i], query[:, i : i + 1]], dim=1)
        everyone = torch.ones(i + 1, i + 1, dtype=torch.bool)
        for block in learner.blocks:
            h = block(h, everyone)
        outputs.append(learner.readout(h[:, -1]))
    return torch.stack(outputs, dim=1)


def relative_change(changed, reference):
    return ((changed - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize(("family", "n_classes", "seed"), [("pairwise", 2, 0), ("prototype", 3, 1)])
def test_batched_prefixes_equal_the_loop_over_prefixes(family, n_classes, seed, scale):
    task = make_task(family, d=2, n_classes=n_classes, n_points=14)
    learner = build_seeded(LearnerSpec("icl_authors_prefix"), task, seed=seed).eval()
    episode = task.sample(5, seed=seed + 10)
    xs = scale * episode.xs
    with torch.no_grad():
        looped = prefix_loop(learner, xs, episode.ys)
        assert relative_change(learner.forward_per_prefix(xs, episode.ys), looped) < 1e-5
        for n_groups in (1, 4, 14):  # all prefixes in one padded batch, in 4, one batch per prefix
            learner.n_groups = n_groups
            batched = learner(xs, episode.ys)
            assert batched.shape == (5, 14, n_classes)
            assert relative_change(batched, looped) < 1e-5, n_groups


def test_the_prefix_learner_is_not_the_causal_one_pass_learner():
    """Same parameters, different computation: within a prefix the supports read later supports
    and the query, so the outputs differ from the causal one-pass model's (except at position 0,
    where both see the query alone)."""
    task = make_task("pairwise", n_points=10)
    prefix = build_seeded(LearnerSpec("icl_authors_prefix"), task, seed=0).eval()
    one_pass = build_seeded(LearnerSpec("icl_authors"), task, seed=0).eval()
    assert isinstance(one_pass, ICLTransformer) and not isinstance(one_pass, ICLPrefixTransformer)
    one_pass.load_state_dict(prefix.state_dict())  # the same parameters, by name and shape
    episode = task.sample(4, seed=3)
    with torch.no_grad():
        a, b = prefix(episode.xs, episode.ys), one_pass(episode.xs, episode.ys)
    assert torch.allclose(a[:, 0], b[:, 0], atol=1e-6)
    assert relative_change(a[:, 2:], b[:, 2:]) > 1e-2


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_prefix_learner_honours_the_contract(scale):
    """Flipping y_i, ..., y_{N-1} (and moving x_{i+1}, ...) leaves the logits at positions <= i
    unchanged; earlier labels do change later logits."""
    n_points = 20
    task = make_task("pairwise", d=3, n_points=n_points)
    learner = build_seeded(LearnerSpec("icl_authors_prefix"), task, seed=0).eval()
    episode = task.sample(6, seed=7)
    xs = scale * episode.xs
    with torch.no_grad():
        reference = learner(xs, episode.ys)
        for i in (0, 3, 10, n_points - 1):
            ys = episode.ys.clone()
            ys[:, i:] = 1 - ys[:, i:]
            assert relative_change(learner(xs, ys)[:, : i + 1], reference[:, : i + 1]) <= 1e-5
            moved = xs.clone()
            moved[:, i + 1 :] += 2.5 * scale
            assert relative_change(learner(moved, ys)[:, : i + 1], reference[:, : i + 1]) <= 1e-5
        ys = episode.ys.clone()
        ys[:, 0] = 1 - ys[:, 0]
        assert relative_change(learner(xs, ys)[:, 1:], reference[:, 1:]) > 1e-4


def test_prefix_learner_trains():
    torch.manual_seed(0)
    task = make_task("prototype", n_points=8)
    learner = build_seeded(LearnerSpec("icl_authors_prefix"), task, seed=0)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    episode = task.sample(16, seed=5)

    def loss() -> torch.Tensor:
        logits = learner(episode.xs, episode.ys)
        return F.cross_entropy(logits.reshape(-1, 2), episode.ys.reshape(-1))

    first = loss().item()
    for _ in range(10):
        optimizer.zero_grad()
        value = loss()
        value.backward()
        assert all(torch.isfinite(p.grad).all() for p in learner.parameters())
        optimizer.step()
    assert loss().item() < first - 0.05


def test_registry_keeps_both_authors_variants():
    assert LEARNERS["icl_authors"].display_name == "ICL (authors' ICLer)"
    assert LEARNERS["icl_authors_prefix"].display_name == "ICL (authors' ICLer, per prefix)"
    learner = LearnerSpec("icl_authors_prefix").build(2, 2)
    assert isinstance(learner, ICLPrefixTransformer) and learner.config == ICLConfig.authors()
    with pytest.raises(ValueError, match="layout"):
        ICLPrefixTransformer(2, 2, ICLConfig(layout="paired"))


def naive_linear_attention(q, k, v, allowed):
    """The formula without any shift (float64, small inputs): the value every path must give."""
    B, H, T, _ = q.shape
    reads = allowed.expand(B, H, T, T).to(q.dtype)
    numerator = torch.einsum("bhij,bhjf,bhjg->bhifg", reads, k.exp(), v)
    denominator = torch.einsum("bhij,bhjf->bhif", reads, k.exp())
    return torch.einsum("bhif,bhifg->bhig", q.softmax(dim=-1) / denominator, numerator)


MASKS = {
    "causal": causal_mask(23, torch.device("cpu")),
    "support_query": episode_mask(11, torch.device("cpu")),
    "random": (torch.rand(17, 17, generator=torch.Generator().manual_seed(0)) < 0.4) | torch.eye(17, dtype=torch.bool),
    "all": torch.ones(9, 9, dtype=torch.bool),
}


@pytest.mark.parametrize("name", MASKS)
def test_linear_attention_paths_agree_with_the_formula(name):
    allowed = MASKS[name]
    T = allowed.shape[0]
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, T, 5, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(3))
    expected = naive_linear_attention(q, k, v, allowed)
    expected_grads = torch.autograd.grad((expected**2).sum(), (q, k, v))
    paths = {
        "dense": _linear_attention_dense(q, k, v, allowed),
        "chunked": _linear_attention_chunked(q, k, v, allowed),
        "chunks of 4": _linear_attention_chunked(q, k, v, allowed, chunk=4),
        "dispatch": linear_attention(q, k, v, allowed),
    }
    for path, out in paths.items():
        assert torch.allclose(out, expected, atol=1e-12), path
        grads = torch.autograd.grad((out**2).sum(), (q, k, v))
        assert all(torch.allclose(g, e, atol=1e-10) for g, e in zip(grads, expected_grads, strict=True)), path


def test_linear_attention_key_mask_path_agrees_with_the_formula():
    generator = torch.Generator().manual_seed(2)
    allowed = torch.rand(4, 1, 1, 13, generator=generator) < 0.5
    allowed[..., 0] = True
    q, k, v = (torch.randn(4, 2, 13, 5, generator=generator, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(linear_attention(q, k, v, allowed), naive_linear_attention(q, k, v, allowed), atol=1e-12)


@pytest.mark.parametrize("path", [_linear_attention_dense, _linear_attention_chunked])
def test_linear_attention_row_reading_nothing_is_zero_with_finite_gradients(path):
    allowed = causal_mask(12, torch.device("cpu")).tril(-1)  # row 0 reads nothing
    q, k, v = (50 * torch.randn(2, 1, 12, 4) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_()
    out = path(q, k, v, allowed)
    assert torch.isfinite(out).all() and out[..., 0, :].abs().max() == 0
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.sum(), (q, k, v)))
