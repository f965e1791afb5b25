"""Building blocks shared by the learners: MLPs, masked attention, transformer blocks, prefix sums."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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
    """Scaled dot-product attention over the allowed positions; q, k, v (B, H, T, Dh), allowed
    broadcastable to (B, H, T, T), e.g. (T, T).

    Written out rather than ``F.scaled_dot_product_attention``: at these tiny head sizes the fused
    CPU kernel was no faster in one pass and much slower on the many short per-prefix sequences, so
    this keeps the benchmark's reference path fair. The softmax's own shift is a max over each row
    after masking, so it only involves the positions that row reads.
    """
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, T)
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v


def _nonempty(shift: torch.Tensor) -> torch.Tensor:
    """A max over no allowed position is -inf; such a row reads nothing, so any finite shift will do."""
    return torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))


def _positive(denominator: torch.Tensor) -> torch.Tensor:
    """A key-softmax denominator is >= 1 (its largest term is exp(0)) unless the row reads nothing."""
    return torch.where(denominator > 0, denominator, torch.ones_like(denominator))


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The authors' linear attention, restricted by a mask.

    q, k, v: (B, H, T, Dh); allowed: bool, row attends to column, broadcastable to (B, H, T, T):
    (T, T), (B, 1, T, T), or with a single row, e.g. (B, 1, 1, T), when every token reads the same
    columns (a key-padding mask). The query features are a softmax over the feature axis; the keys a
    softmax over the allowed positions of each row, so
    out_i = sum_f softmax(q_i)_f * sum_{j allowed} softmax_j(k_{.f}) v_j. -> (B, H, T, Dh)

    The key softmax of row i is shifted by the max over the positions row i reads, never over
    others. A shift cancels in exact arithmetic, but in floating point a max taken over positions a
    row may not read (future labels) decides which exponentials underflow, and so leaks them into
    the row's output; here what row i computes depends only on the positions it reads. A per-row
    shift needs per-(row, column) exponentials. Memory, as (B, H, ...) tensors kept for the backward:

    - single-row mask: one shift for all rows, sums formed once: O(B * H * T * Dh + B * H * Dh^2);
    - (T, T) mask: :func:`_linear_attention_chunked`, O(B * H * T * (T / c + P) * Dh) with chunks of
      c ~ sqrt(T / 2) columns and P <= T the columns of the chunks a row reads only in part;
    - any other mask: :func:`_linear_attention_dense`, O(B * H * T * T * Dh).
    """
    if allowed.shape[-2] == 1:
        return _linear_attention_shared(q, k, v, allowed)
    if allowed.dim() == 2:
        return _linear_attention_chunked(q, k, v, allowed)
    return _linear_attention_dense(q, k, v, allowed)


