"""Hand-set transformers that compute exactly what a given meta-learner computes (claim 1, made concrete).

Every construction here is a :class:`ConstructedTransformer`: a linear token embedding, a stack of
residual sublayers (:class:`AttentionLayer`, softmax or linear, and :class:`FeedForwardLayer`) and a
linear readout, run on the ``support_query`` token layout of :mod:`uni_icl.learners.icl` (the authors' token
format; the trained transformers default to the N-token ``paired`` layout): N support tokens ``[x_j, one_hot(y_j), 0]``
(support j reads supports 0..j) then N query tokens ``[x_i, 0, 1]`` (query i reads supports 0..i-1
and itself). There is no positional encoding. The weights are *set from the meta-learner's own
weights*, never trained, so the construction works for any (trained or random) meta-learner.

Each builder takes a meta-learner and returns a transformer whose output equals the learner's
output on every episode, up to floating-point rounding (the error is measured by
:func:`max_difference`):

- :func:`matching_network_transformer`: the embedding MLP in feed-forward blocks, then one
  softmax-attention layer with cosine (query-key normalised) scores at the learner's temperature;
  the "no evidence" slot is the query's own token. Its readout takes the log of the predictive
  distribution held in the residual stream (MatchNet outputs log-probabilities).
- :func:`cnp_transformer`: the encoder, aggregator and decoder MLPs in feed-forward blocks; mean
  pooling is a uniform softmax attention over earlier supports; the context size comes from a
  linear-attention head and log(1 + count) from a ReLU block that interpolates it at the integers
  0..n_max-1 (exact there; ``n_max`` bounds the episode length).
- :func:`protonet_transformer`: class means through one softmax head per class keyed on the label
  (the learner's default prototype is the value of the query's own token), the squared distance
  through linear-attention products.
- :func:`gd_transformer`: one linear self-attention layer that performs one gradient-descent step
  on the in-context least-squares loss (von Oswald et al. 2023), from a zero initial weight; from
  a non-zero (meta-learned, MAML-style) initial weight one more linear-attention layer first.

Two devices recur. A *gating* head (linear attention, query and key = the query flag) copies a
feature into query tokens and leaves zeros in support tokens, because a query reads itself and
supports, and supports carry flag 0: this turns "multiply by the flag" into an exact attention
operation. A *large key bias* ``BIG`` makes softmax weights exactly zero in floating point
(exp(-BIG / 2) underflows in float32 and float64), which switches a token off in a softmax layer.

Builders set the weights in float64 and return the construction in the dtype and on the device of
the meta-learner's weights (build from a float64 copy of the learner for a float64 comparison).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners.icl import episode_mask
from uni_icl.learners.meta_learners import ConditionalNeuralProcess, MatchingNetwork, PrototypicalNetwork
from uni_icl.validation import check_choice, check_int, check_positive

BIG = 1.0e4  # key bias that switches tokens off in softmax attention (exp(-BIG / 2) == 0 in float64)
ACTIVATIONS = ("leaky_relu", "relu")
ATTENTION_KINDS = ("softmax", "linear")
OUTPUTS = ("logits", "log", "scalar")


class AttentionLayer(nn.Module):
    """Residual multi-head self-attention with explicit weight matrices.

    Per head, with queries q = W_q h, keys k = W_k h, values v = W_v h, the score of token i for
    token j is ``cosine_scale * <n(q_i[:c]), n(k_j[:c])> + <q_i[c:], k_j[c:]>`` where c =
    ``cosine_dims`` and n is the l2 normalisation (QK-norm / cosine attention; c = 0 gives the plain
    dot product). ``kind="softmax"`` normalises the scores over the tokens each token may read;
    ``kind="linear"`` uses them as they are (unnormalised linear attention). The update is
    h_i + sum_heads W_o (sum_j a_ij v_j).

    Shapes: w_q, w_k (H, Dk, W); w_v (H, Dv, W); w_o (H, W, Dv).
    """

    def __init__(
        self,
        w_q: torch.Tensor,
        w_k: torch.Tensor,
        w_v: torch.Tensor,
        w_o: torch.Tensor,
        kind: str,
        cosine_dims: int = 0,
        cosine_scale: float | torch.Tensor = 1.0,
    ) -> None:
        super().__init__()
        check_choice("kind", kind, ATTENTION_KINDS)
        check_int("cosine_dims", cosine_dims, minimum=0, maximum=w_q.shape[1])
        self.kind, self.cosine_dims = kind, cosine_dims
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Parameter(w.clone()) for w in (w_q, w_k, w_v, w_o))
        self.cosine_scale = nn.Parameter(torch.as_tensor(cosine_scale, dtype=w_q.dtype).clone())

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """h (B, T, W), allowed (T, T) bool -> (B, T, W)."""
        q = torch.einsum("hkw,btw->bhtk", self.w_q, h)  # (B, H, T, Dk)
        k = torch.einsum("hkw,btw->bhtk", self.w_k, h)
        v = torch.einsum("hvw,btw->bhtv", self.w_v, h)  # (B, H, T, Dv)
        c = self.cosine_dims
        scores = q[..., c:] @ k[..., c:].transpose(-1, -2)  # (B, H, T, T)
        if c:
            cosine = F.normalize(q[..., :c], dim=-1) @ F.normalize(k[..., :c], dim=-1).transpose(-1, -2)
            scores = scores + self.cosine_scale * cosine
        if self.kind == "softmax":
            weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        else:
            weights = scores * allowed.to(scores.dtype)
        return h + torch.einsum("hwv,bhtv->btw", self.w_o, weights @ v)


class FeedForwardLayer(nn.Module):
    """Residual token-wise feed-forward block: h + W_out act(W_in h + b_in) + b_out.

    Shapes: w_in (M, W), b_in (M,), w_out (W, M), b_out (W,).
    """

    def __init__(
        self,
        w_in: torch.Tensor,
        b_in: torch.Tensor,
        w_out: torch.Tensor,
        b_out: torch.Tensor,
        activation: str = "leaky_relu",
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        self.activation, self.negative_slope = activation, negative_slope
        self.w_in, self.b_in, self.w_out, self.b_out = (nn.Parameter(w.clone()) for w in (w_in, b_in, w_out, b_out))

    def forward(self, h: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """h (B, T, W) -> (B, T, W); ``allowed`` is ignored (token-wise)."""
        pre = h @ self.w_in.T + self.b_in  # (B, T, M)
        act = F.relu(pre) if self.activation == "relu" else F.leaky_relu(pre, self.negative_slope)
        return h + act @ self.w_out.T + self.b_out


class ConstructedTransformer(nn.Module):
    """Embedding, residual sublayers, readout, on the token layout of :mod:`uni_icl.learners.icl`.

    forward(xs (B, N, d), ys (B, N)) -> logits (B, N, C), or predictions (B, N) when
    ``output="scalar"`` (regression: label slot of width 1 holding y). ``output="log"`` takes the
    log of the read-out vector (the construction then holds a probability vector). ``max_points``
    (if set) is the longest episode the weights were built for.
    """

    def __init__(
        self,
        d: int,
        label_width: int,
        embed_weight: torch.Tensor,
        embed_bias: torch.Tensor,
        layers: Sequence[nn.Module],
        readout_weight: torch.Tensor,
        readout_bias: torch.Tensor,
        output: str = "logits",
        max_points: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("output", output, OUTPUTS)
        self.d, self.label_width, self.output, self.max_points = d, label_width, output, max_points
        self.embed_weight = nn.Parameter(embed_weight.clone())  # (W, d + label_width + 1)
        self.embed_bias = nn.Parameter(embed_bias.clone())  # (W,)
        self.layers = nn.ModuleList(layers)
        self.readout_weight = nn.Parameter(readout_weight.clone())  # (C, W)
        self.readout_bias = nn.Parameter(readout_bias.clone())  # (C,)

    @property
    def width(self) -> int:
        return self.embed_weight.shape[0]

    def tokens(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """The 2N input tokens (B, 2N, d + label_width + 1): supports, then queries."""
        scalar = self.output == "scalar"
        labels = ys.to(xs.dtype)[..., None] if scalar else F.one_hot(ys, self.label_width).to(xs.dtype)  # (B, N, L)
        flag = torch.ones_like(xs[..., :1])
        support = torch.cat([xs, labels, 0 * flag], dim=-1)
        query = torch.cat([xs, torch.zeros_like(labels), flag], dim=-1)
        return torch.cat([support, query], dim=1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, _ = xs.shape
        if self.max_points is not None and self.max_points < N:
            raise ValueError(f"xs: episodes of at most {self.max_points} points (n_max of the construction), got {N}")
        h = self.tokens(xs, ys) @ self.embed_weight.T + self.embed_bias  # (B, 2N, W)
        allowed = episode_mask(N, xs.device)
        for layer in self.layers:
            h = layer(h, allowed)
        out = h[:, N:] @ self.readout_weight.T + self.readout_bias  # (B, N, C)
        if self.output == "log":
            return out.clamp_min(1e-12).log()
        return out[..., 0] if self.output == "scalar" else out


@dataclass
class _Builder:
    """Allocates named blocks of the residual stream and collects sublayer specifications.

    Layers are recorded as functions of the final width and materialised by :meth:`build`, so
    blocks can be allocated while layers are being described.
    """

    d: int
    label_width: int
    dtype: torch.dtype = torch.float64
    width: int = 0
    blocks: dict[str, list[int]] = field(default_factory=dict)
    embed: list[tuple[int, int, float]] = field(default_factory=list)  # (residual dim, token feature or -1, value)
    layer_makers: list = field(default_factory=list)

    def block(self, name: str, size: int) -> list[int]:
        self.blocks[name] = list(range(self.width, self.width + size))
        self.width += size
        return self.blocks[name]

    def input_block(self, name: str, token_features: Sequence[int]) -> list[int]:
        """A block that the embedding fills with the given token features."""
        dims = self.block(name, len(token_features))
        self.embed += [(dim, feature, 1.0) for dim, feature in zip(dims, token_features, strict=True)]
        return dims

    def build(
        self, readout: Sequence[int], readout_bias: torch.Tensor | None, output: str, max_points: int | None = None
    ) -> ConstructedTransformer:
        W, n_features = self.width, self.d + self.label_width + 1
        embed_weight = torch.zeros(W, n_features, dtype=self.dtype)
        embed_bias = torch.zeros(W, dtype=self.dtype)
        for dim, feature, value in self.embed:
            if feature < 0:
                embed_bias[dim] += value
            else:
                embed_weight[dim, feature] += value
        readout_weight = torch.zeros(len(readout), W, dtype=self.dtype)
        readout_weight[range(len(readout)), readout] = 1.0
        bias = torch.zeros(len(readout), dtype=self.dtype) if readout_bias is None else readout_bias.to(self.dtype)
        layers = [make(W) for make in self.layer_makers]
        return ConstructedTransformer(
            self.d, self.label_width, embed_weight, embed_bias, layers, readout_weight, bias, output, max_points
        )

    def standard_inputs(self) -> dict[str, list[int]]:
        """x, label, flag blocks copied from the token; a constant 1 and s = 1 - flag from the bias."""
        d, c = self.d, self.label_width
        self.input_block("x", range(d))
        self.input_block("y", range(d, d + c))
        self.input_block("flag", [d + c])
        one = self.block("one", 1)
        support = self.block("support", 1)
        self.embed += [(one[0], -1, 1.0), (support[0], -1, 1.0), (support[0], d + c, -1.0)]
        return self.blocks

    def attention(
        self,
        kind: str,
        heads: Sequence[dict],
        cosine_dims: int = 0,
        cosine_scale: float | torch.Tensor = 1.0,
    ) -> None:
        """One attention sublayer. Each head is a dict with ``q``, ``k``: lists of (dims, matrix
        (Dk, len(dims))) summed into the query/key, ``v``: the same for values (Dv rows), and ``o``:
        (dims, matrix (len(dims), Dv)) writing the head output back."""
        dtype = self.dtype
        dk = max(_rows(head["q"]) for head in heads)
        dv = max(_rows(head["v"]) for head in heads)

        def make(width: int) -> AttentionLayer:
            n = len(heads)
            w_q, w_k = torch.zeros(n, dk, width, dtype=dtype), torch.zeros(n, dk, width, dtype=dtype)
            w_v, w_o = torch.zeros(n, dv, width, dtype=dtype), torch.zeros(n, width, dv, dtype=dtype)
            for index, head in enumerate(heads):
                for target, parts in ((w_q, head["q"]), (w_k, head["k"]), (w_v, head["v"])):
                    for dims, matrix in parts:
                        target[index, : matrix.shape[0], dims] += matrix.to(dtype)
                dims, matrix = head["o"]
                w_o[index, dims, : matrix.shape[1]] += matrix.to(dtype)
            return AttentionLayer(w_q, w_k, w_v, w_o, kind, cosine_dims, torch.as_tensor(cosine_scale, dtype=dtype))

        self.layer_makers.append(make)

    def feed_forward(
        self,
        inputs: Sequence[tuple[list[int], torch.Tensor]],
        bias: torch.Tensor,
        outputs: Sequence[tuple[list[int], torch.Tensor]],
        out_bias: tuple[list[int], torch.Tensor] | None = None,
        activation: str = "leaky_relu",
        negative_slope: float = 0.01,
    ) -> None:
        """One feed-forward sublayer: hidden = act(sum_k M_k h[dims_k] + bias); h[dims] += M hidden."""
        dtype, hidden = self.dtype, bias.shape[0]

        def make(width: int) -> FeedForwardLayer:
            w_in, w_out = torch.zeros(hidden, width, dtype=dtype), torch.zeros(width, hidden, dtype=dtype)
            b_out = torch.zeros(width, dtype=dtype)
            for dims, matrix in inputs:
                w_in[:, dims] += matrix.to(dtype)
            for dims, matrix in outputs:
                w_out[dims, :] += matrix.to(dtype)
            if out_bias is not None:
                b_out[out_bias[0]] += out_bias[1].to(dtype)
            return FeedForwardLayer(w_in, bias.to(dtype).clone(), w_out, b_out, activation, negative_slope)

        self.layer_makers.append(make)

    def mlp(
        self, network: nn.Module, inputs: Sequence[list[int]], name: str, gate: list[int] | None = None
    ) -> list[int]:
        """Run an MLP (``uni_icl.learners.modules.mlp``: Linear, act, ..., Linear) token-wise, one feed-forward
        sublayer per hidden layer; returns the block holding its output.

        With ``gate`` (a block holding s in {0, 1}), every bias is multiplied by s, so the output is
        the MLP's where s = 1 and exactly 0 where s = 0 and the inputs are 0 (act(0) = 0).
        """
        if isinstance(network, nn.Identity):
            return [dim for dims in inputs for dim in dims]
        linears = [m for m in network if isinstance(m, nn.Linear)]
        acts = [m for m in network if not isinstance(m, nn.Linear)]
        slope = _negative_slope(acts[0]) if acts else 0.01
        current = list(inputs)
        if len(linears) == 1:
            return self._linear(linears[0], current, name, gate, slope)
        for index, (first, second) in enumerate(zip(linears[:-1], linears[1:], strict=True)):
            weight, bias = first.weight.detach(), first.bias.detach()
            parts = _split_columns(weight, current)
            hidden_bias = torch.zeros_like(bias) if gate else bias
            if gate:
                parts.append((gate, bias[:, None]))
            last = index == len(linears) - 2
            if last:
                out = self.block(name, second.out_features)
                out_weight = second.weight.detach()
                if gate:
                    self._gated_last(parts, hidden_bias, out, out_weight, second.bias.detach(), gate, slope)
                else:
                    self.feed_forward(
                        parts, hidden_bias, [(out, out_weight)], (out, second.bias.detach()), "leaky_relu", slope
                    )
                return out
            store = self.block(f"{name}.hidden{index}", first.out_features)
            eye = torch.eye(first.out_features)
            self.feed_forward(parts, hidden_bias, [(store, eye)], None, "leaky_relu", slope)
            current = [store]
        raise ValueError(f"network: expected at least two Linear layers in {name}, got {len(linears)}")

    def _linear(
        self, linear: nn.Linear, inputs: Sequence[list[int]], name: str, gate: list[int] | None, slope: float
    ) -> list[int]:
        """A lone Linear layer z = W h + b as one block: z = (act(z) - act(-z)) / (1 + slope)."""
        weight, bias = linear.weight.detach().double(), linear.bias.detach().double()
        parts = [(dims, torch.cat([m, -m], 0)) for dims, m in _split_columns(weight, inputs)]
        hidden_bias = torch.cat([bias, -bias])
        if gate:
            parts.append((gate, hidden_bias[:, None]))
            hidden_bias = torch.zeros_like(hidden_bias)
        out = self.block(name, linear.out_features)
        eye = _eye(linear.out_features) / (1.0 + slope)
        self.feed_forward(parts, hidden_bias, [(out, torch.cat([eye, -eye], 1))], None, "leaky_relu", slope)
        return out

    def _gated_last(
        self,
        parts: list[tuple[list[int], torch.Tensor]],
        hidden_bias: torch.Tensor,
        out: list[int],
        out_weight: torch.Tensor,
        out_bias: torch.Tensor,
        gate: list[int],
        slope: float,
    ) -> None:
        """Last hidden layer plus one unit act(s) = s (s in {0, 1}) that writes the output bias times s."""
        hidden = hidden_bias.shape[0]
        inputs = [(dims, torch.cat([matrix, _zeros(1, matrix.shape[1])], 0)) for dims, matrix in parts]
        inputs.append((gate, torch.cat([_zeros(hidden, 1), _ones(1, 1)], 0)))
        bias = torch.cat([hidden_bias, _zeros(1)])
        weight = torch.cat([out_weight, out_bias[:, None]], dim=1)
        self.feed_forward(inputs, bias, [(out, weight)], None, "leaky_relu", slope)


def _rows(parts: Sequence[tuple[list[int], torch.Tensor]]) -> int:
    return max((matrix.shape[0] for _, matrix in parts), default=1)


def _split_columns(weight: torch.Tensor, inputs: Sequence[list[int]]) -> list[tuple[list[int], torch.Tensor]]:
    """Cut a Linear weight (out, in) into column blocks, one per input block."""
    parts, start = [], 0
    for dims in inputs:
        parts.append((dims, weight[:, start : start + len(dims)]))
        start += len(dims)
    if start != weight.shape[1]:
        raise ValueError(f"weight: expected {start} input columns, got {weight.shape[1]}")
    return parts


def _negative_slope(activation: nn.Module) -> float:
    if isinstance(activation, nn.LeakyReLU):
        return activation.negative_slope
    raise ValueError(f"activation: only LeakyReLU networks can be copied, got {type(activation).__name__}")


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)


def _full(shape: tuple[int, int], value: float | torch.Tensor) -> torch.Tensor:
    """Constant matrices are built in float64, so that 1/C or a learning rate is not rounded to float32."""
    return torch.full(shape, float(value), dtype=torch.float64)


def _ones(*shape: int) -> torch.Tensor:
    return torch.ones(*shape, dtype=torch.float64)


def _zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.float64)


def _gating_head(source: list[int], target: list[int], flag: list[int], sign: float = 1.0) -> dict:
    """Linear-attention head writing sign * flag * h[source] into h[target] (zero in support tokens)."""
    n = len(source)
    return {
        "q": [(flag, _ones(1, 1))],
        "k": [(flag, _ones(1, 1))],
        "v": [(source, _eye(n))],
        "o": (target, sign * _eye(n)),
    }


def matching_network_transformer(net: MatchingNetwork) -> ConstructedTransformer:
    """Embedding MLP in feed-forward blocks, then one cosine softmax-attention layer.

    Scores: tau * cos(g(x_i), g(x_j)) for earlier supports; for the query's own token
    tau * cos(g_i, g_i) + (b - tau) = b (the learned "no evidence" score) through a bias part of
    the key that only query tokens carry. Values: one_hot(y_j) for supports, the uniform vote 1/C
    for the query itself. The attention output is MatchNet's predictive distribution; the readout
    takes its log.
    """
    if not isinstance(net, MatchingNetwork):
        raise ValueError(f"net: expected a MatchingNetwork, got {type(net).__name__}")
    C = net.n_classes
    b = _Builder(net.d, C)
    blocks = b.standard_inputs()
    emb = b.mlp(net.embed, [blocks["x"]], "embedding")
    probs = b.block("probs", C)
    tau = net.log_temperature.detach().double().exp()
    null = net.null_score.detach().double()
    H = len(emb)
    head = {
        "q": [(emb, _eye(H)), (blocks["one"], torch.cat([_zeros(H, 1), _ones(1, 1)], 0))],
        "k": [(emb, _eye(H)), (blocks["flag"], torch.cat([_zeros(H, 1), (null - tau).view(1, 1)], 0))],
        "v": [(blocks["y"], _eye(C)), (blocks["flag"], _full((C, 1), 1.0 / C))],
        "o": (probs, _eye(C)),
    }
    b.attention("softmax", [head], cosine_dims=H, cosine_scale=tau)
    return _like(b.build(probs, None, "log"), net)


def cnp_transformer(net: ConditionalNeuralProcess, n_max: int = 64) -> ConstructedTransformer:
    """Encoder, mean pooling, aggregator and decoder of a CNP as transformer sublayers.

    1. linear attention, two heads: gate x to zero in query tokens (x_s = x - flag * x), and count
       the earlier supports (query key 1 only on supports: count_i = i);
    2. the encoder MLP with gated biases: e_j in supports, exactly 0 in queries;
    3. softmax attention, scores 0 for supports and -BIG for the query itself: the mean of e_j over
       j < i (at i = 0 the query reads only itself, whose value is 0: the CNP's empty mean);
    4. a ReLU block interpolating log(1 + count) at the integers 0..n_max-1;
    5. the aggregator and decoder MLPs on [aggregate(mean), log(1 + count), x].
    """
    if not isinstance(net, ConditionalNeuralProcess):
        raise ValueError(f"net: expected a ConditionalNeuralProcess, got {type(net).__name__}")
    check_int("n_max", n_max, minimum=2)
    C = net.n_classes
    b = _Builder(net.d, C)
    blocks = b.standard_inputs()
    x_support = b.input_block("x_support", range(net.d))
    count = b.block("count", 1)
    one, flag, support = blocks["one"], blocks["flag"], blocks["support"]
    counting = {
        "q": [(one, _ones(1, 1))],
        "k": [(support, _ones(1, 1))],
        "v": [(one, _ones(1, 1))],
        "o": (count, _ones(1, 1)),
    }
    b.attention("linear", [_gating_head(blocks["x"], x_support, flag, -1.0), counting])
    encoded = b.mlp(net.encoder, [x_support, blocks["y"]], "encoder", gate=support)
    H = len(encoded)
    mean = b.block("mean", H)
    pooling = {
        "q": [(one, _ones(1, 1))],
        "k": [(flag, _full((1, 1), -BIG))],
        "v": [(encoded, _eye(H))],
        "o": (mean, _eye(H)),
    }
    b.attention("softmax", [pooling])
    log_count = b.block("log_count", 1)
    knots = torch.arange(n_max - 1, dtype=torch.float64)
    values = torch.log1p(torch.arange(n_max, dtype=torch.float64))
    slopes = values[1:] - values[:-1]
    kinks = torch.cat([slopes[:1], slopes[1:] - slopes[:-1]])  # f(c) = sum_k kinks_k relu(c - k), f(0) = 0
    b.feed_forward([(count, _ones(n_max - 1, 1))], -knots, [(log_count, kinks[None, :])], None, "relu")
    context = b.mlp(net.aggregate, [mean], "aggregate")
    logits = b.mlp(net.decoder, [context, log_count, blocks["x"]], "decoder")
    return _like(b.build(logits, None, "logits", max_points=n_max), net)


def protonet_transformer(net: PrototypicalNetwork) -> ConstructedTransformer:
    """Embedding MLP, class means by label-keyed softmax heads, squared distances by linear attention.

    1. the embedding MLP (feed-forward blocks): g in every token;
    2. linear attention (gating): flag * g, so g - flag * g is g in supports and 0 in queries;
    3. softmax attention, one head per class c: key BIG * ([y_j = c] + flag_j / 2), value
       g_j in supports and the default prototype in the query itself, so the head returns the
       mean of earlier class-c embeddings, or the default prototype when there is none;
    4. linear attention (gating): flag * (g - P_c) for every class;
    5. linear attention, one head per class: query g_i - P_c, key flag * (g - P_c), value 1: the
       only non-zero term is the query's own, ||g_i - P_c||^2, written with a minus sign.
    """
    if not isinstance(net, PrototypicalNetwork):
        raise ValueError(f"net: expected a PrototypicalNetwork, got {type(net).__name__}")
    C = net.n_classes
    b = _Builder(net.d, C)
    blocks = b.standard_inputs()
    one, flag, y = blocks["one"], blocks["flag"], blocks["y"]
    emb = b.mlp(net.embed, [blocks["x"]], "embedding")
    H = len(emb)
    emb_query = b.block("embedding_in_query", H)
    b.attention("linear", [_gating_head(emb, emb_query, flag)])
    prototypes = [b.block(f"prototype{c}", H) for c in range(C)]
    default = net.default_prototype.detach().double()[:, None]  # (H, 1)
    heads = []
    for c in range(C):
        key = [(y[c : c + 1], _full((1, 1), BIG)), (flag, _full((1, 1), BIG / 2))]
        value = [(emb, _eye(H)), (emb_query, -_eye(H)), (flag, default)]
        heads.append({"q": [(one, _ones(1, 1))], "k": key, "v": value, "o": (prototypes[c], _eye(H))})
    b.attention("softmax", heads)
    gated = [b.block(f"offset{c}_in_query", H) for c in range(C)]
    gating = {
        "q": [(flag, _ones(1, 1))],
        "k": [(flag, _ones(1, 1))],
        "v": [(emb, torch.cat([_eye(H)] * C, 0))] + [(prototypes[c], _block_rows(c, C, H)) for c in range(C)],
        "o": ([dim for block in gated for dim in block], _eye(C * H)),
    }
    b.attention("linear", [gating])
    logits = b.block("logits", C)
    distance_heads = [
        {
            "q": [(emb, _eye(H)), (prototypes[c], -_eye(H))],
            "k": [(gated[c], _eye(H))],
            "v": [(one, _ones(1, 1))],
            "o": (logits[c : c + 1], -_ones(1, 1)),
        }
        for c in range(C)
    ]
    b.attention("linear", distance_heads)
    return _like(b.build(logits, None, "logits"), net)


def _like(construction: ConstructedTransformer, net: nn.Module) -> ConstructedTransformer:
    """The construction (built in float64) in the dtype and on the device of ``net``'s weights."""
    reference = next(net.parameters())
    return construction.to(device=reference.device, dtype=reference.dtype)


def _block_rows(c: int, n_blocks: int, size: int) -> torch.Tensor:
    """(n_blocks * size, size): -identity in row block c, zeros elsewhere."""
    matrix = torch.zeros(n_blocks * size, size, dtype=torch.float64)
    matrix[c * size : (c + 1) * size] = -_eye(size)
    return matrix


def gd_transformer(
    d: int,
    lr: float,
    init_weight: torch.Tensor | None = None,
    init_bias: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> ConstructedTransformer:
    """One gradient-descent step on the in-context least-squares loss, as linear self-attention.

    The linear model f(x) = w.x + b starts at (init_weight, init_bias) (zero by default); query i
    takes one step of size ``lr`` on L(w, b) = 1/2 sum_{j<i} (f(x_j) - y_j)^2 and predicts with the
    updated model: f_0(x_i) - lr * sum_{j<i} (f_0(x_j) - y_j)(x_j . x_i + 1). With a zero start this
    is one linear-attention layer (von Oswald et al. 2023: query [x_i, 1], key [x_j, 1], value y_j,
    which is 0 in the query's own token). A non-zero start (MAML's learned initialisation) needs the
    query's own token switched off first: one gating layer, then the step.
    Tokens: supports [x_j, y_j, 0], queries [x_i, 0, 1]; output (B, N). Weights are set in float64
    and returned in ``dtype``.
    """
    check_int("d", d, minimum=1)
    check_positive("lr", lr)
    start = torch.zeros(d, dtype=torch.float64) if init_weight is None else init_weight.detach().double().reshape(-1)
    if start.shape[0] != d:
        raise ValueError(f"init_weight: expected {d} entries, got {start.shape[0]}")
    b = _Builder(d, 1)
    blocks = b.standard_inputs()
    x, y, one, support = blocks["x"], blocks["y"], blocks["one"], blocks["support"]
    prediction = b.block("prediction", 1)
    zero_start = init_weight is None or (bool((start == 0).all()) and init_bias == 0.0)
    if zero_start:
        key_x, key_one = x, one
    else:
        key_x = b.input_block("x_support", range(d))
        b.attention("linear", [_gating_head(x, key_x, blocks["flag"], -1.0)])
        key_one = support
    residual = [(y, _ones(1, 1)), (x, -start[None, :]), (one, _full((1, 1), -float(init_bias)))]
    step = {
        "q": [(x, torch.cat([_eye(d), _zeros(1, d)], 0)), (one, torch.cat([_zeros(d, 1), _ones(1, 1)]))],
        "k": [
            (key_x, torch.cat([_eye(d), _zeros(1, d)], 0)),
            (key_one, torch.cat([_zeros(d, 1), _ones(1, 1)])),
        ],
        "v": residual,
        "o": (prediction, _full((1, 1), float(lr))),
    }
    b.attention("linear", [step])
    model = b.build(prediction, None, "scalar")
    with torch.no_grad():  # the readout adds f_0(x_i) = w_0 . x_i + b_0 to the update held in the stream
        model.readout_weight[0, x] += start
        model.readout_bias += float(init_bias)
    return model.to(dtype)


def gd_step_reference(
    xs: torch.Tensor, ys: torch.Tensor, lr: float, init_weight: torch.Tensor | None = None, init_bias: float = 0.0
) -> torch.Tensor:
    """The explicit gradient step, with autograd: xs (B, N, d), ys (B, N) -> predictions (B, N).

    Every query i has its own copy of (w, b) = (init_weight, init_bias); the loss sums
    1/2 (w.x_j + b - y_j)^2 over j < i for each copy, so one backward pass gives every query's gradient.
    """
    B, N, d = xs.shape
    start = torch.zeros(d, dtype=xs.dtype) if init_weight is None else init_weight.to(xs.dtype).reshape(d)
    with torch.enable_grad():
        weight = start.expand(B, N, d).clone().requires_grad_(True)  # (B, N_query, d)
        bias = torch.full((B, N), float(init_bias), dtype=xs.dtype, requires_grad=True)
        fits = torch.einsum("bqd,bjd->bqj", weight, xs) + bias[..., None]  # (B, N_query, N_support)
        earlier = torch.ones(N, N, dtype=torch.bool, device=xs.device).tril(-1)
        loss = 0.5 * (((fits - ys[:, None, :]) ** 2) * earlier).sum()
        grad_weight, grad_bias = torch.autograd.grad(loss, (weight, bias))
    new_weight, new_bias = weight.detach() - lr * grad_weight, bias.detach() - lr * grad_bias
    return torch.einsum("bqd,bqd->bq", new_weight, xs) + new_bias


def max_difference(
    reference: nn.Module | object,
    construction: nn.Module,
    xs: torch.Tensor,
    ys: torch.Tensor,
    batch_size: int = 64,
) -> float:
    """max |reference(xs, ys) - construction(xs, ys)| over all episodes and positions (no gradients).

    ``reference`` is any callable following the learner contract; both run in the dtype of xs.
    """
    worst = 0.0
    with torch.no_grad():
        for start in range(0, xs.shape[0], batch_size):
            chunk_x, chunk_y = xs[start : start + batch_size], ys[start : start + batch_size]
            gap = (reference(chunk_x, chunk_y) - construction(chunk_x, chunk_y)).abs().max().item()
            worst = max(worst, gap)
    return worst if math.isfinite(worst) else math.inf


def construct(net: nn.Module, n_max: int) -> ConstructedTransformer:
    """The hand-set transformer that runs the meta-learner ``net`` exactly (``n_max``: CNP's longest episode)."""
    if isinstance(net, MatchingNetwork):
        return matching_network_transformer(net)
    if isinstance(net, PrototypicalNetwork):
        return protonet_transformer(net)
    if isinstance(net, ConditionalNeuralProcess):
        return cnp_transformer(net, n_max=n_max)
    raise ValueError(
        f"net: expected MatchingNetwork, PrototypicalNetwork or ConditionalNeuralProcess, got {type(net).__name__}"
    )
