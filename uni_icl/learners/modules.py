"""Building blocks shared by the learners: MLPs, masked attention, transformer blocks, prefix sums."""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_KINDS = ("softmax", "linear")


def mlp(
    in_dim: int, hidden: int, out_dim: int, n_hidden_layers: int = 1, activation: type[nn.Module] = nn.GELU
) -> nn.Sequential:
    """in_dim -> hidden (x n_hidden_layers, with activation) -> out_dim."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(width, hidden), activation()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def exclusive_cumsum(values: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Sum of the elements strictly before each index along ``dim`` (zero at index 0)."""
    return values.cumsum(dim) - values


def strictly_earlier_mask(n_points: int, device: torch.device) -> torch.Tensor:
    """(N, N) bool, True where column j < row i."""
    return torch.ones(n_points, n_points, dtype=torch.bool, device=device).tril(-1)


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention over the allowed positions; q, k, v (B, H, T, Dh), allowed (T, T).

    Written out rather than ``F.scaled_dot_product_attention``: at these tiny head sizes the fused
    CPU kernel was no faster in one pass and much slower on the many short per-prefix sequences, so
    this keeps the benchmark's reference path fair.
    """
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, T)
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The authors' linear attention, restricted by a mask.

    q, k, v: (B, H, T, Dh); allowed: (T, T) bool (row attends to column). The query features are
    a softmax over the feature axis; the keys a softmax over the allowed positions of each row, so
    out_i = sum_f softmax(q_i)_f * sum_{j allowed} softmax_j(k_{.f}) v_j. -> (B, H, T, Dh)
    """
    query_weights = q.softmax(dim=-1)
    key_exp = (k - k.amax(dim=2, keepdim=True)).exp()  # a shift shared by all j cancels in the ratio
    mask = allowed.to(q.dtype)
    B, H, T, F = key_exp.shape
    outer = (key_exp[..., :, None] * v[..., None, :]).reshape(B, H, T, F * F)  # exp(k_j) v_j^T per token
    numerator = torch.matmul(mask, outer).view(B, H, T, F, F)  # (B, H, T, Dh, Dh), two plain products
    denominator = torch.matmul(mask, key_exp).clamp_min(1e-30)  # (B, H, T, Dh)
    return torch.einsum("bhif,bhifg->bhig", query_weights / denominator, numerator)


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention where ``allowed`` (T, T) says which tokens each token reads."""

    def __init__(self, width: int, n_heads: int, kind: str = "softmax") -> None:
        super().__init__()
        if width % n_heads:
            raise ValueError(f"n_heads: must divide width={width}, got {n_heads}")
        self.n_heads = n_heads
        self.kind = kind
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, W = h.shape
        q, k, v = self.qkv(h).split(W, dim=-1)
        q, k, v = (t.view(B, T, self.n_heads, W // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
        attend = softmax_attention if self.kind == "softmax" else linear_attention
        out = attend(q, k, v, allowed)  # (B, H, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(B, T, W))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: h + attn(norm(h)), then h + mlp(norm(h)); norms optional."""

    def __init__(self, width: int, n_heads: int, attention: str, mlp_ratio: int, layer_norm: bool) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.attn = MaskedSelfAttention(width, n_heads, attention)
        self.norm_mlp = nn.LayerNorm(width) if layer_norm else nn.Identity()
        self.mlp = mlp(width, mlp_ratio * width, width)

    def forward(self, h: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        h = h + self.attn(self.norm_attn(h), allowed)
        return h + self.mlp(self.norm_mlp(h))
