"""Explicit algorithm selection among known learners, in the learner contract.

:class:`AlgorithmSelector` holds K candidate learners (for claim 3: MatchNet trained on
``pairwise``, ProtoNet on ``prototype``, CNP on ``amortized``). On an episode it runs each
candidate once over all N positions, then at every position i it scores each candidate
*prequentially* on the earlier points: how many of the points j < i it predicted correctly from
the points before j (each candidate's output at j already uses only the pairs before j, so this
is an exclusive cumulative sum of correctness, no loop over positions). It picks the candidate
with the highest count and returns that candidate's log-probabilities at position i.

Ties are broken first by the prequential log-likelihood (the sum over j < i of the candidate's
log-probability of y_j), then by the order of the candidates (the first one wins). At i = 0 no
point has been seen, every score is zero, and the first candidate is used.

:class:`OracleSelector` is told the family of each episode and uses the candidate assigned to
that family (by default the matching learner of ``MATCHING_CANDIDATE``), an upper bound on what
selecting among the candidates per family can achieve. A family with no assigned candidate (an
unseen type such as ``radius``) has no rule to follow: the oracle raises a ``ValueError`` naming
the family, and the caller decides what "the oracle" means there (the selection chapter assigns
the candidate that is best on that family in hindsight, the most any per-family oracle can do).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from uni_icl.learners.modules import exclusive_cumsum
from uni_icl.tasks import AmortizedTask, PairwiseTask, PrototypeTask
from uni_icl.validation import check_choice

# family -> the candidate built for it (the families name their matching meta-learner)
MATCHING_CANDIDATE = {family.name: family.matching_learner for family in (PairwiseTask, PrototypeTask, AmortizedTask)}


def _check_candidates(candidates: Mapping[str, nn.Module]) -> None:
    if not isinstance(candidates, Mapping) or not candidates:
        raise ValueError("candidates: expected a non-empty mapping name -> learner module")
    for name, module in candidates.items():
        if not isinstance(module, nn.Module):
            raise ValueError(f"candidates: '{name}' must be an nn.Module following the learner contract")


def _check_episode(xs: torch.Tensor, ys: torch.Tensor) -> None:
    if xs.dim() != 3:
        raise ValueError(f"xs: expected shape (B, N, d), got {tuple(xs.shape)}")
    if ys.shape != xs.shape[:2]:
        raise ValueError(f"ys: expected shape {tuple(xs.shape[:2])} (B, N), got {tuple(ys.shape)}")


def prequential_scores(log_probs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prequential correct counts and log-likelihoods of K candidates.

    Args:
        log_probs: (B, N, K, C) normalised log-probabilities of each candidate at each position
            (position j computed from the pairs before j).
        ys: (B, N) long labels.

    Returns:
        (correct, loglik), each (B, N, K): at position i, the number of points j < i candidate k
        classified correctly, and the sum over j < i of its log-probability of y_j. Both are 0 at i = 0.
    """
    correct = (log_probs.argmax(-1) == ys[..., None]).to(log_probs.dtype)  # (B, N, K)
    picked = log_probs.gather(-1, ys[:, :, None, None].expand(*log_probs.shape[:3], 1)).squeeze(-1)  # (B, N, K)
    return exclusive_cumsum(correct), exclusive_cumsum(picked)


def select_best(correct: torch.Tensor, loglik: torch.Tensor) -> torch.Tensor:
    """Index of the best candidate: most correct, then highest log-likelihood, then lowest index.

    correct, loglik: (B, N, K) -> (B, N) long.
    """
    best_count = correct.amax(-1, keepdim=True)
    tied_loglik = loglik.masked_fill(correct < best_count, float("-inf"))
    top = tied_loglik.amax(-1, keepdim=True)
    is_best = tied_loglik == top  # several only on an exact tie of both scores
    order = torch.arange(correct.shape[-1], device=correct.device)
    return torch.where(is_best, order, correct.shape[-1]).amin(-1)


