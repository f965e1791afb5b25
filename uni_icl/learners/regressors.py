"""In-context linear regression learners (Garg et al. 2022 layout) and their classical baselines.

Contract: ``forward(xs (B, N, d), ys (B, N) float) -> predictions (B, N)`` where prediction i
uses only x_i and the pairs (x_j, y_j), j < i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from uni_icl.learners.modules import TransformerBlock, strictly_earlier_mask
from uni_icl.validation import check_int


@dataclass(frozen=True)
class RegressorConfig:
    """Architecture of :class:`CausalRegressionTransformer` (GPT-2 style)."""

    width: int = 64  # residual stream width
    depth: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads
    max_points: int = 64  # longest episode the learned positional embedding covers

    def __post_init__(self) -> None:
        for name in ("width", "depth", "n_heads", "max_points"):
            check_int(name, getattr(self, name), minimum=1)


class CausalRegressionTransformer(nn.Module):
    """Interleaved tokens x_0, y_0, x_1, y_1, ... (y token = [y, 0, ..., 0]); causal attention,
    learned positional embeddings; the prediction for y_i is read at the x_i token."""

    is_regression = True

    def __init__(self, d: int, config: RegressorConfig = RegressorConfig()) -> None:
        super().__init__()
        self.d, self.config = d, config
        self.read_in = nn.Linear(d, config.width)
        self.position = nn.Parameter(0.02 * torch.randn(2 * config.max_points, config.width))
        self.blocks = nn.ModuleList(
            TransformerBlock(config.width, config.n_heads, "softmax", 4, True) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.width)
        self.read_out = nn.Linear(config.width, 1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, d = xs.shape
        if self.config.max_points < N:
            raise ValueError(f"n_points: got {N}; allowed: at most max_points={self.config.max_points}")
        y_tokens = torch.cat([ys[..., None], torch.zeros_like(xs[..., 1:])], dim=-1)  # (B, N, d)
        tokens = torch.stack([xs, y_tokens], dim=2).reshape(B, 2 * N, d)  # x_0, y_0, x_1, ...
        h = self.read_in(tokens) + self.position[: 2 * N]
        causal = torch.ones(2 * N, 2 * N, dtype=torch.bool, device=xs.device).tril()
        for block in self.blocks:
            h = block(h, causal)
        return self.read_out(self.norm(h))[:, ::2, 0]  # (B, N): outputs at the x tokens


class LeastSquares(nn.Module):
    """Minimum-norm least squares on the first i points (the optimal estimator for i >= d)."""

    is_regression = True

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, d = xs.shape
        preds = torch.zeros(B, N, dtype=xs.dtype, device=xs.device)
        for i in range(1, N):
            weights = torch.linalg.pinv(xs[:, :i]) @ ys[:, :i, None]  # (B, d, 1)
            preds[:, i] = (xs[:, i : i + 1] @ weights)[:, 0, 0]
        return preds


class Averaging(nn.Module):
    """w_hat = mean_{j<i} y_j x_j; prediction x_i . w_hat (zero at i = 0)."""

    is_regression = True

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        N = xs.shape[1]
        counts = torch.arange(N, device=xs.device, dtype=xs.dtype).clamp_min(1.0).view(1, N, 1)
        w_hat = ((ys[..., None] * xs).cumsum(1) - ys[..., None] * xs) / counts  # (B, N, d)
        return (w_hat * xs).sum(-1)


class NearestNeighbours(nn.Module):
    """Mean label of the k nearest earlier points (fewer when fewer exist; zero at i = 0)."""

    is_regression = True

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        check_int("k", k, minimum=1)
        self.k = k

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, _ = xs.shape
        dist = torch.cdist(xs, xs).masked_fill(~strictly_earlier_mask(N, xs.device), float("inf"))  # (B, N, N)
        k = min(self.k, N)
        nearest_dist, nearest = dist.topk(k, dim=-1, largest=False)  # (B, N, k)
        valid = nearest_dist.isfinite().to(xs.dtype)
        labels = torch.gather(ys[:, None, :].expand(B, N, N), 2, nearest)
        return (labels * valid).sum(-1) / valid.sum(-1).clamp_min(1.0)
