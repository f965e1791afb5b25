"""Classification baselines that learn nothing across episodes: nearest class mean, on raw inputs
or on a PCA fitted to training inputs (the digits chapter's non-meta-learned reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners.modules import exclusive_cumsum
from uni_icl.validation import check_int


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


def fit_pca(images: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal axes of ``images`` (M, d): (center (d,), components (k, d)), largest variance first."""
    if images.ndim != 2:
        raise ValueError(f"images: expected shape (M, d), got {tuple(images.shape)}")
    check_int("n_components", n_components, minimum=1, maximum=min(images.shape))
    center = images.mean(0)
    _, _, right = torch.linalg.svd(images - center, full_matrices=False)
    return center, right[:n_components].contiguous()