class AlgorithmSelector(nn.Module):
    """Pick, at every position, the candidate with the best prequential accuracy so far.

    Args:
        candidates: name -> learner module (the learner contract); the order of the mapping is the
            final tie-break order. Their weights are not trained further.

    forward(xs (B, N, d), ys (B, N)) -> (B, N, C) log-probabilities of the chosen candidate at each
    position; position i depends only on x_i and the pairs before i.

    Example:
        >>> selector = AlgorithmSelector({"matchnet": matchnet, "protonet": protonet, "cnp": cnp})
        >>> log_probs = selector(episode.xs, episode.ys)              # (B, N, C)
        >>> chosen = selector.choices(episode.xs, episode.ys)          # (B, N) candidate indices
    """

    is_regression = False

    def __init__(self, candidates: Mapping[str, nn.Module]) -> None:
        super().__init__()
        _check_candidates(candidates)
        self.names = list(candidates)
        self.candidates = nn.ModuleList(candidates.values())

    def candidate_log_probs(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Each candidate's normalised log-probabilities, one pass each: (B, N, K, C)."""
        _check_episode(xs, ys)
        return torch.stack([F.log_softmax(candidate(xs, ys), dim=-1) for candidate in self.candidates], dim=2)

    def choices(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Index (into ``names``) of the candidate used at each position: (B, N) long."""
        return select_best(*prequential_scores(self.candidate_log_probs(xs, ys), ys))

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        log_probs = self.candidate_log_probs(xs, ys)  # (B, N, K, C)
        chosen = select_best(*prequential_scores(log_probs, ys))  # (B, N)
        index = chosen[:, :, None, None].expand(-1, -1, 1, log_probs.shape[-1])
        return log_probs.gather(2, index).squeeze(2)  # (B, N, C)


class OracleSelector(nn.Module):
    """Use the candidate assigned to each episode's true family (an upper bound for selection).

    Args:
        candidates: name -> learner module.
        assignment: family -> candidate name (default ``MATCHING_CANDIDATE``: the learner whose
            inductive bias is optimal for the family).
        family: the family assumed when ``forward`` is called without ``families`` (so the oracle
            can be evaluated like any learner on one family); None means ``families`` is required.

    forward(xs (B, N, d), ys (B, N), families=None) -> (B, N, C) log-probabilities. ``families`` is
    one family name for the whole batch or a sequence of B names. A family missing from
    ``assignment`` raises a ValueError (see the module docstring).
    """

    is_regression = False

    def __init__(
        self,
        candidates: Mapping[str, nn.Module],
        assignment: Mapping[str, str] = MATCHING_CANDIDATE,
        family: str | None = None,
    ) -> None:
        super().__init__()
        _check_candidates(candidates)
        for fam, name in assignment.items():
            check_choice(f"assignment['{fam}']", name, list(candidates))
        if family is not None:
            check_choice("family", family, sorted(assignment))
        self.names = list(candidates)
        self.candidates = nn.ModuleDict(dict(candidates))
        self.assignment = dict(assignment)
        self.family = family

    def for_family(self, family: str) -> OracleSelector:
        """The same oracle with ``family`` as its default (shares the candidate modules)."""
        return OracleSelector(dict(self.candidates.items()), self.assignment, family)

    def forward(self, xs: torch.Tensor, ys: torch.Tensor, families: str | Sequence[str] | None = None) -> torch.Tensor:
        _check_episode(xs, ys)
        families = self.family if families is None else families
        if families is None:
            raise ValueError("families: required (one family name or one per episode) when the oracle has no default")
        if isinstance(families, str):
            families = [families] * xs.shape[0]
        if len(families) != xs.shape[0]:
            raise ValueError(f"families: expected {xs.shape[0]} names (one per episode), got {len(families)}")
        for family in set(families):
            check_choice("family (no candidate is assigned to it)", family, sorted(self.assignment))
        output = None
        for name in dict.fromkeys(self.assignment[f] for f in families):
            rows = torch.tensor([self.assignment[f] == name for f in families], device=xs.device)
            part = F.log_softmax(self.candidates[name](xs[rows], ys[rows]), dim=-1)
            if output is None:
                output = part.new_empty(*xs.shape[:2], part.shape[-1])
            output[rows] = part
        return output
