"""The authors' ICLer, exactly: their parametrisation, initialisation, forward pass and loss against
a re-implementation of their code written here; computed as they compute it
(``icl_authors_prefix``: one non-causal pass per prefix, batched) and in one causal pass
(``icl_authors``); and the masked linear attention both share."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners import LEARNERS, LearnerSpec
from uni_icl.learners.icl import causal_mask, episode_mask
from uni_icl.learners.icl_prefix import ICLPrefixTransformer
from uni_icl.learners.icler import ICLer
from uni_icl.learners.modules import _linear_attention_chunked, _linear_attention_dense, linear_attention
from uni_icl.runs import RunSpec, build_seeded
from uni_icl.tasks import Episode, make_task
from uni_icl.training import episode_loss, score_outputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

AUTHORS = ("icl_authors_prefix", "icl_authors")


def relative_change(changed, reference):
    return ((changed - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


# Their ICLer as umix.py / usim.py build it, ICLer(dim=d + 2C, heads=1, depth=8, label_dim=2C,
# ff_list=[1] * 8, readout="linear"), written from ovo67/Uni_ICL proving/linear_attention_transformer/
# icler.py with the branches those arguments take: non-causal, no local heads, no mask, pn=0 (no
# LayerNorm), one chunk. Their SelfAttention also builds a LocalAttention, which has no parameters
# and, with no local heads, is never called; it is left out.
def their_linear_attn(q, k, v):
    dim = q.shape[-1]
    q = q.softmax(dim=-1)
    k = k.softmax(dim=-2)
    q = q * dim**-0.5
    context = torch.einsum("bhnd,bhne->bhde", k, v)
    attn = torch.einsum("bhnd,bhde->bhne", q, context)
    return attn.reshape(*q.shape)


class TheirSelfAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        d_heads = dim // heads
        self.heads, self.d_heads = heads, d_heads
        self.to_q = nn.Linear(dim, d_heads * heads, bias=False)
        self.to_k = nn.Linear(dim, d_heads * heads, bias=False)
        self.to_v = nn.Linear(dim, d_heads * heads, bias=False)
        if heads > 1:
            self.to_out = nn.Linear(d_heads * heads, dim)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x):
        q, k, v = (self.to_q(x), self.to_k(x), self.to_v(x))
        b, t, dh = *q.shape[:2], self.d_heads
        q, k, v = (u.reshape(*u.shape[:2], -1, dh).transpose(1, 2) for u in (q, k, v))
        attn = their_linear_attn(q, k, v)
        attn = attn.transpose(1, 2).reshape(b, t, -1)
        if self.heads > 1:
            attn = self.to_out(attn)
        return self.dropout(attn)


class TheirFeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.w1 = nn.Linear(dim, dim * mult)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(0.0)
        self.w2 = nn.Linear(dim * mult, dim)

    def forward(self, x):
        return self.w2(self.dropout(self.act(self.w1(x))))


class TheirPreNorm(nn.Module):  # pn=0: the norm is the identity
    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.norm = nn.Identity()

    def forward(self, x):
        return self.fn(self.norm(x))


class TheirICLer(nn.Module):
    def __init__(self, dim, depth, heads=1, label_dim=1):
        super().__init__()
        self.layers = nn.ModuleList([])
        for _ in range(depth):
            self.layers.append(TheirPreNorm(TheirSelfAttention(dim, heads)))
            self.layers.append(TheirPreNorm(TheirFeedForward(dim)))  # Chunk(1, ...) only calls it
        self.readout = nn.Linear(dim, label_dim, False)

    def forward(self, x):
        for layer in self.layers:
            x = x + layer(x)
        return self.readout(x)


def theirs(d, n_classes):
    return TheirICLer(dim=d + 2 * n_classes, depth=8, heads=1, label_dim=2 * n_classes)


def their_targets(ys, n_classes):
    """Their Y: the one-hot label padded with C zeros, (B, N, 2C) float."""
    one_hot = F.one_hot(ys, n_classes).to(torch.float64)
    return torch.cat((one_hot, torch.zeros_like(one_hot)), -1)


def their_prefix_logits(model, xs, targets):
    """Their evaluation loop (umix.py train/test, their X = xs, Y = targets): pred[:, -1] of model(z)
    for each prefix. -> (B, N, 2C)"""
    B, N, c = targets.shape
    outputs = []
    for i in range(N):
        x = xs[:, : i + 1]
        y = torch.cat([targets[:, :i], torch.zeros(B, 1, c, dtype=targets.dtype)], 1)
        z = torch.cat((x, y), -1)
        outputs.append(model(z)[:, -1])
    return torch.stack(outputs, dim=1)


def their_loss(model, xs, targets, start=0):
    """Their training loss of one batch (umix.py train, their X = xs, Y = targets): the mean over
    prefixes i >= start of F.cross_entropy(pred[:, -1], Y[:, i]) against the padded one-hot target."""
    B, N, c = targets.shape
    bloss = 0
    for i in range(start, N):
        x = xs[:, : i + 1]
        y = torch.cat([targets[:, :i], torch.zeros(B, 1, c, dtype=targets.dtype)], 1)
        pred = model(torch.cat((x, y), -1))
        bloss += F.cross_entropy(pred[:, -1], targets[:, i]) / (N - start)
    return bloss


def their_accuracy(p, y):
    """Their acc: the fraction of the batch whose argmax over the 2C logits is the label."""
    return (torch.argmax(p, -1) == torch.argmax(y, -1)).sum() / p.size(0)


def copied_pair(name, d, n_classes, seed=0, spread=0.1):
    """Their ICLer with fixed weights (their initialisation plus noise, float64) and the registry's
    ``name`` holding the same weights, copied parameter by parameter in order."""
    generator = torch.Generator().manual_seed(seed)
    reference = theirs(d, n_classes).double()
    ours = LearnerSpec(name).build(d, n_classes).double()
    with torch.no_grad():
        for mine, their in zip(ours.parameters(), reference.parameters(), strict=True):
            their.add_(spread * torch.randn(their.shape, generator=generator, dtype=torch.float64))
            mine.copy_(their)
    return reference.eval(), ours.eval()


def float64_episode(family, d, n_classes, n_points, batch, seed):
    episode = make_task(family, d=d, n_classes=n_classes, n_points=n_points).sample(batch, seed=seed)
    return Episode(episode.xs.double(), episode.ys, episode.family)


@pytest.mark.parametrize(("d", "n_classes"), [(2, 2), (3, 3)])
def test_parameters_are_theirs_in_order_with_their_shapes_and_initialisation(d, n_classes):
    """Both forms: their parameters in their order and shapes, and under one seed their initial values
    (PyTorch's default initialisation of their layers, created in their order)."""
    for name in AUTHORS:
        ours = build_seeded(LearnerSpec(name), make_task("pairwise", d=d, n_classes=n_classes), seed=3)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            reference = theirs(d, n_classes)
        shapes = [tuple(p.shape) for p in ours.parameters()]
        assert shapes == [tuple(p.shape) for p in reference.parameters()], name
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), reference.parameters(), strict=True)), name


