"""The in-context learner for classification: a transformer reading an episode as tokens.

Layout (one forward pass for all N positions). The sequence holds 2N tokens:

- N *support* tokens ``[x_j, one_hot(y_j), 0]``; support j reads supports 0..j (causal);
- N *query* tokens ``[x_i, 0, 1]``; query i reads supports 0..i-1 and itself, nothing else.

The logits for position i are read from query token i, so they depend only on x_i and the
pairs before i. Because supports are causal, the representation of support j is the same in
every prefix that contains it, so this single pass computes exactly what N separate passes over
the prefixes compute (``forward_per_prefix``, the way the authors' scripts evaluate), at the cost
of one sequence of length 2N instead of N sequences. There is no positional encoding: the
prediction for a query is a function of the *set* of earlier supports only through the order
the causal mask imposes on support-support interactions.

``ICLConfig.authors()`` mirrors the authors' "ICLer": width d + 2C (the token itself, label part
padded to 2C), 8 layers, 1 head, linear attention, GELU MLP of 4x width, no LayerNorm, no
positional encoding, linear readout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.modules import ATTENTION_KINDS, TransformerBlock
from uni_icl.validation import check_choice, check_int


@dataclass(frozen=True)
class ICLConfig:
    """Architecture of :class:`ICLTransformer`."""

    width: int = 64  # residual stream width (ignored when embed=False: it is then d + 2C)
    depth: int = 4  # number of transformer blocks
    n_heads: int = 4  # attention heads per block
    attention: str = "softmax"  # "softmax" or "linear" (the authors' kernelised attention)
    mlp_ratio: int = 4  # hidden width of each block's MLP, as a multiple of the width
    layer_norm: bool = True  # pre-norm LayerNorms (the authors' ICLer has none)
    embed: bool = True  # learned linear token embedding; False feeds the raw token (authors)

    def __post_init__(self) -> None:
        check_int("width", self.width, minimum=1)
        check_int("depth", self.depth, minimum=1)
        check_int("n_heads", self.n_heads, minimum=1)
        check_int("mlp_ratio", self.mlp_ratio, minimum=1)
        check_choice("attention", self.attention, ATTENTION_KINDS)

    @staticmethod
    def authors() -> ICLConfig:
        """The authors' ICLer shape (about 3.4k parameters at d = 2, C = 2); width becomes d + 2C."""
        return ICLConfig(width=6, depth=8, n_heads=1, attention="linear", mlp_ratio=4, layer_norm=False, embed=False)


def episode_mask(n_points: int, device: torch.device) -> torch.Tensor:
    """(2N, 2N) bool: row token reads column token. Supports first, then queries."""
    support_causal = torch.ones(n_points, n_points, dtype=torch.bool, device=device).tril()
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
        if config.embed:
            width = config.width
            self.label_slots = n_classes
            self.embed = nn.Linear(d + n_classes + 1, width)
        else:
            width = d + 2 * n_classes
            self.label_slots = 2 * n_classes
            self.embed = nn.Identity()
        self.blocks = nn.ModuleList(
            TransformerBlock(width, config.n_heads, config.attention, config.mlp_ratio, config.layer_norm)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(width) if config.layer_norm else nn.Identity()
        self.readout = nn.Linear(width, n_classes)

    def tokens(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Support tokens and query tokens, each (B, N, F) before the embedding."""
        labels = F.one_hot(ys, self.label_slots).to(xs.dtype)
        zeros = torch.zeros_like(labels)
        if self.config.embed:
            flag = torch.ones_like(xs[..., :1])
            support = torch.cat([xs, labels, 0 * flag], dim=-1)
            query = torch.cat([xs, zeros, flag], dim=-1)
        else:
            support = torch.cat([xs, labels], dim=-1)
            query = torch.cat([xs, zeros], dim=-1)
        return support, query

    def _run(self, sequence: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        h = self.embed(sequence)
        for block in self.blocks:
            h = block(h, allowed)
        return self.readout(self.norm(h))

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, _ = xs.shape
        support, query = self.tokens(xs, ys)
        out = self._run(torch.cat([support, query], dim=1), episode_mask(N, xs.device))  # (B, 2N, C)
        return out[:, N:]

    def forward_per_prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Reference path: one pass per prefix (N passes), as in the authors' scripts. -> (B, N, C)"""
        B, N, _ = xs.shape
        support, query = self.tokens(xs, ys)
        outputs = []
        for i in range(N):
            sequence = torch.cat([support[:, :i], query[:, i : i + 1]], dim=1)  # (B, i + 1, F)
            allowed = torch.ones(i + 1, i + 1, dtype=torch.bool, device=xs.device).tril()
            outputs.append(self._run(sequence, allowed)[:, -1])
        return torch.stack(outputs, dim=1)
