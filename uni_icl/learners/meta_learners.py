"""The typical meta-learners, each predicting every position of an episode in one pass.

All follow the learner contract: ``forward(xs (B, N, d), ys (B, N) long) -> logits (B, N, C)``
where position i uses only x_i and the pairs (x_j, y_j), j < i. Prefix statistics are computed
with masks and exclusive cumulative sums, never with a Python loop over positions. Outputs are
logits (a cross-entropy applies the softmax once); a position with no earlier example, or no
earlier example of some class, is handled explicitly as each class documents.

Deviations from the authors' scripts (PAPER.md "known bugs"): ProtoNet embeds the query too; no
softmax before the cross-entropy; no +-9999 padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners.modules import exclusive_cumsum, mlp, strictly_earlier_mask


def embedding_net(d: int, hidden: int, n_layers: int) -> nn.Module:
    """x (.., d) -> (.., hidden): an MLP with LeakyReLU, or the identity when n_layers == 0."""
    if n_layers == 0:
        return nn.Identity()
    return mlp(d, hidden, hidden, n_hidden_layers=n_layers - 1, activation=nn.LeakyReLU)


class MatchingNetwork(nn.Module):
    """Similarity-weighted vote of earlier labels (Vinyals et al. 2016).

    p(y_i = c) = sum_{j<i} a_ij [y_j = c] + a_i0 / C, with a = softmax over {j < i} and one
    "no evidence" slot whose score is learned and whose vote is uniform, and
    scores tau * cos(g(x_i), g(x_j)). At i = 0 only the uniform slot exists. Returns log p.
    """

    name = "matchnet"  # its name in the learner registry
    is_regression = False

    def __init__(self, d: int, n_classes: int, hidden: int = 32, n_layers: int = 2) -> None:
        super().__init__()
        self.d, self.n_classes = d, n_classes
        self.embed = embedding_net(d, hidden, n_layers)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(5.0)))
        self.null_score = nn.Parameter(torch.tensor(0.0))

    def attention(self, xs: torch.Tensor) -> torch.Tensor:
        """Weights over [earlier points ..., no-evidence slot]: (B, N, N + 1), rows sum to 1."""
        B, N, _ = xs.shape
        emb = F.normalize(self.embed(xs), dim=-1)  # (B, N, H)
        scores = self.log_temperature.exp() * emb @ emb.transpose(1, 2)  # (B, N, N)
        scores = scores.masked_fill(~strictly_earlier_mask(N, xs.device), float("-inf"))
        null = self.null_score.expand(B, N, 1)
        return torch.cat([scores, null], dim=-1).softmax(dim=-1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        weights = self.attention(xs)
        votes = F.one_hot(ys, self.n_classes).to(xs.dtype)  # (B, N, C)
        probs = weights[..., :-1] @ votes + weights[..., -1:] / self.n_classes
        return probs.clamp_min(1e-12).log()


class PrototypicalNetwork(nn.Module):
    """Negative squared distance to class means of earlier embedded points (Snell et al. 2017).

    The query is embedded with the same network. A class with no earlier example uses a learned
    default prototype (so at i = 0 every class has the same logit).
    """

    name = "protonet"  # its name in the learner registry
    is_regression = False

    def __init__(self, d: int, n_classes: int, hidden: int = 32, n_layers: int = 2) -> None:
        super().__init__()
        self.d, self.n_classes = d, n_classes
        self.embed = embedding_net(d, hidden, n_layers)
        out_dim = d if n_layers == 0 else hidden
        self.default_prototype = nn.Parameter(torch.zeros(out_dim))

    def prototypes(self, emb: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Class means of strictly earlier embeddings: emb (B, N, H), ys (B, N) -> (B, N, C, H)."""
        onehot = F.one_hot(ys, self.n_classes).to(emb.dtype)  # (B, N, C)
        sums = exclusive_cumsum(onehot[..., None] * emb[:, :, None, :])  # (B, N, C, H)
        counts = exclusive_cumsum(onehot)[..., None]  # (B, N, C, 1)
        means = sums / counts.clamp_min(1.0)
        return torch.where(counts > 0, means, self.default_prototype)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        emb = self.embed(xs)  # (B, N, H)
        protos = self.prototypes(emb, ys)
        return -((emb[:, :, None, :] - protos) ** 2).sum(-1)


class ConditionalNeuralProcess(nn.Module):
    """Encoder on [x_j, one_hot(y_j)], mean over j < i, an MLP, decoder on [r_i, x_i] (Garnelo et al. 2018).

    With no earlier point the mean is the zero vector, and the decoder also gets log(1 + count)
    so it can tell an empty context from an uninformative one.
    """

    name = "cnp"  # its name in the learner registry
    is_regression = False

    def __init__(self, d: int, n_classes: int, hidden: int = 32, n_layers: int = 2) -> None:
        super().__init__()
        self.d, self.n_classes = d, n_classes
        depth = max(n_layers - 1, 1)
        self.encoder = mlp(d + n_classes, hidden, hidden, depth, nn.LeakyReLU)
        self.aggregate = mlp(hidden, hidden, hidden, 1, nn.LeakyReLU)
        self.decoder = mlp(hidden + d + 1, hidden, n_classes, depth, nn.LeakyReLU)

    def context(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Mean encoding of strictly earlier pairs and log(1 + count): (B, N, H + 1)."""
        B, N, _ = xs.shape
        encoded = self.encoder(torch.cat([xs, F.one_hot(ys, self.n_classes).to(xs.dtype)], dim=-1))  # (B, N, H)
        counts = torch.arange(N, device=xs.device, dtype=xs.dtype).view(1, N, 1)
        mean = exclusive_cumsum(encoded) / counts.clamp_min(1.0)
        return torch.cat([self.aggregate(mean), torch.log1p(counts).expand(B, N, 1)], dim=-1)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([self.context(xs, ys), xs], dim=-1))
