"""Classification baselines that learn nothing across episodes: explicit learning rules applied to
the earlier points of each episode, with no parameter fitted to any training distribution.

- :class:`NearestClassMean`: nearest class mean, on raw inputs or on a PCA fitted to training
  inputs (the digits chapter's non-meta-learned reference).
- :class:`KNearestClassifier`: majority vote of the k nearest earlier points.
- :class:`PrefixLogisticRegression`: L2-regularised logistic regression fitted, per position, to the
  earlier points (a few Newton steps, batched over every prefix of every episode).

Each follows the learner contract: ``forward(xs (B, N, d), ys (B, N)) -> logits (B, N, C)``, where
the output at i uses only x_i and the pairs (x_j, y_j) with j < i.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners.modules import exclusive_cumsum, strictly_earlier_mask
from uni_icl.validation import check_int, check_positive


class NearestClassMean(nn.Module):
    """Nearest class mean of the earlier points, in pixel space or in a fixed linear projection.

    forward(xs (B, N, d), ys (B, N)) -> logits (B, N, C): minus the squared distance from the
    (projected) x_i to the mean of the earlier points of each class. A class with no earlier
    point gets a logit just below every seen class (all classes tie when none is seen). With
    ``components`` (k, d) and ``center`` (d,), features are (x - center) @ components.T.
    No trainable parameters: nothing is meta-learned.
    """

    is_regression = False

    def __init__(self, n_classes: int, center: torch.Tensor | None = None, components: torch.Tensor | None = None):
        super().__init__()
        check_int("n_classes", n_classes, minimum=2)
        if (center is None) != (components is None):
            raise ValueError("center, components: pass both (a projection) or neither (raw inputs)")
        if components is not None and (components.ndim != 2 or center.shape != components.shape[1:]):
            raise ValueError(
                f"components: expected (k, d) with center (d,), got {tuple(components.shape)} and {tuple(center.shape)}"
            )
        self.n_classes = n_classes
        self.register_buffer("center", center)
        self.register_buffer("components", components)

    def features(self, xs: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, N, k) (or unchanged without a projection)."""
        return xs if self.components is None else (xs - self.center) @ self.components.T

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        feats = self.features(xs)  # (B, N, k)
        onehot = F.one_hot(ys, self.n_classes).to(feats.dtype)  # (B, N, C)
        sums = exclusive_cumsum(onehot[..., None] * feats[:, :, None, :])  # (B, N, C, k)
        counts = exclusive_cumsum(onehot)  # (B, N, C)
        means = sums / counts[..., None].clamp_min(1.0)
        scores = -((feats[:, :, None, :] - means) ** 2).sum(-1)  # (B, N, C)
        seen = counts > 0
        lowest = scores.masked_fill(~seen, float("inf")).amin(-1, keepdim=True)  # (B, N, 1)
        fallback = torch.where(torch.isinf(lowest), torch.zeros_like(lowest), lowest - 1.0)
        return torch.where(seen, scores, fallback)


class KNearestClassifier(nn.Module):
    """Majority vote of the ``k`` nearest earlier points (Euclidean; all of them when fewer exist).

    forward(xs (B, N, d), ys (B, N)) -> logits (B, N, C): the number of votes for each class plus
    0.5 for the class of the single nearest point, which breaks a tied vote towards it and never
    overturns a majority. No earlier point: every logit is 0 (a tie). Nothing is trained.
    """

    is_regression = False

    def __init__(self, n_classes: int, k: int = 5) -> None:
        super().__init__()
        check_int("n_classes", n_classes, minimum=2)
        check_int("k", k, minimum=1)
        self.n_classes, self.k = n_classes, k

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, _ = xs.shape
        earlier = strictly_earlier_mask(N, xs.device)
        dist = torch.cdist(xs, xs).masked_fill(~earlier, float("inf"))  # (B, N, N): row i, column j < i
        nearest_dist, nearest = dist.topk(min(self.k, N), dim=-1, largest=False)  # (B, N, k), nearest first
        valid = nearest_dist.isfinite().to(xs.dtype)
        labels = torch.gather(ys[:, None, :].expand(B, N, N), 2, nearest)  # (B, N, k)
        votes = F.one_hot(labels, self.n_classes).to(xs.dtype) * valid[..., None]  # (B, N, k, C)
        return votes.sum(2) + 0.5 * votes[:, :, 0]


class PrefixLogisticRegression(nn.Module):
    """Logistic regression fitted at each position i to the points before i (one-vs-rest per class).

    For every prefix and class c, w (d + 1 numbers: weights and bias, on features [x, 1]) minimises
    sum_{j < i} logloss(sigmoid(w . [x_j, 1]), [y_j = c]) + l2 / 2 * |w|^2 (the bias is penalised
    too, so the problem is strictly convex even with no point). ``steps`` Newton steps from w = 0,
    all prefixes of all episodes at once: each step is two batched products over the (i, j) pairs
    with j < i. The logit of class c at i is w_c . [x_i, 1]; with no earlier point w = 0 (a tie).
    Nothing is trained across episodes.
    """

    is_regression = False

    def __init__(self, n_classes: int, l2: float = 1.0, steps: int = 8) -> None:
        super().__init__()
        check_int("n_classes", n_classes, minimum=2)
        check_positive("l2", l2)
        check_int("steps", steps, minimum=1)
        self.n_classes, self.l2, self.steps = n_classes, float(l2), steps

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, d = xs.shape
        C, D = self.n_classes, d + 1
        feats = torch.cat([xs, torch.ones(B, N, 1, dtype=xs.dtype, device=xs.device)], -1)  # (B, N, D)
        targets = F.one_hot(ys, C).to(xs.dtype).transpose(1, 2)[:, None]  # (B, 1, C, N): [y_j = c]
        earlier = strictly_earlier_mask(N, xs.device).to(xs.dtype)[None, :, None, :]  # (1, N, 1, N): j < i
        outer = (feats[..., :, None] * feats[..., None, :]).reshape(B, N, D * D)  # (B, N, D*D)
        eye = self.l2 * torch.eye(D, dtype=xs.dtype, device=xs.device)
        weights = torch.zeros(B, N, C, D, dtype=xs.dtype, device=xs.device)  # one w per (episode, i, class)
        for _ in range(self.steps):
            probs = torch.sigmoid(torch.einsum("bicd,bjd->bicj", weights, feats))  # (B, N, C, N)
            residual = ((probs - targets) * earlier).reshape(B, N * C, N)
            curvature = (probs * (1 - probs) * earlier).reshape(B, N * C, N)
            grad = (residual @ feats).reshape(B, N, C, D) + self.l2 * weights
            hessian = (curvature @ outer).reshape(B, N, C, D, D) + eye
            weights = weights - torch.linalg.solve(hessian, grad[..., None])[..., 0]
        return torch.einsum("bicd,bid->bic", weights, feats)


def fit_pca(images: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal axes of ``images`` (M, d): (center (d,), components (k, d)), largest variance first."""
    if images.ndim != 2:
        raise ValueError(f"images: expected shape (M, d), got {tuple(images.shape)}")
    check_int("n_components", n_components, minimum=1, maximum=min(images.shape))
    center = images.mean(0)
    _, _, right = torch.linalg.svd(images - center, full_matrices=False)
    return center, right[:n_components].contiguous()