def test_parameter_count_and_shapes_at_d2_c2():
    """3,432 parameters: per layer to_q, to_k, to_v (6, 6) with no bias, the MLP (24, 6), (24,),
    (6, 24), (6,), no output projection; then the readout (4, 6) with no bias."""
    layer = [(6, 6), (6, 6), (6, 6), (24, 6), (24,), (6, 24), (6,)]
    expected = layer * 8 + [(4, 6)]
    assert sum(p.numel() for p in theirs(2, 2).parameters()) == 3432
    for name in AUTHORS:
        learner = LearnerSpec(name).build(2, 2)
        assert [tuple(p.shape) for p in learner.parameters()] == expected, name
        assert sum(p.numel() for p in learner.parameters()) == 3432, name


@pytest.mark.parametrize(("family", "d", "n_classes"), [("pairwise", 2, 2), ("prototype", 3, 3)])
def test_forward_equals_their_forward_on_the_same_weights(family, d, n_classes):
    """icl_authors_prefix on their weights gives their 2C logits at every prefix (float64)."""
    reference, ours = copied_pair("icl_authors_prefix", d, n_classes, seed=1)
    episode = float64_episode(family, d, n_classes, n_points=15, batch=6, seed=2)
    with torch.no_grad():
        expected = their_prefix_logits(reference, episode.xs, their_targets(episode.ys, n_classes))
        for n_groups in (1, 4):
            ours.n_groups = n_groups
            got = ours(episode.xs, episode.ys)
            assert got.shape == (6, 15, 2 * n_classes)
            assert relative_change(got, expected) < 1e-12, n_groups
        assert relative_change(ours.forward_per_prefix(episode.xs, episode.ys), expected) < 1e-12


