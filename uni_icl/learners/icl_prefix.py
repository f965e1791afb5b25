"""The authors' ICLer as the authors compute it: one non-causal pass per prefix.

:class:`~uni_icl.learners.icler.ICLer` (registry name ``icl_authors``) reads an episode in one
causal pass. The authors' scripts instead re-run the network for each query i on the sequence of
the i labelled supports ``[x_j, one_hot(y_j)]`` (label part padded to 2C), j < i, plus the query
token ``[x_i, 0]`` (an empty label), with **no** attention mask inside that sequence (every token
attends to every token of it), and read the 2C logits of the query token. The supports'
representations then depend on every other support of the prefix and on the query, which one
causal pass cannot reproduce; :class:`ICLPrefixTransformer` computes exactly this (registry name
``icl_authors_prefix``), with the parameters, initialisation, 2C-logit output and loss of the
one-pass model (see :mod:`uni_icl.learners.icler`).

The N prefixes run in a few batches (``n_groups``) of consecutive prefixes, each padded to its
longest: for prefixes first..stop-1, sequence (b, i) is query i followed by supports 0..stop-2 of
episode b, and a key mask lets its tokens read only the query and supports 0..i-1 (the prefix).
A token's state depends only on the tokens it reads, so the supports j >= i are computed but
never read: the query token's output equals the unpadded prefix run (``forward_per_prefix``, the
loop the tests compare against). Without positional encoding the token order inside a sequence
does not matter; the query comes first so every sequence reads its answer at token 0. With 4
groups about 0.6 N^2 tokens per episode (N (N + 1) / 2 unpadded), in 4 passes instead of N.
"""

from __future__ import annotations

import torch

from uni_icl.learners.icler import ICLer


class ICLPrefixTransformer(ICLer):
    """forward(xs (B, N, d), ys (B, N) long) -> logits (B, N, 2C): logits i from a non-causal pass
    over the supports j < i and the query x_i (see the module docstring; the 2C logits and their
    loss as :class:`~uni_icl.learners.icler.ICLer` documents)."""

    n_groups = 4  # prefixes are run in this many batches, each padded to its own longest prefix

    def prefix_sequences(
        self, xs: torch.Tensor, ys: torch.Tensor, first: int = 0, stop: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefixes first..stop-1 as one batch: sequences (B * n, L + 1, W) and their mask
        (B * n, 1, 1, L + 1), n = stop - first prefixes, L = stop - 1 supports.

        Sequence b * n + (i - first) is ``[query_i, support_0, ..., support_{L-1}]`` of episode b;
        its tokens read columns 0..i (the query and supports 0..i-1), the same columns for every token.
        """
        B, N, _ = xs.shape
        stop = N if stop is None else stop
        n, length = stop - first, stop - 1
        tokens, _ = self.tokens(xs, ys)  # (B, 2N, W): supports, then queries
        support, query = tokens[:, :length], tokens[:, N + first : N + stop]
        sequences = torch.cat([query[:, :, None], support[:, None].expand(B, n, length, tokens.shape[-1])], dim=2)
        columns = torch.arange(length + 1, device=xs.device)
        reads = columns[None, :] <= torch.arange(first, stop, device=xs.device)[:, None]  # prefix i: 0..i
        allowed = reads.expand(B, n, length + 1).reshape(B * n, 1, 1, length + 1)
        return sequences.reshape(B * n, length + 1, -1), allowed

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        B, N, _ = xs.shape
        bounds = torch.linspace(0, N, min(self.n_groups, N) + 1).round().long().tolist()
        logits = []
        for first, stop in zip(bounds[:-1], bounds[1:], strict=True):
            sequences, allowed = self.prefix_sequences(xs, ys, first, stop)
            logits.append(self._run(sequences, allowed)[:, 0].view(B, stop - first, self.n_logits))
        return torch.cat(logits, dim=1)  # the query tokens answer

    def forward_per_prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Reference path: one unpadded, unmasked pass per prefix, in the authors' order (supports
        0..i-1, then query i). -> (B, N, 2C)"""
        N = xs.shape[1]
        tokens, _ = self.tokens(xs, ys)
        outputs = []
        for i in range(N):
            prefix = torch.cat([tokens[:, :i], tokens[:, N + i : N + i + 1]], dim=1)  # (B, i + 1, F)
            everything = torch.ones(i + 1, i + 1, dtype=torch.bool, device=xs.device)
            outputs.append(self._run(prefix, everything)[:, -1])
        return torch.stack(outputs, dim=1)