def _linear_attention_shared(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Every row reads the same columns (allowed (..., 1, T)): one shift, one key sum for all rows."""
    keys = k.masked_fill(~allowed.transpose(-2, -1), float("-inf"))  # (B, H, T, Dh); column j's key
    shift = _nonempty(keys.amax(dim=-2, keepdim=True)).detach()  # (B, H, 1, Dh); cancels exactly
    key_exp = (keys - shift).exp()  # 0 at the positions not read
    numerator = key_exp.transpose(-2, -1) @ v  # (B, H, Dh, Dh): sum_j exp(k_jf) v_jg
    denominator = _positive(key_exp.sum(dim=-2, keepdim=True))  # (B, H, 1, Dh)
    return (q.softmax(dim=-1) / denominator) @ numerator


def _linear_attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Any mask: row i's shift and exponentials over all (row, column) pairs, (B, H, T, T, Dh)."""
    keys = k[..., None, :, :].masked_fill(~allowed[..., None], float("-inf"))  # (B, H, T, T, Dh): [i, j] = k_j
    shift = _nonempty(keys.amax(dim=-2, keepdim=True)).detach()  # (B, H, T, 1, Dh): row i's own max
    key_exp = (keys - shift).exp()  # exp(k_jf - m_if), 0 where row i may not read j
    denominator = _positive(key_exp.sum(dim=-2))  # (B, H, T, Dh)
    weights = torch.einsum("bhif,bhijf->bhij", q.softmax(dim=-1) / denominator, key_exp)  # (B, H, T, T)
    return weights @ v


def attention_chunk(n_tokens: int) -> int:
    """Columns per chunk of :func:`_linear_attention_chunked`: about sqrt(T / 2) (fastest on CPU at
    T = 50 to 200 for the causal and support/query masks)."""
    return max(1, round(math.sqrt(n_tokens / 2)))


def _chunk_plan(allowed: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How each row reads the column chunks of a (T, T) mask (columns padded to whole chunks, unread).

    -> full (T, n_chunks) bool: row i reads every column of chunk J; columns (T, P) long: the
    columns of the chunks row i reads only in part (padded with chunk 0's columns); read (T, P)
    bool: which of those row i reads.
    """
    T = allowed.shape[0]
    n_chunks = -(-allowed.shape[1] // chunk)
    padded = F.pad(allowed, (0, n_chunks * chunk - allowed.shape[1]))  # (T, n_chunks * chunk)
    per_chunk = padded.view(T, n_chunks, chunk).sum(dim=-1)  # columns row i reads in chunk J
    full = per_chunk == chunk
    partial = (per_chunk > 0) & ~full
    n_partial = max(1, int(partial.sum(dim=-1).max()))
    chunks = torch.argsort((~partial).to(torch.int8), dim=-1, stable=True)[:, :n_partial]  # partial ones first
    columns = (chunks[..., None] * chunk + torch.arange(chunk, device=allowed.device)).reshape(T, -1)
    read = torch.gather(padded, 1, columns) & torch.gather(partial, 1, chunks).repeat_interleave(chunk, dim=1)
    return full, columns, read


def _linear_attention_chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """:func:`_linear_attention_dense` for a (T, T) mask, computed over column chunks.

    Where row i reads all of a chunk J, exp(k_j - m_i) = exp(k_j - M_J) exp(M_J - m_i) with M_J the
    chunk's max: M_J <= m_i, both factors are at most 1, and every quantity involved (M_J, the
    chunk's sums) comes from positions row i reads, so J's sums are formed once for all rows. The
    chunks row i reads only in part (the diagonal ones of a causal mask) take per-(row, column)
    exponentials. Equal to the dense form up to rounding; about 3x faster for the authors' ICLer.
    """
    B, H, T, Dh = k.shape
    chunk = chunk or attention_chunk(allowed.shape[1])
    full, columns, read = _chunk_plan(allowed, chunk)
    n_chunks = full.shape[1]
    pad = n_chunks * chunk - k.shape[2]
    k_cols = F.pad(k, (0, 0, 0, pad), value=float("-inf"))  # (B, H, Tc, Dh); padding columns: never read
    v_cols = F.pad(v, (0, 0, 0, pad))
    chunk_keys = k_cols.view(B, H, n_chunks, chunk, Dh)
    chunk_max = _nonempty(chunk_keys.amax(dim=3)).detach()  # (B, H, nC, Dh): M_J
    chunk_exp = (chunk_keys - chunk_max[..., None, :]).exp()  # exp(k_j - M_J)
    chunk_num = chunk_exp.transpose(-2, -1) @ v_cols.view(B, H, n_chunks, chunk, Dh)  # (B, H, nC, Dh, Dh)
    chunk_den = chunk_exp.sum(dim=3)  # (B, H, nC, Dh)
    full_max = chunk_max[..., None, :, :].masked_fill(~full[..., None], float("-inf"))  # (B, H, T, nC, Dh)
    part_keys = k_cols.index_select(2, columns.flatten()).view(B, H, T, -1, Dh)  # (B, H, T, P, Dh)
    part_keys = part_keys.masked_fill(~read[..., None], float("-inf"))
    shift = _nonempty(torch.maximum(full_max.amax(dim=-2), part_keys.amax(dim=-2))).detach()  # m_i: (B, H, T, Dh)
    full_scale = (full_max - shift[..., None, :]).exp()  # exp(M_J - m_i), 0 where J is not fully read
    part_exp = (part_keys - shift[..., None, :]).exp()  # exp(k_j - m_i), 0 where j is not read
    denominator = _positive((full_scale * chunk_den[..., None, :, :]).sum(dim=-2) + part_exp.sum(dim=-2))
    query_weights = q.softmax(dim=-1) / denominator  # (B, H, T, Dh)
    out = (query_weights[..., None, :] * full_scale).flatten(-2) @ chunk_num.flatten(2, 3)  # (B, H, T, Dh)
    part_weights = (query_weights[..., None, :] * part_exp).sum(dim=-1)  # (B, H, T, P)
    part_values = v_cols.index_select(2, columns.flatten()).view(B, H, T, -1, Dh)  # (B, H, T, P, Dh)
    return out + (part_weights[..., None] * part_values).sum(dim=-2)


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention where ``allowed`` says which tokens each token reads: (T, T), or any
    shape broadcastable to (B, H, T, T) (e.g. (B, 1, 1, T): every token reads the same columns)."""

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
