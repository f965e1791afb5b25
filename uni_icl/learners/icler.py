"""The authors' ICLer, parameter for parameter, and its causal one-pass form (``icl_authors``).

The authors' scripts (ovo67/Uni_ICL, ``proving/umix.py`` and ``usim.py``) build
``ICLer(dim=d + 2C, heads=1, depth=8, label_dim=2C, ff_list=[1] * 8, readout="linear")`` from
``proving/linear_attention_transformer/icler.py``. That network, at width W = d + 2C:

- tokens: a support ``[x_j, one_hot(y_j)]`` with the label part padded to 2C (slots C..2C-1 are
  always 0), the query ``[x_i, 0]``; no embedding, no positional encoding;
- 8 layers, each ``h + attn(h)`` then ``h + mlp(h)``, no LayerNorm (their ``pn=0``);
- attention: q, k and v projections W -> W **without bias**, one head (d_h = W) and **no output
  projection** (their ``to_out``, with bias, exists only for more than one head); their linear
  attention softmax_f(q_i) d_h^(-1/2) sum_j softmax_j(k_j) v_j: the query's features are a softmax
  over the feature axis times d_h^(-1/2), the keys a softmax over the positions the token reads;
- MLP: Linear(W, 4W), GELU, Linear(4W, W), with biases;
- readout: Linear(W, 2C) **without bias**, 2C logits.

Parameters, in their order: per layer ``to_q``, ``to_k``, ``to_v`` (W, W) and the MLP's (4W, W),
(4W,), (W, 4W), (W,); then the readout (2C, W). At d = 2, C = 2: 8 x (3 x 36 + 144 + 24 + 144 + 6)
+ 24 = 3,432. Initialisation: PyTorch's defaults of these layers, created in their order, so a seed
gives the weights their ICLer starts from under the same seed.

:class:`ICLer` runs it in one causal pass over N support tokens then N query tokens (the mask of
:func:`~uni_icl.learners.icl.episode_mask`: support j reads supports 0..j, query i reads supports
0..i-1 and itself), which equals running it causally once per prefix (``forward_per_prefix``). The
authors run it without a mask, once per prefix: :mod:`uni_icl.learners.icl_prefix`
(``icl_authors_prefix``), same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners.icl import causal_mask, episode_mask
from uni_icl.learners.modules import linear_attention, mlp


class AuthorsAttention(nn.Module):
    """Their one-head ``SelfAttention``: bias-free q, k, v projections, the query features scaled by
    d_h^(-1/2), no output projection. forward(h (B, T, W), allowed (T, T) or (B, 1, 1, T)) -> (B, T, W)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(width, width, bias=False)
        self.to_v = nn.Linear(width, width, bias=False)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        q, k, v = (project(h)[:, None] for project in (self.to_q, self.to_k, self.to_v))  # (B, 1, T, W)
        # their q = softmax(q) * d_h^-1/2: the attention is linear in softmax(q), so scale its output
        return (linear_attention(q, k, v, allowed) * h.shape[-1] ** -0.5)[:, 0]


class AuthorsLayer(nn.Module):
    """h + attn(h), then h + mlp(h) (their attention layer and feed-forward layer, no norms)."""

    def __init__(self, width: int, mlp_ratio: int) -> None:
        super().__init__()
        self.attn = AuthorsAttention(width)
        self.mlp = mlp(width, mlp_ratio * width, width)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(h, allowed)
        return h + self.mlp(h)


class ICLer(nn.Module):
    """The authors' ICLer, run in one causal pass (see the module docstring).

    forward(xs (B, N, d), ys (B, N) long) -> logits (B, N, 2C): their readout's 2C logits, of which
    logit c < C scores class c and the last C score the padding labels, which never occur. The
    learner returns all 2C, so the package's loss and score are the authors' with no special case:
    the cross-entropy of the 2C logits against the class index equals their cross-entropy against
    the padded one-hot target (``F.cross_entropy(pred, Y)`` with Y = [one_hot(y), 0]), and a
    prediction is the argmax over the 2C logits, as their accuracy takes it, so a padding logit on
    top counts as an error. A softmax of the output is their predictive distribution, which may put
    mass on the padding. Position i reads only x_i and the pairs before it (the learner contract).
    """

    is_regression = False
    depth = 8  # their depth
    mlp_ratio = 4  # their FeedForward's hidden width, as a multiple of the width

    def __init__(self, d: int, n_classes: int) -> None:
        super().__init__()
        self.d, self.n_classes = d, n_classes
        self.n_logits = 2 * n_classes  # their label_dim: the label part padded to 2C
        self.width = d + self.n_logits
        self.blocks = nn.ModuleList(AuthorsLayer(self.width, self.mlp_ratio) for _ in range(self.depth))
        self.readout = nn.Linear(self.width, self.n_logits, bias=False)

    def tokens(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N support tokens ``[x_j, one_hot(y_j) padded to 2C]`` then N query tokens ``[x_i, 0]``:
        (B, 2N, W), and the one-pass mask (2N, 2N)."""
        support = torch.cat([xs, F.one_hot(ys, self.n_logits).to(xs.dtype)], dim=-1)  # (B, N, W)
        query = torch.cat([xs, xs.new_zeros(*xs.shape[:2], self.n_logits)], dim=-1)  # (B, N, W)
        return torch.cat([support, query], dim=1), episode_mask(xs.shape[1], xs.device)

    def _run(self, sequence: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Layers and readout on token sequences (B, T, W) -> logits (B, T, 2C)."""
        h = sequence
        for block in self.blocks:
            h = block(h, allowed)
        return self.readout(h)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        sequence, allowed = self.tokens(xs, ys)
        return self._run(sequence, allowed)[:, xs.shape[1] :]  # the N query tokens answer

    def forward_per_prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Reference path: for each i, the supports 0..i-1 then query i, one causal pass, the last
        token answers (N passes, equal to ``forward``). -> (B, N, 2C)"""
        N = xs.shape[1]
        sequence, _ = self.tokens(xs, ys)
        outputs = []
        for i in range(N):
            prefix = torch.cat([sequence[:, :i], sequence[:, N + i : N + i + 1]], dim=1)  # (B, i + 1, W)
            outputs.append(self._run(prefix, causal_mask(i + 1, xs.device))[:, -1])
        return torch.stack(outputs, dim=1)