def test_loss_and_accuracy_are_theirs_on_a_fixed_batch():
    """The package's training loss (cross-entropy against the class index) on the 2C logits is their
    cross-entropy against the padded one-hot target, and its per-position correctness their accuracy,
    including positions where a padding logit is on top (an error in both)."""
    reference, ours = copied_pair("icl_authors_prefix", 2, 2, seed=4)
    episode = float64_episode("mixture", 2, 2, n_points=12, batch=9, seed=5)
    Y = their_targets(episode.ys, 2)
    with torch.no_grad():
        expected_loss = their_loss(reference, episode.xs, Y)
        assert math.isclose(episode_loss(ours, episode).item(), expected_loss.item(), rel_tol=1e-12)
        logits = their_prefix_logits(reference, episode.xs, Y)
        theirs_correct = torch.stack([their_accuracy(logits[:, i], Y[:, i]) for i in range(12)])
        correct = score_outputs(ours(episode.xs, episode.ys), episode.ys, regression=False)
    assert torch.allclose(correct.mean(dim=0), theirs_correct)
    assert (logits.argmax(-1) >= 2).any()  # the batch has predictions of a padding label


@pytest.mark.parametrize("scale", [1.0, 30.0])
@pytest.mark.parametrize(("family", "n_classes", "seed"), [("pairwise", 2, 0), ("prototype", 3, 1)])
def test_batched_prefixes_equal_the_loop_over_prefixes(family, n_classes, seed, scale):
    """The padded, key-masked batches of prefixes give the plain loop's logits (which equal
    their forward pass, test above), at input scale 1 and 30."""
    task = make_task(family, d=2, n_classes=n_classes, n_points=14)
    learner = build_seeded(LearnerSpec("icl_authors_prefix"), task, seed=seed).eval()
    episode = task.sample(5, seed=seed + 10)
    xs = scale * episode.xs
    with torch.no_grad():
        looped = learner.forward_per_prefix(xs, episode.ys)
        for n_groups in (1, 4, 14):  # all prefixes in one padded batch, in 4, one batch per prefix
            learner.n_groups = n_groups
            batched = learner(xs, episode.ys)
            assert batched.shape == (5, 14, 2 * n_classes)
            assert relative_change(batched, looped) < 1e-5, n_groups


def test_one_pass_equals_its_causal_per_prefix_reference():
    """icl_authors: the single causal pass gives what a causal pass per prefix gives."""
    task = make_task("mixture", n_points=12)
    learner = build_seeded(LearnerSpec("icl_authors"), task, seed=0).eval()
    episode = task.sample(4, seed=2)
    with torch.no_grad():
        one_pass = learner(episode.xs, episode.ys)
        assert one_pass.shape == (4, 12, 4)
        assert torch.allclose(one_pass, learner.forward_per_prefix(episode.xs, episode.ys), atol=1e-5)


def test_the_prefix_learner_is_not_the_causal_one_pass_learner():
    """Same parameters, different computation: within a prefix the supports read later supports
    and the query, so the outputs differ from the causal one-pass model's (except at position 0,
    where both see the query alone)."""
    task = make_task("pairwise", n_points=10)
    prefix = build_seeded(LearnerSpec("icl_authors_prefix"), task, seed=0).eval()
    one_pass = build_seeded(LearnerSpec("icl_authors"), task, seed=0).eval()
    assert isinstance(one_pass, ICLer) and not isinstance(one_pass, ICLPrefixTransformer)
    assert all(torch.equal(a, b) for a, b in zip(prefix.parameters(), one_pass.parameters(), strict=True))
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
    task = make_task("prototype", n_points=8)
    learner = build_seeded(LearnerSpec("icl_authors_prefix"), task, seed=0)
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    episode = task.sample(16, seed=5)
    first = episode_loss(learner, episode).item()
    for _ in range(10):
        optimizer.zero_grad()
        value = episode_loss(learner, episode)
        value.backward()
        assert all(torch.isfinite(p.grad).all() for p in learner.parameters())
        optimizer.step()
    assert episode_loss(learner, episode).item() < first - 0.05


def test_registry_keeps_both_authors_variants_with_their_own_keys():
    """Both forms are the authors' ICLer; their specs carry the learners' revision (1: this
    parametrisation), so models stored under the earlier one are not loaded; other specs do not."""
    assert LEARNERS["icl_authors"].display_name == "ICL (authors' ICLer)"
    assert LEARNERS["icl_authors_prefix"].display_name == "ICL (authors' ICLer, per prefix)"
    assert isinstance(LearnerSpec("icl_authors_prefix").build(2, 2), ICLPrefixTransformer)
    assert type(LearnerSpec("icl_authors").build(2, 2)) is ICLer
    task = make_task("pairwise")
    for name in AUTHORS:
        assert LearnerSpec(name).config() == {"name": name, "params": {}, "revision": 1}
        assert RunSpec(LearnerSpec(name), task).config()["learner"]["revision"] == 1
    assert LearnerSpec("icl", {"width": 8}).config() == {"name": "icl", "params": {"width": 8}}
    assert LearnerSpec("matchnet").config() == {"name": "matchnet", "params": {}}


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
