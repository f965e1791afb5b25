"""The in-context learner for classification: a transformer reading an episode as tokens.

Two token layouts, both computing all N positions in **one forward pass** (``ICLConfig.layout``):

- ``"paired"`` (default, N tokens): token i is ``[x_i, x_{i-1}, one_hot(y_{i-1}), has_pair]``
  (token 0 has no earlier pair: zeros and has_pair = 0), under a causal mask. Token i carries the
  query x_i and one complete earlier pair, so tokens 0..i hold exactly the pairs before i plus the
  queries x_0..x_i, and nothing from position i onwards except x_i: the logits read from token i
  obey the learner contract. One sequence of N tokens replaces the N prefix sequences of lengths
  1..N the authors' scripts run, about (N + 1) / 2 times fewer tokens.
- ``"support_query"`` (2N tokens): N *support* tokens ``[x_j, one_hot(y_j), 0]`` under a causal
  mask, then N *query* tokens ``[x_i, 0, 1]``; query i reads supports 0..i-1 and itself. This is
  the authors' token format (a pair per token, the query with an empty label), made one-pass.

In both, because attention is causal, what a token computes is the same in every prefix that
contains it, so the single pass equals running the model once per prefix, causally, and reading
the last token (``forward_per_prefix``, the reference the tests and the benchmark use; the
authors' own per-prefix passes have no causal mask: :mod:`uni_icl.learners.icl_prefix`). There is
no positional encoding; the causal mask is the only source of order.

The authors' own "ICLer" (the support/query format at width d + 2C, no embedding, bias-free
attention projections, a 2C-logit readout) is :mod:`uni_icl.learners.icler`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners.modules import ATTENTION_KINDS, TransformerBlock
from uni_icl.validation import check_choice, check_int

LAYOUTS = ("paired", "support_query")


@dataclass(frozen=True)
class ICLConfig:
    """Architecture of :class:`ICLTransformer`."""

    width: int = 64  # residual stream width
    depth: int = 4  # number of transformer blocks
    n_heads: int = 4  # attention heads per block
    attention: str = "softmax"  # "softmax" or "linear" (the authors' kernelised attention)
    mlp_ratio: int = 4  # hidden width of each block's MLP, as a multiple of the width
    layer_norm: bool = True  # pre-norm LayerNorms
    layout: str = "paired"  # "paired" (N tokens) or "support_query" (2N tokens); see the module

    def __post_init__(self) -> None:
        check_int("width", self.width, minimum=1)
        check_int("depth", self.depth, minimum=1)
        check_int("n_heads", self.n_heads, minimum=1)
        check_int("mlp_ratio", self.mlp_ratio, minimum=1)
        check_choice("attention", self.attention, ATTENTION_KINDS)
        check_choice("layout", self.layout, LAYOUTS)


def causal_mask(n_tokens: int, device: torch.device) -> torch.Tensor:
    """(T, T) bool: token i reads tokens 0..i."""
    return torch.ones(n_tokens, n_tokens, dtype=torch.bool, device=device).tril()


def episode_mask(n_points: int, device: torch.device) -> torch.Tensor:
    """(2N, 2N) bool for the support/query layout: row token reads column token. Supports first."""
    support_causal = causal_mask(n_points, device)
    query_reads_support = support_causal.tril(-1)
    eye = torch.eye(n_points, dtype=torch.bool, device=device)
    top = torch.cat([support_causal, torch.zeros_like(eye)], dim=1)
    bottom = torch.cat([query_reads_support, eye], dim=1)
    return torch.cat([top, bottom], dim=0)


class ICLTransformer(nn.Module):
    """forward(xs (B, N, d), ys (B, N) long) -> logits (B, N, C); see the module docstring."""

    is_regression = False

    def __init__(self, d: int, n_classes: int, config: ICLConfig = ICLConfig()) -> None:
        super().__init__()
        self.d, self.n_classes, self.config = d, n_classes, config
        pair_size = d + n_classes + 1  # [x, one_hot(y), flag]
        token_size = d + pair_size if config.layout == "paired" else pair_size
        self.embed = nn.Linear(token_size, config.width)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.n_heads, config.attention, config.mlp_ratio, config.layer_norm)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.width) if config.layer_norm else nn.Identity()
        self.readout = nn.Linear(config.width, n_classes)

    def tokens(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The token sequence (B, T, F) before the embedding and its attention mask (T, T).

        T = N for the paired layout, 2N (supports, then queries) for the support/query layout.
        """
        B, N, _ = xs.shape
        labels = F.one_hot(ys, self.n_classes).to(xs.dtype)  # (B, N, C)
        flag = torch.ones_like(xs[..., :1])  # (B, N, 1)
        if self.config.layout == "paired":
            pairs = torch.cat([xs, labels, flag], dim=-1)[:, :-1]  # pair j, j = 0..N-2
            previous_pair = F.pad(pairs, (0, 0, 1, 0))  # row i holds pair i - 1; row 0 all zeros
            return torch.cat([xs, previous_pair], dim=-1), causal_mask(N, xs.device)
        support = torch.cat([xs, labels, 0 * flag], dim=-1)
        query = torch.cat([xs, torch.zeros_like(labels), flag], dim=-1)
        return torch.cat([support, query], dim=1), episode_mask(N, xs.device)

    def _run(self, sequence: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        h = self.embed(sequence)
        for block in self.blocks:
            h = block(h, allowed)
        return self.readout(self.norm(h))

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        sequence, allowed = self.tokens(xs, ys)
        return self._run(sequence, allowed)[:, -xs.shape[1] :]  # the last N tokens answer

    def forward_per_prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Reference path: one causal pass per prefix (N passes, as many as the authors' scripts
        run, but causal, so equal to ``forward``). -> (B, N, C)

        Pass i sees only the tokens prefix i is made of: the paired tokens 0..i, or the supports
        0..i-1 followed by query i, under a causal mask, and its last token answers.
        """
        B, N, _ = xs.shape
        sequence, _ = self.tokens(xs, ys)
        outputs = []
        for i in range(N):
            if self.config.layout == "paired":
                prefix = sequence[:, : i + 1]  # (B, i + 1, F)
            else:
                prefix = torch.cat([sequence[:, :i], sequence[:, N + i : N + i + 1]], dim=1)
            outputs.append(self._run(prefix, causal_mask(i + 1, xs.device))[:, -1])
        return torch.stack(outputs, dim=1)
